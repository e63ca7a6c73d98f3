"""Cheap checks that the arrays of a dataset describe the same galaxies where they must.

Y1 and Y10 of a split are the same galaxies in the same order at two depths (paper §2.1), and
the attack subsample's labels are the test labels at its rows. Nothing in the files says so, so
a Y1 array of another split, in another order, or copied from Y10 would train and attack
without a word. These checks read a few dozen stamps, not the arrays.
"""
from __future__ import annotations

import math

import numpy as np

SAMPLE_IMAGES = 64  # stamps compared per split: enough for the vote below, a few MB read
# Same galaxy: a Y10 stamp correlates better with its own Y1 stamp than with the others (a
# centred blob correlates with any other centred blob, so the absolute value says little).
# Random order scores 0.5 (sd 0.066 at 19 rows, 0.036 at 64), the same order close to 1.
MIN_MATCHED_WINS = 0.75
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
    x = np.asarray(stamps, dtype=np.float64)
    if x.ndim == 3:
        x = x[:, None]
    elif x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = np.moveaxis(x, -1, 1)  # NHWC -> NCHW
    n, c, h, w = x.shape
    bh, bw = max(1, h // cells), max(1, w // cells)
    h2, w2 = h // bh * bh, w // bw * bw
    return x[:, :, :h2, :w2].reshape(n, c, h2 // bh, bh, w2 // bw, bw).mean(axis=(3, 5))


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


def same_galaxies_problem(y10: np.ndarray, y1: np.ndarray, path10, path1) -> str | None:
    """A sentence when Y1 stamps are exact copies of Y10 or not the same galaxies in the same
    order, else None.

    Args:
      y10, y1: (N, ...) arrays (memory maps fine) of equal length; a sample of rows is read.
    """
    rows = sample_rows(len(y10))
    a, b = np.asarray(y10[rows]), np.asarray(y1[rows])
    if np.array_equal(a, b):
        return (f"{path1}: identical to {path10} (an exact copy); Y1 must be the same galaxies "
                "observed at Y1 depth, with their own noise")
    # blank stamps (all one value) have no shape to compare; the stretch reports blank arrays
    shaped = (np.ptp(a.reshape(len(a), -1), axis=1) > 0) & (np.ptp(b.reshape(len(b), -1), axis=1) > 0)
    a, b = a[shaped], b[shaped]
    if len(a) < 8:  # too few to vote on the order
        return None
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
