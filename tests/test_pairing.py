"""data/pairing.py: faint, noisy Y1 twins are still recognised; another order is not."""
import numpy as np
import pytest

from jaxrobust.data import pairing


def _faint_pairs(n=64, size=100, seed=0, noise=1.5):
    """Y10 and Y1 NCHW stamps of n faint blobs of random position and width; Y1 has 10x the
    relative noise of Y10 (a tenth of the exposure), at a level where single pixels are noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    centres = rng.uniform(25, 75, (n, 2))
    widths = rng.uniform(4, 15, n)
    blobs = np.exp(-((yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2)
                   / (2 * widths[:, None, None] ** 2))
    blobs = np.repeat(blobs[:, None], 3, axis=1)
    y10 = blobs + rng.normal(0, noise, blobs.shape)
    y1 = blobs + rng.normal(0, noise * np.sqrt(10), blobs.shape)
    return y10, y1


def test_coarse_cells_average_blocks_of_each_band():
    stamps = np.arange(2 * 3 * 20 * 20, dtype=float).reshape(2, 3, 20, 20)
    cells = pairing.coarse(stamps, cells=10)
    assert cells.shape == (2, 3, 10, 10)
    assert cells[1, 2, 3, 4] == stamps[1, 2, 6:8, 8:10].mean()
    np.testing.assert_array_equal(pairing.coarse(np.moveaxis(stamps, 1, -1), cells=10), cells)


def test_noisy_twins_are_accepted_where_raw_pixels_would_refuse_them():
    y10, y1 = _faint_pairs()
    raw = pairing.matched_wins(y10, y1)
    assert raw < pairing.MIN_MATCHED_WINS  # the case the cells are for
    assert pairing.same_galaxies_problem(y10, y1, "Y10.npy", "Y1.npy") is None


def test_noisy_twins_in_another_order_are_refused():
    y10, y1 = _faint_pairs()
    problem = pairing.same_galaxies_problem(y10, np.roll(y1, 1, axis=0), "Y10.npy", "Y1.npy")
    assert problem is not None and problem.startswith("Y1.npy")


def test_few_rows_are_refused_only_below_two_random_order_deviations():
    assert pairing.min_matched_wins(64) == pairing.MIN_MATCHED_WINS
    assert abs(pairing.min_matched_wins(8) - (0.5 + 2 * (1 / 96) ** 0.5)) < 1e-12


def test_two_swapped_rows_are_named():
    y10, y1 = _faint_pairs(n=16, noise=0.1)  # brighter: the blobs' shapes decide, not the noise
    swapped = y1.copy()
    swapped[[3, 11]] = swapped[[11, 3]]
    assert pairing.swapped_rows(y10, y1) is None
    assert pairing.swapped_rows(y10, swapped) == (3, 11)
    problem = pairing.same_galaxies_problem(y10, swapped, "Y10.npy", "Y1.npy")
    assert problem is not None and "rows 3 and 11" in problem


def test_pixel_noise_is_the_sd_of_gaussian_noise():
    noise = np.random.default_rng(1).normal(0, 2.5, (2, 3, 60, 60))
    noise[1, :, 20:40, 20:40] += 500.0  # a bright square: a minority of the differences
    np.testing.assert_allclose(pairing.pixel_noise(noise), [2.5, 2.5], rtol=0.05)


def test_a_rescaled_copy_has_no_noise_of_its_own():
    y10, y1 = _faint_pairs(n=16)
    assert pairing.rescaled_copies(y10, y1).size == 0
    scaled = y1.copy()
    scaled[5] = (y10[5] * 1.001).astype(np.float32)
    np.testing.assert_array_equal(pairing.rescaled_copies(y10, scaled), [5])
    # a bright point source observed twice: 1 - r ~ 1e-7, yet each depth has its own Poisson noise
    rng = np.random.default_rng(4)
    point = np.zeros((4, 3, 12, 12))
    point[:, :, 6, 6] = 1e6
    sky = 12720.0
    assert pairing.rescaled_copies(rng.poisson(10 * (point + sky)) - 10 * sky, rng.poisson(point + sky) - sky).size == 0
    problem = pairing.same_galaxies_problem(y10, y10 * 1.001, "Y10.npy", "Y1.npy")
    assert problem.startswith("Y1.npy: row 0 is row 0 of Y10.npy rescaled") and "16 of 16" in problem


def test_noise_ratio_of_a_tenth_of_the_exposure():
    """Poisson counts of one blob at 1 and 10 years (sky included): Y1's relative noise is
    sqrt(10) times Y10's; exchanged depths score 1 / sqrt(10) and are refused."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:60, :60] - 29.5
    blob = 200.0 * np.exp(-(xx ** 2 + yy ** 2) / (2 * 6.0 ** 2))
    expected = np.repeat(blob[None, None], 3, axis=1).repeat(12, axis=0) * rng.uniform(0.5, 2.0, (12, 1, 1, 1))
    sky = 50.0
    y1 = rng.poisson(expected + sky) - sky
    y10 = rng.poisson(10 * (expected + sky)) - 10 * sky
    assert pairing.noise_ratio(y10, y1) == pytest.approx(np.sqrt(10), rel=0.15)
    problem = pairing.same_galaxies_problem(y1, y10, "Y10.npy", "Y1.npy")
    assert problem is not None and problem.startswith("Y1.npy: less noisy than Y10.npy")
