"""Dice, HD95, lung_bbox and mask cleaning on cases computable by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import directed_hausdorff

from covidxray.lungs.metrics import boundary, dice, hd95
from covidxray.lungs.segment import clean_mask, lung_bbox


def _square(y0, x0, side, shape=(64, 64)):
    m = np.zeros(shape, bool)
    m[y0:y0 + side, x0:x0 + side] = True
    return m


def _disc(r, shape=(128, 128), centre=(64, 64)):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= r * r


def test_dice_by_hand():
    a, b = _square(10, 10, 10), _square(10, 15, 10)  # 100 px each, overlap 10 x 5 = 50
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0
    assert dice(a, np.zeros_like(a)) == 0.0
    assert dice(np.zeros_like(a), np.zeros_like(a)) == 1.0


def test_hd95_single_pixels_is_their_distance():
    a, b = np.zeros((32, 32), bool), np.zeros((32, 32), bool)
    a[10, 10], b[10, 17] = True, True
    assert hd95(a, b) == pytest.approx(7.0)
    b[10, 17], b[13, 14] = False, True  # a 3-4-5 triangle
    assert hd95(a, b) == pytest.approx(5.0)


def test_hd95_shifted_square_is_the_shift():
    # 20 x 20 square moved 3 px right: the side edges are 3 px apart, top/bottom edges mostly coincide;
    # 3 px is more than 5% of the boundary distances, so the 95th percentile is exactly 3
    a, b = _square(10, 10, 20), _square(10, 13, 20)
    assert hd95(a, b) == pytest.approx(3.0)
    assert hd95(a, a) == 0.0


def test_hd95_concentric_discs_and_bounded_by_hausdorff():
    a, b = _disc(30), _disc(25)
    assert 4.0 <= hd95(a, b) <= 6.0
    pa, pb = np.argwhere(boundary(a)), np.argwhere(boundary(b))
    full = max(directed_hausdorff(pa, pb)[0], directed_hausdorff(pb, pa)[0])
    assert hd95(a, b) <= full + 1e-9


def test_hd95_empty_cases():
    z, a = np.zeros((16, 16), bool), _square(2, 2, 5, (16, 16))
    assert hd95(z, z) == 0.0
    assert math.isinf(hd95(a, z)) and math.isinf(hd95(z, a))


def test_boundary_of_a_square_is_its_ring():
    assert boundary(_square(10, 10, 5)).sum() == 16  # 5 x 5 minus the 3 x 3 inside


def test_lung_bbox():
    m = np.zeros((100, 100), bool)
    m[10:20, 20:40] = True
    assert lung_bbox(m, 0.0) == (10, 20, 20, 40)
    assert lung_bbox(m, 0.1) == (9, 21, 18, 42)
    assert lung_bbox(m, 1.0) == (0, 30, 0, 60)  # clipped at the top and left edges
    assert lung_bbox(np.zeros((50, 70), bool), 0.2) == (0, 50, 0, 70)


def test_clean_mask_keeps_two_lungs_fills_holes_drops_specks():
    m = np.zeros((64, 64), bool)
    m[10:50, 5:25] = True      # left lung, with a hole
    m[20:30, 12:18] = False
    m[10:45, 35:55] = True     # right lung
    m[58:60, 2:4] = True       # speck
    m[2:5, 40:44] = True       # third, small component
    out = clean_mask(m)
    assert out[25, 15] and out[20, 40] and out[12, 10]
    assert not out[59, 3] and not out[3, 42]
    assert out.sum() == 40 * 20 + 35 * 20
