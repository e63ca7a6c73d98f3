"""Physics checks of jaxrobust.data.simulate against its primary sources.

Every expected number is recomputed here from the sources' inputs (Ivezić et al. 2019, ApJ 873,
111, Tables 1-2: exposure, median sky, theta_eff, m5; WeakLensingDeblending's LSST model, Sánchez
et al. 2021, descwl/survey.py: zero points, PSF; GalSim's CWW SEDs and LSST bandpasses: colours)
or measured with GalSim directly, never read back from the module under test. The range of the
normalised arrays (the published `update_sinh`) is checked here on simulated arrays; the percentile and stretch
arithmetic itself is tested in test_preprocess.py.
"""
from __future__ import annotations

import math

import galsim
import numpy as np
import pytest
from scipy import optimize

from jaxrobust.data import morphology, preprocess, simulate, store

import _tiny_dataset

BANDS = ("g", "r", "i")
DEPTHS = ("Y1", "Y10")
# Sky B in e-/pixel for 0.2" pixels: Ivezić et al. 2019 Table 2 m_sky with WLD's zero points.
SKY_TABLE = {"Y1": (2417.0, 12720.0, 18281.0), "Y10": (24170.0, 127198.0, 182813.0)}
SKY_RATE_TABLE = (10.07, 23.04, 33.12)  # e-/s/pixel
# Exposure per year (Ivezić et al. 2019 Table 1 visits / 10 x 30 s), WLD zero points, total PSF FWHM
# (measured on a GalSim drawing of WLD's PSF).
T_YEAR_S = np.array([240.0, 552.0, 552.0])
ZP24 = np.array([50.70, 43.70, 32.36])
PSF_FWHM_ARCSEC = (0.821, 0.790, 0.759)
# Computed with GalSim's CWW SEDs at z = 0.05 through its LSST bandpasses: (g - r, r - i) and e- ratios (g/r, i/r) at equal exposure, per SED.
SED_TABLE = {
    "CWW_E_ext": ((0.819, 0.399), (0.546, 1.069)),
    "CWW_Sbc_ext": ((0.497, 0.332), (0.734, 1.005)),
    "CWW_Scd_ext": ((0.379, 0.215), (0.818, 0.903)),
    "CWW_Im_ext": ((0.163, 0.213), (0.998, 0.901)),
}
N_PIX = 100 * 100
SPEC = simulate.SimulationSpec()  # LSST pixels (sky area 0.04 arcsec^2), paper defaults


def expected_flux(mag_r: float, sed: str, years: int = 1) -> np.ndarray:
    """Total e- per band from the sources' numbers: t * ZP24 * 10^(-0.4 (m_b - 24)) (WLD descwl/survey.py)."""
    g_r, r_i = SED_TABLE[sed][0]
    mags = np.array([mag_r + g_r, mag_r, mag_r - r_i])
    return years * T_YEAR_S * ZP24 * 10.0 ** (-0.4 * (mags - 24.0))


def one_component_galaxy(mag_r=18.0, kind="sersic", sed="CWW_E_ext", hlr=0.3) -> dict:
    """A galaxy dict of simulate.draw_galaxy's format with one round component at the centre."""
    comp = dict(kind=kind, n=4.0, hlr=hlr, sed=sed, frac=1.0)
    return dict(intended_class=simulate.ELLIPTICAL, mag_r=mag_r, jitter_arcsec=[0.0, 0.0],
                components=[comp])


def noiseless(monkeypatch):
    """Makes observe() return its scaled expected image unchanged (no Poisson draw)."""
    monkeypatch.setattr(simulate, "add_noise", lambda expected_e, sky_e, rng: np.array(expected_e))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


