"""Procedural textures (numpy noise) written to PNG files that pybullet's ``loadTexture`` reads.

Hand-written because the point is a few cheap, seedable patterns (asphalt grain, grass, paving,
facades with windows, foliage); no texture library ships those without assets.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

TEXTURE_SIZE = 128


def value_noise(rng: np.random.Generator, size: int, octaves: int = 4) -> np.ndarray:
    """Tileable-looking multi-octave value noise in [0, 1], shape (size, size)."""
    out = np.zeros((size, size), dtype=np.float32)
    total = 0.0
    for octave in range(octaves):
        cells = 4 * 2**octave
        grid = rng.random((cells, cells), dtype=np.float32)
        layer = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
        weight = 0.5**octave
        out += weight * layer
        total += weight
    return np.clip(out / total, 0.0, 1.0)


def _tint(noise: np.ndarray, base: np.ndarray, contrast: float) -> np.ndarray:
    img = base[None, None, :] * (1.0 + contrast * (noise[..., None] - 0.5))
    return np.clip(img, 0, 255).astype(np.uint8)


def asphalt(rng: np.random.Generator) -> np.ndarray:
    grey = rng.uniform(60, 110)
    base = np.array([grey, grey, grey * rng.uniform(0.97, 1.05)])
    noise = 0.6 * value_noise(rng, TEXTURE_SIZE) + 0.4 * rng.random((TEXTURE_SIZE, TEXTURE_SIZE))
    return _tint(noise, base, 0.5)


def grass(rng: np.random.Generator) -> np.ndarray:
    base = np.array([rng.uniform(70, 120), rng.uniform(120, 170), rng.uniform(40, 80)])
    noise = 0.7 * value_noise(rng, TEXTURE_SIZE) + 0.3 * rng.random((TEXTURE_SIZE, TEXTURE_SIZE))
    return _tint(noise, base, 0.8)


def paving(rng: np.random.Generator) -> np.ndarray:
    """Grey slabs with darker joints."""
    grey = rng.uniform(140, 200)
    img = _tint(value_noise(rng, TEXTURE_SIZE), np.array([grey, grey * 0.97, grey * 0.93]), 0.3)
    step = TEXTURE_SIZE // 4
    img[::step, :] = img[::step, :] * 0.6
    img[:, ::step] = img[:, ::step] * 0.6
    return img


def facade(rng: np.random.Generator) -> np.ndarray:
    """Wall colour with a grid of windows."""
    wall = rng.uniform(90, 220, size=3)
    img = _tint(value_noise(rng, TEXTURE_SIZE), wall, 0.3)
    glass = rng.uniform(30, 90, size=3)
    rows, cols = int(rng.integers(3, 7)), int(rng.integers(3, 7))
    ch, cw = TEXTURE_SIZE // rows, TEXTURE_SIZE // cols
    for r in range(rows):
        for c in range(cols):
            y0, x0 = r * ch + ch // 4, c * cw + cw // 4
            img[y0 : y0 + ch // 2, x0 : x0 + cw // 2] = glass
    return img


def foliage(rng: np.random.Generator) -> np.ndarray:
    base = np.array([rng.uniform(30, 80), rng.uniform(80, 140), rng.uniform(20, 60)])
    return _tint(
        rng.random((TEXTURE_SIZE, TEXTURE_SIZE)) * 0.5 + value_noise(rng, TEXTURE_SIZE) * 0.5, base, 1.0
    )


def bark(rng: np.random.Generator) -> np.ndarray:
    base = np.array([rng.uniform(70, 110), rng.uniform(50, 75), rng.uniform(30, 50)])
    stripes = cv2.resize(rng.random((1, 16), dtype=np.float32), (TEXTURE_SIZE, TEXTURE_SIZE))
    return _tint(0.5 * stripes + 0.5 * value_noise(rng, TEXTURE_SIZE), base, 0.7)


def clothing(rng: np.random.Generator) -> np.ndarray:
    return _tint(value_noise(rng, TEXTURE_SIZE, octaves=2), rng.uniform(20, 230, size=3), 0.4)


TEXTURE_KINDS = {
    "asphalt": asphalt,
    "grass": grass,
    "paving": paving,
    "facade": facade,
    "foliage": foliage,
    "bark": bark,
    "clothing": clothing,
}


def write_texture(image: np.ndarray, path: Path) -> Path:
    """Write an RGB texture to ``path`` (PNG) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write texture {path}")
    return path


# The held-out domain's texture family (sim/domains.py): each restyle keeps the training texture's
# light/dark detail (windows stay windows) but repaints it in another palette and adds a pattern the
# training textures never have. Drawn from its own generator so the scene layout, which shares the
# world's generator with the training textures, is the same in both domains for one seed.


def _detail(image: np.ndarray) -> np.ndarray:
    """Luminance relative to its mean (1 = average), HxW float32."""
    lum = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return lum / max(float(lum.mean()), 1.0)


