"""The paper's Zenodo files (doi 10.5281/zenodo.5514180) through the whole pipeline, by the CLI.

A Zenodo folder here is the tiny simulated dataset rewritten under the published names only:
NCHW images (float32, or float64), int64 one-hot labels, the attack subsample, and no
dataset.json or metadata. Expected values are computed here from the .npy files with NumPy
(np.percentile, np.arcsinh, brute-force row comparison), not taken from jaxrobust.
"""
from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from jaxrobust.cli import main
from jaxrobust.config import load_config
from jaxrobust.data import DataError, detect_kind, load_prepared, store

import _tiny_dataset

SPLIT_FILES = [f"images_{d}_{s}.npy" for s in ("train", "valid", "test") for d in ("Y10", "Y1")] + \
    [f"labels_{s}.npy" for s in ("train", "valid", "test")]
SUBSAMPLE = ("regular_images_150.npy", "noisy_images_150.npy", "labels_150.npy")
SUBSAMPLE_THESIS = ("images_Y10_test_150.npy", "images_Y1_test_150.npy", "labels_test_150.npy")
TINY_RUN = ["train.epochs=1", "train.batch_size=8", "attack.n_images=3", "attack.population=20",
            "attack.max_generations=2", "attack.block_generations=2"]
# What reproduce runs besides the stages these tests are about (the layout feeding training,
# evaluation, the attack and the analysis): test_pipeline's study scans and animates.
NO_EXTRAS = ["scan.enabled=False", "certify.enabled=False", "analysis.animation=False", "analysis.isomap_points=12"]


def subsample_order(test_labels: np.ndarray) -> np.ndarray:
    """The whole test split, reordered so its first three images are one of each class.

    A whole-split subsample has the test split's percentiles, so attack and evaluate see the
    same normalised images; one image per class makes a constant classifier attack one.
    """
    first = [int(np.flatnonzero(test_labels == c)[0]) for c in range(3)]
    return np.array(first + [i for i in range(len(test_labels)) if i not in first])


def write_zenodo(out: Path, dtype=np.float32, names=SUBSAMPLE, subsample=True) -> np.ndarray | None:
    """The tiny dataset under the Zenodo names only; returns the subsample's test rows."""
    source, _ = _tiny_dataset.tiny_dataset()
    out.mkdir(parents=True, exist_ok=True)
    for name in SPLIT_FILES:
        array = np.load(source / name)
        np.save(out / name, array.astype(dtype) if name.startswith("images") else array.astype(np.int64))
    if not subsample:
        return None
    order = subsample_order(np.load(source / "labels_test.npy").argmax(1))
    for name, test_name in zip(names, ("images_Y10_test.npy", "images_Y1_test.npy", "labels_test.npy")):
        np.save(out / name, np.load(out / test_name)[order])
    return order


@pytest.fixture(scope="module")
def zenodo32(tmp_path_factory):
    root = tmp_path_factory.mktemp("zenodo32")
    return root, write_zenodo(root)


# --- The whole pipeline through the CLI ---
def check_run(run: Path, order: np.ndarray, test_labels: np.ndarray) -> None:
    """Evaluation and attack outputs of one run agree with each other and with the files."""
    predictions = np.load(run / "predictions.npz")
    np.testing.assert_array_equal(predictions["labels"], test_labels)
    attack = np.load(run / "attack.npz")
    np.testing.assert_array_equal(attack["test_index"], order[:3])  # found by content
    np.testing.assert_array_equal(attack["labels"], test_labels[order[:3]])
    correct = predictions["predicted_y10"][order[:3]] == test_labels[order[:3]]
    np.testing.assert_array_equal(attack["attacked"], correct)
    assert not (attack["success"] & ~attack["attacked"]).any()
    info = json.loads((run / "attack.json").read_text())
    assert info["images"] == 3 and info["attacked"] == int(correct.sum())


def test_reproduce_on_a_zenodo_folder(zenodo32, tmp_path):
    root, order = zenodo32
    assert not (root / "dataset.json").exists() and not list(root.glob("metadata*"))
    assert main(["reproduce", "--data", str(root), "--workdir", str(tmp_path), *TINY_RUN, *NO_EXTRAS]) == 0
    test_labels = np.load(root / "labels_test.npy").argmax(1)
    for name in ("regular", "da"):
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert config["data"]["source"] == str(root.resolve())
        assert config["train"]["da_loss"] == {"regular": "none", "da": "mmd"}[name]
        check_run(tmp_path / name, order, test_labels)
    analysis = json.loads((tmp_path / "analysis.json").read_text())
    assert len(analysis["runs"]) == 2
    assert (tmp_path / "report.md").stat().st_size > 0
    assert not (tmp_path / "data").exists()  # the given folder was used, nothing simulated