# --- Sky numbers and Poisson noise of empty stamps ---
@pytest.mark.parametrize("depth", DEPTHS)
def test_sky_level_matches_spec_table(depth):
    sky = simulate.sky_electrons_per_pixel(depth, 0.04)
    np.testing.assert_allclose(sky, SKY_TABLE[depth], rtol=5e-3)
    rate = sky / (simulate.DEPTH_YEARS[depth] * T_YEAR_S)
    np.testing.assert_allclose(rate, SKY_RATE_TABLE, rtol=5e-3)
    # The archive-emulation knob scales the sky linearly with the area per pixel (docs/data.md).
    np.testing.assert_allclose(simulate.sky_electrons_per_pixel(depth, 1.0), sky / 0.04, rtol=1e-12)


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("band", range(3))
def test_empty_stamp_mean_and_variance(band, depth):
    sky = simulate.sky_electrons_per_pixel(depth, 0.04)[band]
    noise = simulate.add_noise(np.zeros((100, 100)), sky, np.random.default_rng([band, len(depth)]))
    assert abs(noise.mean()) < 4 * math.sqrt(sky) / 100
    assert noise.var(ddof=1) == pytest.approx(sky, rel=0.05)


def test_empty_stamp_variance_ratio_y10_over_y1():
    """observe() on an empty stamp: var(Y10) / var(Y1) = 10 within 7 % per band."""
    empty = np.zeros((3, 100, 100))
    y1 = simulate.observe(empty, 1234, "Y1", SPEC)
    y10 = simulate.observe(empty, 1234, "Y10", SPEC)
    for band in range(3):
        assert abs(y1[band].mean()) < 4 * math.sqrt(SKY_TABLE["Y1"][band]) / 100
        assert y1[band].var(ddof=1) == pytest.approx(SKY_TABLE["Y1"][band], rel=0.05)
        assert y10[band].var(ddof=1) / y1[band].var(ddof=1) == pytest.approx(10.0, rel=0.07)


def test_noise_is_poisson_not_gaussian():
    """g Y1, 10^6 empty pixels: sample skewness = 1/sqrt(B) = 0.0203 within 0.008 (Poisson, not Gaussian)."""
    sky = simulate.sky_electrons_per_pixel("Y1", 0.04)[0]
    assert 1 / math.sqrt(SKY_TABLE["Y1"][0]) == pytest.approx(0.0203, abs=5e-5)
    x = simulate.add_noise(np.zeros((100, 100, 100)), sky, np.random.default_rng(5))
    d = x - x.mean()
    skewness = np.mean(d ** 3) / np.mean(d ** 2) ** 1.5
    assert skewness == pytest.approx(0.0203, abs=0.008)
    assert np.all(x == np.round(x + sky) - sky)  # whole electrons before the sky subtraction


# --- Flux ---
@pytest.mark.parametrize("band", range(3))
def test_point_source_keeps_flux(band, monkeypatch):
    """A point source through draw_expected's PSF and drawing keeps >= 0.998 of F_b."""
    monkeypatch.setattr(simulate, "_component_profile",
                        lambda comp, gsparams: galsim.DeltaFunction(gsparams=gsparams))
    galaxy = one_component_galaxy(mag_r=17.0, kind="point")
    image = simulate.draw_expected(galaxy, SPEC, bands=(band,))[0]
    flux = expected_flux(17.0, "CWW_E_ext")[band]
    assert 0.998 * flux <= image.sum() <= flux
    assert image.dtype == np.float64


def test_point_source_drawn_directly_with_galsim():
    """Same check without the module's drawing code: GalSim DeltaFunction (x) band_psf."""
    for band in range(3):
        flux = expected_flux(16.0, "CWW_E_ext")[band]
        profile = galsim.Convolve(galsim.DeltaFunction(flux=flux), simulate.band_psf(band, SPEC.gsparams),
                                  gsparams=SPEC.gsparams)
        image = profile.drawImage(nx=100, ny=100, scale=0.2, dtype=np.float64).array
        assert 0.998 * flux <= image.sum() <= flux


