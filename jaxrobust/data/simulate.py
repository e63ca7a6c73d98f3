"""LSST-like g, r, i stamps of parametric galaxies, in electrons, at Y1 and Y10 depth.

NumPy + GalSim only (no JAX), so it runs in worker processes. The survey model is
WeakLensingDeblending's LSST model (Sánchez et al. 2021, JCAP 07, 043; its descwl/survey.py) with
the median sky of Ivezić et al. 2019 (ApJ 873, 111, Table 2), as Ćiprijanović et al. 2022
(section 2.2) describe theirs; each constant below names its source, and docs/data.md has the whole recipe.
One noiseless galaxy is drawn per band for a one-year exposure; Y10 is exactly 10x that expected
image (the exposure applied to the raw image, Ćiprijanović et al. 2022 section 2.2); each depth
gets its own Poisson noise stream. Every candidate galaxy has its own seed, so the dataset is
bit-identical for any number of worker processes and any stamp can be regenerated alone.

Galaxies come from one continuous population (data.population="continuous", jaxrobust.data.population)
labelled afterwards, by default on a Pan-STARRS-like catalogue rendering (data.label_by="catalogue",
jaxrobust.data.catalogue), classes filled by label in candidate order; or from the three per-class
recipes below with rejection sampling (data.population="recipes").
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import multiprocessing
import os
import sys
import time
from pathlib import Path

import galsim
import numpy as np

from jaxrobust import io, provenance
from jaxrobust.data import catalogue, morphology, population
from jaxrobust.progress import progress_bar

# --- Survey constants (Ivezić et al. 2019; WLD = WeakLensingDeblending), band order (g, r, i) ---
BANDS = ("g", "r", "i")
PIXEL_SCALE_ARCSEC = 0.2  # arcsec / pixel: Ivezić 2019 Table 1; WLD
STAMP_PIXELS = 100  # 100 x 100 = 20" x 20": the Zenodo arrays (N, 3, 100, 100)
# s / year: Ćiprijanović et al. 2022, section 2.2 (= Ivezić et al. 2019 Table 1 visits / 10 x 30 s)
EXPOSURE_PER_YEAR_S = np.array([240.0, 552.0, 552.0])
SKY_MAG_PER_ARCSEC2 = np.array([22.26, 21.20, 20.48])  # median dark sky: Ivezić 2019 Table 2
ZP24_E_PER_S = np.array([50.70, 43.70, 32.36])  # e-/s for AB = 24: WLD descwl/survey.py
ZENITH_FWHM_ARCSEC = np.array([0.73, 0.70, 0.67])  # atmospheric FWHM at zenith: WLD
AIRMASS = 1.2  # WLD's LSST airmass; FWHM scales as airmass^0.6
WAVELENGTH_NM = np.array([478.998, 619.952, 752.851])  # Airy lambda: WLD _central_wavelength
MIRROR_DIAMETER_M = 8.36  # clear aperture: WLD mirror_diameter
OBSCURATION = 0.640  # sqrt(1 - 32.4 / (pi 4.18^2)): derived as WLD does
DEPTH_YEARS = {"Y1": 1, "Y10": 10}  # paper: Y10 = ten years of exposure
RADIAN_ARCSEC = 206264.80624709636

# Colours (g - r, r - i) at z = 0.05 of GalSim's CWW SEDs through GalSim's LSST bandpasses
# (Coleman, Wu & Weedman 1980 templates as GalSim ships them), computed with GalSim.
SED_COLOURS = {
    "CWW_E_ext": (0.819, 0.399),  # ellipticals, bulges
    "CWW_Sbc_ext": (0.497, 0.332),  # early discs
    "CWW_Scd_ext": (0.379, 0.215),  # late discs
    "CWW_Im_ext": (0.163, 0.213),  # star-forming knots
}
CLASS_NAMES = morphology.CLASS_NAMES  # (spiral, elliptical, merger)
SPIRAL, ELLIPTICAL, MERGER = 0, 1, 2


# --- Photometry ---
def band_magnitudes(mag_r: float, sed: str) -> np.ndarray:
    """AB magnitudes (g, r, i) of a component with r-band magnitude `mag_r` and SED `sed`."""
    g_minus_r, r_minus_i = SED_COLOURS[sed]
    return np.array([mag_r + g_minus_r, mag_r, mag_r - r_minus_i])


def flux_electrons(mag: np.ndarray, exposure_s: np.ndarray) -> np.ndarray:
    """Total electrons per band: t * ZP24 * 10^(-0.4 (m - 24)) (WLD descwl/survey.py)."""
    return exposure_s * ZP24_E_PER_S * 10.0 ** (-0.4 * (np.asarray(mag) - 24.0))


def exposure_s(depth: str) -> np.ndarray:
    """Exposure time per band in seconds for depth "Y1" or "Y10"."""
    return DEPTH_YEARS[depth] * EXPOSURE_PER_YEAR_S


def sky_electrons_per_pixel(depth: str, sky_area_per_pixel_arcsec2: float = 0.04) -> np.ndarray:
    """Constant sky background B per band in e-/pixel: t ZP24 10^(-0.4 (m_sky - 24)) A_pix.

    `sky_area_per_pixel_arcsec2` is 0.2^2 = 0.04 for LSST pixels; 1.0 reproduces the noise
    level of the published archive (docs/data.md).
    """
    rate = ZP24_E_PER_S * 10.0 ** (-0.4 * (SKY_MAG_PER_ARCSEC2 - 24.0))  # e-/s/arcsec^2
    return exposure_s(depth) * rate * sky_area_per_pixel_arcsec2


def band_psf(band_index: int, gsparams: galsim.GSParams | None = None) -> galsim.GSObject:
    """Kolmogorov (zenith FWHM x airmass^0.6) convolved with an obscured Airy (WLD's PSF model)."""
    fwhm = ZENITH_FWHM_ARCSEC[band_index] * AIRMASS ** 0.6
    lam_over_diam = WAVELENGTH_NM[band_index] * 1e-9 / MIRROR_DIAMETER_M * RADIAN_ARCSEC
    atmosphere = galsim.Kolmogorov(fwhm=fwhm, gsparams=gsparams)
    optics = galsim.Airy(lam_over_diam=lam_over_diam, obscuration=OBSCURATION, gsparams=gsparams)
    return galsim.Convolve(atmosphere, optics, gsparams=gsparams)


# --- Simulation settings ---
# "continuous": one generative population (jaxrobust.data.population), classes filled by label;
# "recipes": the three per-class generators below with rejection sampling.
POPULATIONS = ("continuous", "recipes")
# "catalogue": G-M20 on a Pan-STARRS-like rendering (jaxrobust.data.catalogue, as the paper's TNG
# labels); "gini_m20": G-M20 on the label band/depth of our own LSST stamp; "intended": the drawn class.
LABELLERS = ("catalogue", "gini_m20", "intended")


@dataclasses.dataclass(frozen=True)
class SimulationSpec:
    """What to simulate; a picklable view of `config.data` (see jaxrobust.config.base_config)."""

    seed: int = 0
    counts: tuple[int, int, int] = (14312, 8151, 2542)  # unique (spiral, elliptical, merger)
    mag_r_range: tuple[float, float] = (14.0, 17.5)
    sky_area_per_pixel_arcsec2: float = 0.04
    # The dataclass defaults are the legacy recipes (old datasets, the recipe tests);
    # base_config's data section holds the new defaults ("continuous", "catalogue").
    population: str = "recipes"
    label_by: str = "gini_m20"
    catalogue_mag_shift: float = 0.0  # magnitudes added to every galaxy in the catalogue rendering
    label_band: str = "i"
    label_depth: str = "Y10"
    max_candidates_factor: float = 4.0
    folding_threshold: float = 1e-2
    maxk_threshold: float = 3e-3

    @classmethod
    def from_config(cls, config) -> "SimulationSpec":
        data = config.data
        spec = cls(
            seed=int(config.seed),
            counts=(int(data.n_spiral), int(data.n_elliptical), int(data.n_merger)),
            mag_r_range=tuple(float(m) for m in data.mag_r_range),
            sky_area_per_pixel_arcsec2=float(data.sky_area_per_pixel_arcsec2),
            population=data.population,
            label_by=data.label_by,
            catalogue_mag_shift=float(data.catalogue_mag_shift),
            label_band=data.label_band,
            label_depth=data.label_depth,
            max_candidates_factor=float(data.max_candidates_factor),
            folding_threshold=float(data.gsparams_folding_threshold),
            maxk_threshold=float(data.gsparams_maxk_threshold),
        )
        spec.validate()
        return spec

    def validate(self) -> None:
        if self.population not in POPULATIONS:
            raise ValueError(f"data.population must be one of {POPULATIONS}, got {self.population!r}")
        if self.label_by not in LABELLERS:
            raise ValueError(f"data.label_by must be one of {LABELLERS}, got {self.label_by!r}")
        if self.label_band not in BANDS:
            raise ValueError(f"data.label_band must be one of {BANDS}, got {self.label_band!r}")
        if self.label_depth not in ("Y1", "Y10", "noiseless"):
            raise ValueError(f"data.label_depth must be Y1, Y10 or noiseless, got {self.label_depth!r}")
        if min(self.counts) < 1:
            raise ValueError(f"every class needs at least one galaxy, got counts {self.counts}")
        lo, hi = self.mag_r_range
        if not lo < hi:
            raise ValueError(f"data.mag_r_range must be (bright, faint), got {self.mag_r_range}")

    @property
    def gsparams(self) -> galsim.GSParams:
        return galsim.GSParams(folding_threshold=self.folding_threshold,
                               maxk_threshold=self.maxk_threshold)


def candidate_seed(run_seed: int, intended_class: int, index: int) -> int:
    """The seed of candidate `index` of a class: independent of order, workers and chunking."""
    return int(np.random.SeedSequence([run_seed, intended_class, index]).generate_state(1)[0])


# --- Galaxy models (docs/data.md): a galaxy is a list of component dicts (plain numbers, JSON-able) ---
def _disc_shape(rng: np.random.Generator, q_range=(0.3, 1.0)) -> dict:
    return dict(q=float(rng.uniform(*q_range)), beta_deg=float(rng.uniform(0.0, 180.0)))


def _elliptical_components(rng, hlr_range) -> list[dict]:
    # n on a 0.25 grid: GalSim caches Sersic profiles per n, a fresh n costs ~80 ms to set up.
    n = float(np.round(rng.uniform(3.0, 5.0) * 4.0) / 4.0)
    hlr = float(rng.uniform(*hlr_range))
    return [dict(kind="sersic", n=n, hlr=hlr, sed="CWW_E_ext", frac=1.0,
                 **_disc_shape(rng, (0.6, 1.0)))]


def _spiral_components(rng, hlr_range) -> list[dict]:
    hlr = float(rng.uniform(*hlr_range))
    shape = _disc_shape(rng, (0.3, 1.0))
    sed = "CWW_Sbc_ext" if rng.uniform() < 0.5 else "CWW_Scd_ext"
    bulge_frac = float(rng.uniform(0.0, 0.10)) if rng.uniform() < 0.7 else 0.0
    knot_frac = float(rng.uniform(0.10, 0.30)) if rng.uniform() < 0.7 else 0.0
    disc_frac = 1.0 - bulge_frac
    components = []
    if rng.uniform() < 0.5:
        components.append(dict(kind="arms", hlr=hlr, sed=sed, frac=disc_frac * (1 - knot_frac),
                               amplitude=float(rng.uniform(0.1, 0.3)),
                               pitch_deg=float(rng.uniform(12.0, 25.0)),
                               phi0=float(rng.uniform(0.0, 2 * math.pi)), **shape))
    else:
        components.append(dict(kind="exponential", hlr=hlr, sed=sed,
                               frac=disc_frac * (1 - knot_frac), **shape))
    if knot_frac > 0:
        components.append(dict(kind="knots", hlr=hlr, sed="CWW_Im_ext",
                               frac=disc_frac * knot_frac, npoints=int(rng.integers(50, 151)),
                               knot_seed=int(rng.integers(1, 2**31 - 1)), **shape))
    if bulge_frac > 0:
        components.append(dict(kind="sersic", n=4.0, hlr=0.2 * hlr, sed="CWW_E_ext",
                               frac=bulge_frac, **shape))
    return components


def _tail_component(rng, centre: tuple[float, float], frac: float) -> dict:
    return dict(kind="tail", sed="CWW_Sbc_ext", frac=frac, dx=centre[0], dy=centre[1],
                length=float(rng.uniform(3.0, 7.0)), width=float(rng.uniform(0.4, 0.9)),
                angle_deg=float(rng.uniform(0.0, 360.0)),
                curvature=float(rng.choice([-1.0, 1.0]) * rng.uniform(0.1, 0.3)))


def _merger_components(rng) -> list[dict]:
    ratio = float(rng.uniform(1.0, 3.0))  # flux ratio primary : secondary
    separation = float(rng.uniform(3.0, 8.0))  # arcsec; d = 1.5" does not label as merger (measured with our labeller)
    angle = rng.uniform(0.0, 2 * math.pi)
    f1, f2 = ratio / (1 + ratio), 1 / (1 + ratio)
    # Flux-weighted centre at the stamp centre: offsets inversely proportional to flux.
    ux, uy = math.cos(angle), math.sin(angle)
    offsets = [(-separation * f2 * ux, -separation * f2 * uy), (separation * f1 * ux, separation * f1 * uy)]
    tail_frac = float(rng.uniform(0.05, 0.20)) if rng.uniform() < 0.8 else 0.0
    components = []
    for frac, (dx, dy) in zip((f1, f2), offsets):
        recipe = _elliptical_components if rng.uniform() < 0.5 else _spiral_components
        for comp in recipe(rng, (1.0, 2.5)):
            comp.update(frac=comp["frac"] * frac * (1 - tail_frac), dx=dx, dy=dy)
            components.append(comp)
    if tail_frac > 0:
        for frac, (dx, dy) in zip((f1, f2), offsets):
            components.append(_tail_component(rng, (dx, dy), tail_frac * frac))
    return components


def draw_galaxy(rng: np.random.Generator, intended_class: int, spec: SimulationSpec) -> dict:
    """Draws the parameters of one galaxy of the intended class (no pixels yet)."""
    if intended_class == ELLIPTICAL:
        components = _elliptical_components(rng, (1.5, 5.0))
    elif intended_class == SPIRAL:
        components = _spiral_components(rng, (2.0, 5.0))
    elif intended_class == MERGER:
        components = _merger_components(rng)
    else:
        raise ValueError(f"intended class must be 0, 1 or 2, got {intended_class}")
    jitter = rng.uniform(-0.5, 0.5, size=2) * PIXEL_SCALE_ARCSEC  # sub-pixel centre
    return dict(intended_class=intended_class, mag_r=float(rng.uniform(*spec.mag_r_range)),
                jitter_arcsec=[float(jitter[0]), float(jitter[1])], components=components)


def _arms_template(comp: dict, pixels: int = 512, scale: float = 0.05) -> np.ndarray:
    """Exponential disc with m = 2 logarithmic arms on a 4x oversampled grid (docs/data.md)."""
    h = comp["hlr"] / 1.678  # exponential scale length from the half-light radius
    coords = (np.arange(pixels) - (pixels - 1) / 2) * scale
    x, y = np.meshgrid(coords, coords)
    r = np.hypot(x, y)
    phi = np.arctan2(y, x)
    psi = phi - comp["phi0"] - np.log(np.maximum(r, 1e-3) / h) / math.tan(math.radians(comp["pitch_deg"]))
    arm_weight = np.cos(2 * psi / 2) ** 8  # m = 2 arms: cos^8(m psi / 2)
    taper = 1.0 - np.exp(-(2 * r / h) ** 2)  # no arms in the centre
    return np.exp(-r / h) * (1.0 + comp["amplitude"] * taper * (2 * arm_weight - 1))


def _tail_template(comp: dict, pixels: int = 256, scale: float = 0.1) -> np.ndarray:
    """A curved Gaussian ridge starting at the origin (a tidal tail), fading along its length."""
    s = np.linspace(0.0, comp["length"], 48)
    bend = comp["curvature"] * s ** 2  # quadratic bend away from the straight line
    theta = math.radians(comp["angle_deg"])
    px = s * math.cos(theta) - bend * math.sin(theta)
    py = s * math.sin(theta) + bend * math.cos(theta)
    coords = (np.arange(pixels) - (pixels - 1) / 2) * scale
    gx, gy = np.meshgrid(coords, coords)
    d2 = (gx[..., None] - px) ** 2 + (gy[..., None] - py) ** 2
    nearest = np.argmin(d2, axis=-1)
    fade = np.exp(-s[nearest] / comp["length"])
    return fade * np.exp(-np.min(d2, axis=-1) / (2 * comp["width"] ** 2))


def _component_profile(comp: dict, gsparams: galsim.GSParams) -> galsim.GSObject:
    """Unit-flux GalSim profile of one component, sheared, rotated and shifted."""
    kind = comp["kind"]
    if kind == "sersic":
        prof = galsim.Sersic(comp["n"], half_light_radius=comp["hlr"], gsparams=gsparams)
    elif kind == "exponential":
        prof = galsim.Exponential(half_light_radius=comp["hlr"], gsparams=gsparams)
    elif kind == "knots":
        prof = galsim.RandomKnots(comp["npoints"], half_light_radius=comp["hlr"],
                                  rng=galsim.BaseDeviate(comp["knot_seed"]), gsparams=gsparams)
    elif kind in ("arms", "tail"):
        template, scale = ((_arms_template(comp), 0.05) if kind == "arms" else (_tail_template(comp), 0.1))
        # pad_factor 2 instead of 4: 5x faster, changes pixels by < 1e-4 of the peak.
        prof = galsim.InterpolatedImage(galsim.Image(template, scale=scale), pad_factor=2,
                                        gsparams=gsparams).withFlux(1.0)
    else:
        raise ValueError(f"unknown component kind {kind!r}")
    if "q" in comp:
        prof = prof.shear(q=comp["q"], beta=comp["beta_deg"] * galsim.degrees)
    return prof.shift(comp.get("dx", 0.0), comp.get("dy", 0.0))


def draw_expected(galaxy: dict, spec: SimulationSpec, bands=(0, 1, 2),
                  psfs: dict | None = None, components: list | None = None) -> np.ndarray:
    """Noiseless one-year images (len(bands), 100, 100), float64 e-/pixel, PSF and pixel included.

    `components`: population.galaxy_components of a continuous-population galaxy, if built already.
    """
    gsparams = spec.gsparams
    if galaxy.get("population") == "continuous":
        return _draw_expected_continuous(galaxy, spec, bands, psfs, components)
    profiles = [_component_profile(c, gsparams) for c in galaxy["components"]]
    one_year = exposure_s("Y1")
    out = np.empty((len(bands), STAMP_PIXELS, STAMP_PIXELS))
    for slot, b in enumerate(bands):
        fluxes = [flux_electrons(band_magnitudes(galaxy["mag_r"] - 2.5 * math.log10(c["frac"]), c["sed"]),
                                 one_year)[b] for c in galaxy["components"]]
        galaxy_b = galsim.Add([p.withFlux(f) for p, f in zip(profiles, fluxes)], gsparams=gsparams)
        galaxy_b = galaxy_b.shift(*galaxy["jitter_arcsec"])
        psf = psfs[b] if psfs is not None else band_psf(b, gsparams)
        # float64: GalSim would draw float32 by default; the noise and sky are added in float64.
        image = galsim.Convolve(galaxy_b, psf, gsparams=gsparams).drawImage(
            nx=STAMP_PIXELS, ny=STAMP_PIXELS, scale=PIXEL_SCALE_ARCSEC, dtype=np.float64)
        out[slot] = image.array
    return out


def _draw_expected_continuous(galaxy: dict, spec: SimulationSpec, bands, psfs, components) -> np.ndarray:
    """draw_expected for a jaxrobust.data.population galaxy (profiles in zero-point flux units)."""
    gsparams = spec.gsparams
    profiles = population.band_profiles(galaxy, gsparams, bands, components)
    # AB magnitude 0 in e- for one year: t ZP24 10^(0.4 x 24) (WLD descwl/survey.py)
    zero_point_e = flux_electrons(np.zeros(3), exposure_s("Y1"))
    out = np.empty((len(bands), STAMP_PIXELS, STAMP_PIXELS))
    for slot, (b, profile) in enumerate(zip(bands, profiles)):
        psf = psfs[b] if psfs is not None else band_psf(b, gsparams)
        out[slot] = galsim.Convolve(profile.withScaledFlux(zero_point_e[b]), psf, gsparams=gsparams).drawImage(
            nx=STAMP_PIXELS, ny=STAMP_PIXELS, scale=PIXEL_SCALE_ARCSEC, dtype=np.float64).array
    return out


def recipe_band_profile(galaxy: dict, band_index: int, gsparams: galsim.GSParams) -> galsim.GSObject:
    """A recipe galaxy's profile in one band, flux in AB zero-point units (for the catalogue)."""
    fluxes = [10.0 ** (-0.4 * band_magnitudes(galaxy["mag_r"] - 2.5 * math.log10(c["frac"]), c["sed"])[band_index])
              for c in galaxy["components"]]
    profile = galsim.Add([_component_profile(c, gsparams).withFlux(f) for c, f in zip(galaxy["components"], fluxes)],
                         gsparams=gsparams)
    return profile.shift(*galaxy["jitter_arcsec"])


def add_noise(expected_e: np.ndarray, sky_e: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson(I + B) - B per pixel (as WLD's descwl/analysis.py add_noise): sky-subtracted electrons, float64."""
    lam = np.clip(expected_e, 0.0, None) + sky_e  # FFT ringing can leave tiny negative values
    return rng.poisson(lam).astype(np.float64) - sky_e


def noise_rng(galaxy_seed: int, depth: str, band_index: int) -> np.random.Generator:
    """Independent noise stream per galaxy, depth and band (never derive Y1 from Y10)."""
    return np.random.default_rng([galaxy_seed, DEPTH_YEARS[depth], band_index])


def observe(expected_y1: np.ndarray, galaxy_seed: int, depth: str, spec: SimulationSpec,
            bands=(0, 1, 2)) -> np.ndarray:
    """Noisy sky-subtracted image at `depth` from the one-year expected image (bands, H, W)."""
    sky = sky_electrons_per_pixel(depth, spec.sky_area_per_pixel_arcsec2)
    scale = DEPTH_YEARS[depth]  # exposure applied to the raw image: Y10 = 10 x Y1 (Ćiprijanović et al. 2022, section 2.2)
    return np.stack([add_noise(scale * expected_y1[slot], sky[b], noise_rng(galaxy_seed, depth, b))
                     for slot, b in enumerate(bands)])


# --- One candidate: draw, label, accept or reject ---
@dataclasses.dataclass
class Candidate:
    """One simulated candidate galaxy; images are None when it was rejected."""

    intended_class: int
    index: int
    seed: int
    label: int
    gini: float
    m20: float
    bulge: float  # F(G, M20)
    merger: float  # S(G, M20)
    galaxy: dict
    accepted: bool
    y1: np.ndarray | None = None  # (3, 100, 100) float32 e-
    y10: np.ndarray | None = None
    gm20_label: int = -1  # what the G-M20 labeller said (-1: undetected), whatever label_by is
    # G, M20, F, S and label measured on the catalogue rendering and on the label band of our
    # stamp (label_depth, Y10 by default); empty when not measured (the catalogue for recipes
    # labelled otherwise; the stamp for candidates rejected before their stamp was drawn).
    catalogue: dict = dataclasses.field(default_factory=dict)
    stamp: dict = dataclasses.field(default_factory=dict)


_PSF_CACHE: dict = {}


def _psfs(spec: SimulationSpec) -> dict:
    key = (spec.folding_threshold, spec.maxk_threshold)
    if key not in _PSF_CACHE:
        _PSF_CACHE[key] = {b: band_psf(b, spec.gsparams) for b in range(3)}
    return _PSF_CACHE[key]


def _catalogue_psf(spec: SimulationSpec):
    key = ("catalogue", spec.folding_threshold, spec.maxk_threshold)
    if key not in _PSF_CACHE:
        _PSF_CACHE[key] = catalogue.psf(spec.gsparams)
    return _PSF_CACHE[key]


def _measure_or_nan(image: np.ndarray, sky_sigma: float) -> dict:
    """morphology.measure, or NaN statistics and label -1 when nothing is detected."""
    try:
        return morphology.measure(image, sky_sigma)
    except ValueError:  # nothing detected: a useless stamp either way
        return dict(gini=math.nan, m20=math.nan, F=math.nan, S=math.nan, label=-1)


def label_image(expected_band_y1: np.ndarray, seed: int, band: int, spec: SimulationSpec):
    """(image, sky sigma) the labeller sees: the label band at the label depth (docs/data.md)."""
    depth = "Y10" if spec.label_depth == "noiseless" else spec.label_depth
    sky = sky_electrons_per_pixel(depth, spec.sky_area_per_pixel_arcsec2)[band]
    if spec.label_depth == "noiseless":
        return DEPTH_YEARS["Y10"] * expected_band_y1, math.sqrt(sky)
    image = observe(expected_band_y1[None], seed, depth, spec, bands=(band,))[0]
    return image, math.sqrt(sky)


def simulate_candidate(spec: SimulationSpec, intended_class: int, index: int) -> Candidate:
    """Draws recipe candidate `index` of a class, labels it by G-M20 and, if kept, observes it twice."""
    seed = candidate_seed(spec.seed, intended_class, index)
    galaxy = draw_galaxy(np.random.default_rng(seed), intended_class, spec)
    psfs = _psfs(spec)
    band = BANDS.index(spec.label_band)
    expected_label_band = draw_expected(galaxy, spec, bands=(band,), psfs=psfs)[0]
    image, sky_sigma = label_image(expected_label_band, seed, band, spec)
    stats = _measure_or_nan(image, sky_sigma)
    stamp = stats
    cat = {}
    if spec.label_by == "catalogue":  # the same galaxy as the Pan-STARRS-like catalogue saw it
        profile = recipe_band_profile(galaxy, catalogue.LABEL_BAND, spec.gsparams)
        cat = catalogue.label_profile(profile.withScaledFlux(10.0 ** (-0.4 * spec.catalogue_mag_shift)),
                                      seed, spec.gsparams, _catalogue_psf(spec))
        stats = cat
    label = intended_class if spec.label_by == "intended" else int(stats["label"])
    accepted = label == intended_class and np.isfinite(stats["gini"])
    candidate = Candidate(intended_class, index, seed, label, float(stats["gini"]), float(stats["m20"]),
                          float(stats["F"]), float(stats["S"]), galaxy, bool(accepted),
                          gm20_label=int(stamp["label"]), catalogue=cat, stamp=stamp)
    if accepted:
        expected = draw_expected(galaxy, spec, psfs=psfs)
        candidate.y1 = observe(expected, seed, "Y1", spec).astype(np.float32)
        candidate.y10 = observe(expected, seed, "Y10", spec).astype(np.float32)
    return candidate


def _simulate_task(args) -> Candidate:
    return simulate_candidate(*args)


# --- The continuous population: one stream of candidates, classes filled by label ---
def population_seed(run_seed: int, index: int) -> int:
    """The seed of candidate `index` of the continuous population (stream 3: apart from the
    recipes' per-class streams 0-2)."""
    return int(np.random.SeedSequence([run_seed, 3, index]).generate_state(1)[0])


def simulate_population_candidate(spec: SimulationSpec, index: int, open_classes=(0, 1, 2)) -> Candidate:
    """Draws candidate `index` of the continuous population and labels it; draws and observes its
    stamps when its label is one of `open_classes` (the classes still short of their count).

    The catalogue's G-M20 is always measured (metadata); the stamp's (label band at label
    depth, by default the Y10 i band the network sees) whenever the stamp is drawn.
    """
    seed = population_seed(spec.seed, index)
    galaxy = population.draw_galaxy(np.random.default_rng(seed), spec.mag_r_range, PIXEL_SCALE_ARCSEC)
    intended = population.intended_class(galaxy)
    components = population.galaxy_components(galaxy, spec.gsparams)
    cat_profile = population.band_profiles(galaxy, spec.gsparams, (catalogue.LABEL_BAND,), components)[0]
    cat = catalogue.label_profile(cat_profile.withScaledFlux(10.0 ** (-0.4 * spec.catalogue_mag_shift)),
                                  seed, spec.gsparams, _catalogue_psf(spec))
    candidate = Candidate(intended, index, seed, -1, math.nan, math.nan, math.nan, math.nan, galaxy, False,
                          catalogue=cat)
    if spec.label_by != "gini_m20":
        label = int(cat["label"]) if spec.label_by == "catalogue" else intended
        if label not in open_classes:
            candidate.label = label
            return candidate
    psfs = _psfs(spec)
    expected = draw_expected(galaxy, spec, psfs=psfs, components=components)
    band = BANDS.index(spec.label_band)
    stamp = _measure_or_nan(*label_image(expected[band], seed, band, spec))
    chosen = dict(catalogue=cat, gini_m20=stamp).get(spec.label_by, stamp)  # intended: the stamp's G-M20
    candidate.label = dict(catalogue=int(cat["label"]), gini_m20=int(stamp["label"])).get(spec.label_by, intended)
    candidate.gini, candidate.m20 = float(chosen["gini"]), float(chosen["m20"])
    candidate.bulge, candidate.merger = float(chosen["F"]), float(chosen["S"])
    candidate.stamp, candidate.gm20_label = stamp, int(stamp["label"])
    candidate.accepted = candidate.label in open_classes and (spec.label_by == "intended" or np.isfinite(candidate.gini))
    if candidate.accepted:
        candidate.y1 = observe(expected, seed, "Y1", spec).astype(np.float32)
        candidate.y10 = observe(expected, seed, "Y10", spec).astype(np.float32)
    return candidate


def _population_task(args) -> Candidate:
    return simulate_population_candidate(*args)


def _population_batch_size(spec: SimulationSpec, kept: list, tried: int, seen: np.ndarray, limit: int) -> int:
    """Candidates for the next batch: enough for the class slowest to fill at the label
    fractions seen so far (+10 %), at least 2, at most what `limit` leaves."""
    fractions = (seen + 1.0) / (seen.sum() + 3.0)
    need = max(math.ceil(1.1 * (spec.counts[c] - len(kept[c])) / max(fractions[c], 0.02))
               for c in range(3) if len(kept[c]) < spec.counts[c])
    return max(0, min(need + 2, limit - tried))


def _require_counts(kept: list, spec: SimulationSpec, shortfall) -> None:
    """RuntimeError(shortfall(class, name)) for the first class with fewer galaxies than its count."""
    for cls, name in enumerate(CLASS_NAMES):
        if len(kept[cls]) < spec.counts[cls]:
            raise RuntimeError(shortfall(cls, name))


@contextlib.contextmanager
def _candidate_workers(spec: SimulationSpec, workers: int, progress: bool):
    """(map, bar): `map(fn, tasks)` over worker processes (in order) or in this process, and the
    progress bar of accepted galaxies; both closed on the way out, also on an interruption."""
    bar = progress_bar(total=sum(spec.counts), desc="simulate", unit="gal", disable=not progress)
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        yield (lambda fn, tasks: pool.imap(fn, tasks, chunksize=1)) if pool else map, bar
    finally:
        bar.close()
        if pool:
            pool.terminate()


def _simulate_population(spec: SimulationSpec, workers: int, progress: bool) -> "SimulationResult":
    """simulate_galaxies for the continuous population: candidates in index order, each kept when
    its label's class is still short of its count (never rejected for being ambiguous)."""
    start = time.perf_counter()
    kept: list[list[Candidate]] = [[], [], []]
    tried, next_index = 0, 0
    seen = np.zeros(3)  # labels of the candidates used so far (for the batch size)
    confusion = np.zeros((3, 4), dtype=np.int64)
    limit = int(math.ceil(sum(spec.counts) * spec.max_candidates_factor))
    with _candidate_workers(spec, workers, progress) as (run, bar):
        while any(len(kept[c]) < spec.counts[c] for c in range(3)):
            size = _population_batch_size(spec, kept, next_index, seen, limit)
            if size == 0:
                break
            open_classes = tuple(c for c in range(3) if len(kept[c]) < spec.counts[c])
            tasks = [(spec, k, open_classes) for k in range(next_index, next_index + size)]
            next_index += size
            for candidate in run(_population_task, tasks):
                if all(len(kept[c]) == spec.counts[c] for c in range(3)):
                    # The rest of the batch was look-ahead: stop waiting for it (the pool is
                    # terminated on the way out). The medium dataset, which waited, had 2,991 of
                    # 3,000 at 615 s and ended at 820 s after 20 more candidates, each under 0.3 s.
                    break
                tried += 1
                confusion[candidate.intended_class, candidate.label] += 1  # -1 (undetected) -> last column
                if candidate.label >= 0:
                    seen[candidate.label] += 1
                if candidate.label >= 0 and len(kept[candidate.label]) < spec.counts[candidate.label]:
                    if candidate.accepted:
                        kept[candidate.label].append(candidate)
                        bar.update(1)
                        bar.set_postfix(tried=tried)
    _require_counts(kept, spec, lambda cls, name: (
        f"only {len(kept[cls])} of {spec.counts[cls]} {name} galaxies among {tried} candidates of the "
        f"continuous population (data.max_candidates_factor={spec.max_candidates_factor}); raise the "
        "factor or lower the count"))
    by_label = np.array([len(k) for k in kept])
    spare = {name: int(confusion[:, c].sum() - by_label[c]) for c, name in enumerate(CLASS_NAMES)}
    return SimulationResult([c for cls_kept in kept for c in cls_kept], dict(all=tried),
                            {name: spare[name] / max(tried, 1) for name in CLASS_NAMES}, confusion,
                            time.perf_counter() - start)


# --- Many candidates: rejection sampling to the class counts, in parallel ---
@dataclasses.dataclass
class SimulationResult:
    """The accepted galaxies of all classes, in class order, and the sampling statistics."""

    accepted: list[Candidate]
    tried: dict[str, int]  # candidates drawn per class
    rejection_rate: dict[str, float]
    label_confusion: np.ndarray  # (3, 4): intended class x G-M20 label (last column: undetected)
    seconds: float


def _next_batch(spec: SimulationSpec, kept: list, next_index: list, tried: list) -> list[tuple]:
    """Candidate tasks for the classes still short, sized by the acceptance rate seen so far."""
    tasks = []
    for cls in range(3):
        short = spec.counts[cls] - len(kept[cls])
        if short <= 0:
            continue
        limit = int(math.ceil(spec.counts[cls] * spec.max_candidates_factor))
        acceptance = (len(kept[cls]) + 1) / (tried[cls] + 1)
        size = min(int(math.ceil(1.1 * short / max(acceptance, 0.05))) + 2, limit - next_index[cls])
        tasks += [(spec, cls, k) for k in range(next_index[cls], next_index[cls] + size)]
        next_index[cls] += size
    return tasks


def main_module_is_spawn_safe() -> bool:
    """Whether "spawn" worker processes can start: they import the __main__ script, so a script
    that calls the simulation at top level, unguarded, would recurse and hang. Interactive
    sessions, notebooks, `python -c` and guarded scripts (the jaxrobust CLI, pytest) are safe."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if path is None:
        return True
    try:
        return "__main__" in Path(path).read_text(errors="ignore")
    except OSError:
        return True


def simulate_galaxies(spec: SimulationSpec, workers: int = 0, progress: bool = True) -> SimulationResult:
    """Simulates until each class has its count of G-M20-confirmed galaxies.

    Candidates of a class are drawn in index order, in batches sized by the acceptance rate so
    far, and the first `count` accepted ones are kept, so the output does not depend on
    `workers`. Raises RuntimeError if a class needs more than `max_candidates_factor` x its
    count.
    """
    spec.validate()
    workers = workers or os.cpu_count() or 1
    if workers > 1 and not main_module_is_spawn_safe():
        print("jaxrobust: simulating in this process: worker processes re-run the calling script, "
              "which has no `if __name__ == \"__main__\":` guard", file=sys.stderr)
        workers = 1
    if spec.population == "continuous":
        return _simulate_population(spec, workers, progress)
    start = time.perf_counter()
    kept: list[list[Candidate]] = [[], [], []]
    next_index, tried = [0, 0, 0], [0, 0, 0]
    confusion = np.zeros((3, 4), dtype=np.int64)
    with _candidate_workers(spec, workers, progress) as (run, bar):
        while tasks := _next_batch(spec, kept, next_index, tried):
            for candidate in run(_simulate_task, tasks):
                cls = candidate.intended_class
                if len(kept[cls]) == spec.counts[cls]:
                    if all(len(kept[c]) == spec.counts[c] for c in range(3)):
                        break  # the rest of the batch was look-ahead: stop waiting for it
                    continue  # look-ahead beyond this class's count: computed, not used
                tried[cls] += 1
                confusion[cls, candidate.gm20_label] += 1  # label -1 (undetected) -> last column
                if candidate.accepted:
                    kept[cls].append(candidate)
                    bar.update(1)
                    bar.set_postfix(tried=sum(tried))
    _require_counts(kept, spec, lambda cls, name: (
        f"only {len(kept[cls])} of {spec.counts[cls]} {name} candidates out of {tried[cls]} "
        f"passed the G-M20 labeller (data.max_candidates_factor={spec.max_candidates_factor}); "
        "raise the factor or set data.label_by='intended'"))
    rates = {name: 1.0 - spec.counts[c] / tried[c] for c, name in enumerate(CLASS_NAMES)}
    return SimulationResult([c for cls_kept in kept for c in cls_kept],
                            dict(zip(CLASS_NAMES, tried)), rates, confusion,
                            time.perf_counter() - start)


# --- The whole dataset: simulate, split, augment, write (Zenodo layout + metadata) ---
def _split_plan(labels: np.ndarray, config, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per split: (galaxy index, augmentation index) of every image, shuffled within the split."""
    from jaxrobust.data import store

    fractions, enabled = config.data.split_fractions, bool(config.data.merger_augment)
    plan = {}
    if config.data.split_mode == "galaxy":  # split unique galaxies, then augment: no leakage
        for split, members in store.split_indices(labels, fractions, rng).items():
            source, kind = store.expand_with_augmentation(labels[members], MERGER, enabled)
            plan[split] = (members[source], kind)
    elif config.data.split_mode == "paper":  # augment, then split images at random (leaks)
        source, kind = store.expand_with_augmentation(labels, MERGER, enabled)
        for split, rows in store.split_indices(labels[source], fractions, rng).items():
            plan[split] = (source[rows], kind[rows])
    else:
        raise ValueError(f"data.split_mode must be 'galaxy' or 'paper', got {config.data.split_mode!r}")
    for split, (galaxy, kind) in plan.items():
        order = rng.permutation(len(galaxy))
        plan[split] = (galaxy[order], kind[order])
    return plan


def _check_split_sizes(config) -> None:
    """Fails before simulating when the counts leave a split empty (store cannot hold one)."""
    from jaxrobust.data import store

    data = config.data
    counts = np.array([data.n_spiral, data.n_elliptical, data.n_merger])
    if data.split_mode == "paper" and data.merger_augment:
        counts[MERGER] *= len(store.AUGMENTATIONS)  # the paper splits augmented images
    # split_indices rounds valid and test per class; train takes the rest.
    valid = sum(int(round(data.split_fractions[1] * n)) for n in counts)
    test = sum(int(round(data.split_fractions[2] * n)) for n in counts)
    sizes = dict(train=int(counts.sum()) - valid - test, valid=valid, test=test)
    empty = [split for split, size in sizes.items() if size <= 0]
    if empty:
        raise ValueError(f"data counts (n_spiral, n_elliptical, n_merger) = {tuple(counts.tolist())} with "
                         f"data.split_fractions={tuple(data.split_fractions)} leave no galaxies in "
                         f"{', '.join(empty)} (sizes {sizes}); raise the counts")


def _measurement_fields(galaxies: list[Candidate]) -> dict[str, np.ndarray]:
    """catalogue_* and stamp_* (gini, m20, F, S, label) per galaxy; NaN and -1 where not measured."""
    fields = {}
    for source in ("catalogue", "stamp"):
        for key in ("gini", "m20", "F", "S"):
            fields[f"{source}_{key}"] = np.array([getattr(g, source).get(key, math.nan) for g in galaxies], dtype=np.float64)
        fields[f"{source}_label"] = np.array([getattr(g, source).get("label", -1) for g in galaxies], dtype=np.int64)
    return fields


def label_agreement(catalogue_label: np.ndarray, stamp_label: np.ndarray) -> dict:
    """How often the catalogue's and our stamp's G-M20 labels agree (the label noise the network
    faces), over the galaxies with both measured; confusion rows catalogue, columns stamp."""
    both = (np.asarray(catalogue_label) >= 0) & (np.asarray(stamp_label) >= 0)
    confusion = np.zeros((3, 3), dtype=np.int64)
    np.add.at(confusion, (np.asarray(catalogue_label)[both], np.asarray(stamp_label)[both]), 1)
    n = int(both.sum())
    return dict(galaxies=n, fraction=round(float(np.trace(confusion) / n), 4) if n else None,
                rows="catalogue label", columns="Y10-stamp label (label_band at label_depth)",
                counts=confusion.tolist())


def simulate_dataset(config, out_dir, workers: int | None = None, progress: bool = True) -> dict:
    """Simulates the dataset of `config.data` into `out_dir` (Zenodo layout + metadata).

    Returns the dataset.json contents (counts, rejection rates, timings, checksums). Every file
    is written atomically and dataset.json last, so an interrupted run leaves no valid dataset.
    Worker processes ("spawn") need the calling script to guard its top level with
    `if __name__ == "__main__":`; an unguarded script simulates in-process (with a note).
    """
    from jaxrobust.data import store

    out_dir = Path(out_dir)
    spec = SimulationSpec.from_config(config)
    _check_split_sizes(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "dataset.json").unlink(missing_ok=True)
    # written first, removed after dataset.json: a folder killed anywhere in between says so
    (out_dir / provenance.SIMULATING_MARKER).write_text("`jaxrobust simulate` is writing this dataset\n")
    result = simulate_galaxies(spec, workers=config.data.workers if workers is None else workers,
                               progress=progress)
    galaxies = result.accepted
    labels = np.array([g.label for g in galaxies])
    rng = np.random.default_rng([spec.seed, 7001])  # the split stream
    plan = _split_plan(labels, config, rng)
    fields = dict(gini=np.array([g.gini for g in galaxies]), m20=np.array([g.m20 for g in galaxies]),
                  F=np.array([g.bulge for g in galaxies]), S=np.array([g.merger for g in galaxies]),
                  intended_class=np.array([g.intended_class for g in galaxies]),
                  seed=np.array([g.seed for g in galaxies], dtype=np.int64),
                  # regenerates the galaxy: simulate_population_candidate(spec, index) (continuous),
                  # simulate_candidate(spec, intended_class, index) (recipes)
                  candidate_index=np.array([g.index for g in galaxies], dtype=np.int64),
                  mag_r=np.array([g.galaxy["mag_r"] for g in galaxies]))
    fields.update(_measurement_fields(galaxies))
    counts = {}
    for split, (galaxy_index, kind) in plan.items():
        y10 = np.stack([store.augment(galaxies[i].y10, store.AUGMENTATIONS[k]) for i, k in zip(galaxy_index, kind)])
        y1 = np.stack([store.augment(galaxies[i].y1, store.AUGMENTATIONS[k]) for i, k in zip(galaxy_index, kind)])
        metadata = {name: values[galaxy_index] for name, values in fields.items()}
        metadata.update(galaxy_id=galaxy_index, augmentation=kind)
        store.write_split(out_dir, split, y10, y1, labels[galaxy_index], metadata)
        counts[split] = np.bincount(labels[galaxy_index], minlength=3).tolist()
        if split == "test":
            n_sub = min(int(config.data.n_attack_subsample), len(galaxy_index))
            pick = np.sort(rng.choice(len(galaxy_index), size=n_sub, replace=False))
            store.write_subsample(out_dir, y10[pick], y1[pick], labels[galaxy_index][pick], pick)
    io.atomic_write_bytes(out_dir / "galaxies.jsonl", "".join(
        json.dumps(dict(g.galaxy, index=g.index, seed=g.seed, label=g.label, gini=g.gini, m20=g.m20)) + "\n"
        for g in galaxies).encode())
    info = dict(
        kind="simulated", config=config.to_dict(), versions=io.package_versions(),
        unique_galaxies=dict(zip(CLASS_NAMES, map(int, np.bincount(labels, minlength=3)))),
        images_per_split=counts, candidates_tried=result.tried, rejection_rate=result.rejection_rate,
        label_confusion=dict(rows="intended class (spiral, elliptical, merger)",
                             columns=f"{spec.label_by} label (spiral, elliptical, merger, undetected)"
                             if spec.population == "continuous" else
                             "G-M20 label (spiral, elliptical, merger, undetected)",
                             counts=result.label_confusion.tolist()),
        population=spec.population, label_by=spec.label_by,
        label_agreement=label_agreement(fields["catalogue_label"], fields["stamp_label"]),
        sky_electrons_per_pixel={d: dict(zip(BANDS, sky_electrons_per_pixel(d, spec.sky_area_per_pixel_arcsec2).round(1).tolist()))
                                 for d in DEPTH_YEARS},
        simulation_seconds=round(result.seconds, 2), workers=workers or config.data.workers or os.cpu_count(),
        galaxies_per_second=round(len(galaxies) / result.seconds, 3))
    store.write_info(out_dir, info)
    (out_dir / provenance.SIMULATING_MARKER).unlink(missing_ok=True)
    return info
