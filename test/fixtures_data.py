"""Tiny datasets written in the exact on-disk layouts (synthetic, Cityscapes, KITTI 2015, Middlebury).

Each writer returns the ground truth it wrote so tests can check what the loaders decode.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from mtl_perception.data import layout
from mtl_perception.data.labels import CLASS_NAMES, class_table

HEIGHT, WIDTH = 32, 64

# KITTI 2015 scene-flow calibration of scene 000000 (P_rect_02 / P_rect_03 rows, shortened files).
KITTI_P2 = [721.5377, 0, 609.5593, 44.85728, 0, 721.5377, 172.854, 0.2163791, 0, 0, 1, 0.002745884]
KITTI_P3 = [721.5377, 0, 609.5593, -339.5242, 0, 721.5377, 172.854, 2.199936, 0, 0, 1, 0.002729905]
KITTI_BASELINE = (KITTI_P2[3] - KITTI_P3[3]) / KITTI_P2[0]


def write_png(path: Path, image: np.ndarray) -> None:
    """Write RGB (HxWx3) or single-channel images as PNG, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), image)


def random_rgb(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def random_disparity_png(rng: np.random.Generator) -> np.ndarray:
    """uint16 disparity * 256 with about a quarter of pixels invalid (0)."""
    raw = rng.integers(256, 40 * 256, (HEIGHT, WIDTH)).astype(np.uint16)
    raw[rng.random((HEIGHT, WIDTH)) < 0.25] = 0
    return raw


def striped_labels(class_ids: list[int]) -> np.ndarray:
    """Vertical stripes of the given ids over the image width; the last 4 columns are ignore (255)."""
    labels = np.full((HEIGHT, WIDTH), 255, dtype=np.uint8)
    columns = np.array_split(np.arange(WIDTH - 4), len(class_ids))
    for class_id, cols in zip(class_ids, columns, strict=True):
        labels[:, cols] = class_id
    return labels


def make_synthetic(
    root: Path,
    frames: dict[str, int] | None = None,
    train_classes: list[int] | None = None,
    fx: float = 40.0,
    baseline: float = 0.3,
    seed: int = 0,
) -> dict[str, dict]:
    """A synthetic dataset with one sequence per split; returns {"<seq>/<frame>": ground truth}."""
    frames = frames or {"train": 2, "val": 1}
    rng = np.random.default_rng(seed)
    truth: dict[str, dict] = {}
    manifest = {
        "format": layout.FORMAT,
        "version": layout.VERSION,
        "classes": class_table(),
        "splits": {},
        "sequences": {},
    }
    for split, count in frames.items():
        sequence = layout.sequence_name(split, 0)
        manifest["splits"][split] = [sequence]
        manifest["sequences"][sequence] = {"split": split, "seed": 1, "frames": count}
        calib = {"left": {}, "right": {}, "baseline": baseline, "fx": fx, "rate_hz": layout.RATE_HZ}
        calib |= {"width": WIDTH, "height": HEIGHT}
        layout.calib_path(root, split, sequence).parent.mkdir(parents=True, exist_ok=True)
        layout.calib_path(root, split, sequence).write_text(json.dumps(calib))
        steering_rows = [",".join(layout.STEERING_HEADER)]
        classes = (
            train_classes if split == "train" and train_classes is not None else list(range(len(CLASS_NAMES)))
        )
        for frame in range(count):
            steering = 0.01 * (frame + 1)
            steering_rows.append(f"{frame},{layout.frame_stamp_ns(frame)},{steering}")
            gt = {
                "left": random_rgb(rng),
                "right": random_rgb(rng),
                "disparity_png": random_disparity_png(rng),
                "depth_png": rng.integers(0, 60 * 256, (HEIGHT, WIDTH)).astype(np.uint16),
                "semantic": striped_labels(classes),
                "steering": steering,
            }
            for kind, key in [
                (layout.LEFT_DIR, "left"),
                (layout.RIGHT_DIR, "right"),
                (layout.DISPARITY_DIR, "disparity_png"),
                (layout.DEPTH_DIR, "depth_png"),
                (layout.SEMANTIC_DIR, "semantic"),
            ]:
                write_png(layout.frame_path(root, split, sequence, kind, frame), gt[key])
            truth[f"{sequence}/{frame}"] = gt
        layout.steering_path(root, split, sequence).write_text("\n".join(steering_rows) + "\n")
    layout.manifest_path(root).write_text(json.dumps(manifest))
    return truth


def make_cityscapes(root: Path, seed: int = 0) -> dict[str, dict]:
    """train (2 frames, gtFine + disparity), train_extra (1 frame, no gtFine); returns ground truth."""
    rng = np.random.default_rng(seed)
    truth = {}
    frames = [
        ("train", "aachen", "000000", "000019"),
        ("train", "aachen", "000001", "000019"),
        ("train_extra", "bad-honnef", "000000", "000042"),
    ]
    for split, city, sequence, frame in frames:
        base = f"{city}_{sequence}_{frame}"

        def path(folder: str, suffix: str, split: str = split, city: str = city, base: str = base) -> Path:
            return root / folder / split / city / f"{base}_{suffix}"

        raw_disparity = random_disparity_png(rng)
        # Cityscapes label ids: 7 road, 26 car, 0 unlabeled and 33 bicycle (not in the table).
        label_ids = rng.choice(np.array([7, 26, 0, 33], dtype=np.uint8), (HEIGHT, WIDTH))
        gt = {
            "left": random_rgb(rng),
            "right": random_rgb(rng),
            "raw_disparity": raw_disparity,
            "label_ids": label_ids,
            "fx": 2262.52,
            "baseline": 0.209313,
        }
        write_png(path("leftImg8bit", "leftImg8bit.png"), gt["left"])
        write_png(path("rightImg8bit", "rightImg8bit.png"), gt["right"])
        write_png(path("disparity", "disparity.png"), raw_disparity)
        if split != "train_extra":
            write_png(path("gtFine", "gtFine_labelIds.png"), label_ids)
        camera = {
            "extrinsic": {
                "baseline": gt["baseline"],
                "pitch": 0.038,
                "roll": 0.0,
                "x": 1.7,
                "y": 0.1,
                "yaw": -0.0195,
                "z": 1.22,
            },
            "intrinsic": {"fx": gt["fx"], "fy": 2265.30, "u0": 1096.98, "v0": 513.137},
        }
        path("camera", "camera.json").parent.mkdir(parents=True, exist_ok=True)
        path("camera", "camera.json").write_text(json.dumps(camera))
        truth[f"{city}_{sequence}/{int(frame)}"] = gt
    return truth


def _matrix_line(key: str, values: list[float]) -> str:
    return f"{key}: " + " ".join(f"{v:.6e}" for v in values)


def make_kitti2015(root: Path, seed: int = 0) -> dict[str, dict]:
    """training scene 000000 (scene-flow calib, semantic), 000001 (object-style calib, no semantic),
    testing scene 000000 (images + calib only); returns ground truth per "<split>/<scene>"."""
    rng = np.random.default_rng(seed)
    truth = {}
    for split, scene in [("training", "000000"), ("training", "000001"), ("testing", "000000")]:
        split_dir = root / split
        gt = {"left": random_rgb(rng), "right": random_rgb(rng)}
        write_png(split_dir / "image_2" / f"{scene}_10.png", gt["left"])
        write_png(split_dir / "image_3" / f"{scene}_10.png", gt["right"])
        write_png(split_dir / "image_2" / f"{scene}_11.png", random_rgb(rng))  # successor frame, no GT
        if split == "training":
            gt["raw_disparity"] = random_disparity_png(rng)
            write_png(split_dir / "disp_occ_0" / f"{scene}_10.png", gt["raw_disparity"])
        if scene == "000000":
            (split_dir / "calib_cam_to_cam").mkdir(parents=True, exist_ok=True)
            lines = [
                "calib_time: 09-Jan-2012 13:57:47",
                "corner_dist: 9.950000e-02",
                _matrix_line("P_rect_00", [*KITTI_P2[:3], 0.0, *KITTI_P2[4:]]),
                _matrix_line("P_rect_02", KITTI_P2),
                _matrix_line("P_rect_03", KITTI_P3),
            ]
            (split_dir / "calib_cam_to_cam" / f"{scene}.txt").write_text("\n".join(lines) + "\n")
        else:
            (split_dir / "calib").mkdir(parents=True, exist_ok=True)
            lines = [
                _matrix_line("P0", KITTI_P2),
                _matrix_line("P2", KITTI_P2),
                _matrix_line("P3", KITTI_P3),
                "R0_rect: 1 0 0 0 1 0 0 0 1",
            ]
            (split_dir / "calib" / f"{scene}.txt").write_text("\n".join(lines) + "\n")
        if split == "training" and scene == "000000":
            gt["label_ids"] = rng.choice(np.array([7, 11, 23, 4], dtype=np.uint8), (HEIGHT, WIDTH))
            write_png(split_dir / "semantic" / f"{scene}_10.png", gt["label_ids"])
        truth[f"{split}/{scene}"] = gt
    return truth


# Middlebury 2014 "Motorcycle" calib.txt numbers (full size); width/height/ndisp/vmin/vmax are the fixture's.
MIDDLEBURY_F, MIDDLEBURY_DOFFS, MIDDLEBURY_BASELINE_MM = 3979.911, 124.343, 193.001
MIDDLEBURY_CALIB = f"""cam0=[{MIDDLEBURY_F} 0 1244.772; 0 {MIDDLEBURY_F} 1019.507; 0 0 1]
cam1=[{MIDDLEBURY_F} 0 1369.115; 0 {MIDDLEBURY_F} 1019.507; 0 0 1]
doffs={MIDDLEBURY_DOFFS}
baseline={MIDDLEBURY_BASELINE_MM}
width={WIDTH}
height={HEIGHT}
ndisp=48
isint=0
vmin=1
vmax=40
dyavg=0
dymax=0
"""


def write_pfm(path: Path, array: np.ndarray) -> None:
    """A single-channel little-endian PFM ("Pf", scale -1) as the format stores it: rows bottom to top."""
    height, width = array.shape
    header = f"Pf\n{width} {height}\n-1.0\n".encode("ascii")
    path.write_bytes(header + np.flipud(array).astype("<f4").tobytes())


def random_disparity_pfm(rng: np.random.Generator) -> np.ndarray:
    """Float disparity 1..40 px; a fifth unknown as Middlebury writes it (inf), a few 0 and NaN too."""
    disparity = rng.uniform(1.0, 40.0, (HEIGHT, WIDTH)).astype(np.float32)
    draw = rng.random((HEIGHT, WIDTH))
    disparity[draw < 0.2] = np.inf
    disparity[(draw >= 0.2) & (draw < 0.22)] = 0.0
    disparity[(draw >= 0.22) & (draw < 0.24)] = np.nan
    return disparity


def write_middlebury_scene(
    scene: Path, rng: np.random.Generator, disparity_name: str | None = "disp0.pfm"
) -> dict[str, np.ndarray]:
    """One scene folder (im0.png, im1.png, calib.txt, the left disparity unless name is None)."""
    gt = {"left": random_rgb(rng), "right": random_rgb(rng)}
    write_png(scene / "im0.png", gt["left"])
    write_png(scene / "im1.png", gt["right"])
    (scene / "calib.txt").write_text(MIDDLEBURY_CALIB)
    if disparity_name is not None:
        gt["disparity"] = random_disparity_pfm(rng)
        write_pfm(scene / disparity_name, gt["disparity"])
        # The right view's map is part of the layout; the loader must not take it for the left one.
        write_pfm(scene / "disp1.pfm", random_disparity_pfm(rng))
    return gt


def make_middlebury(root: Path, seed: int = 0) -> dict[str, dict]:
    """MiddEval3-like root: trainingQ/{Motorcycle (disp0.pfm), Piano (disp0GT.pfm)}, testQ/Australia
    (no ground truth); returns ground truth per "<split>/<scene>"."""
    rng = np.random.default_rng(seed)
    scenes = [("trainingQ", "Motorcycle", "disp0.pfm"), ("trainingQ", "Piano", "disp0GT.pfm")]
    scenes.append(("testQ", "Australia", None))
    return {
        f"{split}/{scene}": write_middlebury_scene(root / split / scene, rng, name)
        for split, scene, name in scenes
    }


def dataset_files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path -> its bytes (to compare two generated datasets)."""
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()}