@pytest.mark.parametrize("intended", range(3))
def test_galaxy_stamp_sums_to_at_most_its_flux(intended):
    """A drawn galaxy's noiseless stamp holds at most its total flux F_b."""
    for seed in range(3):
        galaxy = simulate.draw_galaxy(np.random.default_rng([intended, seed]), intended, SPEC)
        total = sum(expected_flux(galaxy["mag_r"] - 2.5 * math.log10(c["frac"]), c["sed"])
                    for c in galaxy["components"])
        sums = simulate.draw_expected(galaxy, SPEC).sum(axis=(1, 2))
        assert np.all(sums <= total * (1 + 1e-9)), (sums / total, galaxy)
        assert np.all(sums >= 0.5 * total), (sums / total, galaxy)  # most of it is in the stamp


# --- PSF ---
def half_max_radius(profile_1d: np.ndarray) -> float:
    """Radius in pixels where a profile starting at its peak first falls to half (linear interp)."""
    half = profile_1d[0] / 2
    k = int(np.argmax(profile_1d < half))
    return (k - 1) + (profile_1d[k - 1] - half) / (profile_1d[k - 1] - profile_1d[k])


@pytest.mark.parametrize("band", range(3))
def test_psf_fwhm(band):
    """A point source at 0.02"/pixel without pixel response: FWHM 0.821/0.790/0.759"."""
    scale, n = 0.02, 201  # odd: the centre is a pixel centre, so the central pixel is the peak
    image = simulate.band_psf(band).drawImage(nx=n, ny=n, scale=scale, method="no_pixel").array
    c = n // 2
    arms = (image[c, c:], image[c, c::-1], image[c:, c], image[c::-1, c])
    fwhm = 2 * scale * np.mean([half_max_radius(a) for a in arms])
    assert fwhm == pytest.approx(PSF_FWHM_ARCSEC[band], rel=0.01)
    # GalSim's own estimate on the same drawing agrees with ours.
    assert galsim.Image(image, scale=scale).calculateFWHM() == pytest.approx(fwhm, rel=0.005)


# --- Colours ---
@pytest.mark.parametrize("sed", sorted(SED_TABLE))
def test_sed_colours_match_galsim_seds(sed):
    """SED_COLOURS = GalSim's CWW SEDs at z = 0.05 through GalSim's LSST bandpasses (AB)."""
    spectrum = galsim.SED(f"{sed}.sed", wave_type="Ang", flux_type="flambda").atRedshift(0.05)
    bandpasses = [galsim.Bandpass(f"LSST_{b}.dat", "nm").withZeropoint("AB") for b in BANDS]
    spectrum = spectrum.withFluxDensity(1.0, 620.0)
    g, r, i = (spectrum.calculateMagnitude(bp) for bp in bandpasses)
    assert simulate.SED_COLOURS[sed] == pytest.approx((g - r, r - i), abs=0.01)
    assert simulate.SED_COLOURS[sed] == pytest.approx(SED_TABLE[sed][0], abs=1e-9)


@pytest.mark.parametrize("band", range(3))
def test_zero_points_match_galsim_bandpasses(band):
    """ZP24: an AB = 24 source through GalSim's LSST bandpass x 32.40 m^2 gives 50.71/43.70/32.36."""
    bandpass = galsim.Bandpass(f"LSST_{BANDS[band]}.dat", "nm").withZeropoint("AB")
    flat = galsim.SED(galsim.LookupTable([100.0, 2000.0], [1.0, 1.0], interpolant="linear"),
                      wave_type="nm", flux_type="fnu").withMagnitude(24.0, bandpass)
    area_cm2 = math.pi * (642.3 / 2) ** 2  # effective diameter 6.423 m (WLD effective_area; LSST SMTN-002)
    rate = flat.calculateFlux(bandpass) * area_cm2  # photons/s; the bandpass includes the QE
    assert rate == pytest.approx(simulate.ZP24_E_PER_S[band], rel=2e-3)
    assert simulate.ZP24_E_PER_S[band] == ZP24[band]


