"""One continuous generative population of galaxies: parameters from a per-galaxy seed, GalSim profiles per band.

Replaces the three disjoint class recipes (`simulate.draw_galaxy`, kept as
`data.population="recipes"`). Every galaxy comes from the same model and is labelled afterwards
by what a catalogue measures (`jaxrobust.data.catalogue`), so near-boundary galaxies exist and
survive. The ingredients, each with its source next to its constants:

- a bulge + disc decomposition with B/T continuous over [0, 1] and bulge Sersic n 1-6,
- an infinitely thin disc seen at a random inclination through a finite thickness q0,
- bars, 2-4 logarithmic arms or flocculent arms, few large clumps and many small knots,
  lopsided (offset) discs, band-dependent dust lanes in inclined discs,
- colours per component (bulges redder than discs: colour gradients) with scatter, so colour
  alone does not give the structure away,
- a size-luminosity relation and a redshift spread 0.03-0.07 (sizes and fluxes follow),
- interactions: pairs 0.5"-8" apart (close pairs included), coalesced remnants with shells or
  asymmetric debris, and for every galaxy sometimes projected companions and foreground stars.

A galaxy is a JSON-able dict: `mag_r` (total r-band AB magnitude before dust), `z`, the drawn
parameters, and `components`, each with `kind`, `frac` (share of the r-band flux before dust),
colours `g_r`, `r_i`, shape and position in arcsec. `band_profiles` turns it into one GalSim
profile per band (g, r, i) whose flux is in units of the AB zero-point flux (10^(-0.4 m)), so a
survey multiplies by its own zero point. NumPy + GalSim only (runs in worker processes).
"""
from __future__ import annotations

import math

import galsim
import numpy as np
from scipy import ndimage

BANDS = ("g", "r", "i")

# --- Cosmology: Planck 2015 (Planck Collaboration XIII 2016), as IllustrisTNG (Nelson et al. 2019) ---
H0_KM_S_MPC = 67.74
OMEGA_M = 0.3089
C_KM_S = 299792.458
Z_RANGE = (0.03, 0.07)  # redshift spread around the TNG snapshot z = 0.05 (Rodriguez-Gomez 2019)
Z_REFERENCE = 0.05  # data.mag_r_range is the apparent magnitude a galaxy would have at this z

# --- Colours (g - r, r - i) of GalSim's CWW SEDs (Coleman, Wu & Weedman 1980) at z = 0.05 through
# GalSim's LSST bandpasses ---
COLOUR_E = (0.819, 0.399)  # CWW_E_ext: bulges and ellipticals
COLOUR_SBC = (0.497, 0.332)  # CWW_Sbc_ext: early discs
COLOUR_SCD = (0.379, 0.215)  # CWW_Scd_ext: late discs
COLOUR_IM = (0.163, 0.213)  # CWW_Im_ext: star-forming knots and clumps
# Scatter of colour at fixed type: the red sequence is ~0.05 mag wide in g - r and the blue cloud
# ~0.1 (Baldry et al. 2004, ApJ 600, 681, Table 1); red spirals (Masters et al. 2010, MNRAS 405,
# 783) and blue ellipticals (Schawinski et al. 2009, MNRAS 396, 818) are each a few per cent.
BULGE_COLOUR_SIGMA = 0.05
DISC_COLOUR_SIGMA = 0.10
OFF_SEQUENCE_FRACTION = 0.06  # red discs / blue bulges: Masters 2010 (6 % of face-on spirals red)

# --- Extinction per band relative to V: A_b / E(B-V) = 3.303, 2.285, 1.698 for SDSS g, r, i and
# R_V = 3.1 (Schlafly & Finkbeiner 2011, ApJ 737, 103, Table 6); divided by R_V for A_b / A_V.
EXTINCTION_OVER_AV = np.array([3.303, 2.285, 1.698]) / 3.1


def comoving_distance_mpc(z: float) -> float:
    """Line-of-sight comoving distance (Mpc) in flat LCDM, trapezoid rule on 65 points (< 1e-6 rel)."""
    zz = np.linspace(0.0, z, 65)
    inv_e = 1.0 / np.sqrt(OMEGA_M * (1 + zz) ** 3 + 1.0 - OMEGA_M)
    return float(C_KM_S / H0_KM_S_MPC * np.sum((inv_e[1:] + inv_e[:-1]) / 2 * np.diff(zz)))


def luminosity_distance_mpc(z: float) -> float:
    return (1 + z) * comoving_distance_mpc(z)


def angular_diameter_distance_mpc(z: float) -> float:
    return comoving_distance_mpc(z) / (1 + z)


# --- Structure ---
def disc_axis_ratio(cos_inclination: float, q0: float) -> float:
    """Projected axis ratio of an oblate disc of intrinsic thickness q0 (Hubble 1926, ApJ 64, 321):
    q^2 = cos^2 i (1 - q0^2) + q0^2."""
    return math.sqrt(cos_inclination ** 2 * (1.0 - q0 ** 2) + q0 ** 2)


