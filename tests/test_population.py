"""Each ingredient of the continuous population (jaxrobust.data.population) has its measurable effect.

Expected values come from the cited formulas written out here (Hubble 1926's oblate-disc axis
ratio, Schlafly & Finkbeiner 2011's extinction coefficients), from image moments computed with
NumPy on GalSim drawings, or from counting; never from the module's own helpers.
"""
from __future__ import annotations

import math

import galsim
import numpy as np
import pytest
from scipy import ndimage

from jaxrobust.data import population, simulate

GSPARAMS = galsim.GSParams(folding_threshold=1e-2, maxk_threshold=3e-3)
FINE = 0.05  # arcsec / pixel for moment measurements (no PSF)


def axis_ratio(image: np.ndarray) -> float:
    """b/a from the second central moments of an image (sqrt of the eigenvalue ratio)."""
    y, x = np.indices(image.shape, dtype=np.float64)
    total = image.sum()
    xc, yc = (image * x).sum() / total, (image * y).sum() / total
    xx = (image * (x - xc) ** 2).sum() / total
    yy = (image * (y - yc) ** 2).sum() / total
    xy = (image * (x - xc) * (y - yc)).sum() / total
    eig = np.linalg.eigvalsh([[xx, xy], [xy, yy]])
    return math.sqrt(eig[0] / eig[1])


def draw_band(galaxy: dict, band: int, pixels: int = 400, scale: float = FINE, psf: bool = False) -> np.ndarray:
    profile = population.band_profiles(galaxy, GSPARAMS, bands=(band,))[0]
    if psf:
        profile = galsim.Convolve(profile, simulate.band_psf(band, GSPARAMS))
    return profile.drawImage(nx=pixels, ny=pixels, scale=scale, method="no_pixel" if not psf else "auto",
                             dtype=np.float64).array


def one_galaxy(*components, mag_r=16.0) -> dict:
    return dict(population="continuous", mag_r=mag_r, jitter_arcsec=[0.0, 0.0], params={}, components=list(components))


def plain_disc(q: float, hlr: float = 1.0, **extra) -> dict:
    disc = dict(kind="disc", hlr=hlr, q=q, beta_deg=30.0, frac=1.0, dx=0.0, dy=0.0, g_r=0.5, r_i=0.3,
                arms=-1, amplitude=0.0, pitch_deg=20.0, phi0=0.0, pattern_seed=1, tau_v=0.0,
                lane_offset=0.0, lane_width=0.05)
    disc.update(extra)
    return disc


@pytest.mark.parametrize("inclination_deg, q0", [(0.0, 0.15), (45.0, 0.1), (70.0, 0.2), (90.0, 0.12)])
def test_axis_ratio_follows_inclination_and_thickness(inclination_deg, q0):
    """Hubble (1926): q^2 = cos^2 i (1 - q0^2) + q0^2; an edge-on disc keeps its thickness q0."""
    cos_i = math.cos(math.radians(inclination_deg))
    expected = math.sqrt(cos_i ** 2 * (1 - q0 ** 2) + q0 ** 2)
    q = population.disc_axis_ratio(cos_i, q0)
    assert q == pytest.approx(expected, rel=1e-12)
    image = draw_band(one_galaxy(plain_disc(q, hlr=1.0)), 1, pixels=600)
    assert axis_ratio(image) == pytest.approx(expected, abs=0.02)


def test_drawn_inclinations_give_the_projected_axis_ratios():
    """Across the population: disc axis ratios lie in [q0_min, 1] and match the recorded inclination."""
    rng = np.random.default_rng(0)
    for _ in range(40):
        drawn = population.draw_disc_galaxy(rng, hlr=2.0)
        disc = [c for c in drawn["components"] if c["kind"] == "disc"]
        if not disc:
            continue
        q = disc[0]["q"]
        cos_i = math.cos(math.radians(drawn["inclination_deg"]))
        assert 0.1 - 1e-12 <= q <= 1.0
        # q0 unknown here but bounded by 0.1-0.2: q lies between the two Hubble curves.
        low = math.sqrt(cos_i ** 2 * (1 - 0.1 ** 2) + 0.1 ** 2)
        high = math.sqrt(cos_i ** 2 * (1 - 0.2 ** 2) + 0.2 ** 2)
        assert low - 1e-12 <= q <= high + 1e-12