@pytest.mark.parametrize("sed", sorted(SED_TABLE))
def test_electron_ratios_at_equal_exposure(sed):
    """e- ratios g/r and i/r at equal exposure from band_magnitudes and flux_electrons."""
    flux = simulate.flux_electrons(simulate.band_magnitudes(16.0, sed), np.full(3, 100.0))
    assert flux[0] / flux[1] == pytest.approx(SED_TABLE[sed][1][0], abs=2e-3)
    assert flux[2] / flux[1] == pytest.approx(SED_TABLE[sed][1][1], abs=2e-3)
    np.testing.assert_allclose(flux, expected_flux(16.0, sed) * 100.0 / T_YEAR_S, rtol=1e-12)


@pytest.mark.parametrize("depth", DEPTHS)
def test_elliptical_colours_in_stamps(depth, monkeypatch):
    """CWW_E_ext noiseless stamps: g/r = 0.546 x 240/552 = 0.2374, i/r = 1.069, within 1 %."""
    noiseless(monkeypatch)
    expected_y1 = simulate.draw_expected(one_component_galaxy(), SPEC)
    image = simulate.observe(expected_y1, 99, depth, SPEC)
    sums = image.sum(axis=(1, 2))
    assert 0.546 * 240 / 552 == pytest.approx(0.2374, abs=1e-4)
    assert sums[0] / sums[1] == pytest.approx(0.2374, rel=0.01)
    assert sums[2] / sums[1] == pytest.approx(1.069, rel=0.01)
    # And the r-band total is F_r for this depth (0.3" de Vaucouleurs: all in the stamp).
    years = simulate.DEPTH_YEARS[depth]
    assert sums[1] == pytest.approx(expected_flux(18.0, "CWW_E_ext", years)[1], rel=0.01)


# --- Y10 = 10 x Y1 before noise, independent noise streams ---
def test_y10_expected_is_ten_times_y1(monkeypatch):
    noiseless(monkeypatch)
    galaxy = simulate.draw_galaxy(np.random.default_rng(11), simulate.SPIRAL, SPEC)
    expected_y1 = simulate.draw_expected(galaxy, SPEC)
    y1 = simulate.observe(expected_y1, 5, "Y1", SPEC)
    y10 = simulate.observe(expected_y1, 5, "Y10", SPEC)
    np.testing.assert_array_equal(y10, 10.0 * y1)
    np.testing.assert_array_equal(y1, expected_y1)
    # Exposure on the raw image equals drawing with ten years of flux (GalSim is linear in flux).
    psf = simulate.band_psf(1, SPEC.gsparams)
    flux10 = 10 * expected_flux(16.0, "CWW_E_ext")[1]
    drawn10 = galsim.Convolve(galsim.Sersic(4.0, half_light_radius=1.0, flux=flux10), psf,
                              gsparams=SPEC.gsparams).drawImage(nx=100, ny=100, scale=0.2, dtype=np.float64)
    y1_r = simulate.draw_expected(one_component_galaxy(16.0, hlr=1.0), SPEC, bands=(1,))[0]
    np.testing.assert_allclose(drawn10.array, 10 * y1_r, rtol=1e-9, atol=1e-9 * drawn10.array.max())


def test_y1_and_y10_noise_streams_are_independent():
    empty = np.zeros((3, 100, 100))
    y1 = simulate.observe(empty, 777, "Y1", SPEC)
    y10 = simulate.observe(empty, 777, "Y10", SPEC)
    bound = 4 / math.sqrt(N_PIX)  # 4 sigma of a correlation coefficient of 10^4 pairs
    for band in range(3):
        assert abs(correlation(y1[band], y10[band])) < bound
        assert abs(correlation(y1[band], y1[(band + 1) % 3])) < bound  # bands differ too
    other = simulate.observe(empty, 778, "Y1", SPEC)
    assert abs(correlation(y1[0], other[0])) < bound  # and galaxies
    np.testing.assert_array_equal(simulate.observe(empty, 777, "Y1", SPEC), y1)  # reproducible


