"""TFDS builder `deep_adversaries`: the Zenodo or simulated dataset as array_record files.

Configs:
  zenodo     the paper's files (doi 10.5281/zenodo.5514180) from a manual directory holding
             images_Y{10,1}_{train,valid,test}.npy, labels_*.npy (+ the 150-image subsample).
  simulated  our simulator: an existing `jaxrobust simulate` folder given as manual directory,
             or, without one, `simulate_dataset(configs/quick.py + overrides)` into
             download_dir/simulated_<config>_<hash>/ (reused while current).
Custom simulated configs: `DeepAdversariesConfig(name="simulated_small", source="simulated",
overrides=("data.n_spiral=60", ...))` (a custom config needs a name of its own).

Records (one example per galaxy image, both depths together, generation order kept):
  image_y10, image_y1   (H, W, 3) float32 raw sky-subtracted electrons, NHWC (g, r, i last)
  label                 ClassLabel (spiral, elliptical, merger)
  index                 int64 position in the source split (or in the subsample)
  galaxy_id, intended_class, augmentation   int64, -1 where unknown (Zenodo files have none)
  gini, m20             float32, NaN where unknown
  test_index            int64 row of the test split (subsample split only; else -1)
Splits: train, valid, test, and subsample when the source has the attack subsample files.

Building and reading without TensorFlow: TFDS 4.9 keeps TensorFlow optional. Features are
declared with NumPy dtypes (`tfds.features.Tensor(dtype=np.float32)`, `np.int64` scalars) and
serialised by TFDS's own NumPy example serializer; `file_format="array_record"` writes
ArrayRecord shards (the `array_record` package) instead of TFRecord, and `as_data_source()` /
`tfds.data_source` read them back as random-access Python sequences of NumPy dicts. Images use
`encoding="bytes"` because a Tensor with two unknown dimensions must be stored as raw bytes
(its shape travels with it). Install with the `tfds` extra; TensorFlow is never imported.

    from jaxrobust.data import tfds as jr_tfds
    jr_tfds.build("~/tfds", "zenodo", manual_dir="zenodo_files/")
    jaxrobust train --data ~/tfds/deep_adversaries/zenodo/1.0.0 --workdir runs/reg

`load_prepared` (and so every `--data DIR`) detects a TFDS dataset by its dataset_info.json and
features.json and calls `load_prepared_tfds`, which normalises exactly as `preprocess.prepare`
does for the .npy folder the records came from.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from jaxrobust import config as config_lib
from jaxrobust.data import preprocess, store

NAME = "deep_adversaries"
IMAGE_FEATURES = {"Y10": "image_y10", "Y1": "image_y1"}
SUBSAMPLE = "subsample"
CHUNK = 64  # images converted to NHWC at a time while writing (about 15 MB for both depths)
INT_META = ("galaxy_id", "intended_class", "augmentation")  # -1 where unknown
FLOAT_META = ("gini", "m20")  # NaN where unknown


@dataclasses.dataclass(eq=False)
class DeepAdversariesConfig(tfds.core.BuilderConfig):
    """source: "zenodo" or "simulated"; config_file, overrides: the jaxrobust config to simulate."""

    source: str = "zenodo"
    config_file: str = "quick"
    overrides: tuple[str, ...] = ()


def _features() -> tfds.features.FeaturesDict:
    image = tfds.features.Tensor(shape=(None, None, 3), dtype=np.float32, encoding="bytes")
    return tfds.features.FeaturesDict({
        "image_y10": image, "image_y1": image,
        "label": tfds.features.ClassLabel(names=config_lib.CLASS_NAMES),
        "index": np.int64, "test_index": np.int64,
        **{k: np.int64 for k in INT_META}, **{k: np.float32 for k in FLOAT_META},
    })


class DeepAdversaries(tfds.core.GeneratorBasedBuilder):
    """Y10/Y1 galaxy stamps in electrons with G-M20 labels (Ciprijanovic et al. 2022 layout)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: raw electrons, NHWC, both depths per example."}
    BUILDER_CONFIGS = [
        DeepAdversariesConfig(name="zenodo", source="zenodo",
                              description="The published arrays (Zenodo 10.5281/zenodo.5514180)."),
        DeepAdversariesConfig(name="simulated", source="simulated",
                              description="jaxrobust's GalSim LSST-like simulation (configs/quick.py)."),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    zenodo: download the .npy files of https://doi.org/10.5281/zenodo.5514180
    (images_Y10_train.npy ... labels_test.npy, regular_images_150.npy ...) into manual_dir.
    simulated: optional; a folder written by `jaxrobust simulate` to use instead of simulating.
    """

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        # TFDS 4.9.10 looks a package's builder up through `importlib_resources`, a package it
        # declares for Python < 3.9 only, so the lookup fails on 3.11; its own fallback,
        # the file that defines the class, is what it would return anyway.
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__.split("\n\n")[0], features=_features(),
            supervised_keys=("image_y10", "label"), disable_shuffling=True,  # keep file order
            homepage="https://github.com/AleksCipri/DeepAdversaries",
            citation="Ciprijanovic et al. 2022, DeepAdversaries, arXiv:2112.14299")

    def _split_generators(self, dl_manager):
        raw = store.RawDataset(self._source_dir(dl_manager))
        parts = list(store.SPLITS) + ([SUBSAMPLE] if raw.subsample is not None else [])
        return {part: self._generate_examples(raw, part) for part in parts}

    def _source_dir(self, dl_manager) -> Path:
        manual = _manual_dir(dl_manager)
        if self.builder_config.source == "zenodo":
            if manual is None:
                raise store.DataError(f"{NAME}/zenodo needs the Zenodo .npy files in a manual directory "
                                      "(download_config=tfds.download.DownloadConfig(manual_dir=...))")
            return manual
        if self.builder_config.source != "simulated":
            raise ValueError(f"unknown source {self.builder_config.source!r}; expected zenodo or simulated")
        if manual is not None:
            if store.detect_kind(manual) != "simulated":
                raise store.DataError(f"{manual}/dataset.json: not found; the simulated config reads a "
                                      "complete `jaxrobust simulate` folder")
            return manual
        return _simulate(self.builder_config, Path(dl_manager.download_dir))

    def _generate_examples(self, raw: store.RawDataset, part: str):
        y10, y1, labels, meta = _source_arrays(raw, part)
        for start in range(0, len(labels), CHUNK):
            block = {d: store.to_nhwc(a[start:start + CHUNK]) for d, a in (("Y10", y10), ("Y1", y1))}
            for j in range(len(block["Y10"])):
                i = start + j
                example = {"image_y10": block["Y10"][j], "image_y1": block["Y1"][j],
                           "label": int(labels[i]), "index": i}
                example.update({k: v[i] for k, v in meta.items()})
                yield i, example


def _manual_dir(dl_manager) -> Path | None:
    try:
        return Path(dl_manager.manual_dir)
    except AssertionError:  # TFDS's way of saying: none given, or it is empty
        return None


def _simulate(builder_config: DeepAdversariesConfig, download_dir: Path) -> Path:
    """The simulated folder of this config under download_dir, simulated unless current."""
    config = config_lib.load_config(builder_config.config_file, list(builder_config.overrides))
    digest = hashlib.sha256(config_lib.to_json(config).encode()).hexdigest()[:12]
    out = download_dir / f"simulated_{builder_config.name}_{digest}"
    if not store.dataset_is_current(out, config):  # as data.ensure_simulated, which imports this module
        from jaxrobust.data import simulate  # GalSim: slow to import, needed only to simulate

        simulate.simulate_dataset(config, out)
    return out


def _source_arrays(raw: store.RawDataset, part: str):
    """(Y10 NCHW, Y1 NCHW, labels (N,), {metadata feature: (N,) values}) of one split."""
    if part != SUBSAMPLE:
        return (raw.images["Y10", part], raw.images["Y1", part], raw.labels[part],
                _metadata(store.read_metadata(raw.root, part), len(raw.labels[part]),
                          raw.root / f"metadata_{part}.npz"))
    sub, n = raw.subsample, len(raw.subsample["labels"])
    index = sub.get("test_index")
    test_meta = store.read_metadata(raw.root, "test") if index is not None else {}
    meta = _metadata({k: np.asarray(v)[index] for k, v in test_meta.items()}, n, raw.root / "metadata_test.npz")
    meta["test_index"] = np.full(n, -1, np.int64) if index is None else np.asarray(index, np.int64)
    return sub["Y10"], sub["Y1"], sub["labels"], meta


def _metadata(found: dict, n: int, path: Path) -> dict[str, np.ndarray]:
    """The metadata features of n examples: values where the source has them, else -1 / NaN."""
    meta = {k: np.asarray(found.get(k, np.full(n, -1)), np.int64) for k in INT_META}
    meta.update({k: np.asarray(found.get(k, np.full(n, np.nan)), np.float32) for k in FLOAT_META})
    meta["test_index"] = np.full(n, -1, np.int64)
    for key, values in meta.items():
        if values.shape != (n,):
            raise store.DataError(f"{path}: field {key!r} has shape {values.shape}, expected ({n},)")
    return meta


# --- Building ---
def build(data_dir, source: str = "zenodo", manual_dir=None, config_file: str = "quick",
          overrides=()) -> Path:
    """Prepares `deep_adversaries` under data_dir as array_record; returns its version folder.

    source: "zenodo" (manual_dir required) or "simulated" (manual_dir: an existing simulated
    folder; without it the simulator runs with config_file + overrides).
    """
    config = source
    if overrides or config_file != "quick":
        digest = hashlib.sha256(json.dumps([config_file, list(overrides)]).encode()).hexdigest()[:8]
        config = DeepAdversariesConfig(name=f"{source}_{digest}", source=source,
                                       config_file=config_file, overrides=tuple(overrides))
    builder = DeepAdversaries(data_dir=str(data_dir), config=config, file_format="array_record")
    download_config = tfds.download.DownloadConfig(manual_dir=str(manual_dir) if manual_dir else None)
    builder.download_and_prepare(download_config=download_config)
    return Path(builder.data_dir)


# --- Reading ---
def data_sources(path) -> tuple[Path, dict]:
    """(version folder, {split: random-access source of NumPy dicts}) of a prepared dataset.

    `path` may be the version folder or a data_dir above it (store.find_tfds_dir).
    """
    root = store.find_tfds_dir(Path(path))
    if root is None:
        raise store.DataError(f"{path}: no TFDS dataset ({' + '.join(store.TFDS_MARKERS)}) here")
    for name in store.TFDS_MARKERS:  # TFDS's own parser says "Failed to load JSON" without the file
        info_path = root / name
        try:
            json.loads(info_path.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise store.DataError(f"{info_path}: not valid JSON ({'empty file' if not info_path.read_bytes().strip() else err}); "
                                  f"{REBUILD}") from err
    try:
        builder = tfds.builder_from_directory(str(root))
    except Exception as err:  # TFDS's reader: protobuf, key and value errors of a damaged record
        raise store.DataError(f"{root / 'dataset_info.json'}: TFDS cannot read this dataset ({_short(err)}); "
                              f"{REBUILD}") from err
    _check_info(root, builder.info)
    try:
        return root, builder.as_data_source()
    except RuntimeError as err:
        raise store.DataError(_damaged_shard(root, err)) from err


REBUILD = "build the TFDS dataset again (jaxrobust.data.tfds.build) or copy it again"


def _short(err: BaseException) -> str:
    return " ".join(str(err).split())[:160] or type(err).__name__


def _damaged_shard(root: Path, err: BaseException) -> str:
    """A sentence naming the array_record shard that cannot be read (each is opened in turn)."""
    from array_record.python.array_record_module import ArrayRecordReader

    for shard in sorted(p for p in Path(root).iterdir() if ".array_record" in p.name):
        try:
            reader = ArrayRecordReader(str(shard))
            reader.close()
        except Exception as shard_err:  # noqa: BLE001 - the reader raises plain RuntimeErrors
            return f"{shard}: truncated or corrupt array_record shard ({_short(shard_err)}); {REBUILD}"
    return f"{root}: a shard cannot be read ({_short(err)}); {REBUILD}"


def _check_info(root: Path, info) -> None:
    """The features and splits training needs, or a DataError naming file and field."""
    features = info.features
    for name in IMAGE_FEATURES.values():
        if name not in features:
            raise store.DataError(f"{root / 'features.json'}: feature {name!r} missing (has {sorted(features)})")
        spec = features[name]
        if not np.issubdtype(np.dtype(spec.np_dtype), np.floating) or len(spec.shape) != 3 or spec.shape[-1] != 3:
            raise store.DataError(f"{root / 'features.json'}: feature {name!r} must be float (H, W, 3) "
                                  f"NHWC, got {spec.np_dtype} {spec.shape}")
    if "label" not in features:
        raise store.DataError(f"{root / 'features.json'}: feature 'label' missing (has {sorted(features)})")
    for split in store.SPLITS:
        if split not in info.splits:
            raise store.DataError(f"{root / 'dataset_info.json'}: split {split!r} missing "
                                  f"(has {sorted(info.splits)})")


def read_split(source, where: str, check_finite: bool = True, chunk: int = 256):
    """Raw arrays of one split: ({"Y10", "Y1": (N, H, W, 3) float32}, labels (N,) int32, meta).

    Fills preallocated arrays `chunk` examples at a time (one copy of the split in memory) and
    restores the source order from the `index` feature. meta: {feature: (N,)} of the rest.
    """
    n = len(source)
    if n == 0:
        raise store.DataError(f"{where}: the split is empty")
    first = source[0]
    images = {d: np.empty((n,) + first[f].shape, np.float32) for d, f in IMAGE_FEATURES.items()}
    scalars = []
    for start in range(0, n, chunk):
        rows = source.__getitems__(list(range(start, min(start + chunk, n))))
        scalars.append(_stack_rows(rows, where, start, images, check_finite))
    meta = {k: np.concatenate([s[k] for s in scalars]) for k in scalars[0]}
    labels = meta.pop("label").astype(np.int32)
    order = meta.get("index")
    if order is not None and not np.array_equal(order, np.arange(n)):
        if not np.array_equal(np.sort(order), np.arange(n)):
            raise store.DataError(f"{where}: feature 'index' is not a permutation of 0..{n - 1}")
        inverse = np.argsort(order)
        images = {d: a[inverse] for d, a in images.items()}
        labels, meta = labels[inverse], {k: v[inverse] for k, v in meta.items()}
    if labels.min() < 0 or labels.max() >= store.NUM_CLASSES:
        raise store.DataError(f"{where}: feature 'label' outside 0..{store.NUM_CLASSES - 1}")
    return images, labels, meta


def _stack_rows(rows, where, start, images, check_finite) -> dict[str, np.ndarray]:
    """Writes the rows' images into `images` at `start`; returns their scalar features stacked."""
    for d, feature in IMAGE_FEATURES.items():
        block = np.stack([r[feature] for r in rows])
        if block.shape[1:] != images[d].shape[1:]:
            raise store.DataError(f"{where}: feature {feature!r} has shape {block.shape[1:]} in some "
                                  f"examples, {images[d].shape[1:]} in others")
        if check_finite and not np.isfinite(block).all():
            bad = start + int(np.flatnonzero(~np.isfinite(block).reshape(len(block), -1).all(1))[0])
            raise store.DataError(f"{where}: example {bad} feature {feature!r} has non-finite pixels")
        images[d][start:start + len(rows)] = block
    scalars = [k for k in rows[0] if k not in IMAGE_FEATURES.values()]
    return {k: np.asarray([r[k] for r in rows]) for k in scalars}


def load_prepared_tfds(path, percentiles=(0.1, 99.9), stretch: float = 0.85, stats_from: str = "self",
                       subsample_size: int | None = None, seed: int = 0,
                       check_finite: bool = True) -> preprocess.PreparedData:
    """A prepared TFDS dataset as `PreparedData`, normalised exactly as `preprocess.prepare`."""
    root, sources = data_sources(path)
    try:
        return prepared_from_sources(sources, percentiles, stretch, stats_from, subsample_size, seed,
                                     check_finite, source=root)
    except RuntimeError as err:  # array_record's reader on a damaged shard
        raise store.DataError(_damaged_shard(root, err)) from err


def prepared_from_sources(sources: dict, percentiles=(0.1, 99.9), stretch: float = 0.85,
                          stats_from: str = "self", subsample_size: int | None = None, seed: int = 0,
                          check_finite: bool = True, source=None) -> preprocess.PreparedData:
    """{split: TFDS data source} -> PreparedData (NHWC float32, arcsinh-normalised).

    Every split is read once into the buffer that prepare_arrays then normalises in place (one
    copy of the dataset in memory). Without a subsample split the subsample is drawn from the
    test split as for .npy folders (store.drawn_subsample).
    """
    raw, labels = {}, {}
    for split in store.SPLITS:
        raw[split], labels[split], _ = read_split(sources[split], f"{source}: split {split!r}", check_finite)
    sub = _subsample_arrays(sources, raw, labels, subsample_size, seed, source, check_finite)

    def load(depth, part):
        return (sub[1] if part == SUBSAMPLE else raw[part]).pop(depth)

    return preprocess.prepare_arrays(load, labels, sub[0] if sub else None, percentiles, stretch,
                                     stats_from, source, "tfds")


def _subsample_arrays(sources, raw, labels, size, seed, where, check_finite):
    """(description, {depth: raw NHWC images}) of the subsample, or None (as preprocess.prepare)."""
    if SUBSAMPLE in sources:
        images, sub_labels, meta = read_split(sources[SUBSAMPLE], f"{where}: split 'subsample'", check_finite)
        index = meta.get("test_index")
        index = None if index is None or (index < 0).any() else index.astype(np.int64)
        return {"labels": sub_labels, "test_index": index, "derived": False}, images
    return store.drawn_subsample(raw["test"], labels["test"], size, seed)
