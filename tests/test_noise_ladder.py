"""jaxrobust.data.noise_ladder: Y10 stamps brought to t of ten years' exposure.

The sky level is recomputed here from the survey's inputs (exposure per year, zero points and
dark-sky brightness of Ivezić et al. 2019 Table 1-2 and WeakLensingDeblending's LSST zero
points), B = t ZP24 10^(-0.4 (m_sky - 24)) A_pix, and checked against the simulator's function and
the spec's table; the ladder's variance is then checked against it with tolerances from the
sample size (the standard error of a sample variance, sqrt(2 / (n - 1)) sigma^2 for near-Gaussian
counts of thousands of electrons).
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from jaxrobust.data import simulate
from jaxrobust.data.noise_ladder import noise_ladder

T_YEAR_S = np.array([240.0, 552.0, 552.0])  # g, r, i
ZP24 = np.array([50.70, 43.70, 32.36])  # e-/s at AB 24
SKY_MAG = np.array([22.26, 21.20, 20.48])  # mag / arcsec^2
SKY_TABLE_Y1 = np.array([2417.0, 12720.0, 18281.0])  # e-/pixel for 0.2" pixels, the spec's table


def sky_y1(area_arcsec2: float) -> np.ndarray:
    """One-year sky per pixel in e- (g, r, i), from the survey's inputs."""
    return T_YEAR_S * ZP24 * 10.0 ** (-0.4 * (SKY_MAG - 24.0)) * area_arcsec2


def y10_stamps(expected_y1: np.ndarray, sky: np.ndarray, seed: int) -> np.ndarray:
    """Y10 = Poisson(10 (I + B)) - 10 B per pixel, float32 (N, 3, H, W), as the simulator writes."""
    lam = 10.0 * (expected_y1 + sky[None, :, None, None])
    rng = np.random.default_rng(seed)
    return (rng.poisson(lam) - 10.0 * sky[None, :, None, None]).astype(np.float32)


def test_sky_formula_is_the_simulators():
    assert np.allclose(sky_y1(0.04), SKY_TABLE_Y1, rtol=1e-3)
    for area in (0.04, 1.0):
        assert np.allclose(simulate.sky_electrons_per_pixel("Y1", area), sky_y1(area), rtol=1e-12)


def test_ten_years_returns_the_y10_images_bit_for_bit():
    sky = sky_y1(1.0)  # the archive-like sky of configs/quick.py
    galaxy = np.zeros((5, 3, 16, 16))
    galaxy[:, :, 6:10, 6:10] = np.random.default_rng(0).uniform(1e3, 1e6, size=(5, 3, 1, 1))
    y10 = y10_stamps(galaxy, sky, seed=1)
    out = noise_ladder(y10, 10, sky, np.random.default_rng(2))
    assert out.dtype == y10.dtype and out.shape == y10.shape
    assert np.array_equal(out, y10)


@pytest.mark.parametrize("area", [0.04, 1.0])
def test_one_year_has_the_y1_noise_of_a_blank_sky(area):
    """Blank sky (I = 0): X_1 has mean 0 and variance B per band; the noise added to Y10 / 10 has
    variance 0.9 B."""
    sky = sky_y1(area)
    y10 = y10_stamps(np.zeros((8, 3, 50, 50)), sky, seed=3)  # 20,000 pixels per band
    x1 = noise_ladder(y10, 1, sky, np.random.default_rng(4)).astype(np.float64)
    n = x1.shape[0] * x1.shape[2] * x1.shape[3]
    se_var = np.sqrt(2.0 / (n - 1))  # relative standard error of a sample variance
    var = x1.var(axis=(0, 2, 3), ddof=1)
    assert np.all(np.abs(var / sky - 1) < 5 * se_var), (var, sky)
    mean = x1.mean(axis=(0, 2, 3))
    assert np.all(np.abs(mean) < 5 * np.sqrt(sky / n)), (mean, sky)
    added = (x1 - y10.astype(np.float64) / 10.0).var(axis=(0, 2, 3), ddof=1)
    assert np.all(np.abs(added / (0.9 * sky) - 1) < 5 * se_var), (added, 0.9 * sky)