def test_noise_streams_are_separate_per_depth_and_band():
    """Separate derived seeds per (galaxy, depth, band): no two streams coincide, and
    each observed band is regenerated from its own stream alone."""
    first_draws = {(seed, depth, band): simulate.noise_rng(seed, depth, band).integers(2**62)
                   for seed in (0, 1) for depth in DEPTHS for band in range(3)}
    assert len(set(first_draws.values())) == len(first_draws)
    empty = np.zeros((3, 100, 100))
    for depth in DEPTHS:
        observed = simulate.observe(empty, 3, depth, SPEC)
        sky = simulate.sky_electrons_per_pixel(depth, 0.04)
        for band in range(3):
            alone = simulate.add_noise(empty[band], sky[band], simulate.noise_rng(3, depth, band))
            np.testing.assert_array_equal(observed[band], alone)


def test_candidate_noise_is_poisson_around_the_expected_image():
    """A kept candidate: Y1 and Y10 residuals about 1x and 10x the noiseless image are
    independent, with variance expected + sky (Poisson including the source)."""
    spec = simulate.SimulationSpec(seed=4, counts=(1, 1, 1))
    candidate = simulate.simulate_candidate(spec, simulate.ELLIPTICAL, 0)
    assert candidate.accepted
    expected = simulate.draw_expected(candidate.galaxy, spec)
    bound = 4 / math.sqrt(N_PIX)
    for band in range(3):
        pulls = []
        for depth, image in (("Y1", candidate.y1), ("Y10", candidate.y10)):
            years, sky = simulate.DEPTH_YEARS[depth], SKY_TABLE[depth][band]
            mean = years * expected[band]
            pulls.append((image[band] - mean) / np.sqrt(np.clip(mean, 0, None) + sky))
            assert pulls[-1].var() == pytest.approx(1.0, rel=0.05)
        assert abs(correlation(*pulls)) < bound


# --- m5 consistency of zero points and sky (Ivezić et al. 2019, Table 2) ---
def test_single_visit_and_coadd_depths():
    """n_eff = 2.266 (theta_eff / 0.2)^2, sky only, 30 s: SNR = 5 at 25.04/24.49/24.01."""
    theta_eff = np.array([0.87, 0.83, 0.80])
    n_eff = 2.266 * (theta_eff / 0.2) ** 2
    sky_30s = simulate.sky_electrons_per_pixel("Y1", 0.04) * 30.0 / T_YEAR_S

    def snr_minus_5(mag, band):
        flux = simulate.flux_electrons(np.full(3, mag), np.full(3, 30.0))[band]
        return flux / math.sqrt(flux + n_eff[band] * sky_30s[band]) - 5.0

    m5 = np.array([optimize.brentq(snr_minus_5, 20.0, 30.0, args=(b,), xtol=1e-8) for b in range(3)])
    np.testing.assert_allclose(m5, (25.04, 24.49, 24.01), atol=0.01)
    visits_r = simulate.exposure_s("Y1")[1] / 30.0, simulate.exposure_s("Y10")[1] / 30.0
    coadd = [m5[1] + 1.25 * math.log10(v) for v in visits_r]
    np.testing.assert_allclose(coadd, (26.07, 27.32), atol=0.01)


# --- Normalised simulated arrays ---
@pytest.mark.parametrize("depth", DEPTHS)
def test_normalised_range_of_simulated_arrays(depth):
    folder, _ = _tiny_dataset.tiny_dataset()
    raw = np.load(folder / f"images_{depth}_train.npy")
    normalised, bounds = preprocess.normalize(raw)
    p_lo, p_hi = np.percentile(raw.astype(np.float64), [0.1, 99.9])
    assert (bounds.p_lo, bounds.p_hi) == pytest.approx((p_lo, p_hi), rel=1e-12)
    assert normalised.max() == pytest.approx(0.88562, abs=5e-6)
    assert normalised.max() == pytest.approx((1 + math.asinh(0.85)) / 2, abs=1e-6)
    assert normalised.min() == pytest.approx((1 + math.asinh(0.85 * p_lo / p_hi)) / 2, abs=1e-6)
    assert preprocess.stretched_range(bounds) == pytest.approx(
        ((1 + math.asinh(0.85 * p_lo / p_hi)) / 2, 0.88562), abs=5e-6)


