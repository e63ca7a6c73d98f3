"""Cheap checks that the arrays of a dataset describe the same galaxies where they must.

Y1 and Y10 of a split are the same galaxies in the same order at two depths (Ćiprijanović et al.
2022, section 2.2), and the attack subsample's labels are the test labels at its rows. Nothing in
the files says so, so a Y1 array of another split, in another order, with two rows swapped, or copied (or rescaled)
from Y10 would train and attack without a word. These checks read a few dozen stamps of each
split (every stamp of the attack subsample), not the arrays.
"""
from __future__ import annotations

import math

import numpy as np

SAMPLE_IMAGES = 64  # stamps compared per split: enough for the vote below, a few MB read
# Same galaxy: a Y10 stamp correlates better with its own Y1 stamp than with the others (a
# centred blob correlates with any other centred blob, so the absolute value says little).
# Random order scores 0.5 (sd 0.066 at 19 rows, 0.036 at 64), the same order close to 1.
MIN_MATCHED_WINS = 0.75
# Two rows swapped: Y10 stamps i and j each correlate better with the other's Y1 stamp than with
# their own, and the swap raises the sum of the two rows' correlations by more than SWAP_GAIN and
# by more than SWAP_SDS standard deviations of what pixel noise alone moves that sum by. In the
# quick dataset's splits no true pair of rows prefers each other at all; among 64 faint noisy
# twins (tests/test_pairing.py) the largest such gain is 0.8 sd. Random swaps of galaxies of
# different classes score above 4 sd in 70-100 % of the draws (look-alikes at the 10 x 10 cell
# scale are let through).
SWAP_GAIN = 0.02
SWAP_SDS = 4.0
# Y1's relative pixel noise over Y10's (`noise_ratio`) is about sqrt(10) = 3.2 (3.0 in the quick
# dataset); exchanged depths score about 1 / sqrt(10) and are refused below this. Stamps of pure
# noise score about 1 and pass (nothing to compare).
LESS_NOISY = 0.7
# A rescaled copy: Y1 row = c x Y10 row (+ a constant) leaves, after the least-squares fit of Y1
# on Y10, a residual of float rounding (~1e-7 of the pixel values), while an independent
# observation leaves at least Y1's own noise (residual sd / Y1's pixel noise >= 1; a Y1 made as
# Y10 plus extra noise ~0.95). Below this fraction of its pixel noise Y1 has no noise of its own.
# (1 - r alone does not separate them: a bright compact source has 1 - r ~ 1e-7 at both depths.)
RESCALED_COPY = 0.1
FEW_ROWS = 32  # below this many sampled pairs the score itself is too noisy for the fixed bar
RANDOM_ORDER_SDS = 2.0  # ... and a score under 0.5 + 2 sd of a random order's is refused instead


def min_matched_wins(n: int) -> float:
    """The score below which n sampled pairs are refused: MIN_MATCHED_WINS from FEW_ROWS pairs
    on; for fewer, 0.5 + 2 sd of a random order's score (sd sqrt(1 / 12n): 0.10 at n = 8), as
    chance alone moves a true pairing's score that much (a valid split of 8 faint galaxies of
    the quickstart notebook scored 0.73)."""
    if n >= FEW_ROWS:
        return MIN_MATCHED_WINS
    return 0.5 + RANDOM_ORDER_SDS * math.sqrt(1.0 / (12.0 * n))


def sample_rows(n: int, size: int = SAMPLE_IMAGES) -> np.ndarray:
    """Up to `size` sorted, evenly spread rows of an array of n (deterministic)."""
    return np.unique(np.linspace(0, n - 1, min(n, size)).astype(np.int64))


GRID_CELLS = 10  # stamps compared as 10 x 10 cells of each band's flux (see `coarse`)


