"""Tests of jaxrobust.data.morphology against numbers computed independently:
a hand-worked example and the class boundaries of Lotz et al. 2008 (ApJ 672,
177, eqs. 4-6), reference values on GalSim stamps built here, photutils for the
detection segmap and statmorph 0.7.2 for G and M20."""

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

try:
    from jaxrobust.data import morphology as mo
except ImportError:  # package not installed: use the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from jaxrobust.data import morphology as mo

import _galsim_stamps as stamps

# Spec 4.4: a 5 x 5 image whose segmap is the non-zero 3 x 3 block.
WORKED = np.array([[0, 0, 0, 0, 0],
                   [0, 1, 2, 1, 0],
                   [0, 2, 8, 3, 0],
                   [0, 1, 3, 6, 0],
                   [0, 0, 0, 0, 0]], dtype=float)


def _tie_image():
    image = WORKED.copy()
    image[2, 2] = 5.0   # 8 -> 5
    image[3, 3] = 5.0   # 6 -> 5
    return image


# ---- a hand-worked example ---------------------------------------------------

def test_worked_example_gini_and_m20():
    g = mo.gini(WORKED[1:4, 1:4])
    m = mo.m20(WORKED)
    assert g == pytest.approx(96 / (8 * 27), abs=1e-12)
    assert g == pytest.approx(0.44444, abs=5e-6)
    # centroid (60/27, 60/27); M_tot = 25.3333; bright set = the 8 alone
    assert m == pytest.approx(np.log10(8 * 2 * (2 - 60 / 27) ** 2 / (76 / 3)),
                              abs=1e-12)
    assert m == pytest.approx(-1.5060, abs=5e-5)
    assert float(mo.bulge_statistic(g, m)) == pytest.approx(-0.7163, abs=5e-5)
    assert float(mo.merger_statistic(g, m)) == pytest.approx(-0.0963, abs=5e-5)
    assert mo.classify(g, m) == 0
    assert mo.CLASS_NAMES[mo.classify(g, m)] == "spiral"


def test_worked_example_tie_puts_both_fives_in_bright_set():
    image = _tie_image()
    assert mo.gini(image[1:4, 1:4]) == pytest.approx(0.35870, abs=5e-6)
    assert mo.m20(image) == pytest.approx(-0.5577, abs=5e-5)


def test_m20_brute_force_on_random_image():
    rng = np.random.default_rng(3)
    image = np.zeros((12, 15))
    image[2:10, 3:13] = rng.exponential(1.0, (8, 10)) - 0.1
    y, x = np.indices(image.shape)
    total = image.sum()
    xc, yc = (image * x).sum() / total, (image * y).sum() / total
    r2 = (x - xc) ** 2 + (y - yc) ** 2
    order = np.argsort(image.ravel())[::-1]  # brightest first
    running = np.cumsum(image.ravel()[order])
    n_bright = np.searchsorted(running, 0.2 * total - 1e-12) + 1
    bright = order[:n_bright]
    expected = np.log10((image.ravel() * r2.ravel())[bright].sum()
                        / (image * r2).sum())
    assert mo.m20(image) == pytest.approx(expected, abs=1e-12)


def test_gini_of_uniform_values_is_zero_and_of_one_bright_pixel_is_one():
    assert mo.gini(np.full((7, 9), 123.4)) == pytest.approx(0.0, abs=1e-12)
    spike = np.zeros(50)
    spike[17] = 5.0
    assert mo.gini(spike) == pytest.approx(1.0, abs=1e-12)
    assert np.isnan(mo.gini([3.0]))
    assert np.isnan(mo.gini(np.zeros(10)))
    assert mo.gini([-1.0, 2.0, -3.0]) == pytest.approx(mo.gini([1, 2, 3]))


# ---- Lotz et al. 2008 class boundaries-------------------------------------------

def test_classify_on_both_sides_of_the_bulge_line():
    m20 = np.array([-2.5, -2.2, -1.9])
    g_line = 0.14 * m20 + 0.80          # F = 4.95 (G - 0.14 M20 - 0.80)
    assert np.allclose(mo.bulge_statistic(g_line, m20), 0.0, atol=1e-12)
    assert mo.classify(g_line + 1e-6, m20).tolist() == [1, 1, 1]
    assert mo.classify(g_line - 1e-6, m20).tolist() == [0, 0, 0]


def test_classify_on_both_sides_of_the_merger_line():
    m20 = np.array([-1.5, -1.0, -0.5])
    g_line = (0.327 - 0.139 * m20) / 0.990
    assert np.allclose(mo.merger_statistic(g_line, m20), 0.0, atol=1e-12)
    assert mo.classify(g_line + 1e-6, m20).tolist() == [2, 2, 2]
    assert mo.classify(g_line - 1e-6, m20).tolist() == [0, 0, 0]