# --- Determinism, regeneration, rejection sampling ---
TINY_SPEC = simulate.SimulationSpec(seed=2, counts=(3, 2, 1))


@pytest.fixture(scope="module")
def one_worker():
    return simulate.simulate_galaxies(TINY_SPEC, workers=1, progress=False)


def test_same_galaxies_for_any_worker_count(one_worker):
    two_workers = simulate.simulate_galaxies(TINY_SPEC, workers=2, progress=False)
    assert len(one_worker.accepted) == len(two_workers.accepted) == sum(TINY_SPEC.counts)
    for a, b in zip(one_worker.accepted, two_workers.accepted):
        assert (a.intended_class, a.index, a.seed, a.label) == (b.intended_class, b.index, b.seed, b.label)
        assert a.galaxy == b.galaxy
        assert a.y1.tobytes() == b.y1.tobytes() and a.y10.tobytes() == b.y10.tobytes()
    assert one_worker.tried == two_workers.tried
    np.testing.assert_array_equal(one_worker.label_confusion, two_workers.label_confusion)


def test_rejection_sampling_bookkeeping(one_worker):
    """Recount every candidate the run tried, one by one, and compare with what it reported."""
    result, spec = one_worker, TINY_SPEC
    for cls, name in enumerate(simulate.CLASS_NAMES):
        tried = result.tried[name]
        candidates = [simulate.simulate_candidate(spec, cls, k) for k in range(tried)]
        accepted = [c.index for c in candidates if c.accepted]
        kept = [c.index for c in result.accepted if c.intended_class == cls]
        assert accepted == kept and len(kept) == spec.counts[cls]
        assert candidates[-1].accepted  # sampling stops at the count-th acceptance
        assert result.rejection_rate[name] == pytest.approx(1 - spec.counts[cls] / tried, abs=1e-12)
        columns = [c.label if c.label >= 0 else 3 for c in candidates]
        np.testing.assert_array_equal(result.label_confusion[cls], np.bincount(columns, minlength=4))
        assert result.label_confusion[cls, cls] == spec.counts[cls]


def test_kept_labels_follow_the_gini_m20_boundaries(one_worker):
    """F, S and labels of kept galaxies recomputed from (G, M20) with the F and S of Lotz et al. 2008 (ApJ 672, 177) as statmorph computes them."""
    for c in one_worker.accepted:
        f = -0.693 * c.m20 + 4.95 * c.gini - 3.96
        s = 0.139 * c.m20 + 0.990 * c.gini - 0.327
        assert (c.bulge, c.merger) == pytest.approx((f, s), abs=1e-9)
        assert c.label == (simulate.MERGER if s > 0 else simulate.ELLIPTICAL if f > 0 else simulate.SPIRAL)
        assert c.label == c.intended_class
        assert c.y1.dtype == c.y10.dtype == np.float32 and c.y1.shape == (3, 100, 100)


def test_label_image_is_the_stored_label_band(one_worker):
    """The labeller sees the stored Y10 i-band stamp (the data.label_band and data.label_depth defaults) of each kept galaxy."""
    c = one_worker.accepted[0]
    stats = morphology.measure(c.y10[2].astype(np.float64), math.sqrt(SKY_TABLE["Y10"][2]))
    assert stats["gini"] == pytest.approx(c.gini, abs=1e-5)
    assert stats["m20"] == pytest.approx(c.m20, abs=1e-4)


