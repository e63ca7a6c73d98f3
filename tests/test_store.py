"""jaxrobust.data.store: the Zenodo layout on disk, splits, augmentation, validation, atomic writes.

Layout facts of the Zenodo record (doi 10.5281/zenodo.5514180, as DeepAdversaries' notebooks read
it: NCHW float32 images, (N, 3) one-hot int64 labels in the order spiral, elliptical, merger, the
150-image attack subsample); split and augmentation rules from Ćiprijanović et al. 2022, section 2.1
(and our split by galaxy, docs/data.md). Expected values are computed here independently (hashlib, explicit index
arithmetic, np.flip), not taken from the module.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from jaxrobust.config import load_config
from jaxrobust.data import ensure_simulated, simulate, store
from jaxrobust.data.store import DataError, RawDataset

import _tiny_dataset

NPY_FILES = [f"images_{d}_{s}.npy" for d in ("Y10", "Y1") for s in store.SPLITS] + \
    [f"labels_{s}.npy" for s in store.SPLITS]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_folder(root: Path, n=(5, 2, 3), hw=8, seed=0, dtype=np.float32) -> dict:
    """A small valid dataset folder from random arrays; returns what was written."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, count in zip(store.SPLITS, n):
        y10 = rng.normal(size=(count, 3, hw, hw)).astype(dtype)
        y1 = rng.normal(size=(count, 3, hw, hw)).astype(dtype)
        labels = rng.integers(0, 3, size=count)
        store.write_split(root, split, y10, y1, labels)
        written[split] = (y10, y1, labels)
    return written


@pytest.fixture
def folder(tmp_path):
    write_folder(tmp_path)
    return tmp_path


def expect_error(root: Path, *fragments: str):
    """RawDataset(root) must raise a DataError whose message holds every fragment."""
    with pytest.raises(DataError) as info:
        RawDataset(root)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


# --- Round trip and layout ---
def test_round_trip_of_written_arrays(tmp_path):
    written = write_folder(tmp_path, dtype=np.float64)
    raw = RawDataset(tmp_path)
    assert raw.kind == "zenodo" and raw.image_shape == (3, 8, 8)
    for split, (y10, y1, labels) in written.items():
        assert raw.images["Y10", split].dtype == np.float32  # written as float32
        np.testing.assert_array_equal(raw.images["Y10", split], y10.astype(np.float32))
        np.testing.assert_array_equal(raw.images["Y1", split], y1.astype(np.float32))
        np.testing.assert_array_equal(raw.labels[split], labels)
        on_disk = np.load(tmp_path / f"labels_{split}.npy")
        assert on_disk.dtype == np.int64
        np.testing.assert_array_equal(on_disk, np.eye(3, dtype=np.int64)[labels])
    assert raw.subsample is None
    assert raw.counts()["train"] == np.bincount(written["train"][2], minlength=3).tolist()


def test_nchw_on_disk_nhwc_after_to_nhwc():
    folder, _ = _tiny_dataset.tiny_dataset()
    raw = RawDataset(folder)
    for (depth, split), images in raw.images.items():
        assert images.shape[1:] == (3, 100, 100) and images.dtype == np.float32
        nhwc = store.to_nhwc(images, chunk=3)  # chunks smaller than the split
        assert nhwc.shape == (len(images), 100, 100, 3) and nhwc.dtype == np.float32
        for n in range(len(images)):
            for c in range(3):
                np.testing.assert_array_equal(nhwc[n, :, :, c], images[n, c])
    # Channel order (g, r, i): g holds the fewest electrons (shorter exposure, redder SEDs).
    y1 = np.asarray(raw.images["Y1", "train"], dtype=np.float64)
    sums = y1[:, :, 30:70, 30:70].sum(axis=(2, 3))
    g_over_r, i_over_r = np.median(sums[:, 0] / sums[:, 1]), np.median(sums[:, 2] / sums[:, 1])
    assert 0.2 < g_over_r < 0.45 and 0.85 < i_over_r < 1.15


