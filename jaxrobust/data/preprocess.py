"""Percentile clip + arcsinh stretch, as the paper's code prepares every array.

`import_and_scale.py::update_sinh` (AleksCipri/DeepAdversaries): over the whole array being
prepared (all images, all bands) take p_lo, p_hi = the 0.1th and 99.9th percentiles; then per
band x -> (arcsinh(c clip(x, p_lo, p_hi)) + 1) / 2 with c = 0.85 / p_hi. The output lies in
[(1 + arcsinh(0.85 p_lo / p_hi)) / 2, (1 + arcsinh(0.85)) / 2 = 0.88562].

Percentiles are computed exactly (numpy's "linear" method) by streaming selection over chunks,
so an 8 GB memory-mapped array never needs a second full copy.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

CHUNK_IMAGES = 256  # images per chunk in streaming passes (about 30 MB of float32)


class StretchBounds(NamedTuple):
    """Clip bounds of one array, in the array's units (electrons for raw stamps)."""

    p_lo: float
    p_hi: float


def _chunks(images: np.ndarray, chunk: int = CHUNK_IMAGES):
    for start in range(0, len(images), chunk):
        yield np.asarray(images[start:start + chunk], dtype=np.float64).ravel()


def _smallest(images: np.ndarray, count: int, negate: bool = False) -> np.ndarray:
    """The `count` smallest values (or largest, negated) of the array, sorted ascending."""
    keep = np.empty(0)
    for values in _chunks(images):
        pool = np.concatenate([keep, -values if negate else values])
        keep = np.partition(pool, count - 1)[:count] if pool.size > count else pool
    return np.sort(keep)


def exact_percentiles(images: np.ndarray, q_lo: float, q_hi: float) -> StretchBounds:
    """np.percentile(images, [q_lo, q_hi]) ("linear" method) without copying the whole array.

    Args:
      images: any shape, any float dtype; may be a np.memmap.
      q_lo, q_hi: percentiles in [0, 100].
    """
    n = images.size
    if n == 0:
        raise ValueError("cannot take percentiles of an empty array")
    out = []
    for q in (q_lo, q_hi):
        rank = q / 100.0 * (n - 1)
        below = int(math.floor(rank))
        frac = rank - below
        if q <= 50.0:
            order = _smallest(images, min(below + 2, n))
            lower, upper = order[below], order[min(below + 1, n - 1)]
        else:
            top = n - 1 - below  # distance of `below` from the top, in ranks
            order = -_smallest(images, min(top + 1, n), negate=True)  # descending
            lower = order[top]
            upper = order[top - 1] if top >= 1 else lower
        out.append(_lerp(lower, upper, frac))
    return StretchBounds(*out)


def _lerp(a: float, b: float, t: float) -> float:
    # numpy's percentile interpolation, including its symmetric form for t >= 0.5.
    diff = b - a
    return float(b - diff * (1 - t) if t >= 0.5 else a + diff * t)


def stretch_bounds(images: np.ndarray, percentiles=(0.1, 99.9)) -> StretchBounds:
    """The clip bounds of `images` per the paper's code (whole array, all bands)."""
    bounds = exact_percentiles(images, *percentiles)
    if not bounds.p_hi > 0:
        raise ValueError(f"99.9th percentile is {bounds.p_hi}: the arcsinh stretch needs p_hi > 0 "
                         "(is this a sky-subtracted image array?)")
    return bounds


def arcsinh_stretch(images: np.ndarray, bounds: StretchBounds, stretch: float = 0.85,
                    out: np.ndarray | None = None) -> np.ndarray:
    """(arcsinh(c clip(x, p_lo, p_hi)) + 1) / 2 with c = stretch / p_hi, as float32.

    Works chunk by chunk; `out` may be `images` itself (in place) when that is float32.
    """
    c = stretch / bounds.p_hi
    if out is None:
        out = np.empty(images.shape, dtype=np.float32)
    for start in range(0, len(images), CHUNK_IMAGES):
        block = np.asarray(images[start:start + CHUNK_IMAGES], dtype=np.float64)
        block = np.clip(block, bounds.p_lo, bounds.p_hi)
        out[start:start + CHUNK_IMAGES] = (np.arcsinh(c * block) + 1.0) / 2.0
    return out