def test_intended_labels_skip_rejection_but_report_gini_m20():
    spec = simulate.SimulationSpec(seed=0, counts=(1, 1, 2), label_by="intended")
    result = simulate.simulate_galaxies(spec, workers=1, progress=False)
    assert [c.label for c in result.accepted] == [0, 1, 2, 2]
    for cls, name in enumerate(simulate.CLASS_NAMES):
        assert result.tried[name] == spec.counts[cls]  # every detected candidate is kept
        assert result.rejection_rate[name] == 0.0
        # The confusion matrix still records what the G-M20 labeller said.
        measured = [c.gm20_label if c.gm20_label >= 0 else 3
                    for c in result.accepted if c.intended_class == cls]
        np.testing.assert_array_equal(result.label_confusion[cls], np.bincount(measured, minlength=4))


def test_any_dataset_image_regenerates_alone():
    """Every test-split image equals its candidate re-simulated alone (then augmented)."""
    folder, info = _tiny_dataset.tiny_dataset()
    spec = simulate.SimulationSpec.from_config(_tiny_dataset.tiny_config())
    y10 = np.load(folder / "images_Y10_test.npy")
    y1 = np.load(folder / "images_Y1_test.npy")
    with np.load(folder / "metadata_test.npz") as meta:
        meta = dict(meta)
    cache = {}
    for row in range(len(y10)):
        key = (int(meta["intended_class"][row]), int(meta["candidate_index"][row]))
        if key not in cache:  # the continuous population has one candidate stream for all classes
            cache[key] = (simulate.simulate_population_candidate(spec, key[1]) if spec.population == "continuous"
                          else simulate.simulate_candidate(spec, *key))
        candidate = cache[key]
        assert candidate.seed == meta["seed"][row] and candidate.accepted
        kind = store.AUGMENTATIONS[meta["augmentation"][row]]
        np.testing.assert_array_equal(store.augment(candidate.y10, kind), y10[row])
        np.testing.assert_array_equal(store.augment(candidate.y1, kind), y1[row])
    assert len(cache) < len(y10)  # the test split holds a merger and its augmented copies


