"""jaxrobust.data.preprocess against a direct NumPy transcription of the paper's `update_sinh`
(import_and_scale.py, AleksCipri/DeepAdversaries) and np.percentile."""
from __future__ import annotations

import math

import numpy as np
import pytest

from jaxrobust.data import preprocess, store
from jaxrobust.data.store import RawDataset


def update_sinh(t: np.ndarray, bounds=None) -> np.ndarray:
    """The paper's function on an (N, 3, H, W) array, transcribed line by line (on a copy):
    global 0.1/99.9 percentiles, then per band clip, arcsinh(c x) with c = 0.85 / max, (+1)/2."""
    t = np.array(t, dtype=np.float64)
    global_min, global_max = bounds if bounds is not None else (np.percentile(t, 0.1), np.percentile(t, 99.9))
    for i in range(0, 3):
        c = .85 / global_max
        t[:, i] = np.clip(t[:, i], global_min, global_max)
        t[:, i] = np.arcsinh(c * t[:, i])
        t[:, i] = (t[:, i] + 1.0) / 2.0
    return t


def raw_stamps(n: int, seed: int, scale: float = 1.0, hw: int = 12) -> np.ndarray:
    """Sky-subtracted Poisson noise (Y1 r-like sky) plus a few bright sources, float32 e-."""
    rng = np.random.default_rng(seed)
    sky = 12720.0
    signal = np.zeros((n, 3, hw, hw))
    signal[:, :, hw // 2, hw // 2] = rng.uniform(1e4, 1e6, size=(n, 3)) * scale
    return (rng.poisson(signal + sky) - sky).astype(np.float32)


# --- exact_percentiles = np.percentile ("linear") ---
@pytest.mark.parametrize("shape", [(1,), (2,), (7,), (3, 1, 2, 2), (1000,), (600, 3, 4, 4)])
def test_exact_percentiles_equal_numpy(shape):
    rng = np.random.default_rng(len(shape) * 100 + shape[0])
    for values in (rng.normal(size=shape), rng.integers(-3, 4, size=shape).astype(float),
                   -np.abs(rng.standard_cauchy(size=shape))):
        for q_lo, q_hi in ((0.1, 99.9), (0.0, 100.0), (37.3, 50.0), (50.0, 62.5), (12.5, 87.5)):
            bounds = preprocess.exact_percentiles(values, q_lo, q_hi)
            assert bounds == tuple(np.percentile(values, [q_lo, q_hi]))


def test_exact_percentiles_on_a_float32_memmap(tmp_path):
    """More images than one streaming chunk (CHUNK_IMAGES), read through a memory map."""
    images = raw_stamps(preprocess.CHUNK_IMAGES * 2 + 17, seed=3, hw=6)
    np.save(tmp_path / "x.npy", images)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert isinstance(mapped, np.memmap)
    bounds = preprocess.exact_percentiles(mapped, 0.1, 99.9)
    assert bounds == pytest.approx(np.percentile(images.astype(np.float64), [0.1, 99.9]), rel=1e-15)
    assert bounds == pytest.approx(np.percentile(images, [0.1, 99.9]), rel=1e-6)  # numpy in float32


def test_exact_percentiles_refuses_empty():
    with pytest.raises(ValueError, match="empty"):
        preprocess.exact_percentiles(np.zeros((0, 3)), 0.1, 99.9)


# --- the stretch ---
def test_normalize_matches_update_sinh():
    raw = raw_stamps(40, seed=1)
    normalised, bounds = preprocess.normalize(raw)
    assert normalised.dtype == np.float32 and normalised.shape == raw.shape
    np.testing.assert_allclose(normalised, update_sinh(raw), rtol=0, atol=1e-6)
    assert bounds == pytest.approx(np.percentile(raw.astype(np.float64), [0.1, 99.9]), rel=1e-12)
    lo, hi = preprocess.stretched_range(bounds)
    assert normalised.max() == pytest.approx(hi, abs=1e-6) and hi == pytest.approx(0.88562, abs=5e-6)
    assert normalised.min() == pytest.approx(lo, abs=1e-6)
    assert lo == pytest.approx((1 + math.asinh(0.85 * bounds.p_lo / bounds.p_hi)) / 2, abs=1e-12)


def test_normalize_in_place_and_with_given_bounds():
    raw = raw_stamps(10, seed=2)
    bounds = preprocess.StretchBounds(-5000.0, 2e5)
    expected = update_sinh(raw, bounds)
    work = raw.copy()
    out, used = preprocess.normalize(work, bounds, in_place=True)
    assert out is work and used == bounds
    np.testing.assert_allclose(work, expected, atol=1e-6)
    untouched = raw.astype(np.float64)
    preprocess.normalize(untouched, bounds, in_place=True)  # float64 input: never in place
    np.testing.assert_array_equal(untouched, raw.astype(np.float64))


def test_stretch_needs_positive_upper_percentile():
    with pytest.raises(ValueError, match="p_hi > 0"):
        preprocess.normalize(-np.ones((2, 3, 4, 4), dtype=np.float32))


# --- prepare(): NHWC, per-array or training-split statistics ---
@pytest.fixture
def raw_dataset(tmp_path):
    """Splits of different brightness, so their percentiles differ, plus a subsample."""
    for k, split in enumerate(store.SPLITS):
        n = (30, 8, 12)[k]
        y10 = raw_stamps(n, seed=10 + k, scale=10.0 * (k + 1))
        y1 = raw_stamps(n, seed=10 + k, scale=1.0 * (k + 1))  # the same sources, a tenth of the flux
        store.write_split(tmp_path, split, y10, y1, np.arange(n) % 3)
    test = {d: np.load(tmp_path / f"images_{d}_test.npy") for d in store.DEPTHS}
    pick = np.array([1, 4, 5, 9])
    store.write_subsample(tmp_path, test["Y10"][pick], test["Y1"][pick], (np.arange(12) % 3)[pick], pick)
    return RawDataset(tmp_path)


@pytest.mark.parametrize("stats_from", ["self", "train"])
def test_prepare(raw_dataset, stats_from):
    prepared = preprocess.prepare(raw_dataset, stats_from=stats_from)
    for depth in store.DEPTHS:
        train_raw = np.asarray(raw_dataset.images[depth, "train"], dtype=np.float64)
        train_bounds = tuple(np.percentile(train_raw, [0.1, 99.9]))
        arrays = {s: np.asarray(raw_dataset.images[depth, s]) for s in store.SPLITS}
        arrays["subsample"] = np.asarray(raw_dataset.subsample[depth])
        for split, raw in arrays.items():
            own = tuple(np.percentile(raw.astype(np.float64), [0.1, 99.9]))
            expected_bounds = train_bounds if stats_from == "train" else own
            assert prepared.bounds[depth, split] == pytest.approx(expected_bounds, rel=1e-12)
            got = prepared.images[depth, split] if split != "subsample" else prepared.subsample[depth]
            assert got.shape == (len(raw), 12, 12, 3) and got.dtype == np.float32
            expected = update_sinh(raw, expected_bounds).transpose(0, 2, 3, 1)
            np.testing.assert_allclose(got, expected, atol=1e-6)
        if stats_from == "self":  # the splits really differ, so the two modes are distinguishable
            assert prepared.bounds[depth, "test"].p_hi > 1.5 * prepared.bounds[depth, "train"].p_hi
    np.testing.assert_array_equal(prepared.subsample["test_index"], [1, 4, 5, 9])
    np.testing.assert_array_equal(prepared.labels["valid"], np.arange(8) % 3)
    assert prepared.image_shape == (12, 12, 3)
    # prepare() normalises copies: the files still hold the raw electrons.
    np.testing.assert_array_equal(np.load(raw_dataset.root / "images_Y1_valid.npy"),
                                  raw_stamps(8, seed=11, scale=2.0))


def test_prepare_refuses_unknown_statistics(raw_dataset):
    with pytest.raises(ValueError, match="stats_from"):
        preprocess.prepare(raw_dataset, stats_from="test")


@pytest.mark.parametrize("stats_from", ["self", "train"])
def test_an_all_zero_array_is_named_whichever_bounds_stretch_it(raw_dataset, stats_from):
    path = raw_dataset.root / "images_Y1_test.npy"
    np.save(path, np.zeros_like(np.load(path)))
    with pytest.raises(store.DataError, match="images_Y1_test.npy: 99.9th percentile is 0.0"):
        preprocess.prepare(RawDataset(raw_dataset.root), stats_from=stats_from)
