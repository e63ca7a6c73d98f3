"""GalSim r-band Y1 stamps for the morphology tests (jaxrobust.data.simulate's
survey model, docs/data.md): 100 x 100 pixels at 0.2"/px, electrons, Poisson noise
on a constant sky that is then subtracted.  Test code, not package code."""

from __future__ import annotations

import galsim
import numpy as np

PIXEL_SCALE = 0.2            # arcsec / pixel
STAMP_SIZE = 100             # pixels
EXPTIME_R_Y1 = 552.0         # s
ZP24_R = 43.70               # e-/s for an AB = 24 source (WLD, airmass 1.2)
MSKY_R = 21.20               # mag / arcsec^2 (Ivezic 2019 median dark sky)
FWHM_ZENITH_R = 0.70         # arcsec
AIRMASS = 1.2
LAMBDA_R = 619.952e-9        # m
MIRROR_DIAMETER = 8.36       # m
OBSCURATION = 0.640
CLASSES = ("spiral", "elliptical", "merger")  # = morphology.CLASS_NAMES


def total_flux(mag_r, exptime=EXPTIME_R_Y1):
    """Electrons collected from an AB magnitude mag_r source."""
    return exptime * ZP24_R * 10 ** (-0.4 * (mag_r - 24.0))


def sky_level(exptime=EXPTIME_R_Y1):
    """Sky electrons per pixel (12,720 for r Y1)."""
    return total_flux(MSKY_R, exptime) * PIXEL_SCALE ** 2


def psf():
    """Kolmogorov atmosphere (FWHM at airmass 1.2) convolved with Airy optics."""
    lam_over_diam = LAMBDA_R / MIRROR_DIAMETER * galsim.radians / galsim.arcsec
    return galsim.Convolve(
        galsim.Kolmogorov(fwhm=FWHM_ZENITH_R * AIRMASS ** 0.6),
        galsim.Airy(lam_over_diam=lam_over_diam, obscuration=OBSCURATION))


_PSF = psf()


def draw(galaxy, seed=None):
    """Stamp (100, 100) float64 in e-, sky-subtracted; noiseless if seed is None.

    Returns (image, sky_sigma) with sky_sigma = sqrt(sky level).
    """
    image = galsim.ImageD(STAMP_SIZE, STAMP_SIZE, scale=PIXEL_SCALE)
    galsim.Convolve(galaxy, _PSF).drawImage(image=image)
    sky = sky_level()
    if seed is not None:
        image.addNoise(galsim.PoissonNoise(galsim.BaseDeviate(seed),
                                           sky_level=sky))
    return image.array.astype(np.float64), float(np.sqrt(sky))


# ---- models (flux in e-, sizes in arcsec, beta in degrees) ----------------

def _sheared(profile, q, beta):
    return profile.shear(q=q, beta=beta * galsim.degrees)


def devaucouleurs(r_e, q, beta, flux):
    return _sheared(galsim.DeVaucouleurs(half_light_radius=r_e, flux=flux),
                    q, beta)


def sersic(n, r_e, q, beta, flux):
    return _sheared(galsim.Sersic(n=n, half_light_radius=r_e, flux=flux),
                    q, beta)


def exponential(r_e, q, beta, flux):
    return _sheared(galsim.Exponential(half_light_radius=r_e, flux=flux),
                    q, beta)


def disc_galaxy(r_e, q, beta, flux, bulge_fraction=0.0, bulge_r_e=None,
                knot_fraction=0.0, n_knots=100, seed=0):
    """Exponential disc + optional DeV bulge (bulge_fraction of the total)
    + optional RandomKnots carrying knot_fraction of the disc flux."""
    disc_flux = (1.0 - bulge_fraction) * flux
    parts = [galsim.Exponential(half_light_radius=r_e,
                                flux=(1.0 - knot_fraction) * disc_flux)]
    if knot_fraction > 0:
        parts.append(galsim.RandomKnots(
            n_knots, half_light_radius=r_e, flux=knot_fraction * disc_flux,
            rng=galsim.BaseDeviate(seed)))
    if bulge_fraction > 0:
        parts.append(galsim.DeVaucouleurs(half_light_radius=bulge_r_e,
                                          flux=bulge_fraction * flux))
    return _sheared(galsim.Add(parts), q, beta)


def pair(first, second, separation, angle=0.0):
    """Two profiles ``separation`` arcsec apart along position angle
    ``angle`` (deg from +x), placed so that their flux-weighted centre is
    the stamp centre."""
    f1, f2 = first.flux, second.flux
    ux, uy = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    d1 = -separation * f2 / (f1 + f2)
    d2 = separation * f1 / (f1 + f2)
    return galsim.Add([first.shift(d1 * ux, d1 * uy),
                       second.shift(d2 * ux, d2 * uy)])


# ---- random models (data/simulate.py's recipe ranges)-------------------------------------

def random_elliptical(rng, flux, r_e):
    """Sersic n in [3, 5] (half of them n = 4, de Vaucouleurs), q in
    [0.6, 1]; returns (profile, params)."""
    n = rng.uniform(3.0, 5.0) if rng.uniform() < 0.5 else 4.0
    params = {"kind": "elliptical", "n": round(n, 3), "r_e": round(r_e, 3),
              "q": round(rng.uniform(0.6, 1.0), 3),
              "beta": round(rng.uniform(0, 180), 1)}
    return sersic(n, r_e, params["q"], params["beta"], flux), params