DISC_Q0_RANGE = (0.1, 0.2)  # intrinsic thickness: Unterborn & Ryden 2008 (ApJ 687, 976); Padilla & Strauss 2008
BULGE_Q_RANGE = (0.6, 1.0)  # bulges/ellipticals are rounder: our choice after Padilla & Strauss 2008 (E: q 0.6-1)
# B/T: SDSS decompositions populate the whole [0, 1] range, most galaxies below 0.5 with a tail
# of bulge-dominated ones (Simard et al. 2011, ApJS 196, 11; Meert et al. 2015, MNRAS 446, 3943).
# Beta(0.8, 1.1) (mean 0.42) is our smooth stand-in for that histogram.
BT_BETA = (0.8, 1.1)
# Bulge Sersic n rises with B/T: pseudobulges n < 2 in late types, classical bulges and
# ellipticals n 3-6 (Fisher & Drory 2008, AJ 136, 773; Meert et al. 2015). n = 1 + 4 B/T + N(0, 0.7),
# clipped to [1, 6] and rounded to 0.25 (GalSim caches Sersic profiles per n; a new n costs ~80 ms).
BULGE_N_SLOPE, BULGE_N_SIGMA, BULGE_N_RANGE = 4.0, 0.7, (1.0, 6.0)
# Size-luminosity: R_50 ~ L^a with a ~ 0.26 for discs (Shen et al. 2003, MNRAS 343, 978, late
# types between their alpha = 0.21 and beta = 0.53) and ~0.45 for bulge-dominated galaxies
# (Shen's 0.65 holds brightward of M_r ~ -20.5, flatter below); scatter 0.15 dex (sigma_lnR ~ 0.35).
SIZE_SLOPE_DISC, SIZE_SLOPE_BULGE, SIZE_SCATTER_DEX = 0.26, 0.45, 0.15
# Half-light radius at the bright end of data.mag_r_range at z = 0.05 (1" = 0.98 kpc): ~5 kpc
# discs, ~4 kpc bulge-dominated (Shen 2003 Fig. 6 at M_r ~ -22.5); sets how the 20" stamp is filled.
HLR_BRIGHT_DISC_ARCSEC, HLR_BRIGHT_BULGE_ARCSEC = 5.0, 4.0
# Bulge half-light radius over the galaxy's: ~0.2 for small bulges (r_e / h ~ 0.2-0.4, Graham &
# Worley 2008, MNRAS 388, 1708), rising to 1 for a pure bulge: 0.2 + 0.8 (B/T)^1.5 (our interpolation).
BAR_FRACTION_MAX = 0.5  # strong bars in ~30 % of discs, more in bulgier discs (Masters et al. 2011, MNRAS 411, 2026)
BAR_AXIS_RATIO = (0.2, 0.4)  # bar b/a and Sersic n ~ 0.5-1 (Gadotti 2011, MNRAS 415, 3308)
BAR_FLUX_FRACTION = (0.04, 0.15)  # Bar/T ~ 0.1 (Gadotti 2009, MNRAS 393, 1531)
# Arm multiplicity (Hart et al. 2016, MNRAS 461, 3663, GZ2): two arms most common, then 3, 4 and
# many/flocculent; our rounded weights for m = 2, 3, 4 and flocculent.
ARM_CHOICES, ARM_WEIGHTS = (2, 3, 4, 0), (0.5, 0.15, 0.1, 0.25)
ARM_PITCH_DEG = (10.0, 30.0)  # pitch angles 10-30 deg (Kennicutt 1981, AJ 86, 1847; Hart 2016)
LOPSIDED_FRACTION = 0.3  # ~30 % of discs have A1 > 0.2 (Zaritsky & Rix 1997, ApJ 477, 118)
DUST_MIN_INCLINATION_DEG = 60.0  # lanes show in discs seen more than ~60 deg from face-on (our choice)
DUST_TAU_V = (0.5, 2.0)  # central V-band optical depth of the lane, face-on tau ~ 0.5-1 x sec i (Holwerda et al. 2005)

# --- Interactions and neighbours ---
# Pairs and remnants: the local merger fraction is a few per cent (Lotz et al. 2011, ApJ 742,
# 103); the paper's sample holds 10 % mergers, so interactions are over-represented (our choice:
# enough that a 10 % merger quota fills without drawing many spare galaxies).
PAIR_PROBABILITY, REMNANT_PROBABILITY = 0.16, 0.08
PAIR_SEPARATION_ARCSEC = (0.5, 8.0)  # log-uniform; close pairs < 3" included (Lotz et al. 2008, MNRAS 391, 1137)
PAIR_FLUX_RATIO = (1.0, 4.0)  # major mergers 1:1-1:4 (Lotz et al. 2011)
TAIL_PROBABILITY = 0.7  # tails/bridges in most simulated major-merger stages (Lotz et al. 2008)
SHELL_FLUX_FRACTION = (0.03, 0.10)  # shells hold a few % of the light (Prieur 1990; Tal et al. 2009, AJ 138, 1417)
COMPANION_PROBABILITY = 0.25  # projected neighbours within 10" of bright galaxies (our choice)
COMPANION_SEPARATION_ARCSEC = (3.0, 9.0)
COMPANION_MAG_FAINTER = (1.5, 4.0)  # 1:4-1:40 in flux: minor or unrelated (Lotz et al. 2011 define minor < 1:4)
# Foreground stars: ~2,000-5,000 stars / deg^2 to r ~ 21 at high latitude (Juric et al. 2008, ApJ
# 673, 864) = 0.1-0.15 per 20" x 20" stamp; mean 0.12.
STARS_PER_STAMP = 0.12
STAR_MAG_RANGE = (-1.0, 4.0)  # relative to the galaxy (our choice)
STAMP_HALF_ARCSEC = 10.0  # LSST stamp 100 x 0.2" (the Zenodo arrays' 100 x 100 pixels; Ivezić et al. 2019 Table 1)


