"""Real photographs that ship inside Debian and PyPI packages, with the one use each may serve.

Two lists, disjoint by name, file and content (``test/test_real_photos.py``):

* ``EVALUATION_PHOTOS``: street and urban scenes for judging semantics on real pictures
  (``benchmarks/real_semantics.py``). Evaluation only: never train, tune or select on them.
* ``TEXTURE_PHOTOS``: other pictures (no street scene, no stereo benchmark) that training may use as
  textures; ``texture_photos()`` loads those scikit-image ships in its wheel, with no download.

Stereo benchmark images (``STEREO_BENCHMARK_FILES``: the Middlebury pairs in scikit-image and
OpenCV's samples) belong to neither list: they are scored as stereo pairs (``benchmarks/real_pairs.py``).

Every entry names its package, its path inside the package (as ``dpkg -x`` or ``unzip`` lays it
out) and the sha256 of the file; a file with other bytes is refused. The Debian and PyPI photos
are not project dependencies; ``FETCH_COMMANDS`` unpacks them into a folder (``--photos-dir``).
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

EVALUATION = "evaluation"
TEXTURE = "texture"
USES = (EVALUATION, TEXTURE)

OPENCV_DOC = "opencv-doc 4.6.0+dfsg-12 (Debian bookworm)"
OPENCV_EXAMPLES = "usr/share/doc/opencv-doc/examples"
SCIKIT_IMAGE = "scikit-image (PyPI wheel; files bundled since 0.19)"

# Where the photos not installed with the project come from: run in an empty folder, then pass it
# as --photos-dir (the Debian package is 96 MB; only a few of its files are used).
FETCH_COMMANDS = "apt-get download opencv-doc=4.6.0+dfsg-12 && dpkg -x opencv-doc_4.6.0+dfsg-12_all.deb ."


@dataclass(frozen=True)
class PackagePhoto:
    """One photograph inside a package.

    ``kind`` is ``debian`` (``path`` relative to / once installed, or to the folder it was unpacked
    into) or ``pypi`` (``path`` starts with the importable top-level package). ``frame``: the frame
    of a video file used as the photo. ``function``: the ``skimage.data`` loader of the file.
    """

    name: str
    use: str
    kind: str
    package: str
    path: str
    sha256: str
    shows: str
    licence: str
    frame: int | None = None
    function: str | None = None

    @property
    def filename(self) -> str:
        return Path(self.path).name


EVALUATION_PHOTOS: tuple[PackagePhoto, ...] = (
    PackagePhoto(
        "leuven_street",
        EVALUATION,
        "debian",
        OPENCV_DOC,
        f"{OPENCV_EXAMPLES}/data/leuvenA.jpg",
        "b2977cdbd9fb3f94dadd6f76cf586d145676deb8a22b5f0f42149d21c058c09f",
        "cobbled street between brick houses (Leuven), overcast sky, a bicycle",
        "OpenCV sample data (Apache-2.0 / BSD distribution)",
    ),
    PackagePhoto(
        "parking_sign_street",
        EVALUATION,
        "debian",
        OPENCV_DOC,
        f"{OPENCV_EXAMPLES}/text/scenetext01.jpg",
        "7f3041a7019ab4d33d2452bc757d8c4f38616bfde71431e12f7ec370d7b2018e",
        "street side: a 'no parking' sign on a pole, a parked car, two people, trees, a building",
        "OpenCV sample data (Apache-2.0 / BSD distribution)",
    ),
    PackagePhoto(
        "roadside_barrier",
        EVALUATION,
        "debian",
        OPENCV_DOC,
        f"{OPENCV_EXAMPLES}/text/scenetext05.jpg",
        "63985ac1a9989a8320605d5be0ec285af0c6304a78cc9cc5de6c2c7c435f7c0b",
        "road and brick sidewalk seen from above, a yellow 'no parking' barrier",
        "OpenCV sample data (Apache-2.0 / BSD distribution)",
    ),
    PackagePhoto(
        "street_corner_pub",
        EVALUATION,
        "debian",
        OPENCV_DOC,
        f"{OPENCV_EXAMPLES}/text/scenetext06.jpg",
        "e4d64f10bbfb27b2c5980cb048fd0abe20dd74868ba5460298de473ced53b518",
        "street corner: house fronts, a pub sign, a parked red car, a road sign, sky",
        "OpenCV sample data (Apache-2.0 / BSD distribution)",
    ),
    PackagePhoto(
        "hotel_building",
        EVALUATION,
        "debian",
        OPENCV_DOC,
        f"{OPENCV_EXAMPLES}/data/building.jpg",
        "742a1baad62ac82e91e718e77eedf7e85c2eddc4badfb8c87c6cbc86c45a8b07",
        "a large building front, lawn, hedges and trees, a little sky",
        "OpenCV sample data (Apache-2.0 / BSD distribution)",
    ),
    PackagePhoto(
        "pedestrians_plaza",
        EVALUATION,
        "debian",
        OPENCV_DOC,
        f"{OPENCV_EXAMPLES}/data/vtest.avi",
        "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf",
        "first frame of OpenCV's pedestrian video: people walking on paved paths and a road seen "
        "from a high camera, lawns, lamp posts, low buildings",
        "OpenCV sample data (Apache-2.0 / BSD distribution)",
        frame=0,
    ),
)


def _skimage(name: str, filename: str, shows: str) -> PackagePhoto:
    # sha256 of the file in scikit-image 0.26.0's wheel (the same as its data registry lists).
    return PackagePhoto(
        name,
        TEXTURE,
        "pypi",
        SCIKIT_IMAGE,
        f"skimage/data/{filename}",
        _SKIMAGE_SHA256[filename],
        shows,
        "scikit-image data (public domain / CC0 / BSD, see skimage/data/README.txt)",
        function=name,
    )


_SKIMAGE_SHA256 = {
    "astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    "chelsea.png": "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
    "coffee.png": "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
    "rocket.jpg": "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
    "ihc.png": "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef",
    "retina.jpg": "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6",
    "hubble_deep_field.jpg": "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4",
    "brick.png": "7966caf324f6ba843118d98f7a07746d22f6a343430add0233eca5f6eaaa8fcf",
    "grass.png": "b6b6022426b38936c43a4ac09635cd78af074e90f42ffa8227ac8b7452d39f89",
    "gravel.png": "c48615b451bf1e606fbd72c0aa9f8cc0f068ab7111ef7d93bb9b0f2586440c12",
}

TEXTURE_PHOTOS: tuple[PackagePhoto, ...] = (
    _skimage("astronaut", "astronaut.png", "portrait of an astronaut with a flag (RGB)"),
    _skimage("chelsea", "chelsea.png", "a tabby cat (RGB)"),
    _skimage("coffee", "coffee.png", "a cup of coffee on a table (RGB)"),
    _skimage("rocket", "rocket.jpg", "a rocket on its launch pad, trees, sky (RGB)"),
    _skimage("immunohistochemistry", "ihc.png", "stained tissue under a microscope (RGB)"),
    _skimage("retina", "retina.jpg", "a human retina, fundus photograph (RGB)"),
    _skimage("hubble_deep_field", "hubble_deep_field.jpg", "galaxies, Hubble deep field (RGB)"),
    _skimage("brick", "brick.png", "a brick wall (grey)"),
    _skimage("grass", "grass.png", "grass close up (grey)"),
    _skimage("gravel", "gravel.png", "gravel close up (grey)"),
)

# Stereo (and optical-flow) benchmark images that ship in the same packages: never in either list.
STEREO_BENCHMARK_FILES = frozenset(
    {
        "motorcycle_left.png",  # Middlebury 2014 Motorcycle (skimage.data.stereo_motorcycle)
        "motorcycle_right.png",
        "motorcycle_disp.npz",
        "aloeL.jpg",  # Middlebury 2006 Aloe (OpenCV samples)
        "aloeR.jpg",
        "aloeGT.png",
        "tsukuba_l.png",  # Tsukuba (older OpenCV samples)
        "tsukuba_r.png",
        "rubberwhale1.png",  # Middlebury optical flow (OpenCV samples)
        "rubberwhale2.png",
        "basketball1.png",
        "basketball2.png",
    }
)
# sha256 of scikit-image 0.26.0's Middlebury Motorcycle views, so a renamed copy is caught too.
STEREO_BENCHMARK_SHA256 = frozenset(
    {
        "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179",
        "5fc913ae870e42a4b662314bc904d1786bcad8e2f0b9b67dba5a229406357797",
    }
)


class PhotoNotFoundError(LookupError):
    """A photo is not installed nor under the photos folder, or its bytes differ from the list's."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def candidate_paths(photo: PackagePhoto, photos_dir: Path | None = None) -> list[Path]:
    """Where the photo may be: under ``photos_dir`` (unpacked package), then where its package
    installs it (a Debian package under /, a PyPI package beside its importable module)."""
    paths = [Path(photos_dir) / photo.path] if photos_dir is not None else []
    if photo.kind == "debian":
        paths.append(Path("/") / photo.path)
    else:
        module, _, rest = photo.path.partition("/")
        spec = importlib.util.find_spec(module)  # locates the package without importing it
        if spec is not None and spec.submodule_search_locations:
            paths.extend(Path(location) / rest for location in spec.submodule_search_locations)
    return paths


