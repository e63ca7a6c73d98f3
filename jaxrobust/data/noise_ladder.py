"""A Y10 observation brought to a shallower depth: the same galaxy seen with t of its ten years.

The simulator (`jaxrobust.data.simulate.observe`) writes, per pixel and band, in electrons,

    Y10 = N - 10 B,   N ~ Poisson(10 (I + B)),
    Y1  = M - B,      M ~ Poisson(I + B),

with I the noiseless one-year image of the galaxy (PSF and pixel included) and B the one-year
sky per pixel (`simulate.sky_electrons_per_pixel("Y1", area)`); both are sky-subtracted.
A t-year observation (0 < t <= 10) is Poisson(t (I + B)) - t B: signal t I, variance t (I + B).

`noise_ladder` makes it from the Y10 image alone by binomial thinning of the Y10 counts: keep
each of the N detected electrons with probability p = t / 10, K | N ~ Binomial(N, p). A thinned
Poisson(lambda) count is Poisson(p lambda) (Poisson thinning), so K - t B has exactly the
distribution of a t-year observation of the same galaxy, pixel by pixel, including its source
Poisson noise; it needs neither I nor a Gaussian approximation. Written as the scaled Y10 image
plus added noise,

    X_t = (t / 10) Y10 + (K - p N),

the added term has mean 0 and variance p (1 - p) E[N] = t (1 - t / 10) (I + B) electrons^2:
what a t-year observation's variance t (I + B) lacks after the scaled Y10 image's
(t / 10)^2 10 (I + B). At t = 10 (p = 1, K = N) it adds nothing and X_10 is the Y10 image bit for
bit; at t = 1 the total variance is I + B, a Y1 observation's. Unlike the simulator's Y1 image,
X_t shares its photons with the Y10 image (its noise is correlated with Y10's), which does not
matter to a classifier that sees one image at a time.
"""
from __future__ import annotations

import numpy as np

Y10_YEARS = 10.0  # the Y10 image is ten one-year exposures (jaxrobust.data.simulate.DEPTH_YEARS)
CHUNK_IMAGES = 64  # images per chunk: the float64 / int64 temporaries stay ~10 MB per 64 stamps
# Y10 + 10 B must be a whole number of electrons where float32 resolves it; a larger residual
# means `sky_y1_e` is not the sky the images were simulated with (or they are not our raw stamps).
INTEGER_TOLERANCE_E = 0.25


def noise_ladder(y10_e: np.ndarray, years: float, sky_y1_e, rng: np.random.Generator,
                 band_axis: int = 1) -> np.ndarray:
    """Y10 images observed with `years` of the ten years' exposure, in electrons at that depth.

    Args:
      y10_e: (N, 3, H, W) sky-subtracted Y10 stamps in electrons as the simulator writes them
        (NCHW float32, the dataset's images_Y10_*.npy; any layout with `band_axis` naming the
        band axis). May be a np.memmap; it is read chunk by chunk and never modified.
      years: t in (0, 10]: 10 returns `y10_e` unchanged, 1 a Y1-depth observation.
      sky_y1_e: the one-year sky per pixel in electrons, a scalar or one value per band
        (`simulate.sky_electrons_per_pixel("Y1", data.sky_area_per_pixel_arcsec2)`).
      rng: the generator of the thinning draws.
      band_axis: the axis of `y10_e` that holds the bands.

    Returns:
      An array of `y10_e`'s shape and dtype: sky-subtracted electrons of a t-year exposure
      (signal t I, variance t (I + B); the module docstring derives it).

    Raises:
      ValueError: `years` outside (0, 10]; a sky that is neither a scalar nor one value per
        band; or Y10 + 10 B not whole electrons (a sky level that is not the one the images
        were simulated with).
    """
    years = float(years)
    if not 0.0 < years <= Y10_YEARS:
        raise ValueError(f"years must be in (0, {Y10_YEARS:g}], got {years}")
    if not isinstance(y10_e, np.ndarray):
        y10_e = np.asarray(y10_e)
    keep = years / Y10_YEARS
    shape = [1] * y10_e.ndim
    shape[band_axis] = -1
    sky = np.asarray(sky_y1_e, np.float64)
    if sky.size not in (1, y10_e.shape[band_axis]):
        raise ValueError(f"sky_y1_e has {sky.size} values, axis {band_axis} of the images "
                         f"{y10_e.shape} has {y10_e.shape[band_axis]} bands: give one sky per band "
                         "or a scalar, and band_axis the images' band axis")
    sky_y10 = Y10_YEARS * np.broadcast_to(sky.ravel(), (y10_e.shape[band_axis],))
    sky_y10 = sky_y10.reshape(shape)
    out = np.empty(y10_e.shape, dtype=y10_e.dtype)
    for start in range(0, len(y10_e), CHUNK_IMAGES):
        block = np.asarray(y10_e[start:start + CHUNK_IMAGES], dtype=np.float64)
        counts = detected_electrons(block, sky_y10)
        if keep == 1.0:  # binomial(N, 1) = N: nothing added, the Y10 image bit for bit
            out[start:start + CHUNK_IMAGES] = y10_e[start:start + CHUNK_IMAGES]
            continue
        added = rng.binomial(counts, keep) - keep * counts
        out[start:start + CHUNK_IMAGES] = keep * block + added
    return out


def detected_electrons(y10_e: np.ndarray, sky_y10_e: np.ndarray) -> np.ndarray:
    """N = Y10 + 10 B as int64 counts, checked to be whole numbers where float32 resolves them.

    Args:
      y10_e: sky-subtracted Y10 electrons (float64).
      sky_y10_e: the ten-year sky per pixel, broadcastable against `y10_e`.
    """
    total = y10_e + sky_y10_e
    counts = np.rint(total)
    # float32 spacing of the stored value: where it is coarse (bright cores) the count is known
    # only to that spacing, and rounding to the nearest electron is the best estimate.
    resolved = np.spacing(np.abs(y10_e).astype(np.float32)) < INTEGER_TOLERANCE_E / 2
    residual = np.abs(total - counts)[resolved]
    if residual.size and residual.max() > INTEGER_TOLERANCE_E:
        raise ValueError(
            f"Y10 + 10 x sky is {residual.max():.3f} e- from a whole number of electrons: the images "
            f"are not raw Y10 stamps simulated with this sky level (sky_y1_e = {np.ravel(sky_y10_e / Y10_YEARS)} "
            "e-/pixel); pass simulate.sky_electrons_per_pixel('Y1', data.sky_area_per_pixel_arcsec2) "
            "of the dataset's config")
    return np.maximum(counts, 0).astype(np.int64)
