"""The stereo probes themselves against known answers: a real matcher passes them, a guess does not."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mtl_perception.probes import d1_error, random_dot_stereogram, run_probes, shifted_pair

SIZE = (96, 192)
MAX_DISPARITY = 40


def block_matcher(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Winner-take-all SAD over 5x5 windows, 0..MAX_DISPARITY: matching and nothing else."""
    gray_left = left.mean(axis=2, dtype=np.float32)
    gray_right = right.mean(axis=2, dtype=np.float32)
    costs = np.full((MAX_DISPARITY + 1, *gray_left.shape), np.inf, np.float32)
    for d in range(MAX_DISPARITY + 1):
        difference = np.abs(gray_left[:, d:] - gray_right[:, : gray_right.shape[1] - d])
        costs[d, :, d:] = cv2.boxFilter(difference, -1, (5, 5))
    return costs.argmin(axis=0).astype(np.float32)


def monocular_guess(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """What a network that learned the road's shape outputs: disparity from the row, right view unused."""
    rows = np.linspace(0.0, MAX_DISPARITY / 2, left.shape[0], dtype=np.float32)
    return np.repeat(rows[:, None], left.shape[1], axis=1)


def scene() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    layered_left, layered_right, _, _ = random_dot_stereogram(SIZE, MAX_DISPARITY, rng)
    return layered_left, layered_right


def test_a_matcher_passes_every_probe() -> None:
    report = run_probes(block_matcher, SIZE, MAX_DISPARITY, scene())
    assert report.passed, report.summary()
    for d, median in report.shift.items():
        assert median == pytest.approx(d, abs=0.5)
    assert report.random_dots_d1 < 0.02 and report.random_dots_density == 1.0


def test_a_monocular_guess_fails_every_probe() -> None:
    report = run_probes(monocular_guess, SIZE, MAX_DISPARITY, scene())
    assert not report.passed
    assert all(change == 0.0 for change in report.right_view.values())
    assert sum(abs(median - d) > 1.0 for d, median in report.shift.items()) >= len(report.shift) - 1
    assert report.random_dots_d1 > 0.5
    failed = "\n".join(report.failures)
    assert "right view black" in failed and "random-dot" in failed


def test_shifted_pair_geometry() -> None:
    left, right = shifted_pair(SIZE, 7, np.random.default_rng(0))
    np.testing.assert_array_equal(left[:, 7:], right[:, :-7])  # left x shows right x - 7


def test_random_dot_truth_and_occlusions() -> None:
    left, right, truth, visible = random_dot_stereogram(SIZE, MAX_DISPARITY, np.random.default_rng(1))
    assert len(np.unique(truth)) == 4  # a background and three planes in front of it
    rows, cols = np.nonzero(visible)
    sources = cols - truth[rows, cols].astype(int)
    np.testing.assert_array_equal(left[rows, cols], right[rows, sources])  # every scored pixel matches
    assert 0.7 < visible.mean() < 1.0  # the left margin and occluded background are not scored
    assert d1_error(truth, truth, visible) == 0.0
    assert d1_error(truth + 4, truth, visible) == 1.0  # 4 px is over 3 px and over 5 % of <= 32 px


def test_evaluate_reports_the_probes_of_any_source(tmp_path, capsys: pytest.CaptureFixture) -> None:
    import json

    from mtl_perception.cli import main

    out = tmp_path / "probes.json"
    args = ["evaluate", "--baseline", "sgbm", "--probes", "--size", "96", "192", "--max-disparity", "40"]
    assert main([*args, "--json", str(out)]) == 0
    probes = json.loads(out.read_text())["probes"]
    # SGBM matches: the shifts come back exactly and the right view matters.
    for d, median in probes["shift_median_prediction_px"].items():
        assert median == pytest.approx(int(d), abs=0.5)
    assert min(probes["right_view_change_of_range"].values()) >= 0.25
    assert "stereo probes:" in capsys.readouterr().out
    assert main(["evaluate", "--baseline", "sgbm"]) == 2  # neither --data nor --probes