def normalize(images: np.ndarray, bounds: StretchBounds | None = None, percentiles=(0.1, 99.9),
              stretch: float = 0.85, in_place: bool = False) -> tuple[np.ndarray, StretchBounds]:
    """Clip + stretch one array; `bounds` from elsewhere (e.g. the training split) if given.

    Returns (normalised float32 array, the bounds used).
    """
    bounds = bounds or stretch_bounds(images, percentiles)
    out = images if in_place and images.dtype == np.float32 else None
    return arcsinh_stretch(images, bounds, stretch, out=out), bounds


def stretched_range(bounds: StretchBounds, stretch: float = 0.85) -> tuple[float, float]:
    """The (min, max) a normalised array can take: spec §3 check 8."""
    return ((1 + math.asinh(stretch * bounds.p_lo / bounds.p_hi)) / 2, (1 + math.asinh(stretch)) / 2)


class PreparedData:
    """Normalised NHWC float32 arrays of a dataset, ready for the device.

    Attributes:
      images: {(depth, split): (N, H, W, 3) float32 in [~0.4, 0.886]}, depth in ("Y10", "Y1").
      labels: {split: (N,) int32}.
      subsample: {"Y10", "Y1": (n, H, W, 3), "labels": (n,), "test_index": (n,) or None} or None.
      bounds: {(depth, split): StretchBounds} used for each array.
      source: the dataset folder; kind: "simulated" or "zenodo".
    """

    def __init__(self, images, labels, subsample, bounds, source=None, kind="simulated"):
        self.images, self.labels, self.subsample = images, labels, subsample
        self.bounds, self.source, self.kind = bounds, source, kind

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images["Y10", "train"].shape[1:])

    def nbytes(self, splits=("train", "valid", "test")) -> int:
        return sum(a.nbytes for (d, s), a in self.images.items() if s in splits)


def prepare(raw, percentiles=(0.1, 99.9), stretch: float = 0.85, stats_from: str = "self") -> PreparedData:
    """Loads every array of a `store.RawDataset` as NHWC float32 and normalises it in place.

    stats_from="self": each array its own percentiles (the published code, test normalised with
    test percentiles); "train": the training split's percentiles of the same depth for all.
    """
    from jaxrobust.data import store

    if stats_from not in ("self", "train"):
        raise ValueError(f"preprocess.stats_from must be 'self' or 'train', got {stats_from!r}")
    images, bounds = {}, {}
    for depth in store.DEPTHS:
        train_bounds = stretch_bounds(raw.images[depth, "train"], percentiles)
        for split in store.SPLITS:
            nhwc = store.to_nhwc(raw.images[depth, split])
            b = train_bounds if (stats_from == "train" or split == "train") else stretch_bounds(nhwc, percentiles)
            images[depth, split], bounds[depth, split] = normalize(nhwc, b, stretch=stretch, in_place=True)
    subsample = None
    if raw.subsample is not None:
        subsample = {"labels": raw.subsample["labels"], "test_index": raw_subsample_index(raw)}
        for depth in store.DEPTHS:
            nhwc = store.to_nhwc(raw.subsample[depth])
            b = bounds[depth, "train"] if stats_from == "train" else stretch_bounds(nhwc, percentiles)
            subsample[depth], bounds[depth, "subsample"] = normalize(nhwc, b, stretch=stretch, in_place=True)
    return PreparedData(images, dict(raw.labels), subsample, bounds, raw.root, raw.kind)


def raw_subsample_index(raw):
    """Positions of the attack subsample in the test split, when the dataset records them."""
    path = raw.root / "metadata_150.npz"
    if path.exists():
        with np.load(path) as meta:
            return meta["test_index"]
    return None