def find_photo(photo: PackagePhoto, photos_dir: Path | None = None) -> Path:
    """The photo's file, its sha256 checked; PhotoNotFoundError says where it looked and how to get it."""
    paths = candidate_paths(photo, photos_dir)
    for path in paths:
        if path.is_file():
            digest = sha256_of(path)
            if digest != photo.sha256:
                raise PhotoNotFoundError(
                    f"{path}: sha256 {digest} is not the listed {photo.sha256} ({photo.package}); "
                    "another version of the file, not used"
                )
            return path
    looked = ", ".join(str(p) for p in paths) or "nowhere"
    raise PhotoNotFoundError(
        f"{photo.name}: {photo.path} from {photo.package} not found (looked in {looked}); "
        f"to get it, in an empty folder run:\n{FETCH_COMMANDS}\nand pass that folder as --photos-dir"
    )


def read_photo(path: Path, frame: int | None = None) -> np.ndarray:
    """HxWx3 uint8 RGB of an image file, or of one frame of a video file."""
    if frame is None:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise PhotoNotFoundError(f"{path}: OpenCV cannot read this image")
    else:
        capture = cv2.VideoCapture(str(path))
        try:
            capture.set(cv2.CAP_PROP_POS_FRAMES, frame)
            ok, bgr = capture.read()
        finally:
            capture.release()
        if not ok:
            raise PhotoNotFoundError(f"{path}: OpenCV cannot read frame {frame} of this video")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.shape[2] == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(image, dtype=np.uint8)