def _colour(base: tuple[float, float], rng: np.random.Generator, sigma: float) -> tuple[float, float]:
    """(g - r, r - i) scattered along the colour sequence: r - i follows g - r at ~0.5 its scatter."""
    dg = rng.normal(0.0, sigma)
    return float(base[0] + dg), float(base[1] + 0.5 * dg)


def _mix(a: tuple, b: tuple, t: float) -> tuple[float, float]:
    return float(a[0] + (b[0] - a[0]) * t), float(a[1] + (b[1] - a[1]) * t)


def _round_n(n: float) -> float:
    return float(np.clip(np.round(n * 4.0) / 4.0, *BULGE_N_RANGE))


def draw_disc_galaxy(rng: np.random.Generator, hlr: float, beta_deg: float | None = None,
                     bt: float | None = None) -> dict:
    """Components of one bulge + disc galaxy centred on the origin (fractions sum to 1)."""
    bt = float(rng.beta(*BT_BETA)) if bt is None else bt
    beta = float(rng.uniform(0.0, 180.0)) if beta_deg is None else beta_deg
    cos_i = float(rng.uniform(0.0, 1.0))  # random orientations
    q0 = float(rng.uniform(*DISC_Q0_RANGE))
    q_disc = disc_axis_ratio(cos_i, q0)
    inclination = math.degrees(math.acos(cos_i))
    # Colours: bulge on the red sequence, disc from late (Scd) to early (Sbc) to red with B/T.
    off_sequence = rng.uniform() < OFF_SEQUENCE_FRACTION
    bulge_colour = _colour(_mix(COLOUR_E, COLOUR_SBC, 0.6) if off_sequence else COLOUR_E, rng, BULGE_COLOUR_SIGMA)
    disc_t = float(np.clip(bt * 1.4 + rng.normal(0.0, 0.25) + (0.8 if off_sequence else 0.0), 0.0, 1.6))
    disc_colour = _colour(_mix(COLOUR_SCD, COLOUR_SBC, disc_t) if disc_t <= 1 else
                          _mix(COLOUR_SBC, COLOUR_E, disc_t - 1.0), rng, DISC_COLOUR_SIGMA)
    bulge_hlr = hlr * (0.2 + 0.8 * bt ** 1.5)
    n_bulge = _round_n(1.0 + BULGE_N_SLOPE * bt + rng.normal(0.0, BULGE_N_SIGMA))
    q_bulge = float(rng.uniform(*BULGE_Q_RANGE))
    components = []
    if bt > 0.0:
        components.append(dict(kind="sersic", n=n_bulge, hlr=bulge_hlr, q=q_bulge, beta_deg=beta,
                               frac=bt, g_r=bulge_colour[0], r_i=bulge_colour[1], role="bulge"))
    disc_frac = 1.0 - bt
    if disc_frac <= 0.0:
        return dict(bt=bt, inclination_deg=inclination, q_disc=q_disc, components=components)
    lopsided = rng.uniform() < LOPSIDED_FRACTION
    offset = rng.uniform(0.05, 0.25) * hlr if lopsided else 0.0  # disc centre off the bulge
    angle = rng.uniform(0.0, 2 * math.pi)
    dx, dy = offset * math.cos(angle), offset * math.sin(angle)
    # Substructure in the disc: arms (rarer in bulgier discs), a bar, clumps and knots.
    has_arms = rng.uniform() < 0.9 * (1.0 - bt) ** 1.5  # lenticulars: smooth discs (our choice)
    arms = int(rng.choice(ARM_CHOICES, p=ARM_WEIGHTS)) if has_arms else -1
    dusty = inclination > DUST_MIN_INCLINATION_DEG and rng.uniform() < 0.7 * (1.0 - bt)
    knot_frac = float(rng.uniform(0.05, 0.25)) if rng.uniform() < 0.6 * (1 - bt) else 0.0
    clump_frac = float(rng.uniform(0.03, 0.12)) if rng.uniform() < 0.25 * (1 - bt) else 0.0
    bar_frac = float(rng.uniform(*BAR_FLUX_FRACTION)) if (
        q_disc > 0.4 and rng.uniform() < BAR_FRACTION_MAX * (0.5 + bt)) else 0.0
    smooth_frac = disc_frac * (1.0 - knot_frac - clump_frac - bar_frac)
    disc = dict(kind="disc", hlr=hlr, q=q_disc, beta_deg=beta, frac=smooth_frac, dx=dx, dy=dy,
                g_r=disc_colour[0], r_i=disc_colour[1], role="disc", arms=arms,
                amplitude=float(rng.uniform(0.2, 0.6)), pitch_deg=float(rng.uniform(*ARM_PITCH_DEG)),
                phi0=float(rng.uniform(0.0, 2 * math.pi)), pattern_seed=int(rng.integers(1, 2**31 - 1)),
                tau_v=float(rng.uniform(*DUST_TAU_V)) if dusty else 0.0,
                lane_offset=float(rng.uniform(-0.1, 0.1)), lane_width=float(rng.uniform(0.03, 0.08)))
    components.append(disc)
    sf_colour = _colour(COLOUR_IM, rng, DISC_COLOUR_SIGMA)
    if bar_frac > 0:
        bar_q = float(rng.uniform(*BAR_AXIS_RATIO))
        # The bar lies in the disc plane at angle phi; projected, its length shrinks along the minor axis.
        components.append(dict(kind="bar", n=0.5, hlr=float(rng.uniform(0.4, 0.8)) * hlr, bar_q=bar_q,
                               bar_angle_deg=float(rng.uniform(0.0, 180.0)), q=q_disc, beta_deg=beta,
                               frac=disc_frac * bar_frac, g_r=bulge_colour[0], r_i=bulge_colour[1],
                               dx=dx, dy=dy, role="bar"))
    if knot_frac > 0:  # many small star-forming knots (as GalSim's RandomKnots, which WLD galaxies use)
        components.append(dict(kind="knots", hlr=hlr, q=q_disc, beta_deg=beta, frac=disc_frac * knot_frac,
                               npoints=int(rng.integers(30, 151)), knot_seed=int(rng.integers(1, 2**31 - 1)),
                               g_r=sf_colour[0], r_i=sf_colour[1], dx=dx, dy=dy, role="knots"))
    if clump_frac > 0:  # few large clumps, ~1 kpc (Guo et al. 2015, ApJ 800, 39; our size range)
        n_clumps = int(rng.integers(1, 6))
        radius = hlr * np.sqrt(rng.uniform(0.05, 1.5, size=n_clumps))
        phi = rng.uniform(0.0, 2 * math.pi, size=n_clumps)
        components.append(dict(kind="clumps", sigma=float(rng.uniform(0.3, 0.8)),
                               x=(radius * np.cos(phi)).tolist(), y=(radius * np.sin(phi)).tolist(),
                               weights=rng.dirichlet(np.ones(n_clumps)).tolist(), q=q_disc, beta_deg=beta,
                               frac=disc_frac * clump_frac, g_r=sf_colour[0], r_i=sf_colour[1],
                               dx=dx, dy=dy, role="clumps"))
    return dict(bt=bt, inclination_deg=inclination, q_disc=q_disc, arms=arms, bar=bar_frac > 0,
                dust=dusty, lopsided=lopsided, components=components)