def random_spiral(rng, flux, r_e, seed):
    """Exponential disc, q in [0.3, 1]; half get a DeV bulge (B/T <= 0.1,
    r_e = 0.2 r_e,disc), half RandomKnots (10-30 % of the disc, 50-150
    knots, drawn from ``seed``); returns (profile, params)."""
    bulge = rng.uniform(0.0, 0.10) if rng.uniform() < 0.5 else 0.0
    knots = rng.uniform(0.10, 0.30) if rng.uniform() < 0.5 else 0.0
    params = {"kind": "spiral", "r_e": round(r_e, 3),
              "q": round(rng.uniform(0.3, 1.0), 3),
              "beta": round(rng.uniform(0, 180), 1),
              "bulge_fraction": round(bulge, 3), "knot_fraction": round(knots, 3),
              "n_knots": int(rng.integers(50, 151))}
    profile = disc_galaxy(
        r_e, params["q"], params["beta"], flux, bulge_fraction=bulge,
        bulge_r_e=0.2 * r_e, knot_fraction=knots, n_knots=params["n_knots"],
        seed=seed)
    return profile, params


def random_pair(rng, flux, seed):
    """Two ellipticals/spirals with r_e in [1", 2.5"], flux ratio 1:1 to
    1:3, separation 3-8" at a random angle; returns (profile, params)."""
    ratio = rng.uniform(1.0, 3.0)
    fluxes = (flux * ratio / (1 + ratio), flux / (1 + ratio))
    parts, params = [], []
    for j, f in enumerate(fluxes):
        r_e = rng.uniform(1.0, 2.5)
        if rng.uniform() < 0.5:
            prof, par = random_elliptical(rng, f, r_e)
        else:
            prof, par = random_spiral(rng, f, r_e, seed + 7919 * (j + 1))
        parts.append(prof)
        params.append(par)
    separation = rng.uniform(3.0, 8.0)
    angle = rng.uniform(0.0, 180.0)
    profile = pair(parts[0], parts[1], separation, angle)
    return profile, {"kind": "merger", "flux_ratio": round(ratio, 3),
                     "separation": round(separation, 3),
                     "angle": round(angle, 1), "components": params}


def random_stamp(index, seed):
    """(image (100, 100) e-, sky_sigma, params) of random stamp ``index``.

    Intended class = CLASSES[index % 3]; r uniform in [14, 17.5]; centre
    jittered by up to +-0.5 px; Y1 Poisson noise.  Everything derives from
    (seed, index), so any stamp can be regenerated alone.
    """
    rng = np.random.default_rng([seed, index])
    mag = rng.uniform(14.0, 17.5)
    flux = total_flux(mag)
    cls = CLASSES[index % 3]
    galaxy_seed = int(rng.integers(2 ** 31))
    if cls == "elliptical":
        profile, params = random_elliptical(rng, flux, rng.uniform(1.5, 5.0))
    elif cls == "spiral":
        profile, params = random_spiral(rng, flux, rng.uniform(2.0, 5.0),
                                        galaxy_seed)
    else:
        profile, params = random_pair(rng, flux, galaxy_seed)
    jitter = rng.uniform(-0.5, 0.5, 2) * PIXEL_SCALE  # +-0.5 px
    params.update(index=index, intended=cls, mag_r=round(mag, 3),
                  jitter_arcsec=[round(float(j), 4) for j in jitter])
    image, sky_sigma = draw(profile.shift(*jitter), seed=galaxy_seed + 1)
    return image, sky_sigma, params


# ---- the reference stamps (r = 16, Y1) ------------------------

def reference_models():
    """{name: (galsim profile, (G, M20) regression targets measured once on these stamps, label)}.

    The RandomKnots and spiral-arm rows are left out: the first depends on
    the knot draw (G spans 0.47-0.51 over knot seeds), the second needs the
    arm template of data/simulate.py.  The pair geometry is ours: a
    round DeV plus the q = 0.6 disc with its major axis along x, separated
    along 45 deg, reproduces all three pair rows (separating them along x
    gives G = 0.546 instead of 0.567 at d = 8").
    """
    flux = total_flux(16.0)
    dev = galsim.DeVaucouleurs(half_light_radius=1.5, flux=0.5 * flux)
    exp = exponential(1.5, 0.6, 0.0, 0.5 * flux)
    return {
        "dev_2": (devaucouleurs(2.0, 0.75, 20.0, flux), (0.580, -2.05), 1),
        "dev_1": (devaucouleurs(1.0, 0.75, 20.0, flux), (0.550, -1.89), 1),
        "sersic_2.5": (sersic(2.5, 2.0, 0.75, 20.0, flux), (0.558, -1.99), 1),
        "exp_3": (exponential(3.0, 0.6, 30.0, flux), (0.487, -1.78), 0),
        "exp_3_bulge": (disc_galaxy(3.0, 0.6, 30.0, flux, bulge_fraction=0.2,
                                    bulge_r_e=0.7), (0.527, -2.08), 1),
        "pair_3": (pair(dev, exp, 3.0, 45.0), (0.488, -0.97), 2),
        "pair_1.5": (pair(dev, exp, 1.5, 45.0), (0.505, -1.42), 0),
        "pair_8": (pair(dev, exp, 8.0, 45.0), (0.567, -0.72), 2),
    }