def load_photo(photo: PackagePhoto, photos_dir: Path | None = None) -> np.ndarray:
    """HxWx3 uint8 RGB of one listed photo (scikit-image ones through ``skimage.data``)."""
    path = find_photo(photo, photos_dir)
    if photo.function is not None:
        import skimage.data  # only after find_photo: a file not bundled would be downloaded

        return _as_rgb(getattr(skimage.data, photo.function)())
    return read_photo(path, photo.frame)


def load_listed_photos(
    photos_dir: Path | None, listed: tuple[PackagePhoto, ...] = EVALUATION_PHOTOS
) -> tuple[dict[str, tuple[PackagePhoto, np.ndarray]], dict[str, str]]:
    """(the photos of ``listed`` found, by name, with their images; the reasons of the missing ones)."""
    loaded, skipped = {}, {}
    for photo in listed:
        try:
            loaded[photo.name] = (photo, load_photo(photo, photos_dir))
        except PhotoNotFoundError as error:
            skipped[photo.name] = str(error)
    return loaded, skipped


def named_texture_photos() -> list[tuple[str, np.ndarray]]:
    """(name, HxWx3 uint8 RGB) of the texture photos bundled in the installed scikit-image wheel
    (grey ones replicated). Files scikit-image would download are skipped, so this never uses the
    network; an empty list when scikit-image is not installed."""
    photos = []
    for photo in TEXTURE_PHOTOS:
        try:
            photos.append((photo.name, load_photo(photo)))
        except PhotoNotFoundError:
            continue
    return photos


def texture_photos() -> list[np.ndarray]:
    """The images of ``named_texture_photos()``."""
    return [image for _, image in named_texture_photos()]