def test_train_evaluate_attack_analyze_on_float64_files_with_thesis_names(tmp_path):
    data = tmp_path / "zenodo64"
    order = write_zenodo(data, np.float64, SUBSAMPLE_THESIS)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--workdir", str(run), *TINY_RUN[:2], *NO_EXTRAS[1:]]) == 0
    assert main(["evaluate", "--workdir", str(run)]) == 0
    assert main(["attack", "--workdir", str(run), *TINY_RUN[2:]]) == 0
    assert main(["analyze", "--workdir", str(run)]) == 0
    check_run(run, order, np.load(data / "labels_test.npy").argmax(1))
    assert json.loads((run / "analysis.json").read_text())["runs"]
    assert (run / "report.md").exists()


# --- What load_prepared makes of the files ---
def update_sinh(raw_nchw: np.ndarray) -> np.ndarray:
    """The paper's preprocessing, written out: percentiles over the float32 array, NHWC out."""
    x = raw_nchw.astype(np.float32).astype(np.float64)
    lo, hi = np.percentile(x, [0.1, 99.9])
    return ((np.arcsinh(0.85 / hi * np.clip(x, lo, hi)) + 1) / 2).transpose(0, 2, 3, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_load_prepared_normalises_the_files(tmp_path, dtype):
    order = write_zenodo(tmp_path, dtype)
    prepared = load_prepared(tmp_path, load_config("quick", ["preprocess.stats_from=self"]))  # the code's stretch
    assert prepared.kind == "zenodo"
    for split in ("train", "valid", "test"):
        for depth in ("Y10", "Y1"):
            expected = update_sinh(np.load(tmp_path / f"images_{depth}_{split}.npy"))
            got = prepared.images[depth, split]
            assert got.dtype == np.float32
            np.testing.assert_allclose(got, expected, atol=2e-7)
        np.testing.assert_array_equal(prepared.labels[split], np.load(tmp_path / f"labels_{split}.npy").argmax(1))
    sub = prepared.subsample
    np.testing.assert_allclose(sub["Y1"], update_sinh(np.load(tmp_path / SUBSAMPLE[1])), atol=2e-7)
    np.testing.assert_array_equal(sub["test_index"], order)
    assert not sub["derived"]


def test_subsample_drawn_from_test_split_when_absent(tmp_path):
    write_zenodo(tmp_path, subsample=False)
    config = load_config("quick", ["data.n_attack_subsample=3", "seed=5", "preprocess.stats_from=self"])
    sub = load_prepared(tmp_path, config).subsample
    index = sub["test_index"]
    test_labels = np.load(tmp_path / "labels_test.npy").argmax(1)
    assert sub["derived"] and len(index) == 3 and len(set(index.tolist())) == 3
    assert np.all(np.diff(index) > 0) and index.max() < len(test_labels)
    np.testing.assert_array_equal(sub["labels"], test_labels[index])
    raw = np.load(tmp_path / "images_Y10_test.npy")[index]
    np.testing.assert_allclose(sub["Y10"], update_sinh(raw), atol=2e-7)
    again = load_prepared(tmp_path, config).subsample["test_index"]
    np.testing.assert_array_equal(again, index)  # seeded: the attack sees the same images each run


# --- Detection by content ---
def fake_tfds(root: Path, *parts: str) -> Path:
    folder = root.joinpath(*parts)
    folder.mkdir(parents=True)
    for name in ("dataset_info.json", "features.json"):
        (folder / name).write_text("{}")
    return folder


def test_detection_by_content(zenodo32, tmp_path):
    simulated, _ = _tiny_dataset.tiny_dataset()
    assert detect_kind(simulated) == "simulated"
    assert detect_kind(zenodo32[0]) == "zenodo"
    version = fake_tfds(tmp_path / "tfds", "deep_adversaries", "zenodo", "1.0.0")
    fake_tfds(tmp_path / "tfds", "deep_adversaries", "incomplete.AB12_1.0.0")  # unfinished: ignored
    for level in (tmp_path / "tfds", version.parent, version):
        assert detect_kind(level) == "tfds" and store.find_tfds_dir(level) == version
    fake_tfds(tmp_path / "tfds", "deep_adversaries", "simulated", "1.0.0")
    with pytest.raises(DataError, match="2 TFDS datasets"):
        detect_kind(tmp_path / "tfds")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no dataset found.*images_Y10_train.npy.*dataset.json.*features.json"):
        detect_kind(tmp_path / "empty")
    with pytest.raises(DataError, match="not found"):
        detect_kind(tmp_path / "missing")


# --- Validation: every error names the file and the field ---
CORRUPTIONS = {
    "integer images": ("images_Y1_valid.npy", lambda a: a.astype(np.int32), ("images_Y1_valid.npy", "dtype int32")),
    "NHWC images": ("images_Y10_test.npy", lambda a: a.transpose(0, 2, 3, 1), ("images_Y10_test.npy", "shape")),
    # value 40,000 of (N, 3, 100, 100) lies in image 1 (30,000 values per image)
    "NaN pixel": ("images_Y1_train.npy", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 40_000, np.nan, a),
                  ("images_Y1_train.npy", "image 1", "non-finite")),
    "two-hot label": ("labels_test.npy", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 3, 1, a),
                      ("labels_test.npy", "label row 1", "one-hot")),
    "string labels": ("labels_train.npy", lambda a: a.astype(str), ("labels_train.npy", "dtype", "<U")),
    "Y1 shorter than Y10": ("images_Y1_test.npy", lambda a: a[:-1], ("images_Y1_test.npy", "images_Y10_test.npy")),
    "subsample of another size": ("noisy_images_150.npy", lambda a: a[:, :, :50, :50],
                                  ("noisy_images_150.npy", "image shape")),
    "subsample labels short": ("labels_150.npy", lambda a: a[:-1], ("labels_150.npy", "labels for")),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_validation_errors_name_file_and_field(zenodo32, tmp_path, case):
    root = tmp_path / "data"
    root.mkdir()
    for p in zenodo32[0].iterdir():
        (root / p.name).symlink_to(p)
    name, change, fragments = CORRUPTIONS[case]
    (root / name).unlink()
    np.save(root / name, change(np.load(zenodo32[0] / name)))
    with pytest.raises(DataError) as info:
        load_prepared(root, load_config("quick"))
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_incomplete_subsample_is_refused_through_the_cli(zenodo32, tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    for p in zenodo32[0].iterdir():
        if p.name != "noisy_images_150.npy":
            (root / p.name).symlink_to(p)
    assert main(["train", "--data", str(root), "--workdir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "noisy_images_150.npy: file not found" in err and "regular_images_150.npy" in err
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before training started


# --- Memory: memory-mapped files become NHWC float32 chunk by chunk ---
def test_preparing_a_100mb_memmap_holds_one_copy(tmp_path):
    """load_prepared on ~100 MB of float32 stamps peaks well below two copies (tracemalloc
    sees NumPy's heap, not the memory map's pages)."""
    rng = np.random.default_rng(0)
    n_train, hw = 420, 100  # 2 x 420 x 3 x 100 x 100 x 4 B = 100.8 MB of training images
    for split, n in (("train", n_train), ("valid", 4), ("test", 4)):
        maps = {d: np.lib.format.open_memmap(tmp_path / f"images_{d}_{split}.npy", "w+", np.float32, (n, 3, hw, hw))
                for d in ("Y10", "Y1")}
        for start in range(0, n, 64):
            stamps = rng.standard_normal((len(maps["Y10"][start:start + 64]), 3, hw, hw), np.float32) + 3.0
            maps["Y10"][start:start + 64] = stamps
            # Y1: the same stamps with more noise (store checks the two hold the same galaxies)
            maps["Y1"][start:start + 64] = stamps + rng.standard_normal(stamps.shape, np.float32)
        for mm in maps.values():
            mm.flush()
        del maps, mm
        np.save(tmp_path / f"labels_{split}.npy", np.eye(3, dtype=np.int64)[np.arange(n) % 3])
    tracemalloc.start()
    try:
        prepared = load_prepared(tmp_path, load_config("quick", ["data.n_attack_subsample=2"]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    one_copy = sum(a.nbytes for a in prepared.images.values())
    assert one_copy > 100e6
    assert peak < 1.5 * one_copy, (peak, one_copy)
    raw = np.load(tmp_path / "images_Y1_train.npy", mmap_mode="r")
    np.testing.assert_allclose(prepared.images["Y1", "train"][[0, 399]], update_sinh(raw)[[0, 399]], atol=2e-7)
