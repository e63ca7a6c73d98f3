"""The labelling catalogue's view of a galaxy: a Pan-STARRS-like i-band image, its G-M20 and class.

The paper's labels come from the IllustrisTNG morphology catalogue of Rodriguez-Gomez et al.
(2019, MNRAS 483, 4140, arXiv:1809.08239), measured with statmorph on *other* mock images of
the same galaxies: Pan-STARRS-like g, r, i with Pan-STARRS' PSF, pixel scale and noise, not the
LSST stamps the network sees. We do the same: the same noiseless galaxy (jaxrobust.data.population)
is rendered a second time as Pan-STARRS1 would see it, with its own independent noise draw, and
labelled there by G-M20 (F and S of Rodriguez-Gomez 2019, jaxrobust.data.morphology).

Pan-STARRS1 numbers (Chambers et al. 2016, arXiv:1612.05560; Magnier et al. 2020, ApJS 251, 3):
- 0.25" pixels of the 3pi stacked images (Chambers et al. 2016, section 3; Rodriguez-Gomez et al.
  2019, section 2.3, use them),
- i-band PSF: median seeing 1.11" FWHM (Chambers 2016, Table 11); a Kolmogorov profile of that
  FWHM is our choice of shape (the stacks' PSF is close to a Moffat/Kolmogorov core),
- noise: the 3pi stack's 5 sigma point-source depth i = 23.1 AB (Chambers 2016, Table 11),
  turned into a per-pixel Gaussian sky sigma for an optimal (PSF-weighted) aperture of
  noise-equivalent area 4 pi sigma_PSF^2 (sky-limited: the galaxy's own shot noise is left out,
  as the depth is quoted for faint sources).
Fluxes are in AB zero-point units (flux 1 = magnitude 0); G and M20 do not depend on the unit.
"""
from __future__ import annotations

import math

import galsim
import numpy as np

from jaxrobust.data import morphology, population

# Pan-STARRS1 3pi stack pixels (Chambers et al. 2016, section 3; Rodriguez-Gomez et al. 2019, section 2.3)
PIXEL_SCALE_ARCSEC = 0.25
STAMP_PIXELS = 80  # 80 x 0.25" = 20", the LSST stamp's field (our choice: same sky area)
PSF_FWHM_ARCSEC = 1.11  # median i-band seeing of PS1 3pi (Chambers et al. 2016, Table 11)
DEPTH_5SIGMA_AB = 23.1  # i-band 3pi stack 5 sigma point-source depth (Chambers et al. 2016, Table 11)
LABEL_BAND = 2  # i: Rodriguez-Gomez 2019 show their statmorph measurements on i-band images
NOISE_STREAM = 2016  # seeds the catalogue's noise apart from the LSST streams (Y1 = 1, Y10 = 10)


def sky_sigma_per_pixel(depth_5sigma: float = DEPTH_5SIGMA_AB, fwhm: float = PSF_FWHM_ARCSEC,
                        pixel_scale: float = PIXEL_SCALE_ARCSEC) -> float:
    """Per-pixel sky sigma (zero-point units) such that a point source at `depth_5sigma` has S/N 5
    in an optimal aperture: flux = 5 sigma sqrt(A), A = 4 pi (FWHM / 2.355)^2 / pixel^2 pixels."""
    sigma_psf_pixels = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0))) / pixel_scale
    area_pixels = 4.0 * math.pi * sigma_psf_pixels ** 2
    return 10.0 ** (-0.4 * depth_5sigma) / (5.0 * math.sqrt(area_pixels))


def psf(gsparams: galsim.GSParams | None = None) -> galsim.GSObject:
    return galsim.Kolmogorov(fwhm=PSF_FWHM_ARCSEC, gsparams=gsparams)


def render(profile: galsim.GSObject, gsparams: galsim.GSParams | None = None,
           psf_profile: galsim.GSObject | None = None) -> np.ndarray:
    """Noiseless catalogue image (80, 80) float64 of a band profile, PSF and pixel included."""
    psf_profile = psf_profile if psf_profile is not None else psf(gsparams)
    return galsim.Convolve(profile, psf_profile, gsparams=gsparams).drawImage(
        nx=STAMP_PIXELS, ny=STAMP_PIXELS, scale=PIXEL_SCALE_ARCSEC, dtype=np.float64).array


def observe(expected: np.ndarray, galaxy_seed: int, sky_sigma: float | None = None) -> np.ndarray:
    """The catalogue's noisy image: expected + Gaussian sky noise from its own stream."""
    sky_sigma = sky_sigma_per_pixel() if sky_sigma is None else sky_sigma
    rng = np.random.default_rng([galaxy_seed, NOISE_STREAM, LABEL_BAND])
    return expected + rng.normal(0.0, sky_sigma, size=expected.shape)


def measure(expected: np.ndarray, galaxy_seed: int, sky_sigma: float | None = None) -> dict:
    """G, M20, F, S and label (-1: nothing detected) of the catalogue image of one galaxy."""
    sky_sigma = sky_sigma_per_pixel() if sky_sigma is None else sky_sigma
    image = observe(expected, galaxy_seed, sky_sigma)
    try:
        return morphology.measure(image, sky_sigma)
    except ValueError:  # nothing above the detection threshold
        return dict(gini=math.nan, m20=math.nan, F=math.nan, S=math.nan, label=-1)


def label_profile(profile: galsim.GSObject, galaxy_seed: int, gsparams: galsim.GSParams | None = None,
                  psf_profile: galsim.GSObject | None = None) -> dict:
    """Renders a galaxy's i-band profile (zero-point flux units) as the catalogue saw it and measures it."""
    return measure(render(profile, gsparams, psf_profile), galaxy_seed)


def label_galaxy(galaxy: dict, galaxy_seed: int, gsparams: galsim.GSParams | None = None,
                 psf_profile: galsim.GSObject | None = None) -> dict:
    """label_profile of a jaxrobust.data.population galaxy."""
    profile = population.band_profiles(galaxy, gsparams, bands=(LABEL_BAND,))[0]
    return label_profile(profile, galaxy_seed, gsparams, psf_profile)