def test_classify_at_and_around_the_crossing_point():
    g0, m0 = 0.565, -1.679
    assert float(mo.bulge_statistic(g0, m0)) == pytest.approx(0.0003, abs=5e-5)
    assert float(mo.merger_statistic(g0, m0)) == pytest.approx(-0.001, abs=5e-5)
    assert mo.classify(g0, m0) == 1          # F > 0, S < 0
    assert mo.classify(g0 + 0.01, m0) == 2   # above both: merger wins (S first)
    assert mo.classify(g0 - 0.01, m0) == 0
    assert mo.classify(0.7, -1.0) == 2       # F = 0.198 > 0 and S = 0.227 > 0
    assert mo.classify([np.nan, 0.5], [-2.0, np.nan]).tolist() == [-1, -1]


# ---- segmentation ------------------------------------------------------------

@pytest.fixture(scope="module")
def pair_stamp():
    profile = stamps.reference_models()["pair_3"][0]
    return stamps.draw(profile, seed=2)


def test_segment_galaxy_matches_photutils_detect_sources(pair_stamp):
    from astropy.convolution import Box2DKernel, convolve
    from photutils.segmentation import detect_sources

    image, sky_sigma = pair_stamp
    smoothed = convolve(image, Box2DKernel(3))
    segm = detect_sources(smoothed, 1.5 * sky_sigma, n_pixels=5)
    expected = segm.data == segm.data[50, 50]
    assert segm.data[50, 50] != 0
    np.testing.assert_array_equal(mo.segment_galaxy(image, sky_sigma), expected)


def test_segment_galaxy_raises_on_empty_stamp():
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 100.0, (100, 100))
    with pytest.raises(ValueError, match="no source"):
        mo.segment_galaxy(noise, 100.0, threshold_sigma=5.0)


def test_segment_galaxy_falls_back_to_largest_segment():
    image = np.zeros((40, 40))
    image[2:6, 2:6] = 10.0       # small
    image[25:35, 25:35] = 10.0   # large, not under the centre (20, 20)
    seg = mo.segment_galaxy(image, 1.0)
    assert seg[30, 30] and not seg[3, 3] and not seg[20, 20]


# ---- gini_m20 end to end -----------------------------------------------------

def test_flux_scaling_leaves_gini_and_m20_unchanged(pair_stamp):
    image, sky_sigma = pair_stamp
    seg = mo.segment_galaxy(image, sky_sigma)
    g, m = mo.gini_m20(image, seg)
    assert mo.gini_m20(4.0 * image, seg) == (g, m)  # power of 2: bit-exact
    g3, m3 = mo.gini_m20(3.7 * image, seg)
    assert g3 == pytest.approx(g, abs=1e-6)
    assert m3 == pytest.approx(m, abs=1e-6)
    assert mo.measure(3.7 * image, 3.7 * sky_sigma)["gini"] == \
        pytest.approx(g, abs=1e-6)


def test_gini_m20_failures_give_nan():
    image = np.ones((30, 30))
    assert np.isnan(mo.gini_m20(image, np.zeros((30, 30), bool))).all()
    seg = np.zeros((30, 30), bool)
    seg[10:20, 10:20] = True
    assert np.isnan(mo.gini_m20(-image, seg)).all()


def test_measure_batch_matches_measure(pair_stamp):
    image, sky_sigma = pair_stamp
    images = np.stack([image, image[::-1], np.zeros_like(image)])
    out = mo.measure_batch(images, [sky_sigma, sky_sigma, sky_sigma])
    one = mo.measure(image, sky_sigma)
    assert out["gini"][0] == one["gini"] and out["m20"][0] == one["m20"]
    assert out["F"][0] == one["F"] and out["S"][0] == one["S"]
    assert out["label"].tolist()[:1] == [one["label"]]
    assert np.isnan(out["gini"][2]) and out["label"][2] == -1
    assert out["label"].dtype.kind == "i"


# ---- geometry that stands in for photutils and skimage ----------------------

@pytest.mark.parametrize("a, elongation, theta", [
    (0.4, 1.0, 0.0), (1.3, 1.0, 0.0), (7.7, 1.6, 0.7), (23.2, 2.5, -1.2),
    (61.0, 4.0, 2.0), (95.0, 1.0, 0.0)])
