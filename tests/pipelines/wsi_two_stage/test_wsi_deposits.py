"""Deposit measurement and AJCC class on analytic masks with known geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dicomnode.pipelines.wsi_two_stage.deposits import (
    find_deposits,
    max_feret_px,
    outline_px,
    slide_class,
)

MPP = 4.0  # µm per mask pixel


def disc(shape: tuple[int, int], centre: tuple[float, float], diameter_px: float) -> np.ndarray:
    """Pixels whose centre lies inside a disc (x, y centre in pixel-edge coordinates)."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]] + 0.5
    return (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 < (diameter_px / 2) ** 2


@pytest.mark.parametrize("diameter_px", [1.2, 3.0, 12.5, 40.0, 137.3])
def test_feret_of_disc_within_one_pixel(diameter_px: float) -> None:
    mask = disc((160, 160), (80.3, 79.6), diameter_px)
    assert abs(max_feret_px(mask) - diameter_px) <= 1.0


def test_feret_of_rectangle_is_its_diagonal() -> None:
    mask = np.zeros((50, 80), bool)
    mask[10:20, 5:65] = True  # 60 x 10 pixels
    assert max_feret_px(mask) == pytest.approx(math.hypot(59, 9) + 1, abs=1e-9)


def test_outline_encloses_the_pixels_of_a_square() -> None:
    mask = np.zeros((10, 10), bool)
    mask[2:5, 3:7] = True
    ring = outline_px(mask)
    assert np.array_equal(ring[0], ring[-1])
    xs, ys = ring[:, 0], ring[:, 1]
    # marching squares passes half-way between inside and outside pixel centres
    assert xs.min() == pytest.approx(3.0) and xs.max() == pytest.approx(7.0)
    assert ys.min() == pytest.approx(2.0) and ys.max() == pytest.approx(5.0)


def test_find_deposits_sizes_areas_and_order() -> None:
    prob = np.zeros((400, 600), np.float32)
    specs = [((100.0, 120.0), 30.0), ((400.0, 250.0), 160.0 / MPP * 4), ((520.0, 60.0), 2.0)]
    for centre, dia in specs:
        prob[disc(prob.shape, centre, dia)] = 0.8
    prob[300:302, 30:32] = 0.3  # below threshold: not a deposit
    deposits = find_deposits(prob, MPP, 0.5)
    assert [d.number for d in deposits] == [1, 2, 3]
    wanted = sorted(specs, key=lambda s: -s[1])
    for dep, (centre, dia) in zip(deposits, wanted, strict=True):
        assert abs(dep.largest_dimension_mm - dia * MPP / 1000) <= MPP / 1000
        true_area = math.pi * (dia / 2) ** 2 * (MPP / 1000) ** 2
        assert dep.area_mm2 == pytest.approx(true_area, rel=0.25, abs=2 * (MPP / 1000) ** 2)
        assert dep.centroid == pytest.approx(centre, abs=0.6)
        assert dep.max_probability == pytest.approx(0.8)


def test_touching_diagonally_is_one_deposit() -> None:
    prob = np.zeros((5, 5), np.float32)
    prob[1, 1] = prob[2, 2] = 1.0
    assert len(find_deposits(prob, MPP, 0.5)) == 1


@pytest.mark.parametrize(
    ("largest", "expected"),
    [
        (0.0, "none"),
        (0.05, "itc"),
        (0.2, "itc"),
        (0.2001, "micro"),
        (2.0, "micro"),
        (2.01, "macro"),
    ],
)
def test_slide_class_ajcc_limits(largest: float, expected: str) -> None:
    assert slide_class(largest, 0.2, 2.0) == expected
