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
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxrobust.data import store

CHUNK_IMAGES = 256  # at most this many images per chunk in streaming passes
CHUNK_BYTES = 16 << 20  # and at most this many bytes of float64 per chunk (64 stamps of 100x100x3)


class StretchBounds(NamedTuple):
    """Clip bounds of one array, in the array's units (electrons for raw stamps)."""

    p_lo: float
    p_hi: float


def _chunk_rows(images: np.ndarray) -> int:
    """Images per streaming chunk: CHUNK_IMAGES, fewer when their float64 copy would pass CHUNK_BYTES."""
    row_bytes = 8 * max(1, int(np.prod(images.shape[1:])))
    return max(1, min(CHUNK_IMAGES, CHUNK_BYTES // row_bytes))


def _chunks(images: np.ndarray):
    rows = _chunk_rows(images)
    for start in range(0, len(images), rows):
        yield np.asarray(images[start:start + rows], dtype=np.float64).ravel()


def _smallest(images: np.ndarray, count: int, negate: bool = False) -> np.ndarray:
    """The `count` smallest values (or largest, negated) of the array, sorted ascending.

    Keeps the running `count` candidates plus one chunk in a single buffer, partitioned in
    place, so the extra memory is about one chunk whatever the array's size.
    """
    keep = np.empty(0)
    for values in _chunks(images):
        pool = np.empty(keep.size + values.size)
        pool[:keep.size] = keep
        if negate:
            np.negative(values, out=pool[keep.size:])
        else:
            pool[keep.size:] = values
        if pool.size > count:
            pool.partition(count - 1)
            pool = pool[:count].copy()  # drop the chunk-sized buffer
        keep = pool
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
    rows = _chunk_rows(images)
    for start in range(0, len(images), rows):
        # one float64 buffer per chunk, every step in place (same arithmetic as the expression
        # (arcsinh(c clip(x)) + 1) / 2, bit for bit)
        block = np.array(images[start:start + rows], dtype=np.float64)
        np.clip(block, bounds.p_lo, bounds.p_hi, out=block)
        np.multiply(block, c, out=block)
        np.arcsinh(block, out=block)
        block += 1.0
        block /= 2.0
        out[start:start + rows] = block
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
    """The (min, max) a normalised array can take: (1 + arcsinh(stretch p_lo / p_hi)) / 2 and
    (1 + arcsinh(stretch)) / 2 (the published `update_sinh`, import_and_scale.py)."""
    return ((1 + math.asinh(stretch * bounds.p_lo / bounds.p_hi)) / 2, (1 + math.asinh(stretch)) / 2)


class PreparedData:
    """Normalised NHWC float32 arrays of a dataset, ready for the device.

    Attributes:
      images: {(depth, split): (N, H, W, 3) float32 in [~0.4, 0.886]}, depth in ("Y10", "Y1").
      labels: {split: (N,) int32}.
      subsample: {"Y10", "Y1": (n, H, W, 3), "labels": (n,), "test_index": (n,) rows of the test
        split or None, "derived": True when drawn from the test split (no subsample files)} or None.
      bounds: {(depth, split): StretchBounds} used for each array.
      source: the dataset folder; kind: "simulated", "zenodo" or "tfds".
    """

    def __init__(self, images, labels, subsample, bounds, source=None, kind="simulated"):
        self.images, self.labels, self.subsample = images, labels, subsample
        self.bounds, self.source, self.kind = bounds, source, kind

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images["Y10", "train"].shape[1:])

    def nbytes(self, splits=("train", "valid", "test")) -> int:
        return sum(a.nbytes for (d, s), a in self.images.items() if s in splits)


def prepare(raw, percentiles=(0.1, 99.9), stretch: float = 0.85, stats_from: str = "self",
            subsample_size: int | None = None, seed: int = 0) -> PreparedData:
    """Loads every array of a `store.RawDataset` as NHWC float32 and normalises it in place.

    stats_from="self": each array its own percentiles (the published code, test normalised with
    test percentiles); "train": the training split's percentiles of the same depth for all.
    Percentiles are taken over the float32 NHWC array being normalised (float64 files are cast
    first), so every source of the same electrons gives the same numbers.
    subsample_size: when the folder has no attack subsample files, draw this many test images
    (store.drawn_subsample with `seed`); None keeps `subsample` None.
    """
    sub, sub_images = _raw_subsample(raw, subsample_size, seed)

    def load(depth, part):
        return store.to_nhwc(sub_images[depth] if part == "subsample" else raw.images[depth, part])

    return prepare_arrays(load, dict(raw.labels), sub, percentiles, stretch, stats_from, raw.root, raw.kind)


def _raw_subsample(raw, size: int | None, seed: int):
    """(subsample description or None, {depth: (n, 3, H, W) raw images}) of a RawDataset."""
    if raw.subsample is not None:
        sub = {"labels": raw.subsample["labels"], "test_index": raw.subsample["test_index"], "derived": False}
        return sub, {d: raw.subsample[d] for d in store.DEPTHS}
    drawn = store.drawn_subsample({d: raw.images[d, "test"] for d in store.DEPTHS}, raw.labels["test"], size, seed)
    return drawn if drawn is not None else (None, {})


def prepare_arrays(load, labels: dict, subsample: dict | None, percentiles=(0.1, 99.9),
                   stretch: float = 0.85, stats_from: str = "self", source=None,
                   kind: str = "simulated") -> PreparedData:
    """The normalisation shared by every source (.npy folders, TFDS).

    Args:
      load: load(depth, part) -> (N, H, W, 3) float32 raw electrons, a fresh array that is
        normalised in place; depth in store.DEPTHS, part in store.SPLITS or "subsample".
      labels: {split: (N,) int class indices}.
      subsample: None, or {"labels": (n,), "test_index": (n,) or None, ...}; its images come
        from load(depth, "subsample").
    """
    if stats_from not in ("self", "train"):
        raise ValueError(f"preprocess.stats_from must be 'self' or 'train', got {stats_from!r}")
    parts = store.SPLITS + (("subsample",) if subsample is not None else ())
    images, bounds = {}, {}
    for depth in store.DEPTHS:
        for part in parts:  # train first: the other parts may need its bounds
            nhwc = load(depth, part)
            own = part == "train" or stats_from == "self"
            try:  # every array's own bounds, used or not: they catch a damaged array (all zeros)
                b = stretch_bounds(nhwc, percentiles)
            except ValueError as err:  # e.g. all-zero images: name the array
                name = store.image_file(depth, part) if part in store.SPLITS else f"the {depth} attack subsample"
                raise store.DataError(f"{Path(source) / name if source else name}: {err}") from err
            b = b if own else bounds[depth, "train"]
            images[depth, part], bounds[depth, part] = normalize(nhwc, b, stretch=stretch, in_place=True)
    prepared_sub = None
    if subsample is not None:
        prepared_sub = dict(subsample, **{d: images.pop((d, "subsample")) for d in store.DEPTHS})
    return PreparedData(images, labels, prepared_sub, bounds, source, kind)