def test_aperture_fraction_is_photutils_exact_overlap(a, elongation, theta):
    from photutils.aperture import EllipticalAperture

    center = (47.3, 52.8)
    expected = EllipticalAperture(center, a, a / elongation, theta=theta) \
        .to_mask(method="exact").to_image((100, 100))
    frac = mo._aperture_fraction((100, 100), center, a, elongation, theta)
    np.testing.assert_allclose(frac, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("shape, center, r", [
    ((44, 50), (21.3, 25.8), 17.6), ((80, 80), (40.27, 39.71), 47.3),
    ((30, 30), (14.5, 15.0), 3.2), ((20, 26), (9.9, 10.2), 40.0), ((9, 9), (4.0, 4.0), 0.3)])
def test_disc_fraction_is_the_polygon_disc_overlap_of_every_pixel(shape, center, r):
    # The circle fast path (band pixels only, corners unrotated, one wedge
    # call) against the general ellipse geometry on every pixel of the window.
    y, x = np.indices(shape)
    everywhere = mo._pixel_ellipse_overlap(x.ravel().astype(float), y.ravel().astype(float),
                                           center, r, 1.0, 0.0).reshape(shape)
    frac = mo._disc_fraction(shape, center, r)
    np.testing.assert_allclose(frac, everywhere, rtol=0, atol=1e-12)
    assert frac.sum() == pytest.approx(everywhere.sum(), abs=1e-9)
    band = (frac > 0) & (frac < 1)
    np.testing.assert_array_equal(frac[band], everywhere[band])  # the same arithmetic


def test_curve_of_growth_equals_one_whole_stamp_bincount():
    rng = np.random.default_rng(11)
    image = rng.normal(1.0, 1.0, (53, 61))
    valid = rng.uniform(size=image.shape) > 0.1
    k = mo._SUBSAMPLE
    for center, elongation, theta, mask in [((30.2, 25.7), 1.0, 0.0, np.ones_like(valid)),
                                            ((12.9, 40.1), 2.3, 0.6, valid)]:
        sub = (np.arange(k) + 0.5) / k - 0.5
        x = (np.arange(image.shape[1])[:, None] + sub).reshape(1, -1)
        y = (np.arange(image.shape[0])[:, None] + sub).reshape(-1, 1)
        radius = np.sqrt(mo._ellip_radius2(x, y, center, elongation, theta))
        bins = (radius / mo._RADIUS_BIN).astype(np.int64).ravel()
        up = lambda a: np.kron(a, np.ones((k, k))).ravel()  # noqa: E731
        flux = np.bincount(bins, weights=up(image / k ** 2))
        area = np.bincount(bins, weights=up(mask / k ** 2), minlength=flux.size)
        edges, cum_flux, cum_area = mo._curve_of_growth(image, mask, center, elongation, theta)
        np.testing.assert_array_equal(edges, mo._RADIUS_BIN * np.arange(flux.size + 1))
        np.testing.assert_array_equal(cum_flux, np.concatenate(([0.0], np.cumsum(flux))))
        np.testing.assert_allclose(cum_area, np.concatenate(([0.0], np.cumsum(area))), rtol=1e-13)


def test_rotation_matches_skimage_rotate():
    from skimage.transform import rotate

    rng = np.random.default_rng(5)
    image = rng.normal(0.0, 1.0, (48, 60))
    mask = rng.uniform(size=(48, 60)) < 0.05
    rotator = mo._Rotator(image, mask)
    full = (slice(None), slice(None))
    for center in [(30.0, 24.0), (29.37, 25.81), (3.2, 40.6)]:
        np.testing.assert_allclose(
            rotator.bilinear(0, center, full),
            rotate(image, 180.0, center=center, order=1, clip=False),
            atol=1e-9)
        window = mo._circle_window(image.shape, center, 9.5)
        np.testing.assert_array_equal(rotator.bilinear(0, center, window),
                                      rotator.bilinear(0, center, full)[window])
        np.testing.assert_array_equal(
            rotator.nearest(1, center, full) >= 0.5,
            rotate(mask, 180.0, center=center) >= 0.5)


# ---- reference values on GalSim stamps (r = 16, Y1) ---------------------------

REFERENCE = stamps.reference_models()


def test_stamp_recipe_numbers():
    # Ivezić et al. 2019 m_sky with WLD's zero point: r-band Y1 sky 12,720 e-/pixel, an r = 16 galaxy 3.82e7 e-
    assert stamps.sky_level() == pytest.approx(12720, abs=1)
    assert stamps.total_flux(16.0) == pytest.approx(3.82e7, rel=2e-3)


@pytest.mark.parametrize("name", list(REFERENCE))
def test_reference_table(name):
    profile, (g_ref, m_ref), label = REFERENCE[name]
    for seed in (2, 3):
        image, sky_sigma = stamps.draw(profile, seed=seed)
        result = mo.measure(image, sky_sigma)
        assert result["gini"] == pytest.approx(g_ref, abs=0.01)
        assert result["m20"] == pytest.approx(m_ref, abs=0.05)
        assert result["label"] == label


# ---- agreement with statmorph ---------------------------------------------

def test_agreement_with_statmorph():
    statmorph = pytest.importorskip("statmorph")
    kinds = set()
    for index in range(12):
        image, sky_sigma, params = stamps.random_stamp(index, seed=7)
        kinds.add(params["intended"])
        seg = mo.segment_galaxy(image, sky_sigma)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sm = statmorph.source_morphology(image, seg.astype(np.int32),
                                             gain=1.0, skybox_size=16)[0]
        assert sm.flag <= 2 and sm.gini != -99.0 and sm.m20 != -99.0
        g, m = mo.gini_m20(image, seg)
        assert abs(g - sm.gini) < 0.01, params
        assert abs(m - sm.m20) < 0.05, params
        assert mo.classify(g, m) == mo.classify(sm.gini, sm.m20), params
    assert kinds == set(mo.CLASS_NAMES)