def _paint(detail: np.ndarray, colour: np.ndarray, contrast: float) -> np.ndarray:
    img = colour[None, None, :] * (1.0 + contrast * (detail[..., None] - 1.0))
    return np.clip(img, 0, 255).astype(np.uint8)


def _cracks(rng: np.random.Generator, img: np.ndarray, count: int, shade: float) -> np.ndarray:
    """Dark random-walk lines (sealed cracks, bark furrows)."""
    out = img.copy()
    n = img.shape[0]
    for _ in range(count):
        point = rng.uniform(0, n, 2)
        heading = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(20, 60))):
            heading += rng.normal(0.0, 0.5)
            nxt = point + 2.0 * np.array([np.cos(heading), np.sin(heading)])
            a, b = np.rint(point).astype(int), np.rint(nxt).astype(int)
            cv2.line(out, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), (0, 0, 0), 1)
            point = nxt % n
    return np.where(out == 0, (img * shade).astype(np.uint8), img)


def _concrete(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Road: pale worn concrete with patches and sealed cracks instead of dark asphalt."""
    grey = rng.uniform(125, 160)
    img = _paint(_detail(image), np.array([grey * 1.04, grey, grey * 0.9]), 0.35)
    for _ in range(int(rng.integers(1, 4))):
        x, y = rng.integers(0, TEXTURE_SIZE - 32, 2)
        w, h = rng.integers(16, 48, 2)
        img[y : y + h, x : x + w] = (img[y : y + h, x : x + w] * rng.uniform(0.7, 0.85)).astype(np.uint8)
    return _cracks(rng, img, int(rng.integers(3, 7)), 0.45)


def _dry_grass(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Terrain: dry ochre grass with large bare-earth blotches."""
    straw = np.array([rng.uniform(150, 185), rng.uniform(125, 150), rng.uniform(60, 85)])
    earth = np.array([rng.uniform(95, 120), rng.uniform(70, 90), rng.uniform(45, 60)])
    blend = np.clip((value_noise(rng, TEXTURE_SIZE, octaves=2) - 0.35) * 3.0, 0, 1)[..., None]
    colour = (1 - blend) * straw + blend * earth
    return np.clip(colour * (1.0 + 0.6 * (_detail(image)[..., None] - 1.0)), 0, 255).astype(np.uint8)


def _brick_pavers(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Sidewalk: red brick pavers in running bond with pale mortar, instead of grey slabs."""
    red = np.array([rng.uniform(150, 185), rng.uniform(65, 90), rng.uniform(50, 70)])
    img = _paint(_detail(image), red, 0.3).astype(np.float32)
    rows, cols = 8, 4
    bh, bw = TEXTURE_SIZE // rows, TEXTURE_SIZE // cols
    for r in range(rows):
        shift = (bw // 2) * (r % 2)
        for c in range(-1, cols):
            x0 = c * bw + shift
            sl = (slice(r * bh, (r + 1) * bh), slice(max(x0, 0), max(min(x0 + bw, TEXTURE_SIZE), 0)))
            img[sl] *= rng.uniform(0.8, 1.15)
            img[r * bh, :] = 200.0
            if 0 <= x0 < TEXTURE_SIZE:
                img[r * bh : (r + 1) * bh, x0] = 200.0
    return np.clip(img, 0, 255).astype(np.uint8)


def _siding(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Buildings: earth-tone or pastel walls with horizontal siding courses; the windows stay."""
    palette = np.array([[185, 150, 110], [150, 170, 160], [200, 185, 150], [120, 95, 80], [170, 120, 100]])
    colour = palette[int(rng.integers(len(palette)))] * rng.uniform(0.85, 1.1)
    img = _paint(_detail(image), colour, 0.9)
    step = int(rng.integers(4, 8))
    img[::step, :] = (img[::step, :] * 0.75).astype(np.uint8)
    return img


def _autumn(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Vegetation: autumn leaves (orange, red, yellow) instead of green."""
    colour = np.array([rng.uniform(160, 210), rng.uniform(70, 150), rng.uniform(20, 50)])
    return _paint(_detail(image), colour, 1.0)


def _pale_bark(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Tree trunks: pale grey bark with dark furrows."""
    grey = rng.uniform(150, 190)
    return _cracks(rng, _paint(_detail(image), np.array([grey, grey, grey * 0.95]), 0.4), 6, 0.3)


def _muted(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Clothing: dark, muted winter colours."""
    return _paint(_detail(image), rng.uniform(25, 110, size=3), 0.5)


RESTYLE_KINDS = {
    "asphalt": _concrete,
    "grass": _dry_grass,
    "paving": _brick_pavers,
    "facade": _siding,
    "foliage": _autumn,
    "bark": _pale_bark,
    "clothing": _muted,
}


def restyle(kind: str, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The held-out domain's version of a training texture of ``kind`` (RGB uint8, same size)."""
    return RESTYLE_KINDS[kind](rng, image)