def test_simulated_dataset_files_and_info():
    folder, info = _tiny_dataset.tiny_dataset()
    raw = RawDataset(folder)
    assert raw.kind == "simulated"
    on_disk = json.loads((folder / "dataset.json").read_text())
    assert on_disk["images_per_split"] == info["images_per_split"] == raw.counts()
    assert on_disk["unique_galaxies"] == dict(spiral=8, elliptical=5, merger=3)
    assert sum(map(sum, on_disk["images_per_split"].values())) == 8 + 5 + 5 * 3
    # Checksums: every .npy/.npz file is listed, and each digest matches (hashlib, here).
    data_files = sorted(p.name for p in folder.iterdir() if p.suffix in (".npy", ".npz"))
    assert sorted(on_disk["checksums"]) == data_files
    for name, digest in on_disk["checksums"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    assert store.is_complete(folder, verify_checksums=True)
    # Usual permissions, not mkstemp's 0600.
    for path in folder.iterdir():
        assert path.stat().st_mode & 0o777 == 0o666 & ~_umask(), path
    assert not list(folder.glob(".*")), "temporary files left behind"


def test_attack_subsample_matches_test_split():
    folder, _ = _tiny_dataset.tiny_dataset()
    raw = RawDataset(folder)
    for name in store.SUBSAMPLE_FILES:
        assert (folder / name).exists()
    with np.load(folder / "metadata_150.npz") as meta:
        index = meta["test_index"]
    n_test = len(raw.labels["test"])
    assert len(index) == min(150, n_test) and np.all(np.diff(index) > 0) and index.max() < n_test
    np.testing.assert_array_equal(np.load(folder / "regular_images_150.npy"), raw.images["Y10", "test"][index])
    np.testing.assert_array_equal(np.load(folder / "noisy_images_150.npy"), raw.images["Y1", "test"][index])
    labels_150 = np.load(folder / "labels_150.npy")
    assert labels_150.dtype == np.int64 and labels_150.shape == (len(index), 3)
    np.testing.assert_array_equal(raw.subsample["labels"], raw.labels["test"][index])


def test_alternative_subsample_names_are_read(folder):
    rng = np.random.default_rng(1)
    y10, y1 = rng.normal(size=(2, 4, 3, 8, 8)).astype(np.float32)
    for name, array in zip(store.SUBSAMPLE_FILES_ALT, (y10, y1, np.eye(3, dtype=np.int64)[[0, 1, 2, 2]])):
        np.save(folder / name, array)
    raw = RawDataset(folder)
    np.testing.assert_array_equal(raw.subsample["Y1"], y1)
    np.testing.assert_array_equal(raw.subsample["labels"], [0, 1, 2, 2])


# --- Splits and augmentation ---
def test_augmented_mergers_stay_together():
    folder, _ = _tiny_dataset.tiny_dataset()
    seen = {}
    for split in store.SPLITS:
        labels = np.load(folder / f"labels_{split}.npy").argmax(axis=1)
        y10 = np.load(folder / f"images_Y10_{split}.npy")
        with np.load(folder / f"metadata_{split}.npz") as meta:
            gid, aug = meta["galaxy_id"], meta["augmentation"]
        for g in np.unique(gid):
            assert g not in seen, f"galaxy {g} in {seen.get(g)} and {split}"
            seen[g] = split
            rows = np.flatnonzero(gid == g)
            if labels[rows[0]] == simulate.MERGER:
                assert sorted(aug[rows]) == [0, 1, 2, 3, 4]  # all five copies, this split
                original = y10[rows[aug[rows] == 0][0]]
                for row in rows:  # each copy is its flip / rotation of the original
                    kind = store.AUGMENTATIONS[aug[row]]
                    np.testing.assert_array_equal(y10[row], reference_augment(original, kind))
            else:
                assert len(rows) == 1 and aug[rows[0]] == 0
    assert len(seen) == 8 + 5 + 3


def test_tiny_dataset_split_counts():
    """Per class: valid = round(0.1 n), test = round(0.2 n), train the rest (stratified)."""
    _, info = _tiny_dataset.tiny_dataset()
    unique = {"train": [], "valid": [], "test": []}
    for n in (8, 5, 3):
        valid, test = int(round(0.1 * n)), int(round(0.2 * n))
        for split, k in zip(store.SPLITS, (n - valid - test, valid, test)):
            unique[split].append(k)
    for split, per_class in unique.items():
        per_class[2] *= 5  # merger images after augmentation
        assert info["images_per_split"][split] == per_class


def test_split_fractions_and_disjointness():
    rng = np.random.default_rng(0)
    labels = rng.choice(3, size=20000, p=(0.57, 0.33, 0.10))
    parts = store.split_indices(labels, (0.7, 0.1, 0.2), np.random.default_rng(1))
    joined = np.concatenate(list(parts.values()))
    assert np.array_equal(np.sort(joined), np.arange(len(labels)))  # a partition
    for split, fraction in zip(store.SPLITS, (0.7, 0.1, 0.2)):
        assert len(parts[split]) / len(labels) == pytest.approx(fraction, abs=0.002)
        for cls in range(3):  # stratified: each class split in the same proportions
            share = np.mean(labels[parts[split]] == cls) / np.mean(labels == cls)
            assert share == pytest.approx(1.0, abs=0.01)
    again = store.split_indices(labels, (0.7, 0.1, 0.2), np.random.default_rng(1))
    assert all(np.array_equal(parts[s], again[s]) for s in store.SPLITS)
    with pytest.raises(ValueError, match="summing to 1"):
        store.split_indices(labels, (0.7, 0.2, 0.2), rng)


def test_expand_with_augmentation():
    source, kind = store.expand_with_augmentation(np.array([0, 2, 1, 2]))
    np.testing.assert_array_equal(source, [0, 1, 1, 1, 1, 1, 2, 3, 3, 3, 3, 3])
    np.testing.assert_array_equal(kind, [0, 0, 1, 2, 3, 4, 0, 0, 1, 2, 3, 4])
    source, kind = store.expand_with_augmentation(np.array([0, 2]), enabled=False)
    np.testing.assert_array_equal(source, [0, 1])
    np.testing.assert_array_equal(kind, [0, 0])


def reference_augment(x: np.ndarray, kind: str) -> np.ndarray:
    """The paper's augmentations on the last two axes, by explicit index arithmetic:
    out[i, j] = x[src_i, src_j]; rot90 is counter-clockwise (np.rot90's convention)."""
    h, w = x.shape[-2:]
    i, j = np.meshgrid(np.arange(w if kind == "rot90" else h), np.arange(h if kind == "rot90" else w),
                       indexing="ij")
    src = {"identity": (i, j), "hflip": (i, w - 1 - j), "vflip": (h - 1 - i, j),
           "rot90": (j, w - 1 - i), "rot180": (h - 1 - i, w - 1 - j)}[kind]
    return x[..., src[0], src[1]]


@pytest.mark.parametrize("kind", store.AUGMENTATIONS)
def test_augmentations(kind):
    x = np.random.default_rng(2).normal(size=(2, 3, 5, 7))
    expected = reference_augment(x, kind)
    np.testing.assert_array_equal(store.augment(x, kind), expected)
    numpy_ops = {"identity": x, "hflip": np.flip(x, -1), "vflip": np.flip(x, -2),
                 "rot90": np.rot90(x, 1, axes=(-2, -1)), "rot180": np.flip(x, (-2, -1))}
    np.testing.assert_array_equal(store.augment(x, kind), numpy_ops[kind])
    # Augmenting NCHW then converting = augmenting the NHWC image over its (H, W) axes 1, 2.
    square = x[..., :5]
    nhwc = square.transpose(0, 2, 3, 1)
    nhwc_ops = {"identity": nhwc, "hflip": np.flip(nhwc, 2), "vflip": np.flip(nhwc, 1),
                "rot90": np.rot90(nhwc, 1, axes=(1, 2)), "rot180": np.rot90(nhwc, 2, axes=(1, 2))}
    np.testing.assert_array_equal(store.to_nhwc(store.augment(square, kind)),
                                  nhwc_ops[kind].astype(np.float32))
    with pytest.raises(ValueError, match="unknown augmentation"):
        store.augment(x, "rot270")


def test_empty_split_is_refused_before_simulating(tmp_path):
    config = load_config("quick", ["data.n_spiral=2", "data.n_elliptical=1", "data.n_merger=1",
                                   "data.workers=1", "data.preview=False"])
    with pytest.raises(ValueError, match="valid"):
        simulate.simulate_dataset(config, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


# --- Bad input: a DataError naming the file and what was expected ---
def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="dataset folder not found"):
        RawDataset(tmp_path / "nowhere")


@pytest.mark.parametrize("name", NPY_FILES)
def test_missing_file(folder, name):
    (folder / name).unlink()
    expect_error(folder, name, "file not found")


@pytest.mark.parametrize("cut", [1, 500, 4000])
def test_truncated_file(folder, cut):
    path = folder / "images_Y10_train.npy"
    payload = path.read_bytes()
    path.write_bytes(payload[:-cut])
    message = expect_error(folder, "images_Y10_train.npy", "truncated")
    if cut < len(payload) - 128:  # header intact: the message says how many bytes it expected
        assert f"{len(payload)} bytes, the file has {len(payload) - cut}" in message


@pytest.mark.parametrize("cut_to", [0, 20])
def test_truncated_header(folder, cut_to):
    path = folder / "labels_valid.npy"
    path.write_bytes(path.read_bytes()[:cut_to])
    expect_error(folder, "labels_valid.npy", "truncated", f"{cut_to} bytes")


@pytest.mark.parametrize("shape", [(5, 8, 8, 3), (5, 2, 8, 8), (5, 3, 8, 6), (5, 3, 64)])
def test_wrong_image_shape(folder, shape):
    np.save(folder / "images_Y1_train.npy", np.zeros(shape, dtype=np.float32))
    expect_error(folder, "images_Y1_train.npy", "(N, 3, H, W)", str(shape))


def test_integer_images_refused(folder):
    np.save(folder / "images_Y1_test.npy", np.zeros((3, 3, 8, 8), dtype=np.int32))
    expect_error(folder, "images_Y1_test.npy", "float", "int32")


def test_image_size_differs_between_files(folder):
    np.save(folder / "images_Y10_test.npy", np.zeros((3, 3, 10, 10), dtype=np.float32))
    expect_error(folder, "images_Y10_test.npy", "(3, 10, 10)", "(3, 8, 8)")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels(folder, bad):
    path = folder / "images_Y10_valid.npy"
    images = np.load(path)
    images[1, 2, 3, 4] = bad
    np.save(path, images)
    expect_error(folder, "images_Y10_valid.npy", "image 1 ", "non-finite")
    RawDataset(folder, check_finite=False)  # the check can be skipped on trusted data


@pytest.mark.parametrize("row", [[1, 1, 0], [0.5, 0.5, 0], [0, 0, 0], [2, -1, 0]])
def test_labels_not_one_hot(folder, row):
    labels = np.eye(3)[[0, 1]]
    labels[1] = row
    np.save(folder / "labels_valid.npy", labels)
    expect_error(folder, "labels_valid.npy", "label row 1", "not one-hot")


def test_labels_wrong_shape(folder):
    np.save(folder / "labels_test.npy", np.array([0, 1, 2]))
    expect_error(folder, "labels_test.npy", "(N, 3)", "(3,)")


def test_y1_y10_count_mismatch(folder):
    np.save(folder / "images_Y1_train.npy", np.zeros((4, 3, 8, 8), dtype=np.float32))
    expect_error(folder, "images_Y1_train.npy", "images_Y10_train.npy", "4 Y1", "has 5")


def test_label_count_mismatch(folder):
    np.save(folder / "labels_test.npy", np.eye(3, dtype=np.int64)[[0, 1, 2, 0]])
    expect_error(folder, "labels_test.npy", "4 labels for 3 images")


def test_subsample_mismatch(folder):
    y = np.zeros((4, 3, 8, 8), dtype=np.float32)
    for name, array in zip(store.SUBSAMPLE_FILES, (y, y[:3], np.eye(3, dtype=np.int64)[[0, 1, 2, 0]])):
        np.save(folder / name, array)
    expect_error(folder, "noisy_images_150.npy", "regular_images_150.npy")


def test_corrupt_dataset_json(folder):
    (folder / "dataset.json").write_text('{"kind": "simulated", "counts": ')
    expect_error(folder, "dataset.json", "not valid JSON")


def test_float64_images_and_float_labels_accepted(tmp_path):
    written = write_folder(tmp_path)
    for split, (y10, y1, labels) in written.items():
        np.save(tmp_path / f"images_Y10_{split}.npy", y10.astype(np.float64))
        np.save(tmp_path / f"labels_{split}.npy", np.eye(3, dtype=np.float32)[labels])
    raw = RawDataset(tmp_path)
    for split, (y10, _, labels) in written.items():
        assert raw.images["Y10", split].dtype == np.float64
        np.testing.assert_array_equal(raw.images["Y10", split], y10)
        np.testing.assert_array_equal(raw.labels[split], labels)
    assert store.to_nhwc(raw.images["Y10", "train"]).dtype == np.float32


def test_write_split_refuses_mismatched_arrays(tmp_path):
    y = np.zeros((3, 3, 8, 8), dtype=np.float32)
    with pytest.raises(DataError, match="differ in shape"):
        store.write_split(tmp_path, "train", y, y[:2], np.zeros(3, dtype=int))
    with pytest.raises(DataError, match="2 labels for 3 images"):
        store.write_split(tmp_path, "train", y, y, np.zeros(2, dtype=int))
    assert not list(tmp_path.iterdir())


def test_corrupted_file_fails_checksum(tmp_path):
    folder, _ = _tiny_dataset.tiny_dataset()
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert store.is_complete(copy, verify_checksums=True)
    path = copy / "labels_valid.npy"
    payload = bytearray(path.read_bytes())
    payload[-1] ^= 1
    path.write_bytes(bytes(payload))
    assert store.is_complete(copy) and not store.is_complete(copy, verify_checksums=True)
    (copy / "dataset.json").unlink()
    assert not store.is_complete(copy)


def test_dataset_is_current_only_for_the_same_data_settings_and_intact_files(tmp_path):
    """dataset_is_current: same `data` section and `seed` as dataset.json records, checksums intact;
    ensure_simulated then reuses the folder (no simulation: it returns None)."""
    folder, _ = _tiny_dataset.tiny_dataset()
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    config = _tiny_dataset.tiny_config()
    assert store.dataset_is_current(copy, config)
    assert store.dataset_is_current(copy, load_config("quick", list(_tiny_dataset.TINY_OVERRIDES) + ["train.epochs=1"]))
    assert not store.dataset_is_current(copy, load_config("quick", list(_tiny_dataset.TINY_OVERRIDES) + ["seed=4"]))
    assert not store.dataset_is_current(copy, load_config("quick", list(_tiny_dataset.TINY_OVERRIDES) + ["data.n_merger=4"]))
    messages = []
    assert ensure_simulated(config, copy, log=messages.append) is None
    assert messages == [f"[data] {copy} is complete and current: skipped"]
    path = copy / "images_Y1_test.npy"
    payload = bytearray(path.read_bytes())
    payload[-1] ^= 1
    path.write_bytes(bytes(payload))
    assert not store.dataset_is_current(copy, config)
    assert not store.dataset_is_current(tmp_path / "absent", config)


def test_drawn_subsample_is_the_seeded_draw_of_test_rows():
    labels = np.arange(20) % 3
    images = {d: np.arange(20 * 2).reshape(20, 2) + (100 if d == "Y1" else 0) for d in store.DEPTHS}
    sub, drawn = store.drawn_subsample(images, labels, 6, seed=5)
    index = np.sort(np.random.default_rng([5, 150]).choice(20, size=6, replace=False))
    np.testing.assert_array_equal(sub["test_index"], index)
    np.testing.assert_array_equal(sub["labels"], labels[index])
    assert sub["derived"] is True
    for d in store.DEPTHS:
        np.testing.assert_array_equal(drawn[d], images[d][index])
    assert store.drawn_subsample(images, labels, 0, seed=5) is None
    assert len(store.drawn_subsample(images, labels, 50, seed=5)[0]["test_index"]) == 20  # at most the test split
