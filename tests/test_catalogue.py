"""The Pan-STARRS-like catalogue rendering (jaxrobust.data.catalogue) and its labels.

Numbers are recomputed here from the cited survey values (Chambers et al. 2016: 0.25" pixels,
i-band seeing 1.11", 5 sigma depth 23.1) or measured on GalSim drawings with NumPy.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from jaxrobust.data import catalogue, population, simulate

SPEC = simulate.SimulationSpec(seed=4, counts=(3, 2, 1), population="continuous", label_by="catalogue",
                               mag_r_range=(15.0, 18.0), sky_area_per_pixel_arcsec2=1.0)


def test_sky_sigma_from_the_5_sigma_depth():
    """5 sigma = flux of an i = 23.1 point source in an optimal aperture of 4 pi sigma_PSF^2."""
    sigma_px = 1.11 / (2 * math.sqrt(2 * math.log(2))) / 0.25
    expected = 10 ** (-0.4 * 23.1) / (5 * math.sqrt(4 * math.pi * sigma_px ** 2))
    assert catalogue.sky_sigma_per_pixel() == pytest.approx(expected, rel=1e-12)
    assert (catalogue.PIXEL_SCALE_ARCSEC, catalogue.PSF_FWHM_ARCSEC, catalogue.DEPTH_5SIGMA_AB) == (0.25, 1.11, 23.1)


def test_psf_fwhm_is_pan_starrs_i_band_seeing():
    scale, n = 0.01, 801
    image = catalogue.psf().drawImage(nx=n, ny=n, scale=scale, method="no_pixel").array
    profile = image[n // 2]
    above = np.flatnonzero(profile >= profile.max() / 2)
    assert (above[-1] - above[0] + 1) * scale == pytest.approx(1.11, abs=0.02)


def test_catalogue_stamp_geometry_and_flux():
    """80 x 0.25" pixels cover the LSST stamp's 20"; a point source keeps its flux (zero-point units)."""
    import galsim

    image = catalogue.render(galsim.DeltaFunction(flux=10 ** (-0.4 * 18.0)))
    assert image.shape == (80, 80) and 80 * 0.25 == pytest.approx(100 * simulate.PIXEL_SCALE_ARCSEC)
    assert image.sum() == pytest.approx(10 ** (-0.4 * 18.0), rel=2e-3)


def test_catalogue_noise_is_its_own_stream():
    """Gaussian sky noise of the stated sigma, drawn independently of the LSST noise streams."""
    empty = np.zeros((80, 80))
    sigma = catalogue.sky_sigma_per_pixel()
    noise = np.concatenate([catalogue.observe(empty, seed).ravel() for seed in range(20)])
    assert noise.std() == pytest.approx(sigma, rel=0.02)
    assert abs(noise.mean()) < 4 * sigma / math.sqrt(noise.size)
    np.testing.assert_array_equal(catalogue.observe(empty, 7), catalogue.observe(empty, 7))
    lsst = simulate.observe(np.zeros((1, 80, 80)), 7, "Y10", SPEC, bands=(2,))[0]
    assert abs(np.corrcoef(lsst.ravel(), catalogue.observe(empty, 7).ravel())[0, 1]) < 0.05


def test_catalogue_labels_disagree_with_the_stamp_sometimes():
    """The catalogue (1.11" seeing, 0.25" pixels, its own noise) and our Y10 stamp label the same
    galaxies differently now and then: label noise below 1 agreement, far above chance."""
    candidates = [simulate.simulate_population_candidate(SPEC, k) for k in range(16)]
    pairs = np.array([(c.catalogue["label"], c.stamp["label"]) for c in candidates])
    measured = pairs[(pairs >= 0).all(axis=1)]
    agreement = (measured[:, 0] == measured[:, 1]).mean()
    assert 0.4 < agreement < 1.0
    report = simulate.label_agreement(pairs[:, 0], pairs[:, 1])
    assert report["fraction"] == pytest.approx(agreement, abs=1e-4)
    assert report["galaxies"] == len(measured) and np.trace(report["counts"]) == (measured[:, 0] == measured[:, 1]).sum()


def test_catalogue_label_is_g_m20_of_its_own_rendering():
    """A candidate's catalogue G-M20 is morphology.measure on the catalogue image rebuilt here."""
    from jaxrobust.data import morphology

    c = simulate.simulate_population_candidate(SPEC, 3)
    profile = population.band_profiles(c.galaxy, SPEC.gsparams, bands=(2,))[0]
    image = catalogue.observe(catalogue.render(profile, SPEC.gsparams), c.seed)
    stats = morphology.measure(image, catalogue.sky_sigma_per_pixel())
    assert (stats["gini"], stats["m20"], stats["label"]) == pytest.approx(
        (c.catalogue["gini"], c.catalogue["m20"], c.catalogue["label"]), abs=1e-12)
    assert c.label == c.catalogue["label"] and c.gini == c.catalogue["gini"]


def test_brighter_catalogue_has_less_noise_in_its_labels():
    """catalogue_mag_shift < 0 shows the catalogue brighter galaxies: the same galaxy's G-M20
    then moves towards its noiseless value."""
    from jaxrobust.data import morphology

    bright = simulate.SimulationSpec(**{**SPEC.__dict__, "catalogue_mag_shift": -3.0})
    noiseless_far, noisy_far = [], []
    for k in range(6):
        c_plain = simulate.simulate_population_candidate(SPEC, k, open_classes=())  # catalogue only
        c_bright = simulate.simulate_population_candidate(bright, k, open_classes=())
        profile = population.band_profiles(c_plain.galaxy, SPEC.gsparams, bands=(2,))[0]
        clean = morphology.measure(catalogue.render(profile, SPEC.gsparams), catalogue.sky_sigma_per_pixel() * 1e-3)
        noisy_far.append(abs(c_plain.catalogue["gini"] - clean["gini"]))
        noiseless_far.append(abs(c_bright.catalogue["gini"] - clean["gini"]))
    assert np.mean(noiseless_far) < np.mean(noisy_far)
