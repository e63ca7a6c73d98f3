"""Gini, M20 and G-M20 class labels for background-subtracted galaxy stamps.

Re-implements the G-M20 chain of statmorph 0.7.2 (``SourceMorphology``:
cutout, outlier masking, centroid, asymmetry centre, shape moments,
elliptical Petrosian semi-major axis, Gini segmap, Gini, M20; Rodriguez-Gomez
et al. 2019, MNRAS 483, 4140, section 4; Lotz et al. 2004, AJ 128, 163) in vectorised NumPy/SciPy, ~15 ms per
100 x 100 stamp against ~300 ms for statmorph, which also fits Sersic
profiles and computes CAS/MID statistics we do not need.

Single apertures use photutils' exact pixel/ellipse overlap (own polygon-
disc geometry); the Petrosian curves of growth, needed at hundreds of radii,
are tabulated once per centre from 5 x 5 sub-pixel samples instead.  On 200
GalSim stamps of all three classes this reproduces statmorph to
|dG| < 0.002 and |dM20| < 0.002 with identical labels (our target was
0.01, 0.05, 98 %; scripts/study_morphology_vs_statmorph.py).

The asymmetry centre is kept (``asym_center=True``, the default): replacing
it by the centroid is 4x faster but moves G by up to ~0.1 on pairs and
asymmetric discs, whose Petrosian ellipse it shifts.

Pixel coordinates are array indices: x = column, y = row, pixel centres at
integers.  Images are in electrons (G and M20 do not depend on the unit).
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi
import scipy.optimize as opt

from jaxrobust.config import CLASS_NAMES  # noqa: F401  (the one class order; classify indexes it)

# statmorph 0.7.2 defaults (SourceMorphology.__init__).
_CUTOUT_EXTENT = 2.5
_MIN_CUTOUT_SIZE = 48
_N_SIGMA_OUTLIER = 10.0
_ANNULUS_WIDTH = 1.0
_ETA = 0.2
_PETRO_FRACTION_GINI = 0.2
_PETRO_EXTENT_CAS = 1.5
_PETRO_FRACTION_CAS = 0.25
_SKYBOX_SIZE = 16  # statmorph finds no sky box in 100 x 100 stamps of big galaxies with its default

# Whole-stamp curves of growth sample each pixel with 5 x 5 points instead
# of photutils' exact overlaps (single apertures are computed exactly).
_SUBSAMPLE = 5
_RADIUS_BIN = 0.02  # px; resolution of the tabulated curve of growth

# statmorph asks Nelder-Mead for 1e-6 px; 1e-4 px moves the asymmetry centre
# by ~1e-5 px and saves ~40 % of the evaluations.
_ASYM_XTOL = 1e-4

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


# --------------------------------------------------------------------------
# Segmentation (the caller's segmap in statmorph's tutorial)
# --------------------------------------------------------------------------

def segment_galaxy(image, sky_sigma, threshold_sigma=1.5, min_pixels=5):
    """Detection segmap of the galaxy at the stamp centre.

    Detect on the 3 x 3 boxcar-smoothed image (zero outside the stamp, as
    astropy's default ``convolve`` boundary) at ``threshold_sigma * sky_sigma``
    (strictly greater, as photutils ``detect_sources``), 8-connected regions
    of at least ``min_pixels`` pixels, no deblending.  A close pair is
    therefore one segment, which is what the merger statistic needs.

    Parameters
    ----------
    image : array (H, W), background-subtracted, e-/pixel.
    sky_sigma : float, per-pixel sky noise of the un-smoothed image, e-.
    threshold_sigma : float, detection threshold in units of ``sky_sigma``.
    min_pixels : int, minimum segment area in pixels.

    Returns
    -------
    bool array (H, W): the segment containing pixel (H // 2, W // 2), or the
    largest segment when the centre pixel is not detected.

    Raises
    ------
    ValueError if no segment passes the threshold and area cut.
    """
    image = np.asarray(image, dtype=np.float64)
    smoothed = ndi.uniform_filter(np.nan_to_num(image), size=3,
                                  mode="constant", cval=0.0)
    labels, n_labels = ndi.label(smoothed > threshold_sigma * sky_sigma,
                                 structure=_EIGHT_CONNECTED)
    areas = np.bincount(labels.ravel(), minlength=n_labels + 1)
    areas[0] = 0
    areas[areas < min_pixels] = 0
    if not areas.any():
        raise ValueError(
            f"segment_galaxy: no source with >= {min_pixels} pixels above "
            f"{threshold_sigma} x sky_sigma = {threshold_sigma * sky_sigma:.4g} "
            f"in the 3x3-smoothed image (max {smoothed.max():.4g})")
    ny, nx = image.shape
    centre_label = labels[ny // 2, nx // 2]
    keep = centre_label if areas[centre_label] > 0 else int(np.argmax(areas))
    return labels == keep


# --------------------------------------------------------------------------
# Gini and M20 of given pixels (Lotz et al. 2004; statmorph's SourceMorphology)
# --------------------------------------------------------------------------

def gini(values):
    """Gini coefficient of |values| (Lotz et al. 2004).

    Parameters
    ----------
    values : array of any shape; pixel values (e-) of the Gini segmap.

    Returns
    -------
    float in [0, 1]; nan if fewer than 2 values or a zero sum.
    """
    x = np.sort(np.abs(np.ravel(np.asarray(values, dtype=np.float64))))
    n = x.size
    total = x.sum()
    if n <= 1 or total == 0:
        return float("nan")
    weights = 2.0 * np.arange(1, n + 1) - n - 1
    return float(np.dot(weights, x) / ((n - 1) * total))


def m20(image_in_segmap):
    """M20 of an image that is zero outside the Gini segmap (Lotz et al. 2004; statmorph).

    The centre is the flux-weighted centroid of the image (which minimises
    M_tot).  The bright set is every pixel >= t20, the first ascending value
    whose running sum reaches 80 % of the total, so tied values are all in.

    Parameters
    ----------
    image_in_segmap : array (H, W), e-; negative pixels are kept.

    Returns
    -------
    float (<= 0 normally); nan if the total flux or a moment is <= 0.
    """
    img = np.asarray(image_in_segmap, dtype=np.float64)
    total = img.sum()
    if not total > 0:
        return float("nan")
    y = np.arange(img.shape[0], dtype=np.float64)[:, None]
    x = np.arange(img.shape[1], dtype=np.float64)[None, :]
    yc = (img * y).sum() / total
    xc = (img * x).sum() / total
    r2 = (x - xc) ** 2 + (y - yc) ** 2
    moment_tot = (img * r2).sum()

    flat = np.sort(img.ravel())
    fraction = np.cumsum(flat) / total
    reached = np.flatnonzero(fraction >= 0.8)
    if reached.size == 0:
        return float("nan")
    bright = img >= flat[reached[0]]
    moment_20 = (img * r2)[bright].sum()
    if moment_20 <= 0 or moment_tot <= 0:
        return float("nan")
    return float(np.log10(moment_20 / moment_tot))


# --------------------------------------------------------------------------
# Labels (Lotz et al. 2008, ApJ 672, 177, eqs. 4-6; the boundaries of Ćiprijanović et al. 2022, section 2.1)
# --------------------------------------------------------------------------

def bulge_statistic(g, m20):
    """F(G, M20) = -0.693 M20 + 4.95 G - 3.96 (Rodriguez-Gomez et al. 2019).

    Scalars or broadcastable arrays; F > 0 is bulge-dominated (elliptical).
    """
    return -0.693 * np.asarray(m20) + 4.95 * np.asarray(g) - 3.96


def merger_statistic(g, m20):
    """S(G, M20) = 0.139 M20 + 0.990 G - 0.327 (Rodriguez-Gomez et al. 2019).

    Scalars or broadcastable arrays; S > 0 is a merger.
    """
    return 0.139 * np.asarray(m20) + 0.990 * np.asarray(g) - 0.327


def classify(g, m20):
    """Class index into ``CLASS_NAMES``: 2 if S > 0, else 1 if F > 0, else 0.

    The merger test comes first, as in Lotz et al. 2008.  Non-finite G or M20
    (a failed measurement) gives -1.

    Parameters
    ----------
    g, m20 : scalars or broadcastable arrays.

    Returns
    -------
    int array of the broadcast shape (0-d for scalar input).
    """
    g = np.asarray(g, dtype=np.float64)
    m = np.asarray(m20, dtype=np.float64)
    label = np.where(merger_statistic(g, m) > 0, 2,
                     np.where(bulge_statistic(g, m) > 0, 1, 0))
    return np.where(np.isfinite(g) & np.isfinite(m), label, -1).astype(int)


# --------------------------------------------------------------------------
# statmorph's G-M20 chain (statmorph 0.7.2, statmorph.py, SourceMorphology)
# --------------------------------------------------------------------------

def _stamp_slice(segmap):
    """statmorph's cutout: 2.5 x the larger bbox side (>= 48 px), clipped."""
    rows = np.flatnonzero(segmap.any(axis=1))
    cols = np.flatnonzero(segmap.any(axis=0))
    dy = rows[-1] + 1 - rows[0]
    dx = cols[-1] + 1 - cols[0]
    yc, xc = rows[0] + dy // 2, cols[0] + dx // 2
    half = max(int(max(dx, dy) * _CUTOUT_EXTENT / 2.0), _MIN_CUTOUT_SIZE // 2)
    ny, nx = segmap.shape
    return (slice(max(0, yc - half), min(ny, yc + half)),
            slice(max(0, xc - half), min(nx, xc + half)))


def _outliers(stamp):
    """Pixels deviating by > 10 sigma from their 8 neighbours (Lotz 2004).

    Edges replicate the nearest pixel (astropy's 'extend'); a negative
    rounding variance gives nan and hence no outlier, as in statmorph.
    """
    weights = np.ones((3, 3)) / 8.0
    weights[1, 1] = 0.0
    filled = np.where(np.isfinite(stamp), stamp, 0.0)
    mean = ndi.correlate(filled, weights, mode="nearest")
    mean2 = ndi.correlate(filled ** 2, weights, mode="nearest")
    with np.errstate(invalid="ignore"):
        std = np.sqrt(mean2 - mean ** 2)
        return np.abs(filled - mean) > _N_SIGMA_OUTLIER * std


def _centroid(img_nobg):
    """First-moment centre (x, y) of the segment; stamp centre if outside."""
    ny, nx = img_nobg.shape
    total = img_nobg.sum()
    xc = (img_nobg.sum(axis=0) @ np.arange(nx)) / total
    yc = (img_nobg.sum(axis=1) @ np.arange(ny)) / total
    if not (0 <= xc < nx and 0 <= yc < ny):
        return nx / 2.0, ny / 2.0
    return xc, yc


def _shape(img_nobg, center):
    """Elongation a/b and orientation (rad, from +x towards +y) from the
    second central moments, regularised like SExtractor for thin sources."""
    xc, yc = center
    dy = np.arange(img_nobg.shape[0]) - yc
    dx = np.arange(img_nobg.shape[1]) - xc
    total = img_nobg.sum()
    x2 = (img_nobg.sum(axis=0) @ dx ** 2) / total
    y2 = (img_nobg.sum(axis=1) @ dy ** 2) / total
    xy = (dy @ img_nobg @ dx) / total
    rho = 1.0 / 12.0  # variance of a 1-pixel top hat
    while abs(x2 * y2 - xy ** 2) < rho ** 2:
        x2 += rho if x2 >= 0 else -rho
        y2 += rho if y2 >= 0 else -rho
    eig = np.sort(np.abs(np.linalg.eigvalsh([[x2, xy], [xy, y2]])))[::-1]
    elongation = np.sqrt(eig[0] / eig[1])
    theta = 0.5 * np.arctan2(2.0 * xy, x2 - y2)
    return elongation, theta


def _ellip_radius2(x, y, center, elongation, theta):
    """Squared elliptical radius in semi-major-axis units: a point is inside
    the ellipse of semi-major axis a (axis ratio 1/elongation, major axis at
    angle theta from +x towards +y) when this is <= a**2.  Broadcasts."""
    dx, dy = x - center[0], y - center[1]
    if elongation == 1.0:
        return dx * dx + dy * dy
    # u^2 + (e v)^2 with (u, v) = (dx, dy) rotated by -theta, expanded into
    # a quadratic form: one full-size product instead of two rotations.
    c, s = np.cos(theta), np.sin(theta)
    e2 = elongation * elongation
    # two full-size buffers instead of four (same operations and order)
    out = (c * c + e2 * s * s) * dx * dx + (s * s + e2 * c * c) * dy * dy
    out += np.multiply((2.0 * c * s * (1.0 - e2)) * dx, dy)
    return out


def _subpixel_grid(shape, k=_SUBSAMPLE):
    """x (1, W k) and y (H k, 1) of k x k points per pixel; sub-pixel (i, j)
    lies in pixel (i // k, j // k)."""
    offsets = (np.arange(k) + 0.5) / k - 0.5
    x = (np.arange(shape[1])[:, None] + offsets).reshape(1, -1)
    y = (np.arange(shape[0])[:, None] + offsets).reshape(-1, 1)
    return x, y


def _wedge_area(ax, ay, bx, by, r):
    """Signed area of the disc |p| <= r intersected with triangle (0, A, B).

    The segment AB is split where it crosses the circle: the part inside
    contributes a triangle with the origin, the parts outside circular
    sectors.  Summed over a polygon's edges this gives the exact area of
    polygon and disc.  All arguments broadcast.  (Called ~10^4 times per
    stamp on small arrays, hence minimum/maximum for np.clip and one
    crossing mask: the same numbers with less per-call overhead.)
    """
    dx, dy = bx - ax, by - ay
    qa = dx * dx + dy * dy
    qb = ax * dx + ay * dy
    disc = qb * qb - qa * (ax * ax + ay * ay - r * r)
    root = np.sqrt(np.maximum(disc, 0.0))
    outside = disc <= 0  # the line misses the circle: s1 = s2 = 1
    s1 = np.minimum(np.maximum((-qb - root) / qa, 0.0), 1.0)
    s2 = np.minimum(np.maximum((-qb + root) / qa, 0.0), 1.0)
    s1[outside] = 1.0
    s2[outside] = 1.0
    p1x, p1y = ax + s1 * dx, ay + s1 * dy
    p2x, p2y = ax + s2 * dx, ay + s2 * dy
    half_r2 = 0.5 * r * r
    return (half_r2 * np.arctan2(ax * p1y - ay * p1x, ax * p1x + ay * p1y)
            + 0.5 * (p1x * p2y - p1y * p2x)
            + half_r2 * np.arctan2(p2x * by - p2y * bx, p2x * bx + p2y * by))


_PIXEL_CORNERS = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])


def _pixel_ellipse_overlap(x, y, center, a, elongation, theta):
    """Exact area of unit pixels centred on (x, y) (1-d arrays) inside the
    ellipse, as photutils' method='exact': the map (u, v * elongation)
    turns the ellipse into a disc of radius a and each pixel into a
    parallelogram of area elongation."""
    c, s = np.cos(theta), np.sin(theta)
    dx = x[:, None] + _PIXEL_CORNERS[:, 0] - center[0]   # (n, 4)
    dy = y[:, None] + _PIXEL_CORNERS[:, 1] - center[1]
    u = dx * c + dy * s
    v = (dy * c - dx * s) * elongation
    following = [1, 2, 3, 0]  # corner order round the pixel
    area = _wedge_area(u, v, u[:, following], v[:, following], a).sum(axis=1)
    return np.abs(area) / elongation


def _aperture_fraction(shape, center, a, elongation=1.0, theta=0.0):
    """Fraction (H, W) of each pixel inside an ellipse of semi-major axis a
    (photutils' exact overlap).  Pixels whose centre is more than half a
    diagonal (in elliptical radius) from the edge are all in or all out;
    only the thin band of edge pixels needs the polygon-disc geometry."""
    if elongation == 1.0 and theta == 0.0:
        return _disc_fraction(shape, center, a)
    ny, nx = shape
    rho2 = _ellip_radius2(np.arange(nx)[None, :], np.arange(ny)[:, None],
                          center, elongation, theta)
    band = np.sqrt(0.5) * elongation  # |grad rho| <= elongation
    # -1: below half a diagonal no pixel is surely inside (not even one centred on it)
    inner2, outer2 = (a - band) ** 2 if a > band else -1.0, (a + band) ** 2
    frac = (rho2 <= inner2).astype(np.float64)
    edge = np.nonzero((rho2 > inner2) & (rho2 < outer2))
    if edge[0].size:
        frac[edge] = _pixel_ellipse_overlap(
            edge[1].astype(np.float64), edge[0].astype(np.float64),
            center, a, elongation, theta)
    return frac


_HALF_DIAGONAL = np.sqrt(0.5)
# Pixel edges (-,-)->(+,-)->(+,+)->(-,+)->(-,-) in _PIXEL_CORNERS order:
# start and end offsets, (x or y, edge, 1).
_EDGE_START = _PIXEL_CORNERS.T[:, :, None]
_EDGE_END = np.roll(_PIXEL_CORNERS, -1, axis=0).T[:, :, None]


def _disc_fraction(shape, center, r):
    """``_aperture_fraction`` of a circle (elongation 1, theta 0), bit for
    bit, for the ~80 calls per stamp of the asymmetry centre: no rotation of
    the pixel corners (cos 0 = 1 and sin 0 = 0 leave them unchanged) and one
    ``_wedge_area`` call on the (4, n) edges of the n band pixels, summed in
    the same order as ``_pixel_ellipse_overlap``."""
    ny, nx = shape
    dx = np.arange(nx) - center[0]
    dy = np.arange(ny) - center[1]
    inner2 = (r - _HALF_DIAGONAL) ** 2 if r > _HALF_DIAGONAL else -1.0  # as _aperture_fraction
    outer2 = (r + _HALF_DIAGONAL) ** 2
    # rho2 is largest at a corner (rounding is monotonic): a window inside
    # the circle needs no geometry.
    if max(dx[0] * dx[0], dx[-1] * dx[-1]) + max(dy[0] * dy[0], dy[-1] * dy[-1]) <= inner2:
        return np.ones(shape)
    rho2 = dx * dx + (dy * dy)[:, None]
    inside = rho2 <= inner2
    frac = inside.astype(np.float64)
    rows, cols = np.nonzero(rho2 < outer2)
    band = ~inside[rows, cols]
    rows, cols = rows[band], cols[band]
    if rows.size:
        # (4, n) corner coordinates; x +- 0.5 is exact for integer x, so this
        # rounds like _pixel_ellipse_overlap's x + corner - center.
        x, y = cols.astype(np.float64), rows.astype(np.float64)
        wedges = _wedge_area((x + _EDGE_START[0]) - center[0], (y + _EDGE_START[1]) - center[1],
                             (x + _EDGE_END[0]) - center[0], (y + _EDGE_END[1]) - center[1], r)
        frac[rows, cols] = np.abs(wedges[0] + wedges[1] + wedges[2] + wedges[3])
    return frac


def _upsample(a, k=_SUBSAMPLE):
    """(H k, W k) copy of a (H, W), each value repeated over k x k points."""
    h, w = a.shape
    return np.broadcast_to(a[:, None, :, None], (h, k, w, k)).reshape(h * k, w * k)


# Sub-pixel points per block of the curve of growth (256 kB arrays): whole-
# stamp (H k, W k) temporaries (2 MB at 100 x 100) came back from malloc as
# fresh pages each call, whose faults cost ~3x the arithmetic (measured:
# 7 ms -> 2.5 ms per curve).
_BLOCK_POINTS = 32768


def _curve_of_growth(img, valid, center, elongation, theta, k=_SUBSAMPLE):
    """Flux and unmasked area inside ellipses, tabulated in semi-major axis.

    Returns (edges, flux, area): flux[j], area[j] sum the k x k sub-pixel
    points with elliptical radius < edges[j].  ``np.interp`` between edges
    stands in for photutils' exact aperture sums at every a at once (and is
    flat beyond the stamp, where photutils adds nothing either).

    Blocks of pixel rows are accumulated in row-major point order with
    ``np.add.at`` (sequential, as ``np.bincount``): the same sums as one
    whole-stamp ``np.bincount``.
    """
    x, y = _subpixel_grid(img.shape, k)
    corners = _ellip_radius2(x[:, [0, -1]], y[[0, -1]], center, elongation, theta)
    # + 2: the corner bound is exact for a circle, near-exact for an ellipse
    size = int(np.sqrt(corners.max()) / _RADIUS_BIN) + 2
    flux, count = np.zeros(size), np.zeros(size, dtype=np.int64)
    weights = img / k ** 2
    masked_area = None if valid.all() else valid / k ** 2
    area = np.zeros(size) if masked_area is not None else None
    top = 0
    step = max(1, _BLOCK_POINTS // (img.shape[1] * k * k))
    for row in range(0, img.shape[0], step):
        rows = slice(row, row + step)
        radius = _ellip_radius2(x, y[row * k:(row + step) * k], center, elongation, theta)
        np.sqrt(radius, out=radius)
        radius /= _RADIUS_BIN
        bins = radius.astype(np.int64).ravel()
        top = max(top, bins.max())
        while top >= flux.size:  # not reached in practice (see size)
            flux, count = np.append(flux, np.zeros(size)), np.append(count, np.zeros(size, np.int64))
            area = None if area is None else np.append(area, np.zeros(size))
        np.add.at(flux, bins, _upsample(weights[rows], k).ravel())
        if area is None:
            count += np.bincount(bins, minlength=flux.size)
        else:
            np.add.at(area, bins, _upsample(masked_area[rows], k).ravel())
    flux = flux[:top + 1]
    area = count[:top + 1] / k ** 2 if area is None else area[:top + 1]
    edges = _RADIUS_BIN * np.arange(flux.size + 1)
    return (edges, np.concatenate(([0.0], np.cumsum(flux))),
            np.concatenate(([0.0], np.cumsum(area))))


def _petrosian_excess(a, edges, flux, area):
    """|annulus mean| / |ellipse mean| - eta at semi-major axis a
    (vectorised; statmorph's _petrosian_function_ellip, annulus a +- 0.5)."""
    a = np.asarray(a, dtype=np.float64)
    half = 0.5 * _ANNULUS_WIDTH

    def mean(lo, hi):
        f = np.interp(hi, edges, flux) - np.interp(lo, edges, flux)
        s = np.interp(hi, edges, area) - np.interp(lo, edges, area)
        # photutils' _aperture_mean: 0 when no unmasked area overlaps.
        return np.abs(np.where(s > 0, f / np.where(s > 0, s, 1.0), 0.0))

    inner = mean(0.0, a)
    ring = mean(a - half, a + half)
    ratio = np.where(inner == 0, (ring != 0).astype(np.float64),
                     ring / np.where(inner == 0, 1.0, inner))
    return ratio - _ETA


def _petrosian_axis(img, valid, center, elongation=1.0, theta=0.0):
    """Petrosian semi-major axis in pixels (circular radius for elongation 1).

    statmorph's search: the first sign change of the excess on 100 points
    from 1 px to (stamp diagonal x elongation), then Brent's method; 1 px if
    already negative there, the upper end if it never changes sign.
    """
    table = _curve_of_growth(img, valid, center, elongation, theta)
    a_outer = np.hypot(*img.shape) * elongation
    grid = np.linspace(_ANNULUS_WIDTH, a_outer, 100)
    excess = _petrosian_excess(grid, *table)
    first = np.flatnonzero(excess <= 0)
    if first.size == 0:
        return float(a_outer)
    i = first[0]
    if excess[i] == 0 or i == 0:
        return float(grid[i])
    return opt.brentq(lambda a: float(_petrosian_excess(a, *table)),
                      grid[i - 1], grid[i], xtol=1e-6)


def _gini_segmap(img, center, elongation, theta, a_p):
    """Gini segmap (statmorph's): Gaussian-smoothed stamp >= its mean on
    the elliptical annulus at a_p about ``center``; keep the 8-connected
    region of the smoothed maximum.  None when empty."""
    smooth = ndi.gaussian_filter(img, _PETRO_FRACTION_GINI * a_p,
                                 mode="constant", cval=0.0)
    a_in, a_out = a_p - 0.5 * _ANNULUS_WIDTH, a_p + 0.5 * _ANNULUS_WIDTH
    ring = (_aperture_fraction(img.shape, center, a_out, elongation, theta)
            - _aperture_fraction(img.shape, center, a_in, elongation, theta))
    # photutils' "nomask" mean divides by the full analytic annulus area,
    # including any part outside the stamp.
    ring_area = np.pi * (a_out ** 2 - a_in ** 2) / elongation
    threshold = (smooth * ring).sum() / ring_area

    above = smooth >= threshold
    labels, n_labels = ndi.label(above, structure=_EIGHT_CONNECTED)
    if n_labels == 0:
        return None
    if n_labels == 1:
        return above
    peak = np.unravel_index(np.argmax(smooth), smooth.shape)
    return labels == labels[peak]


# --------------------------------------------------------------------------
# Asymmetry centre (statmorph's)
# --------------------------------------------------------------------------

def _sky_box_asymmetry(img, segment):
    """Per-pixel |B - B_180| of statmorph's sky box: the first (row-major)
    segment-free square of 16 px, halved down to 2 px; None if none."""
    ny, nx = img.shape
    occupied = np.pad(segment.astype(np.int64).cumsum(0).cumsum(1),
                      ((1, 0), (1, 0)))
    size = _SKYBOX_SIZE
    while True:
        box_sums = (occupied[size:, size:] - occupied[:-size, size:]
                    - occupied[size:, :-size] + occupied[:-size, :-size])
        free = np.argwhere(box_sums[:ny - size, :nx - size] == 0)
        if free.size:
            i, j = free[0]
            sky = img[i:i + size, j:j + size]
            return np.abs(sky[::-1, ::-1] - sky).sum() / sky.size
        if size <= 2:
            return None
        size //= 2


class _Rotator:
    """180-degree rotations about arbitrary centres, zero outside the stamp.

    I_180(x, y) = I(2 xc - x, 2 yc - y): the integer parts of 2 xc, 2 yc
    make it a flip of a zero-padded copy (array views, no copying) and the
    common fractional part a fixed bilinear weight, i.e. skimage's
    rotate(order=1, mode='constant') as statmorph calls it.  ``window``
    (a pair of slices) restricts the output to part of the stamp.
    """

    def __init__(self, *arrays):
        self.shape = arrays[0].shape
        self.pad = max(self.shape) + 2
        self.padded = [np.pad(a.astype(np.float64), self.pad) for a in arrays]

    def _view(self, padded, row0, col0, window):
        ny, nx = self.shape
        r, c = self.pad + row0, self.pad + col0
        return padded[r - ny + 1:r + 1, c - nx + 1:c + 1][::-1, ::-1][window]

    def bilinear(self, which, center, window):
        sx, sy = 2.0 * center[0], 2.0 * center[1]
        fx, fy = int(np.floor(sx)), int(np.floor(sy))
        tx, ty = sx - fx, sy - fy
        p = self.padded[which]
        # The rows of the fy + 1 views are those of the fy views one output
        # row up: interpolate along x once on the window plus the row above
        # it, then along y (the same products and sums, 6 array operations
        # instead of 9).
        (row0, row1, _), (col0, col1, _) = (
            window[0].indices(self.shape[0]), window[1].indices(self.shape[1]))
        r, c = self.pad + fy, self.pad + fx
        above = slice(r - row1 + 1, r - row0 + 2)
        left = p[above, c - col1 + 1:c - col0 + 1]
        right = p[above, c - col1 + 2:c - col0 + 2]
        along_x = (1 - tx) * left[::-1, ::-1] + tx * right[::-1, ::-1]
        return (1 - ty) * along_x[1:] + ty * along_x[:-1]

    def nearest(self, which, center, window):
        fx = int(np.floor(2.0 * center[0] + 0.5))
        fy = int(np.floor(2.0 * center[1] + 0.5))
        return self._view(self.padded[which], fy, fx, window)


def _circle_window(shape, center, r):
    """Slices of the stamp that contain a circle of radius r about center."""
    x, y = center
    return (slice(max(int(np.floor(y - r)) - 1, 0),
                  min(int(np.ceil(y + r)) + 2, shape[0])),
            slice(max(int(np.floor(x - r)) - 1, 0),
                  min(int(np.ceil(x + r)) + 2, shape[1])))


def _asymmetry_function(img, masked, r_aperture, sky_asym):
    """CAS asymmetry A(center) of statmorph's _asymmetry_function('cas').

    ``img`` is zero at the ``masked`` pixels; pixels whose 180-degree
    partner is masked are dropped too (statmorph's symmetric mask).  Only
    the pixels around the circular aperture are computed.
    """
    ny, nx = img.shape
    rotator = _Rotator(img, masked)
    any_masked = bool(masked.any())
    abs_img = np.abs(img)

    def asymmetry(center):
        if not (0 <= center[0] < nx and 0 <= center[1] < ny):
            return 100.0  # keeps Nelder-Mead inside the stamp, as statmorph
        win = _circle_window(img.shape, center, r_aperture)
        frac = _disc_fraction(
            (win[0].stop - win[0].start, win[1].stop - win[1].start),
            (center[0] - win[1].start, center[1] - win[0].start), r_aperture)
        diff = rotator.bilinear(0, center, win)
        diff -= img[win]
        np.abs(diff, out=diff)
        absolute = abs_img[win]
        if any_masked:
            valid = ~(masked[win] | (rotator.nearest(1, center, win) >= 0.5))
            diff, absolute = diff * valid, absolute * valid
            valid_area = (frac * valid).sum()
        else:  # frac * (all True) is frac
            valid_area = frac.sum() if sky_asym is not None else 0.0
        abs_sum = (frac * absolute).sum()
        if abs_sum == 0:
            return 100.0
        diff *= frac
        if sky_asym is None:
            return diff.sum() / abs_sum
        return (diff.sum() - valid_area * sky_asym) / abs_sum

    return asymmetry


def _asymmetry_center(img, masked, segment, img_nobg, centroid):
    """(x, y) minimising the CAS asymmetry within 1.5 circular Petrosian
    radii: Nelder-Mead from the centroid, retried from the brightest pixel,
    the centroid if both drift more than 0.25 r_petro (statmorph's rules)."""
    r_petro = _petrosian_axis(img, ~masked, centroid)
    asymmetry = _asymmetry_function(img, masked, _PETRO_EXTENT_CAS * r_petro,
                                    _sky_box_asymmetry(img, segment))
    max_drift = _PETRO_FRACTION_CAS * r_petro
    start = np.asarray(centroid, dtype=np.float64)
    best = opt.fmin(asymmetry, start, xtol=_ASYM_XTOL, disp=False)
    if np.hypot(*(best - start)) > max_drift:
        peak = np.unravel_index(np.argmax(img_nobg), img.shape)
        start = np.array(peak[::-1], dtype=np.float64)
        best = opt.fmin(asymmetry, start, xtol=_ASYM_XTOL, disp=False)
        if np.hypot(*(best - start)) > max_drift:
            best = np.asarray(centroid, dtype=np.float64)
    return float(best[0]), float(best[1])


# --------------------------------------------------------------------------
# Gini and M20 of one stamp
# --------------------------------------------------------------------------

def gini_m20(image, segmap, asym_center=True):
    """Gini and M20 of one source, following statmorph 0.7.2 steps 1-9.

    Parameters
    ----------
    image : array (H, W), background-subtracted, e-/pixel.
    segmap : bool array (H, W), the source's detection segment (e.g. from
        ``segment_galaxy``); pixels outside it are background (kept for the
        Petrosian radius, as statmorph does).
    asym_center : bool; True (default) centres the shape moments and the
        Petrosian ellipse on statmorph's asymmetry centre, as statmorph does;
        False uses the centroid: ~4x faster, but G can then differ from
        statmorph by up to ~0.1 for pairs and lopsided discs.

    Returns
    -------
    (gini, m20) floats; (nan, nan) where statmorph gives -99 (empty segment,
    non-positive flux, empty Gini segmap, non-positive moments).
    """
    image = np.asarray(image, dtype=np.float64)
    segmap = np.asarray(segmap, dtype=bool)
    if image.shape != segmap.shape:
        raise ValueError(f"image {image.shape} and segmap {segmap.shape} differ")
    if not segmap.any():
        return float("nan"), float("nan")

    cut = _stamp_slice(segmap)
    stamp, segment = image[cut], segmap[cut]
    masked = ~np.isfinite(stamp) | _outliers(stamp)
    img = np.where(masked, 0.0, stamp)
    img_nobg = np.where(segment, img, 0.0)
    if not img_nobg.sum() > 0:
        return float("nan"), float("nan")

    centroid = _centroid(img_nobg)
    center = (_asymmetry_center(img, masked, segment, img_nobg, centroid)
              if asym_center else centroid)
    elongation, theta = _shape(img_nobg, center)
    a_p = _petrosian_axis(img, ~masked, center, elongation, theta)
    # statmorph centres the threshold annulus on the centroid, not on the
    # asymmetry centre used for a_p.
    seg_gini = _gini_segmap(img, centroid, elongation, theta, a_p)
    if seg_gini is None:
        return float("nan"), float("nan")
    return gini(img[seg_gini]), m20(np.where(seg_gini, img, 0.0))


# --------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------

def measure(image, sky_sigma, asym_center=True, **segment_kwargs):
    """Segment, measure and label one stamp.

    Parameters
    ----------
    image : array (H, W), background-subtracted, e-/pixel.
    sky_sigma : float, per-pixel sky noise, e-.
    asym_center : bool, see ``gini_m20``.
    **segment_kwargs : ``threshold_sigma``, ``min_pixels`` of ``segment_galaxy``.

    Returns
    -------
    dict with floats ``gini``, ``m20``, ``F``, ``S`` and int ``label``
    (index into ``CLASS_NAMES``; -1 if G or M20 is nan).

    Raises
    ------
    ValueError from ``segment_galaxy`` when nothing is detected.
    """
    segmap = segment_galaxy(image, sky_sigma, **segment_kwargs)
    g, m = gini_m20(image, segmap, asym_center=asym_center)
    return {"gini": g, "m20": m,
            "F": float(bulge_statistic(g, m)),
            "S": float(merger_statistic(g, m)),
            "label": int(classify(g, m))}


def measure_batch(images, sky_sigma, asym_center=True, **segment_kwargs):
    """``measure`` over a stack of stamps.

    Parameters
    ----------
    images : array (N, H, W), e-/pixel.
    sky_sigma : float or array (N,), e-.

    Returns
    -------
    dict of arrays (N,): float64 ``gini``, ``m20``, ``F``, ``S`` and int
    ``label``.  A stamp with no detection gets nan and label -1 instead of
    raising, so one empty stamp does not stop a labelling run.
    """
    images = np.asarray(images)
    n = images.shape[0]
    sigmas = np.broadcast_to(np.asarray(sky_sigma, dtype=np.float64), (n,))
    g = np.full(n, np.nan)
    m = np.full(n, np.nan)
    for i in range(n):
        try:
            seg = segment_galaxy(images[i], sigmas[i], **segment_kwargs)
        except ValueError:
            continue
        g[i], m[i] = gini_m20(images[i], seg, asym_center=asym_center)
    return {"gini": g, "m20": m, "F": bulge_statistic(g, m),
            "S": merger_statistic(g, m), "label": classify(g, m)}
