"""jaxrobust.data.tfds: build `deep_adversaries` as array_record and read it back, without TF.

Read-back goes through `tfds.data_source` and is compared with the source .npy files (NCHW on
disk, NHWC in the records) by plain NumPy. Training's view (PreparedData) of the TFDS dataset
must equal its view of the .npy folder it came from, array for array.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("tensorflow") is not None:
    pytest.skip("TensorFlow is installed here; these tests show that building and reading need none",
                allow_module_level=True)
tfds = pytest.importorskip("tensorflow_datasets", reason="needs the `tfds` extra (tensorflow-datasets)")
pytest.importorskip("array_record", reason="needs the `tfds` extra (array-record)")

from jaxrobust.config import load_config  # noqa: E402
from jaxrobust.data import DataError, detect_kind, load_prepared  # noqa: E402
from jaxrobust.data import tfds as jr_tfds  # noqa: E402

import _tiny_dataset  # noqa: E402

SPLITS = ("train", "valid", "test")


def write_zenodo(out: Path, subsample: bool = True) -> None:
    """The tiny dataset under the Zenodo names only; subsample = the test split reversed."""
    source, _ = _tiny_dataset.tiny_dataset()
    out.mkdir(parents=True)
    for split in SPLITS:
        for name in (f"images_Y10_{split}.npy", f"images_Y1_{split}.npy", f"labels_{split}.npy"):
            shutil.copy(source / name, out / name)
    if subsample:
        for name, test in (("regular_images_150.npy", "images_Y10_test.npy"),
                           ("noisy_images_150.npy", "images_Y1_test.npy"), ("labels_150.npy", "labels_test.npy")):
            np.save(out / name, np.load(out / test)[::-1])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """{name: (npy folder, TFDS data_dir)} for the zenodo and the simulated config."""
    root = tmp_path_factory.mktemp("tfds")
    write_zenodo(root / "zenodo_files")
    simulated, _ = _tiny_dataset.tiny_dataset()
    jr_tfds.build(root / "data", "zenodo", manual_dir=root / "zenodo_files")
    jr_tfds.build(root / "data", "simulated", manual_dir=simulated)
    return {"zenodo": (root / "zenodo_files", root / "data"), "simulated": (simulated, root / "data")}


def read_all(source) -> dict[str, np.ndarray]:
    """Every example of a data source, stacked per feature, in the source's order."""
    rows = [source[i] for i in range(len(source))]
    return {key: np.stack([np.asarray(r[key]) for r in rows]) for key in rows[0]}


def nhwc(path: Path) -> np.ndarray:
    return np.load(path).transpose(0, 2, 3, 1)


def test_tensorflow_is_not_installed():
    with pytest.raises(ImportError):
        import tensorflow  # noqa: F401


def test_zenodo_config_reads_back_the_files(built):
    files, data_dir = built["zenodo"]
    sources = tfds.data_source("deep_adversaries/zenodo", data_dir=str(data_dir), download=False)
    assert set(sources) == {"train", "valid", "test", "subsample"}
    for split in SPLITS:
        got = read_all(sources[split])
        assert got["image_y10"].dtype == np.float32
        np.testing.assert_array_equal(got["image_y10"], nhwc(files / f"images_Y10_{split}.npy"))
        np.testing.assert_array_equal(got["image_y1"], nhwc(files / f"images_Y1_{split}.npy"))
        np.testing.assert_array_equal(got["label"], np.load(files / f"labels_{split}.npy").argmax(1))
        np.testing.assert_array_equal(got["index"], np.arange(len(got["label"])))
        assert np.isnan(got["gini"]).all() and (got["galaxy_id"] == -1).all()  # Zenodo has no metadata
    sub = read_all(sources["subsample"])
    np.testing.assert_array_equal(sub["image_y1"], nhwc(files / "noisy_images_150.npy"))
    n_test = len(np.load(files / "labels_test.npy"))
    np.testing.assert_array_equal(sub["test_index"], np.arange(n_test)[::-1])  # found by content
    assert "tensorflow" not in sys.modules