def galaxy_size_arcsec(rng: np.random.Generator, bt: float, mag_ref: float, mag_bright: float, z: float) -> float:
    """Half-light radius: size-luminosity slope by B/T (Shen 2003), scatter, then distance (D_A)."""
    slope = SIZE_SLOPE_DISC + (SIZE_SLOPE_BULGE - SIZE_SLOPE_DISC) * bt
    bright = HLR_BRIGHT_DISC_ARCSEC + (HLR_BRIGHT_BULGE_ARCSEC - HLR_BRIGHT_DISC_ARCSEC) * bt
    log_r = math.log10(bright) - 0.4 * slope * (mag_ref - mag_bright) + rng.normal(0.0, SIZE_SCATTER_DEX)
    return float(10 ** log_r * angular_diameter_distance_mpc(Z_REFERENCE) / angular_diameter_distance_mpc(z))


def _shifted(components: list[dict], dx: float, dy: float, scale: float) -> list[dict]:
    out = []
    for comp in components:
        comp = dict(comp, frac=comp["frac"] * scale)
        comp["dx"], comp["dy"] = comp.get("dx", 0.0) + dx, comp.get("dy", 0.0) + dy
        out.append(comp)
    return out


def _member(rng, mag_ref, mag_bright, z, bt=None) -> tuple[dict, list[dict]]:
    bt = float(rng.beta(*BT_BETA)) if bt is None else bt
    hlr = galaxy_size_arcsec(rng, bt, mag_ref, mag_bright, z)
    disc = draw_disc_galaxy(rng, hlr, bt=bt)
    disc["hlr"] = hlr
    return disc, disc.pop("components")


def _tail(rng, dx, dy, frac, colour, length_scale) -> dict:
    return dict(kind="tail", frac=frac, dx=dx, dy=dy, length=float(rng.uniform(1.0, 2.5) * length_scale),
                width=float(rng.uniform(0.3, 0.9)), angle_deg=float(rng.uniform(0.0, 360.0)),
                curvature=float(rng.choice([-1.0, 1.0]) * rng.uniform(0.05, 0.3)),
                g_r=colour[0], r_i=colour[1], role="tail")