def aperture_colour(g: np.ndarray, r: np.ndarray, r_min: float, r_max: float, scale: float) -> float:
    """g - r (magnitudes) of the light between radii r_min and r_max (arcsec) about the centre."""
    y, x = np.indices(g.shape)
    radius = np.hypot(x - (g.shape[1] - 1) / 2, y - (g.shape[0] - 1) / 2) * scale
    ring = (radius >= r_min) & (radius < r_max)
    return -2.5 * math.log10(g[ring].sum() / r[ring].sum())


def test_bulges_are_redder_than_their_discs_and_the_centre_is_redder():
    """Colour gradient: a red bulge in a blue disc makes the centre redder than the outskirts."""
    rng = np.random.default_rng(1)
    redder = 0
    for _ in range(200):
        comps = population.draw_disc_galaxy(rng, hlr=2.0, bt=0.3)["components"]
        bulge = [c for c in comps if c["role"] == "bulge"][0]
        disc = [c for c in comps if c["role"] == "disc"][0]
        redder += bulge["g_r"] > disc["g_r"]
    assert redder / 200 > 0.85  # off-sequence bulges and scatter allow a few exceptions
    bulge = dict(kind="sersic", n=4.0, hlr=0.5, q=1.0, beta_deg=0.0, frac=0.3, g_r=0.82, r_i=0.40, role="bulge")
    galaxy = one_galaxy(bulge, plain_disc(0.8, hlr=3.0, frac=0.7, g_r=0.38, r_i=0.22))
    g, r = draw_band(galaxy, 0, psf=True, scale=0.2, pixels=100), draw_band(galaxy, 1, psf=True, scale=0.2, pixels=100)
    centre, outskirts = aperture_colour(g, r, 0.0, 0.5, 0.2), aperture_colour(g, r, 4.0, 8.0, 0.2)
    assert centre > outskirts + 0.2
    assert 0.38 - 0.02 < outskirts < centre < 0.82 + 0.02  # between the disc's and the bulge's colours


def test_bar_is_elongated_in_the_disc_plane():
    """A Sersic n = 0.5 bar of axis ratio b/a drawn alone in a face-on disc has moments ratio b/a,
    and makes the centre of a round disc elongated."""
    bar = dict(kind="bar", n=0.5, hlr=1.0, bar_q=0.3, bar_angle_deg=20.0, q=1.0, beta_deg=0.0, frac=1.0,
               g_r=0.7, r_i=0.35, role="bar")
    assert axis_ratio(draw_band(one_galaxy(bar), 1)) == pytest.approx(0.3, abs=0.02)
    disc = plain_disc(1.0, hlr=3.0, frac=0.85)
    centre = slice(170, 230)  # +-1.5" about the centre: where the bar lives
    barred = draw_band(one_galaxy(disc, dict(bar, frac=0.15)), 1)[centre, centre]
    unbarred = draw_band(one_galaxy(plain_disc(1.0, hlr=3.0)), 1)[centre, centre]
    assert axis_ratio(unbarred) > 0.98
    assert axis_ratio(barred) < axis_ratio(unbarred) - 0.1


def test_dust_lane_removes_light_by_band_and_conserves_the_rest():
    """Total flux per band = disc flux x (1 - lane share x (1 - exp(-tau_V A_b / A_V))) with
    A_b / E(B-V) = 3.303, 2.285, 1.698 (Schlafly & Finkbeiner 2011), R_V = 3.1."""
    tau_v = 1.5
    dusty = plain_disc(0.25, hlr=2.0, tau_v=tau_v, lane_width=0.06, lane_offset=0.05)
    clear = plain_disc(0.25, hlr=2.0)
    galaxy_dusty, galaxy_clear = one_galaxy(dusty), one_galaxy(clear)
    transmission = np.exp(-tau_v * np.array([3.303, 2.285, 1.698]) / 3.1)
    colour = 10 ** (-0.4 * np.array([0.5, 0.0, -0.3])) * 10 ** (-0.4 * 16.0)
    image, lane, _ = population.disc_template(dusty)
    share = (image * lane).sum() / image.sum()
    assert 0.02 < share < 0.5
    lost = []
    for band in range(3):
        flux_clear = draw_band(galaxy_clear, band, pixels=800).sum()
        flux_dusty = draw_band(galaxy_dusty, band, pixels=800).sum()
        assert flux_clear == pytest.approx(colour[band], rel=5e-3)
        assert flux_dusty == pytest.approx(colour[band] * (1 - share * (1 - transmission[band])), rel=5e-3)
        lost.append(1 - flux_dusty / flux_clear)
    assert lost[0] > lost[1] > lost[2] > 0  # bluer bands lose more
    assert population.expected_band_flux(galaxy_dusty) == pytest.approx(
        colour * (1 - share * (1 - transmission)), rel=1e-9)