def test_unguarded_scripts_simulate_in_process(tmp_path):
    """A script calling the simulation at top level must not hang in spawned workers."""
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text(
        "from jaxrobust.config import load_config\n"
        "from jaxrobust.data import simulate\n"
        "config = load_config('quick', ['data.n_spiral=2', 'data.n_elliptical=1', 'data.n_merger=1',"
        " 'data.preview=False', 'data.mag_r_range=(15.0, 18.0)'])\n"
        "result = simulate.simulate_galaxies(simulate.SimulationSpec.from_config(config), workers=2,"
        " progress=False)\n"
        "print('galaxies', len(result.accepted))\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "galaxies 4" in done.stdout
    assert "simulating in this process" in done.stderr


# --- The continuous population (data.population="continuous", the default) ---
TINY_CONTINUOUS = simulate.SimulationSpec(seed=2, counts=(2, 1, 1), population="continuous", label_by="catalogue",
                                          mag_r_range=(15.0, 18.0), sky_area_per_pixel_arcsec2=1.0)


@pytest.fixture(scope="module")
def continuous_one_worker():
    return simulate.simulate_galaxies(TINY_CONTINUOUS, workers=1, progress=False)


def test_continuous_population_is_bit_identical_for_1_and_2_workers(continuous_one_worker):
    two_workers = simulate.simulate_galaxies(TINY_CONTINUOUS, workers=2, progress=False)
    assert len(continuous_one_worker.accepted) == len(two_workers.accepted) == sum(TINY_CONTINUOUS.counts)
    for a, b in zip(continuous_one_worker.accepted, two_workers.accepted):
        assert (a.index, a.seed, a.label, a.galaxy) == (b.index, b.seed, b.label, b.galaxy)
        assert a.y1.tobytes() == b.y1.tobytes() and a.y10.tobytes() == b.y10.tobytes()
        assert a.catalogue == b.catalogue and a.stamp == b.stamp
    assert continuous_one_worker.tried == two_workers.tried
    np.testing.assert_array_equal(continuous_one_worker.label_confusion, two_workers.label_confusion)


def test_continuous_quotas_are_filled_by_label_in_index_order(continuous_one_worker):
    """Recount: candidate k is kept iff its catalogue label's class had fewer than its count among
    candidates 0..k-1; nothing is rejected for being near a boundary."""
    result, spec = continuous_one_worker, TINY_CONTINUOUS
    tried = result.tried["all"]
    labels = [simulate.simulate_population_candidate(spec, k).catalogue["label"] for k in range(tried)]
    expected, filled = [], [0, 0, 0]
    for k, label in enumerate(labels):
        if label >= 0 and filled[label] < spec.counts[label]:
            filled[label] += 1
            expected.append(k)
    assert sorted(c.index for c in result.accepted) == expected
    assert filled == list(spec.counts) and expected[-1] == tried - 1  # stops at the last quota
    for c in result.accepted:  # F, S and the label from the catalogue's (G, M20), Lotz et al. 2008
        f = -0.693 * c.m20 + 4.95 * c.gini - 3.96
        s = 0.139 * c.m20 + 0.990 * c.gini - 0.327
        assert (c.bulge, c.merger) == pytest.approx((f, s), abs=1e-9)
        assert c.label == (simulate.MERGER if s > 0 else simulate.ELLIPTICAL if f > 0 else simulate.SPIRAL)
        assert c.stamp["label"] == morphology.classify(c.stamp["gini"], c.stamp["m20"])
        # The stamp's G-M20 is measured on the stored Y10 i band.
        stats = morphology.measure(c.y10[2].astype(np.float64), math.sqrt(SKY_TABLE["Y10"][2] / 0.04))
        assert stats["gini"] == pytest.approx(c.stamp["gini"], abs=1e-5)
    columns = [label if label >= 0 else 3 for label in labels]
    assert result.label_confusion.sum(axis=0).tolist() == np.bincount(columns, minlength=4).tolist()


@pytest.mark.parametrize("key, value, valid", [("population", "disjoint", ("continuous", "recipes")),
                                              ("label_by", "statmorph", ("catalogue", "gini_m20", "intended"))])
def test_unknown_population_or_labeller_lists_the_valid_ones(key, value, valid):
    from jaxrobust.config import load_config

    with pytest.raises(ValueError) as error:
        simulate.SimulationSpec.from_config(load_config("quick", [f"data.{key}={value}"]))
    message = str(error.value)
    assert f"data.{key}" in message and value in message
    assert all(name in message for name in valid)


def test_dataset_metadata_holds_both_measurements():
    """The tiny dataset (quick config: continuous, catalogue labels) stores the catalogue's and the
    stamp's G, M20, F, S and labels, and dataset.json their agreement, recounted here."""
    folder, info = _tiny_dataset.tiny_dataset()
    cat, stamp = [], []
    for split in ("train", "valid", "test"):
        with np.load(folder / f"metadata_{split}.npz") as meta:
            keep = meta["augmentation"] == 0
            for source in ("catalogue", "stamp"):
                f = -0.693 * meta[f"{source}_m20"] + 4.95 * meta[f"{source}_gini"] - 3.96
                np.testing.assert_allclose(meta[f"{source}_F"], f, atol=1e-9)
            np.testing.assert_array_equal(meta["gini"], meta["catalogue_gini"])  # labelled by the catalogue
            cat.append(meta["catalogue_label"][keep])
            stamp.append(meta["stamp_label"][keep])
    cat, stamp = np.concatenate(cat), np.concatenate(stamp)
    assert info["population"] == "continuous" and info["label_by"] == "catalogue"
    assert info["label_agreement"]["fraction"] == pytest.approx((cat == stamp).mean(), abs=1e-4)