def draw_galaxy(rng: np.random.Generator, mag_r_range: tuple[float, float], pixel_scale_arcsec: float = 0.2) -> dict:
    """Parameters of one galaxy of the continuous population (no pixels yet).

    mag_r_range: the range of the apparent r magnitude at z = 0.05 (uniform); the galaxy's own
    redshift (uniform in comoving volume over Z_RANGE) then moves its magnitude and size.
    """
    z = float(np.cbrt(rng.uniform(Z_RANGE[0] ** 3, Z_RANGE[1] ** 3)))  # dV ~ z^2 dz at z << 1
    mag_ref = float(rng.uniform(*mag_r_range))
    mag_r = mag_ref + 5.0 * math.log10(luminosity_distance_mpc(z) / luminosity_distance_mpc(Z_REFERENCE))
    u = rng.uniform()
    interaction = "pair" if u < PAIR_PROBABILITY else (
        "remnant" if u < PAIR_PROBABILITY + REMNANT_PROBABILITY else "none")
    params: dict = dict(z=z, mag_ref=mag_ref, interaction=interaction)
    if interaction == "pair":
        ratio = float(rng.uniform(*PAIR_FLUX_RATIO))
        separation = float(math.exp(rng.uniform(*np.log(PAIR_SEPARATION_ARCSEC))))
        f1, f2 = ratio / (1 + ratio), 1 / (1 + ratio)
        angle = rng.uniform(0.0, 2 * math.pi)
        ux, uy = math.cos(angle), math.sin(angle)
        tail_frac = float(rng.uniform(0.05, 0.2)) if rng.uniform() < TAIL_PROBABILITY else 0.0
        components = []
        members = []
        for frac, sign in ((f1, -f2), (f2, f1)):  # flux-weighted centre at the origin
            member_mag = mag_ref - 2.5 * math.log10(frac)
            info, comps = _member(rng, member_mag, mag_r_range[0], z)
            dx, dy = sign * separation * ux, sign * separation * uy
            components += _shifted(comps, dx, dy, frac * (1 - tail_frac))
            if tail_frac > 0:
                colour = _mix(COLOUR_SBC, COLOUR_E, info["bt"])
                components.append(_tail(rng, dx, dy, tail_frac * frac, colour, max(info["hlr"], 1.5)))
            members.append(dict(bt=info["bt"], hlr=info["hlr"]))
        params.update(separation_arcsec=separation, flux_ratio=ratio, members=members,
                      bt=members[0]["bt"], hlr=members[0]["hlr"])
    else:
        bt = float(np.clip(rng.beta(*BT_BETA) + 0.3, 0, 1)) if interaction == "remnant" else None  # remnants: bulgier (our choice; Toomre 1977)
        info, components = _member(rng, mag_ref, mag_r_range[0], z, bt)
        params.update(bt=info["bt"], hlr=info["hlr"], inclination_deg=info["inclination_deg"],
                      arms=info.get("arms", -1), bar=info.get("bar", False), dust=info.get("dust", False),
                      lopsided=info.get("lopsided", False))
        if interaction == "remnant":
            debris = float(rng.uniform(*SHELL_FLUX_FRACTION)) * (2.0 if rng.uniform() < 0.5 else 1.0)
            components = _shifted(components, 0.0, 0.0, 1.0 - debris)
            colour = _colour(COLOUR_E, rng, BULGE_COLOUR_SIGMA)
            if rng.uniform() < 0.5:  # interleaved shells along the major axis (Prieur 1990; Quinn 1984)
                components.append(dict(kind="shells", frac=debris, hlr=info["hlr"], n_shells=int(rng.integers(2, 6)),
                                       angle_deg=float(rng.uniform(0.0, 360.0)),
                                       width=float(rng.uniform(0.2, 0.5)), g_r=colour[0], r_i=colour[1],
                                       role="shells"))
                params["debris"] = "shells"
            else:  # asymmetric debris: a plume and an off-centre fan (our stand-in for tidal debris)
                components.append(_tail(rng, 0.0, 0.0, 0.6 * debris, colour, max(info["hlr"], 1.5)))
                offset = rng.uniform(0.5, 1.5) * info["hlr"]
                phi = rng.uniform(0.0, 2 * math.pi)
                components.append(dict(kind="sersic", n=1.0, hlr=info["hlr"] * float(rng.uniform(0.6, 1.2)),
                                       q=float(rng.uniform(0.3, 0.8)), beta_deg=float(rng.uniform(0, 180)),
                                       frac=0.4 * debris, dx=offset * math.cos(phi), dy=offset * math.sin(phi),
                                       g_r=colour[0], r_i=colour[1], role="debris"))
                params["debris"] = "plume"
    # Neighbours that are not part of the galaxy: projected companions and foreground stars.
    total = 1.0
    companions = 1 if rng.uniform() < COMPANION_PROBABILITY else 0
    for _ in range(companions):
        fainter = float(rng.uniform(*COMPANION_MAG_FAINTER))
        separation = math.sqrt(rng.uniform(COMPANION_SEPARATION_ARCSEC[0] ** 2, COMPANION_SEPARATION_ARCSEC[1] ** 2))
        phi = rng.uniform(0.0, 2 * math.pi)
        z_c = float(np.cbrt(rng.uniform(0.02 ** 3, 0.15 ** 3)))  # unrelated: any distance (our choice)
        info, comps = _member(rng, mag_ref + fainter, mag_r_range[0], z_c)
        frac = 10 ** (-0.4 * fainter)
        components += [dict(c, role="companion") for c in
                       _shifted(comps, separation * math.cos(phi), separation * math.sin(phi), frac)]
        total += frac
    n_stars = int(rng.poisson(STARS_PER_STAMP))
    for _ in range(n_stars):
        fainter = float(rng.uniform(*STAR_MAG_RANGE))
        g_r = float(rng.uniform(0.3, 1.4))  # stellar locus (Covey et al. 2007, AJ 134, 2398)
        position = rng.uniform(-0.85, 0.85, size=2) * STAMP_HALF_ARCSEC
        components.append(dict(kind="star", frac=10 ** (-0.4 * fainter), dx=float(position[0]),
                               dy=float(position[1]), g_r=g_r, r_i=float(0.4 * g_r - 0.05), role="star"))
        total += 10 ** (-0.4 * fainter)
    # Fractions stay relative to the galaxy (mag_r); neighbours add their own light.
    params.update(n_companions=companions, n_stars=n_stars, mag_r_with_neighbours=mag_r - 2.5 * math.log10(total))
    jitter = rng.uniform(-0.5, 0.5, size=2) * pixel_scale_arcsec  # sub-pixel centre
    return dict(population="continuous", mag_r=mag_r, jitter_arcsec=[float(jitter[0]), float(jitter[1])],
                params=params, components=components)


