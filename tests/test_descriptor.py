"""The native descriptor must match its numpy specification; the tests fail if it drifts."""

import numpy as np
import pytest

from egovlm import descriptor as d

THUMB_TOL = 1e-4  # luma levels; both sides divide the same int64 sums, float32 rounding only
SHARP_RTOL = 1e-9


def test_native_kernel_is_built():
    assert d.native_available(), "egovlm._native is missing: run `make setup` to build it"


@pytest.mark.parametrize("shape", [(480, 640), (720, 1280), (97, 131), (5, 7), (6, 6)])
def test_native_matches_reference_on_random_frames(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(3):
        frame = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        grid = (min(24, shape[0]), min(32, shape[1]))
        a, b = d.describe(frame, grid), d.describe_reference(frame, grid)
        np.testing.assert_allclose(a.thumb, b.thumb, atol=THUMB_TOL, rtol=0)
        assert a.sharpness == pytest.approx(b.sharpness, rel=SHARP_RTOL, abs=1e-12)


def test_reference_values_by_hand():
    frame = np.zeros((4, 8, 3), np.uint8)
    frame[:, 4:] = 255  # right half white
    ref = d.describe_reference(frame, (1, 2))
    np.testing.assert_allclose(ref.thumb, [[0.0, 255.0]])


def test_sharpness_drops_with_blur():
    import cv2

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    blurred = cv2.GaussianBlur(frame, (9, 9), 3)
    assert d.describe(blurred).sharpness < 0.1 * d.describe(frame).sharpness


def test_mean_abs_diff_matches_numpy():
    rng = np.random.default_rng(1)
    thumb = rng.random((24, 32), dtype=np.float32) * 255
    bank = rng.random((5, 24, 32), dtype=np.float32) * 255
    expected = np.abs(bank - thumb).mean(axis=(1, 2))
    np.testing.assert_allclose(d.mean_abs_diff(thumb, bank), expected, rtol=1e-5)
    assert d.mean_abs_diff(thumb, thumb)[0] == 0.0


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3), np.float32)]
)
def test_bad_frames_are_rejected(bad):
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        d.describe(bad)