@pytest.mark.parametrize("years", [1, 4, 7])
def test_t_years_on_a_constant_galaxy(years):
    """Constant source I on the sky: signal t I, variance t (I + B), added variance t (1 - t/10) (I + B)."""
    sky = sky_y1(1.0)
    source = np.array([5e3, 2e4, 3e4])  # one-year e-/pixel per band
    galaxy = np.broadcast_to(source[None, :, None, None], (8, 3, 50, 50))
    y10 = y10_stamps(galaxy, sky, seed=10 + years)
    x = noise_ladder(y10, years, sky, np.random.default_rng(20 + years)).astype(np.float64)
    n = x.shape[0] * x.shape[2] * x.shape[3]
    se_var = np.sqrt(2.0 / (n - 1))
    total = years * (source + sky)
    assert np.all(np.abs(x.mean(axis=(0, 2, 3)) - years * source) < 5 * np.sqrt(total / n))
    assert np.all(np.abs(x.var(axis=(0, 2, 3), ddof=1) / total - 1) < 5 * se_var)
    added = (x - years / 10.0 * y10.astype(np.float64)).var(axis=(0, 2, 3), ddof=1)
    assert np.all(np.abs(added / (years * (1 - years / 10.0) * (source + sky)) - 1) < 5 * se_var)


def test_one_year_counts_are_poisson():
    """At a sky of a few electrons the thinned counts X_1 + B follow Poisson(B) exactly, not only
    in their variance: a chi-square test against scipy's pmf."""
    sky = np.full(3, 3.0)
    y10 = y10_stamps(np.zeros((20, 3, 40, 40)), sky, seed=5)
    counts = (noise_ladder(y10, 1, sky, np.random.default_rng(6)).astype(np.float64) + 3.0).ravel()
    assert np.allclose(counts, np.rint(counts), rtol=0, atol=1e-3)  # whole electrons, float32 rounding aside
    counts = np.rint(counts)
    k = np.arange(9)
    observed = np.array([np.sum(counts == v) for v in k[:-1]] + [np.sum(counts >= k[-1])])
    pmf = np.append(stats.poisson.pmf(k[:-1], 3.0), stats.poisson.sf(k[-1] - 1, 3.0))
    assert stats.chisquare(observed, pmf * counts.size).pvalue > 1e-3


def test_wrong_sky_and_depth_are_refused():
    sky = sky_y1(1.0)
    y10 = y10_stamps(np.zeros((2, 3, 8, 8)), sky, seed=7)
    with pytest.raises(ValueError, match="whole number of electrons"):
        noise_ladder(y10, 5, sky_y1(0.04), np.random.default_rng(0))  # the physical sky, not this one
    for years in (0, -1, 10.5):
        with pytest.raises(ValueError, match="years must be in"):
            noise_ladder(y10, years, sky, np.random.default_rng(0))


def test_band_axis_last():
    """NHWC input (band_axis=-1) gets each band's own sky: variance B per band; the wrong axis is
    refused."""
    sky = sky_y1(1.0)
    nhwc = np.moveaxis(y10_stamps(np.zeros((8, 3, 50, 50)), sky, seed=8), 1, -1)
    x1 = noise_ladder(nhwc, 1, sky, np.random.default_rng(9), band_axis=-1).astype(np.float64)
    n = x1.size // 3
    assert np.all(np.abs(x1.var(axis=(0, 1, 2), ddof=1) / sky - 1) < 5 * np.sqrt(2.0 / (n - 1)))
    with pytest.raises(ValueError, match="one sky per band"):
        noise_ladder(nhwc, 1, sky, np.random.default_rng(9), band_axis=1)
    square = nhwc[:, :3, :3]  # (8, 3, 3, 3): the wrong axis has 3 entries, the skies do not fit
    with pytest.raises(ValueError, match="whole number of electrons"):
        noise_ladder(square, 1, sky, np.random.default_rng(9), band_axis=1)


def test_the_simulators_own_files():
    """On a dataset written by `jaxrobust simulate` (the sky of its config): the counts are whole
    electrons, t = 10 is the Y10 file itself and t = 1 has the Y1 file's sky-dominated variance."""
    import _tiny_dataset

    folder, info = _tiny_dataset.tiny_dataset()
    area = info["config"]["data"]["sky_area_per_pixel_arcsec2"]
    sky = sky_y1(area)
    y10 = np.load(folder / "images_Y10_train.npy")
    y1 = np.load(folder / "images_Y1_train.npy").astype(np.float64)
    assert np.array_equal(noise_ladder(y10, 10, sky, np.random.default_rng(0)), y10)
    x1 = noise_ladder(y10, 1, sky, np.random.default_rng(1)).astype(np.float64)
    # the corner 20 x 20 pixels: sky only in most stamps, variance ~ B; the same for the Y1 file
    corner = (slice(None), slice(None), slice(0, 20), slice(0, 20))
    for images in (x1, y1):
        var = np.median(images[corner].var(axis=(2, 3)), axis=0)  # per band, median over stamps
        assert np.all(np.abs(var / sky - 1) < 0.1), (var, sky)
    with pytest.raises(ValueError, match="whole number of electrons"):
        noise_ladder(y10, 1, sky_y1(0.04), np.random.default_rng(0))