def intended_class(galaxy: dict) -> int:
    """The class the generator had in mind (spiral 0, elliptical 1, merger 2), for label_by="intended"."""
    params = galaxy["params"]
    if params["interaction"] != "none":
        return 2
    return 1 if params["bt"] >= 0.5 else 0


# --- Pixels: templates for the components GalSim has no profile for ---
def _template_grid(pixels: int, scale: float):
    coords = (np.arange(pixels) - (pixels - 1) / 2) * scale
    return np.meshgrid(coords, coords)


def disc_template(comp: dict, pixels: int = 192) -> tuple[np.ndarray, np.ndarray, float]:
    """(face-on disc image, dust lane weight, grid scale in arcsec) of a "disc" component.

    Exponential disc with `arms` logarithmic arms (2-4), flocculent arms (0: three patterns of
    random phase and pitch, broken up by a smooth random field), or none (-1). The lane weight
    (0-1) is a Gaussian strip along the major axis (the x axis before shearing), slightly off
    the centre line as in inclined discs; the disc's light behind it is dimmed per band.
    """
    h = comp["hlr"] / 1.678  # exponential scale length from the half-light radius
    scale = comp["hlr"] / 20.0  # +-4.8 hlr = 8 scale lengths (0.3 % of the light beyond) on 192 pixels
    x, y = _template_grid(pixels, scale)
    r = np.hypot(x, y)
    disc = np.exp(-r / h)
    if comp["arms"] >= 0:
        phi = np.arctan2(y, x)
        log_r = np.log(np.maximum(r, 1e-3) / h)
        taper = 1.0 - np.exp(-(2 * r / h) ** 2)  # no arms in the centre
        if comp["arms"] > 0:
            psi = phi - comp["phi0"] - log_r / math.tan(math.radians(comp["pitch_deg"]))
            weight = np.cos(comp["arms"] * psi / 2) ** 8  # m arms: cos^8(m psi / 2)
        else:
            rng = np.random.default_rng(comp["pattern_seed"])
            weight = np.zeros_like(r)
            for _ in range(3):
                psi = phi - rng.uniform(0, 2 * math.pi) - log_r / math.tan(math.radians(rng.uniform(15.0, 35.0)))
                weight += np.cos(psi) ** 8 / 3
            noise = rng.normal(size=(pixels // 12, pixels // 12))
            weight *= np.clip(1.0 + ndimage.zoom(noise, 12, order=1), 0.0, None)
            weight /= max(weight.mean(), 1e-12) * 2
        disc = disc * (1.0 + comp["amplitude"] * taper * (2 * np.clip(weight, 0, 1) - 1))
    width = comp["lane_width"] * comp["hlr"] / max(comp["q"], 0.1)  # thin once projected
    lane = np.exp(-0.5 * ((y - comp["lane_offset"] * comp["hlr"] / max(comp["q"], 0.1)) / width) ** 2)
    return disc, lane, scale


def dust_transmission(tau_v: float) -> np.ndarray:
    """Fraction of the light behind the lane centre that gets through, per band (g, r, i)."""
    return np.exp(-tau_v * EXTINCTION_OVER_AV)


KNOT_SIGMA_ARCSEC = 0.08  # ~80 pc at z = 0.05: giant HII regions are ~100 pc (Kennicutt 1984, ApJ 287, 116)


def knots_template(comp: dict, pixels: int = 192) -> tuple[np.ndarray, float]:
    """`npoints` equal point-like knots following the exponential disc (radius ~ Gamma(2, h), as
    GalSim's RandomKnots), binned on a grid and blurred by the knot size: one image instead of
    RandomKnots' per-knot Fourier sum (which cost ~60 % of the drawing time)."""
    h = comp["hlr"] / 1.678
    scale = comp["hlr"] / 20.0
    rng = np.random.default_rng(comp["knot_seed"])
    radius = rng.gamma(2.0, h, size=comp["npoints"])
    phi = rng.uniform(0.0, 2 * math.pi, size=comp["npoints"])
    half = pixels * scale / 2
    edges = np.linspace(-half, half, pixels + 1)
    counts, _, _ = np.histogram2d(radius * np.sin(phi), radius * np.cos(phi), bins=(edges, edges))
    return ndimage.gaussian_filter(counts, max(KNOT_SIGMA_ARCSEC / scale, 0.7)), scale


def _shell_template(comp: dict, pixels: int = 256) -> tuple[np.ndarray, float]:
    """Interleaved arcs at radii growing by 1.5x, alternating sides of the axis (Type I shells)."""
    scale = 4.0 * comp["hlr"] / (pixels / 2)  # out to 4 hlr
    x, y = _template_grid(pixels, scale)
    theta = math.radians(comp["angle_deg"])
    u = x * math.cos(theta) + y * math.sin(theta)
    v = -x * math.sin(theta) + y * math.cos(theta)
    r, phi = np.hypot(u, v), np.arctan2(v, u)
    out = np.zeros_like(r)
    for k in range(comp["n_shells"]):
        radius = comp["hlr"] * 1.2 * 1.5 ** k / 1.5 ** (comp["n_shells"] - 3)
        side = 0.0 if k % 2 == 0 else math.pi
        opening = np.cos((phi - side) / 2) ** 2 if side else np.cos(phi / 2) ** 2
        arc = np.exp(-0.5 * ((r - radius) / comp["width"]) ** 2) * np.clip(2 * opening - 1, 0, None) ** 2
        out += arc / max(radius, 1e-3)  # outer shells fainter
    return out, scale


def _tail_template(comp: dict, pixels: int = 192, scale: float = 0.12) -> np.ndarray:
    """A curved Gaussian ridge from the origin (a tidal tail or plume), fading along its length."""
    s = np.linspace(0.0, comp["length"], 48)
    bend = comp["curvature"] * s ** 2
    theta = math.radians(comp["angle_deg"])
    px = s * math.cos(theta) - bend * math.sin(theta)
    py = s * math.sin(theta) + bend * math.cos(theta)
    gx, gy = _template_grid(pixels, scale)
    d2 = (gx[..., None] - px) ** 2 + (gy[..., None] - py) ** 2
    nearest = np.argmin(d2, axis=-1)
    return np.exp(-s[nearest] / comp["length"]) * np.exp(-np.min(d2, axis=-1) / (2 * comp["width"] ** 2))


def _interpolated(template: np.ndarray, scale: float, gsparams) -> galsim.GSObject:
    # pad_factor 2 instead of 4: 5x faster, changes pixels by < 1e-4 of the peak (scripts/bench_simulate.py).
    return galsim.InterpolatedImage(galsim.Image(np.ascontiguousarray(template), scale=scale),
                                    pad_factor=2, gsparams=gsparams)


def component_band_profiles(comp: dict, gsparams: galsim.GSParams) -> list[galsim.GSObject]:
    """GalSim profiles of one component in g, r, i; flux = `frac` x 10^(-0.4 colour offset) x dust."""
    kind = comp["kind"]
    dust = None
    if kind == "sersic":
        prof = galsim.Sersic(comp["n"], half_light_radius=comp["hlr"], gsparams=gsparams)
    elif kind == "bar":
        prof = galsim.Sersic(comp["n"], half_light_radius=comp["hlr"], gsparams=gsparams)
        prof = prof.shear(q=comp["bar_q"], beta=comp["bar_angle_deg"] * galsim.degrees)
    elif kind == "disc":
        if comp["arms"] < 0 and comp["tau_v"] == 0.0:
            prof = galsim.Exponential(half_light_radius=comp["hlr"], gsparams=gsparams)
        else:
            disc, lane, scale = disc_template(comp)
            prof = _interpolated(disc, scale, gsparams).withFlux(1.0)
            if comp["tau_v"] > 0:
                lost = (disc * lane).sum() / disc.sum()  # share of the disc's light under the lane
                dust = (_interpolated(disc * lane, scale, gsparams).withFlux(lost), 1.0 - dust_transmission(comp["tau_v"]))
    elif kind == "knots":
        template, scale = knots_template(comp)
        prof = _interpolated(template, scale, gsparams).withFlux(1.0)
    elif kind == "clumps":
        blob = galsim.Gaussian(sigma=comp["sigma"], gsparams=gsparams)
        prof = galsim.Add([blob.withFlux(w).shift(x, y) for x, y, w in zip(comp["x"], comp["y"], comp["weights"])],
                          gsparams=gsparams)
    elif kind == "shells":
        template, scale = _shell_template(comp)
        prof = _interpolated(template, scale, gsparams).withFlux(1.0)
    elif kind == "tail":
        prof = _interpolated(_tail_template(comp), 0.12, gsparams).withFlux(1.0)
    elif kind == "star":
        prof = galsim.DeltaFunction(gsparams=gsparams)
    else:
        raise ValueError(f"unknown component kind {kind!r}")
    if kind in ("disc", "bar", "knots", "clumps", "sersic") and "q" in comp:
        shear = galsim.Shear(q=comp["q"], beta=comp["beta_deg"] * galsim.degrees)
        prof = prof.shear(shear)
        if dust is not None:
            dust = (dust[0].shear(shear), dust[1])
    offsets = np.array([comp["g_r"], 0.0, -comp["r_i"]])  # m_b - m_r
    fluxes = comp["frac"] * 10.0 ** (-0.4 * offsets)
    shift = (comp.get("dx", 0.0), comp.get("dy", 0.0))
    out = []
    for b in range(3):
        band = prof.withScaledFlux(fluxes[b])
        if dust is not None:  # the lane removes (1 - T_b) of the light it covers
            band = galsim.Add([band, dust[0].withScaledFlux(-fluxes[b] * dust[1][b])], gsparams=gsparams)
        out.append(band.shift(*shift))
    return out


def _same_plane(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in ("hlr", "q", "beta_deg", "dx", "dy"))


def _colour_factors(comp: dict) -> np.ndarray:
    """Flux per band relative to r: 10^(-0.4 (m_b - m_r)) for b = g, r, i."""
    return 10.0 ** (-0.4 * np.array([comp["g_r"], 0.0, -comp["r_i"]]))


def _disc_band_profiles(disc: dict, knots: list[dict], gsparams) -> list[galsim.GSObject]:
    """A disc (arms, dust lane) and the knots in its plane as ONE interpolated image per band:
    the colours differ, the geometry does not, so GalSim draws one template per band instead of
    one per ingredient (each costs a Fourier transform of the whole stamp)."""
    image, lane, scale = disc_template(disc)
    image = image / image.sum()
    absorbed = 1.0 - dust_transmission(disc["tau_v"]) if disc["tau_v"] > 0 else np.zeros(3)
    knot_images = []
    for comp in knots:
        template, _ = knots_template(comp)
        knot_images.append((template / template.sum(), comp["frac"] * _colour_factors(comp)))
    disc_flux = disc["frac"] * _colour_factors(disc)
    shear = galsim.Shear(q=disc["q"], beta=disc["beta_deg"] * galsim.degrees)
    out = []
    for b in range(3):
        band = disc_flux[b] * image * (1.0 - absorbed[b] * lane)
        for template, flux in knot_images:
            band = band + flux[b] * template
        out.append(_interpolated(band, scale, gsparams).shear(shear).shift(disc.get("dx", 0.0), disc.get("dy", 0.0)))
    return out


def galaxy_components(galaxy: dict, gsparams: galsim.GSParams) -> list[list[galsim.GSObject]]:
    """Band profiles of every component (component_band_profiles; a disc drawn as a template
    takes the knots in its plane along): build once, draw in several surveys."""
    comps = galaxy["components"]
    merged: set[int] = set()
    out = []
    for i, comp in enumerate(comps):
        if i in merged:
            continue
        if comp["kind"] == "disc" and (comp["arms"] >= 0 or comp["tau_v"] > 0 or any(
                c["kind"] == "knots" and _same_plane(comp, c) for c in comps)):
            partners = [j for j, c in enumerate(comps) if c["kind"] == "knots" and _same_plane(comp, c)]
            merged.update(partners)
            out.append(_disc_band_profiles(comp, [comps[j] for j in partners], gsparams))
        else:
            out.append(component_band_profiles(comp, gsparams))
    return out


def band_profiles(galaxy: dict, gsparams: galsim.GSParams, bands=(0, 1, 2),
                  components: list | None = None) -> list[galsim.GSObject]:
    """One GalSim profile per band in `bands`, flux in AB zero-point units (flux 1 = magnitude 0),
    centred on the origin plus the galaxy's jitter; no PSF, no pixel. `components`: from
    galaxy_components (built here when None)."""
    per_component = galaxy_components(galaxy, gsparams) if components is None else components
    zero_point = 10.0 ** (-0.4 * galaxy["mag_r"])
    return [galsim.Add([p[b] for p in per_component], gsparams=gsparams).withScaledFlux(zero_point)
            .shift(*galaxy["jitter_arcsec"]) for b in bands]


def expected_band_flux(galaxy: dict) -> np.ndarray:
    """Total flux per band (zero-point units) the profiles should hold, dust included: the sum over
    components of frac x colour factor x (1 - lane share x (1 - T_b)), times 10^(-0.4 mag_r)."""
    total = np.zeros(3)
    for comp in galaxy["components"]:
        flux = comp["frac"] * 10.0 ** (-0.4 * np.array([comp["g_r"], 0.0, -comp["r_i"]]))
        if comp["kind"] == "disc" and comp["tau_v"] > 0:
            disc, lane, _ = disc_template(comp)
            flux = flux * (1.0 - (disc * lane).sum() / disc.sum() * (1.0 - dust_transmission(comp["tau_v"])))
        total += flux
    return total * 10.0 ** (-0.4 * galaxy["mag_r"])