def coarse(stamps: np.ndarray, cells: int = GRID_CELLS) -> np.ndarray:
    """(n, bands, cells, cells) block means of each band (stamps NCHW or NHWC, 1 or 3 bands).

    A faint galaxy's Y1 stamp is mostly sky noise pixel by pixel (the quick dataset's own pairs
    won only 67 % of the comparisons on raw pixels); averaging blocks of ~100 pixels keeps the
    galaxy's shape and divides the noise by ~10 (the same pairs then win 91-96 %).
    """
    x = _nchw(stamps)
    n, c, h, w = x.shape
    bh, bw = max(1, h // cells), max(1, w // cells)
    h2, w2 = h // bh * bh, w // bw * bw
    return x[:, :, :h2, :w2].reshape(n, c, h2 // bh, bh, w2 // bw, bw).mean(axis=(3, 5))


def _nchw(stamps: np.ndarray) -> np.ndarray:
    x = np.asarray(stamps, dtype=np.float64)
    if x.ndim == 3:
        return x[:, None]
    if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        return np.moveaxis(x, -1, 1)  # NHWC -> NCHW
    return x


def pixel_noise(stamps: np.ndarray) -> np.ndarray:
    """(n,) per-stamp pixel noise sd: the median absolute deviation of horizontal neighbour
    differences / (0.6745 sqrt 2), robust to the galaxy (a minority of the pixels)."""
    x = _nchw(stamps)
    d = np.diff(x, axis=-1).reshape(len(x), -1)
    mad = np.median(np.abs(d - np.median(d, axis=1, keepdims=True)), axis=1)
    return mad / (0.6745 * np.sqrt(2.0))


def _flat_centred(stamps: np.ndarray) -> np.ndarray:
    flat = np.asarray(stamps, dtype=np.float64).reshape(len(stamps), -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(flat, axis=1, keepdims=True)
    return flat / np.where(norm > 0, norm, 1.0)


def matched_wins(y10: np.ndarray, y1: np.ndarray) -> float:
    """Mean over stamps i of the fraction of other Y1 stamps j that Y10 stamp i correlates with
    less than with its own Y1 stamp i: about 1 for the same galaxies in the same order, 0.5 for
    any other order (sd sqrt(1 / 12n): 0.036 at n = 64).

    Args:
      y10, y1: (n, ...) stamps in the same layout, n >= 2.
    """
    corr = _flat_centred(y10) @ _flat_centred(y1).T  # (n, n) Pearson correlations
    matched = np.diag(corr)
    n = len(corr)
    beaten = (matched[:, None] > corr).sum(axis=1)  # the diagonal never beats itself
    return float(np.mean(beaten / (n - 1)))


def rescaled_copies(y10: np.ndarray, y1: np.ndarray) -> np.ndarray:
    """Positions of the rows whose Y1 stamp is the Y10 stamp times a constant (plus an offset):
    the residual of the least-squares fit y1 = a y10 + b over the stamp's pixels has an sd below
    RESCALED_COPY x Y1's pixel noise (`pixel_noise`; for a stamp without measurable noise, below
    1e-6 of its sd). Blank stamps are never copies.

    Args:
      y10, y1: (n, C, H, W) or (n, H, W, C) stamps in the same layout.
    """
    x = np.asarray(y10, np.float64).reshape(len(y10), -1)
    y = np.asarray(y1, np.float64).reshape(len(y1), -1)
    x, y = x - x.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True)
    xx = np.sum(x * x, axis=1)
    slope = np.sum(x * y, axis=1) / np.where(xx > 0, xx, 1.0)
    residual = (y - slope[:, None] * x).std(axis=1)
    noise, spread = pixel_noise(y1), y.std(axis=1)
    scale = np.where(noise > 0, RESCALED_COPY * noise, 1e-6 * spread)
    return np.flatnonzero((residual <= scale) & (xx > 0) & (spread > 0))


def _correlation_noise(stamps: np.ndarray) -> np.ndarray:
    """(n,) sd of a coarse stamp's correlation with a fixed pattern due to its pixel noise:
    noise per cell / norm of the centred cells (first order in the noise)."""
    x = _nchw(stamps)
    cells = coarse(x)
    block = (x.shape[-2] // cells.shape[-2]) * (x.shape[-1] // cells.shape[-1])  # pixels per cell
    flat = cells.reshape(len(cells), -1)
    norm = np.linalg.norm(flat - flat.mean(axis=1, keepdims=True), axis=1)
    return pixel_noise(x) / np.sqrt(block) / np.where(norm > 0, norm, np.inf)


def noise_ratio(y10: np.ndarray, y1: np.ndarray) -> float | None:
    """Median over rows of Y1's relative noise over Y10's (pixel noise per unit of the stamp's
    signal, `_correlation_noise`): about sqrt(10) for a tenth of the exposure, above 1 for any
    noisier Y1. None when fewer than two rows have measurable noise at both depths."""
    q10, q1 = _correlation_noise(y10), _correlation_noise(y1)
    usable = (q10 > 0) & (q1 > 0) & np.isfinite(q10) & np.isfinite(q1)
    if usable.sum() < 2:
        return None
    return float(np.median(q1[usable] / q10[usable]))


def swapped_rows(y10: np.ndarray, y1: np.ndarray) -> tuple[int, int] | None:
    """The pair of rows (i, j) most clearly swapped, or None: Y10 stamp i correlates better with
    Y1 stamp j than with its own and Y10 stamp j better with Y1 stamp i (correlations of coarse
    cells), and exchanging them raises corr(i, i) + corr(j, j) by more than SWAP_GAIN and more
    than SWAP_SDS sd of its noise (from each stamp's pixel noise, `pixel_noise`).

    Args:
      y10, y1: (n, C, H, W) or (n, H, W, C) stamps in the same layout.
    """
    corr = _flat_centred(coarse(y10)) @ _flat_centred(coarse(y1)).T
    own = np.diag(corr)
    gain = corr + corr.T - own[:, None] - own[None, :]
    q10, q1 = _correlation_noise(y10) ** 2, _correlation_noise(y1) ** 2
    sd = np.sqrt(2.0 * (q10[:, None] + q10[None, :] + q1[:, None] + q1[None, :]))
    mutual = ((corr > own[:, None]) & (corr.T > own[None, :]) & (gain > SWAP_GAIN)
              & (gain > SWAP_SDS * sd))
    np.fill_diagonal(mutual, False)
    if not mutual.any():
        return None
    i, j = np.unravel_index(np.argmax(np.where(mutual, gain, -np.inf)), gain.shape)
    return (int(min(i, j)), int(max(i, j)))


def same_galaxies_problem(y10: np.ndarray, y1: np.ndarray, path10, path1,
                          sample: int = SAMPLE_IMAGES) -> str | None:
    """A sentence when Y1 stamps are not an independent observation of the Y10 galaxies in the
    same order, else None: exact copies, rescaled copies (no noise of their own), two rows
    swapped, or another order (a vote over the sampled rows).

    Args:
      y10, y1: (N, ...) arrays (memory maps fine) of equal length; `sample` evenly spread rows
        are read (the attack subsample passes its length: every row is compared).
    """
    rows = sample_rows(len(y10), sample)
    a, b = np.asarray(y10[rows]), np.asarray(y1[rows])
    if np.array_equal(a, b):
        return (f"{path1}: identical to {path10} (an exact copy); Y1 must be the same galaxies "
                "observed at Y1 depth, with their own noise")
    finite = np.isfinite(a.reshape(len(a), -1)).all(axis=1) & np.isfinite(b.reshape(len(b), -1)).all(axis=1)
    a, b, rows = a[finite], b[finite], rows[finite]  # non-finite pixels are refused by the reader
    copied = rescaled_copies(a, b)
    if copied.size:
        return (f"{path1}: row {int(rows[copied[0]])} is row {int(rows[copied[0]])} of {path10} rescaled "
                f"({copied.size} of {len(rows)} sampled rows; no noise of its own); Y1 must be the same "
                "galaxies observed at Y1 depth, with their own noise")
    # blank stamps (all one value) have no shape to compare; the stretch reports blank arrays
    shaped = (np.ptp(a.reshape(len(a), -1), axis=1) > 0) & (np.ptp(b.reshape(len(b), -1), axis=1) > 0)
    a, b, rows = a[shaped], b[shaped], rows[shaped]
    if len(a) < 2:
        return None
    swapped = swapped_rows(a, b)
    if swapped is not None:
        i, j = (int(rows[k]) for k in swapped)
        return (f"{path1}: rows {i} and {j} look swapped (Y10 row {i} of {path10} matches Y1 row {j} "
                f"better than its own, and Y10 row {j} Y1 row {i}); Y1 and Y10 must hold the same "
                "galaxies in the same order")
    if len(a) < 8:  # too few to vote on the order or to compare the noise
        return None
    ratio = noise_ratio(a, b)
    if ratio is not None and ratio < LESS_NOISY:
        return (f"{path1}: less noisy than {path10} (relative pixel noise {ratio:.2f} x Y10's, median over "
                f"{len(a)} sampled rows); Y1 is a tenth of Y10's exposure and must be noisier: are the Y1 and "
                "Y10 files exchanged?")
    wins = matched_wins(coarse(a), coarse(b))
    if wins < min_matched_wins(len(a)):
        return (f"{path1}: its stamps do not match {path10} row by row (each Y10 stamp resembles "
                f"its own Y1 stamp more than the others in only {wins:.0%} of the {len(a)} x {len(a) - 1} sampled pairs); Y1 and Y10 must "
                "hold the same galaxies in the same order")
    return None


def subsample_labels_problem(sub_labels: np.ndarray, test_labels: np.ndarray, test_index: np.ndarray,
                             labels_path, index_source) -> str | None:
    """A sentence when subsample labels differ from the test labels at the subsample's rows."""
    expected = np.asarray(test_labels)[np.asarray(test_index)]
    bad = np.flatnonzero(np.asarray(sub_labels) != expected)
    if bad.size:
        i = int(bad[0])
        return (f"{labels_path}: row {i} is class {int(sub_labels[i])} but the test image it is "
                f"(row {int(test_index[i])} per {index_source}) is class {int(expected[i])} "
                f"({bad.size} of {len(expected)} rows differ); the subsample's labels must be "
                "the test labels of the same images")
    return None