def test_simulated_config_keeps_the_metadata(built):
    files, data_dir = built["simulated"]
    sources = tfds.data_source("deep_adversaries/simulated", data_dir=str(data_dir), download=False)
    for split in SPLITS:
        got = read_all(sources[split])
        np.testing.assert_array_equal(got["image_y10"], nhwc(files / f"images_Y10_{split}.npy"))
        np.testing.assert_array_equal(got["image_y1"], nhwc(files / f"images_Y1_{split}.npy"))
        with np.load(files / f"metadata_{split}.npz") as meta:
            np.testing.assert_array_equal(got["gini"], meta["gini"].astype(np.float32))
            np.testing.assert_array_equal(got["m20"], meta["m20"].astype(np.float32))
            for key in ("intended_class", "galaxy_id", "augmentation"):
                np.testing.assert_array_equal(got[key], meta[key])
    with np.load(files / "metadata_150.npz") as meta:
        np.testing.assert_array_equal(read_all(sources["subsample"])["test_index"], meta["test_index"])
    assert "tensorflow" not in sys.modules


def test_simulated_config_runs_the_simulator(tmp_path):
    """Without a manual dir the builder simulates; same config and seed -> the tiny dataset."""
    version = jr_tfds.build(tmp_path, "simulated", overrides=_tiny_dataset.TINY_OVERRIDES)
    files, _ = _tiny_dataset.tiny_dataset()
    sources = tfds.data_source(f"deep_adversaries/{version.parent.name}", data_dir=str(tmp_path), download=False)
    for split in SPLITS:
        got = read_all(sources[split])
        np.testing.assert_array_equal(got["image_y10"], nhwc(files / f"images_Y10_{split}.npy"))
        np.testing.assert_array_equal(got["label"], np.load(files / f"labels_{split}.npy").argmax(1))
    assert len(list((tmp_path / "downloads").glob("simulated_*/dataset.json"))) == 1


def assert_same_prepared(a, b) -> None:
    assert a.images.keys() == b.images.keys() and a.bounds == b.bounds
    for key in a.images:
        np.testing.assert_array_equal(a.images[key], b.images[key])
    for split in SPLITS:
        np.testing.assert_array_equal(a.labels[split], b.labels[split])
    assert a.subsample.keys() == b.subsample.keys()
    for key, value in a.subsample.items():
        np.testing.assert_array_equal(value, b.subsample[key])


@pytest.mark.parametrize("name", ["zenodo", "simulated"])
@pytest.mark.parametrize("stats_from", ["self", "train"])
def test_training_sees_the_same_data(built, name, stats_from):
    files, data_dir = built[name]
    config = load_config("quick", [f"preprocess.stats_from='{stats_from}'"])
    folder = data_dir / "deep_adversaries" / name  # data_dir itself holds both configs
    assert detect_kind(folder) == "tfds"
    from_tfds = load_prepared(folder, config)
    assert from_tfds.kind == "tfds"
    assert_same_prepared(from_tfds, load_prepared(files, config))


def test_subsample_drawn_alike_without_subsample_files(tmp_path):
    write_zenodo(tmp_path / "files", subsample=False)
    jr_tfds.build(tmp_path / "data", "zenodo", manual_dir=tmp_path / "files")
    config = load_config("quick", ["data.n_attack_subsample=3", "seed=2"])
    assert detect_kind(tmp_path / "data") == "tfds"
    from_tfds = load_prepared(tmp_path / "data", config)
    assert from_tfds.subsample["derived"] and len(from_tfds.subsample["labels"]) == 3
    assert_same_prepared(from_tfds, load_prepared(tmp_path / "files", config))


def test_missing_split_is_named(built, tmp_path):
    version = next((built["zenodo"][1] / "deep_adversaries" / "zenodo").glob("*.*.*"))
    copy = tmp_path / "zenodo" / version.name
    shutil.copytree(version, copy)
    info_path = copy / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["splits"] = [s for s in info["splits"] if s["name"] != "valid"]
    info_path.write_text(json.dumps(info))
    with pytest.raises(DataError, match=r"dataset_info.json: split 'valid' missing"):
        load_prepared(copy, load_config("quick"))