def test_companions_and_stars_are_counted_and_drawn():
    """Projected companions and stars: recorded counts match the components, their frequencies
    match the stated probabilities (binomial / Poisson, 4 sigma), and each shows as its own source."""
    rng = np.random.default_rng(5)
    n, companions, stars = 600, 0, 0
    example = None
    for _ in range(n):
        galaxy = population.draw_galaxy(rng, (14.0, 17.5))
        roles = [c.get("role") for c in galaxy["components"]]
        params = galaxy["params"]
        assert roles.count("star") == params["n_stars"]
        has_companion = "companion" in roles
        assert has_companion == (params["n_companions"] == 1)
        companions += params["n_companions"]
        stars += params["n_stars"]
        if example is None and params["n_stars"] == 1 and params["interaction"] == "none" and not has_companion:
            example = galaxy
    p = population.COMPANION_PROBABILITY
    assert abs(companions - n * p) < 4 * math.sqrt(n * p * (1 - p))
    assert abs(stars - n * population.STARS_PER_STAMP) < 4 * math.sqrt(n * population.STARS_PER_STAMP)
    # The star is a separate local maximum at its position in the noiseless stamp.
    star = [c for c in example["components"] if c["role"] == "star"][0]
    image = draw_band(example, 2, psf=True, scale=0.2, pixels=100)
    col = int(round(star["dx"] / 0.2 + 49.5))
    row = int(round(star["dy"] / 0.2 + 49.5))
    window = image[max(row - 2, 0):row + 3, max(col - 2, 0):col + 3]
    peak = ndimage.maximum_filter(image, size=5) == image
    assert peak[max(row - 2, 0):row + 3, max(col - 2, 0):col + 3].any()
    assert window.max() > 3 * np.median(image)


def test_pairs_span_close_and_wide_separations_and_remnants_carry_debris():
    rng = np.random.default_rng(7)
    separations, debris = [], set()
    for _ in range(500):
        galaxy = population.draw_galaxy(rng, (14.0, 17.5))
        params = galaxy["params"]
        if params["interaction"] == "pair":
            separations.append(params["separation_arcsec"])
        elif params["interaction"] == "remnant":
            debris.add(params["debris"])
            kinds = {c["kind"] for c in galaxy["components"]}
            assert ("shells" in kinds) == (params["debris"] == "shells")
    separations = np.array(separations)
    assert separations.min() >= 0.5 and separations.max() <= 8.0
    assert (separations < 3.0).mean() > 0.4  # log-uniform over 0.5-8": 65 % under 3"
    assert debris == {"shells", "plume"}


def test_bulge_to_total_is_continuous_and_sizes_follow_distance():
    rng = np.random.default_rng(3)
    bt = np.array([population.draw_disc_galaxy(rng, 2.0)["bt"] for _ in range(400)])
    assert bt.min() < 0.05 and bt.max() > 0.95
    assert np.histogram(bt, bins=10, range=(0, 1))[0].min() > 0  # no gaps between "types"
    # Same luminosity and scatter draw, two redshifts: size scales as D_A(0.05) / D_A(z).
    near = population.galaxy_size_arcsec(np.random.default_rng(9), 0.3, 16.0, 14.0, 0.03)
    far = population.galaxy_size_arcsec(np.random.default_rng(9), 0.3, 16.0, 14.0, 0.07)
    c = 299792.458 / 67.74

    def d_a(z):  # flat LCDM, Omega_m = 0.3089 (Planck 2015), by scipy quadrature
        from scipy import integrate

        return c * integrate.quad(lambda t: 1 / math.sqrt(0.3089 * (1 + t) ** 3 + 0.6911), 0, z)[0] / (1 + z)

    assert near / far == pytest.approx(d_a(0.07) / d_a(0.03), rel=1e-4)


def test_same_seed_same_galaxy():
    a = population.draw_galaxy(np.random.default_rng(11), (14.0, 17.5))
    b = population.draw_galaxy(np.random.default_rng(11), (14.0, 17.5))
    assert a == b
