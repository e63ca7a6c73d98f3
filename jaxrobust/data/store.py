"""The dataset on disk: the paper's Zenodo layout, splits, merger augmentation, validation.

Files (Zenodo doi 10.5281/zenodo.5514180, names from the DeepAdversaries notebook):
  images_Y10_{train,valid,test}.npy, images_Y1_{...}.npy   (N, 3, 100, 100) raw e-, NCHW
  labels_{train,valid,test}.npy                            (N, 3) one-hot (spiral, elliptical, merger)
  regular_images_150.npy, noisy_images_150.npy, labels_150.npy   the attack subsample (Y10, Y1)
  (or images_Y10_test_150.npy, images_Y1_test_150.npy, labels_test_150.npy: the thesis names)
Images may be any float dtype (float32 as published); labels any integer or float one-hot. A
folder is recognised by content (`detect_kind`: simulated, zenodo or tfds). The subsample's rows
in the test split come from metadata_150.npz or, for the Zenodo files, from matching content;
without subsample files one is drawn from the test split (`derive_subsample_index`).
Our simulator adds metadata_{split}.npz (G, M20, F, S, intended class, seed, candidate index,
galaxy id, augmentation) and dataset.json (config, versions, counts, checksums), written last:
it marks a complete dataset.

Inside the package arrays are NHWC float32; this module is the one place that converts.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from jaxrobust import config as config_lib
from jaxrobust import provenance
from jaxrobust.data import pairing
from jaxrobust.io import atomic_save_npy, atomic_save_npz, atomic_write_json, sha256

SPLITS = ("train", "valid", "test")
DEPTHS = ("Y10", "Y1")
NUM_CLASSES = len(config_lib.CLASS_NAMES)
SUBSAMPLE_FILES = ("regular_images_150.npy", "noisy_images_150.npy", "labels_150.npy")
# The thesis notebook (marinadunn/thesis) loads the same subsample under these names.
SUBSAMPLE_FILES_ALT = ("images_Y10_test_150.npy", "images_Y1_test_150.npy", "labels_test_150.npy")
AUGMENTATIONS = ("identity", "hflip", "vflip", "rot90", "rot180")  # Ćiprijanović et al. 2022, section 2.1


class DataError(ValueError):
    """A dataset file that is missing, unreadable or not what the layout promises."""


def image_file(depth: str, split: str) -> str:
    return f"images_{depth}_{split}.npy"


def label_file(split: str) -> str:
    return f"labels_{split}.npy"


def zenodo_files() -> list[str]:
    """The nine split files every dataset folder (Zenodo or simulated) must hold."""
    return [image_file(d, s) for s in SPLITS for d in DEPTHS] + [label_file(s) for s in SPLITS]


# --- What a folder holds: detection by content ---
TFDS_MARKERS = ("dataset_info.json", "features.json")  # what every prepared TFDS dataset has


def find_tfds_dir(root: Path) -> Path | None:
    """The prepared TFDS dataset at or below `root`, or None.

    TFDS writes data_dir/name/config/version/{dataset_info.json, features.json, *.array_record*};
    `root` may be any of these levels. Unfinished builds (incomplete.*) are skipped; two or
    more finished ones are ambiguous and raise a DataError listing them.
    """
    root = Path(root)
    for depth in range(4):
        pattern = "/".join(["*"] * depth + [TFDS_MARKERS[0]])
        found = sorted(p.parent for p in root.glob(pattern)
                       if (p.parent / TFDS_MARKERS[1]).exists()
                       and not any(part.startswith("incomplete.") for part in p.relative_to(root).parts))
        if len(found) > 1:
            raise DataError(f"{root}: holds {len(found)} TFDS datasets ({', '.join(map(str, found))}); "
                            "pass the one to use")
        if found:
            return found[0]
    return None


def detect_kind(root: Path) -> str:
    """What `root` holds, by content: "simulated" (dataset.json), "zenodo" (the published .npy
    files only) or "tfds" (a prepared TFDS dataset at or below it); DataError when none."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    if (root / "dataset.json").exists():
        return "simulated"
    incomplete = provenance.incomplete_simulation(root)
    if incomplete is not None:  # not a Zenodo folder: a simulation killed before dataset.json
        raise DataError(incomplete)
    if any((root / name).exists() for name in zenodo_files() + list(SUBSAMPLE_FILES + SUBSAMPLE_FILES_ALT)):
        return "zenodo"
    if find_tfds_dir(root) is not None:
        return "tfds"
    raise DataError(f"{root}: no dataset found: expected the Zenodo files ({', '.join(zenodo_files())}), "
                    "a folder written by `jaxrobust simulate` (dataset.json), or a TFDS dataset "
                    f"({' + '.join(TFDS_MARKERS)}, from jaxrobust.data.tfds)")


# --- Splits and augmentation ---
def one_hot(labels: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """(N,) class indices -> (N, num_classes) int64 one-hot."""
    return np.eye(num_classes, dtype=np.int64)[np.asarray(labels)]


def split_indices(labels: np.ndarray, fractions, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Stratified random split of items into train/valid/test by `fractions` (sum to 1).

    Per class the counts are round(fraction x n) for valid and test, the rest train, so small
    classes still reach every split. Returns sorted index arrays.
    """
    fractions = np.asarray(fractions, dtype=float)
    if fractions.shape != (3,) or np.any(fractions < 0) or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    parts = {s: [] for s in SPLITS}
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_valid = int(round(fractions[1] * len(members)))
        n_test = int(round(fractions[2] * len(members)))
        parts["valid"].append(members[:n_valid])
        parts["test"].append(members[n_valid:n_valid + n_test])
        parts["train"].append(members[n_valid + n_test:])
    return {s: np.sort(np.concatenate(p)) for s, p in parts.items()}


def augment(images: np.ndarray, kind: str) -> np.ndarray:
    """One of the paper's merger augmentations on (..., H, W) arrays (NCHW on disk)."""
    if kind == "identity":
        return images
    if kind == "hflip":
        return images[..., ::-1]
    if kind == "vflip":
        return images[..., ::-1, :]
    if kind == "rot90":
        return np.rot90(images, k=1, axes=(-2, -1))
    if kind == "rot180":
        return np.rot90(images, k=2, axes=(-2, -1))
    raise ValueError(f"unknown augmentation {kind!r}; expected one of {AUGMENTATIONS}")


def expand_with_augmentation(labels: np.ndarray, merger_class: int = 2,
                             enabled: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the augmented set: (source item index, augmentation index) per output image.

    Non-mergers appear once (identity); each merger appears five times (Ćiprijanović et al. 2022, section 2.1).
    """
    source, kind = [], []
    for i, label in enumerate(labels):
        n = len(AUGMENTATIONS) if enabled and label == merger_class else 1
        source.extend([i] * n)
        kind.extend(range(n))
    return np.asarray(source, dtype=np.int64), np.asarray(kind, dtype=np.int64)


# --- Writing the Zenodo layout ---
def write_split(out_dir: Path, split: str, y10: np.ndarray, y1: np.ndarray, labels: np.ndarray,
                metadata: dict | None = None) -> None:
    """Writes one split: NCHW float32 images at both depths, one-hot int64 labels, metadata."""
    out_dir = Path(out_dir)
    _check_pair(y10, y1, labels, f"split {split!r}")
    atomic_save_npy(out_dir / image_file("Y10", split), np.ascontiguousarray(y10, dtype=np.float32))
    atomic_save_npy(out_dir / image_file("Y1", split), np.ascontiguousarray(y1, dtype=np.float32))
    atomic_save_npy(out_dir / label_file(split), one_hot(labels))
    if metadata is not None:
        atomic_save_npz(out_dir / f"metadata_{split}.npz", **metadata)


def write_subsample(out_dir: Path, y10: np.ndarray, y1: np.ndarray, labels: np.ndarray,
                    test_index: np.ndarray) -> None:
    """Writes the attack subsample (paper: 150 test images) and where it sits in the test split."""
    out_dir = Path(out_dir)
    _check_pair(y10, y1, labels, "attack subsample")
    for name, array in zip(SUBSAMPLE_FILES, (y10, y1, one_hot(labels))):
        atomic_save_npy(out_dir / name, np.ascontiguousarray(array, dtype=array.dtype if name.startswith("labels") else np.float32))
    atomic_save_npz(out_dir / "metadata_150.npz", test_index=np.asarray(test_index, dtype=np.int64))


def _check_pair(y10, y1, labels, what):
    if y10.shape != y1.shape:
        raise DataError(f"{what}: Y10 images {y10.shape} and Y1 images {y1.shape} differ in shape")
    if len(labels) != len(y10):
        raise DataError(f"{what}: {len(labels)} labels for {len(y10)} images")


def checksums(out_dir: Path) -> dict[str, str]:
    """sha256 of every .npy/.npz file in the folder."""
    out_dir = Path(out_dir)
    return {p.name: sha256(p) for p in sorted(out_dir.glob("*.np[yz]"))}


def write_info(out_dir: Path, info: dict) -> None:
    """Writes dataset.json last, with checksums: its presence marks a complete dataset.

    `checksums` (sha256, whole files) identify the dataset (a run's data fingerprint);
    `content_hashes` (provenance.content_hash: size + blake2b, sampled blocks above 64 MiB) are
    what every read verifies (`verify_files`), cheap enough for the paper's 8 GB arrays.
    """
    out_dir = Path(out_dir)
    info = dict(info, checksums=checksums(out_dir),
                content_hashes={p.name: provenance.content_hash(p) for p in sorted(out_dir.glob("*.np[yz]"))})
    atomic_write_json(out_dir / "dataset.json", info)


def verify_files(root: Path, info: dict) -> None:
    """Refuses a simulated dataset whose files differ from what dataset.json recorded.

    Each recorded file is compared with its `content_hashes` entry; a dataset.json written
    before those existed is checked by its sha256 `checksums` for files up to
    provenance.WHOLE_HASH_BYTES (larger ones then go unchecked: hashing them whole costs
    minutes). Raises a DataError naming the first file that is missing or changed.
    """
    root = Path(root)
    recorded = info.get("content_hashes")
    how = provenance.content_hash
    if not isinstance(recorded, dict):
        recorded = {name: digest for name, digest in (info.get("checksums") or {}).items()
                    if (root / name).is_file() and (root / name).stat().st_size <= provenance.WHOLE_HASH_BYTES}
        how = sha256
    remedy = (f"restore it, or simulate the dataset again (`jaxrobust simulate --overwrite --out {root}`; runs "
              "trained on it will then refuse it)")
    for name, digest in sorted(recorded.items()):
        path = root / name
        if not path.is_file():
            raise DataError(f"{path}: missing, but {root / 'dataset.json'} records it; {remedy}")
        if how(path) != digest:
            raise DataError(f"{path}: changed since `jaxrobust simulate` wrote it (its checksum differs from "
                            f"the one {root / 'dataset.json'} records); {remedy}")


def is_complete(data_dir: Path, verify_checksums: bool = False) -> bool:
    """True when dataset.json exists (and, optionally, every checksum matches)."""
    info_path = Path(data_dir) / "dataset.json"
    if not info_path.exists():
        return False
    if not verify_checksums:
        return True
    info = _read_info(info_path)
    return all((Path(data_dir) / name).exists() and sha256(Path(data_dir) / name) == digest
               for name, digest in info.get("checksums", {}).items())


def dataset_is_current(data_dir: Path, config) -> bool:
    """A complete simulated dataset (checksums verified) made with the same data settings and seed."""
    if not is_complete(data_dir, verify_checksums=True):
        return False
    made_with = _read_info(Path(data_dir) / "dataset.json").get("config", {})
    current = json.loads(config_lib.to_json(config))
    return made_with.get("data") == current["data"] and made_with.get("seed") == current["seed"]


# --- Reading and validation ---
def open_npy(path: Path) -> np.ndarray:
    """Memory-maps a .npy file, with errors that name the file and what went wrong."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError) as err:  # truncated data or a bad header; EOFError: empty file
        raise DataError(f"{path}: not a readable .npy array ({err}); {_npy_size_hint(path)}") from err
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err})") from err


def _npy_size_hint(path: Path) -> str:
    """What the .npy header promises versus the bytes on disk (for error messages)."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(handle)
            expected = handle.tell() + int(np.prod(shape)) * dtype.itemsize
    except Exception:  # the header itself is cut or garbled: nothing more to say
        return f"expected a .npy header, the file has {size} bytes; is it truncated?"
    return (f"its header promises a {dtype} array of shape {shape} = {expected} bytes, the file has "
            f"{size}; is it truncated?")


def check_images(array: np.ndarray, path: Path, check_finite: bool = True) -> None:
    """(N, 3, H, W) float images with finite values, or a DataError naming the file."""
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"{path}: images must be a float array, got dtype {array.dtype}")
    if array.ndim != 4 or array.shape[1] != 3 or array.shape[2] != array.shape[3]:
        raise DataError(f"{path}: images must have shape (N, 3, H, W) with H == W (channel-first "
                        f"g, r, i), got {array.shape}")
    if len(array) == 0:
        raise DataError(f"{path}: the image array is empty")
    if check_finite:
        for start in range(0, len(array), 512):
            block = np.asarray(array[start:start + 512])
            if not np.all(np.isfinite(block)):
                bad = start + int(np.flatnonzero(~np.isfinite(block).reshape(len(block), -1).all(1))[0])
                if array.dtype == np.float16 and not np.isnan(block).any():
                    # raw electrons above float16's largest value become inf when the array is saved
                    raise DataError(f"{path}: image {bad} has inf pixels: a float16 array holds at most 65,504 "
                                    "(electrons here), brighter pixels overflow when saved; save the images as "
                                    "float32, as published")
                raise DataError(f"{path}: image {bad} has non-finite (NaN or inf) pixels")


def labels_from_one_hot(array: np.ndarray, path: Path, n_images: int | None = None) -> np.ndarray:
    """(N, 3) one-hot rows (any integer or float dtype) -> (N,) int class indices."""
    array = np.asarray(array)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise DataError(f"{path}: labels dtype is {array.dtype}; expected integer (or float) one-hot")
    if array.ndim != 2 or array.shape[1] != NUM_CLASSES:
        raise DataError(f"{path}: labels must have shape (N, 3) one-hot (spiral, elliptical, "
                        f"merger), got {array.shape}")
    if n_images is not None and len(array) != n_images:
        raise DataError(f"{path}: {len(array)} labels for {n_images} images")
    is_binary = np.isin(array, (0, 1)).all(axis=1)
    row_sum = array.sum(axis=1)
    bad = np.flatnonzero(~is_binary | (row_sum != 1))
    if bad.size:
        raise DataError(f"{path}: label row {int(bad[0])} is {array[bad[0]].tolist()}, not one-hot "
                        f"({bad.size} bad rows)")
    return np.argmax(array, axis=1).astype(np.int32)


def to_nhwc(images_nchw: np.ndarray, out: np.ndarray | None = None, chunk: int = 256) -> np.ndarray:
    """NCHW (any float dtype, memmap fine) -> NHWC float32, chunk by chunk (one output copy)."""
    n, c, h, w = images_nchw.shape
    if out is None:
        out = np.empty((n, h, w, c), dtype=np.float32)
    for start in range(0, n, chunk):
        out[start:start + chunk] = np.transpose(np.asarray(images_nchw[start:start + chunk]), (0, 2, 3, 1))
    return out


def _read_info(info_path: Path) -> dict:
    """dataset.json contents, {} when absent (the published Zenodo files have none)."""
    if not info_path.exists():
        return {}
    try:
        return json.loads(info_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{info_path}: not valid JSON ({err}); expected the dataset.json that "
                        "`jaxrobust simulate` writes last") from err


def subsample_names(root: Path) -> tuple[str, str, str] | None:
    """The file names of the attack subsample in `root`: (Y10, Y1, labels), or None if absent.

    Either name set counts (DeepAdversaries' adversarial_studies_clean.ipynb first, then the
    names of the marinadunn/thesis notebooks); a set with files missing is an error,
    since silently drawing a new subsample would change which images are attacked.
    """
    root = Path(root)
    partial = None
    for names in (SUBSAMPLE_FILES, SUBSAMPLE_FILES_ALT):
        present = [(root / n).exists() for n in names]
        if all(present):
            return names
        if any(present) and partial is None:
            partial = names, present
    if partial is not None:
        names, present = partial
        missing = [n for n, here in zip(names, present) if not here]
        raise DataError(f"{root / missing[0]}: file not found; the attack subsample needs all of "
                        f"{', '.join(names)} (or none of them: it is then drawn from the test split)")
    return None


def derive_subsample_index(n_test: int, size: int, seed: int) -> np.ndarray:
    """(min(size, n_test),) sorted test rows: the attack subsample of a dataset without one.

    The one draw of the subsample: every data source and the attack's fallback use it.
    """
    rng = np.random.default_rng([seed, 150])
    return np.sort(rng.choice(n_test, size=min(int(size), n_test), replace=False))


def drawn_subsample(test_images: dict, test_labels: np.ndarray, size: int | None, seed: int):
    """The attack subsample of a source without subsample files, drawn from its test split.

    Args:
      test_images: {depth: (N, ...) test images} in any layout (NCHW memmaps, NHWC arrays).
      test_labels: (N,) class indices.
      size: images to draw (`data.n_attack_subsample`); 0 or None draws none.
    Returns:
      ({"labels": (n,), "test_index": (n,) sorted rows, "derived": True}, {depth: (n, ...) images}),
      or None when `size` is 0 or None.
    """
    if not size:
        return None
    index = derive_subsample_index(len(test_labels), size, seed)
    return ({"labels": test_labels[index], "test_index": index, "derived": True},
            {d: test_images[d][index] for d in DEPTHS})


def _row_key(row: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(row, dtype=np.float32).tobytes(), digest_size=16).digest()


def locate_rows(rows: np.ndarray, within: np.ndarray, chunk: int = 256) -> np.ndarray | None:
    """(n,) int64 positions in `within` of each of `rows` (first exact match as float32), or None.

    Args:
      rows: (n, ...) arrays to find (e.g. the 150 subsample images).
      within: (N, ...) with the same trailing shape; may be a memmap, read `chunk` rows at a time.
    """
    wanted: dict[bytes, list[int]] = {}
    for i, row in enumerate(rows):
        wanted.setdefault(_row_key(row), []).append(i)
    index = np.full(len(rows), -1, dtype=np.int64)
    for start in range(0, len(within), chunk):
        for j, row in enumerate(np.asarray(within[start:start + chunk])):
            for i in wanted.pop(_row_key(row), ()):
                index[i] = start + j
        if not wanted:
            return index
    return None


def read_metadata(root: Path, split: str) -> dict[str, np.ndarray]:
    """Per-image metadata of a split (our simulator's metadata_{split}.npz); {} when absent."""
    path = Path(root) / f"metadata_{split}.npz"
    if not path.exists():
        return {}
    with np.load(path) as meta:
        return {k: meta[k] for k in meta.files}


class RawDataset:
    """A validated dataset folder: raw NCHW arrays (memory-mapped) and integer labels.

    Attributes:
      root: the folder.
      kind: "simulated" (has our dataset.json) or "zenodo" (the published files only).
      images: {(depth, split): (N, 3, H, W) memmap of raw electrons}.
      labels: {split: (N,) int32 class indices}.
      subsample: {"Y10", "Y1": (n, 3, H, W) memmap, "labels": (n,) int32, "files": the three
        names, "test_index": (n,) rows of the test split or None} or None if absent.
      info: the dataset.json contents ({} for Zenodo folders).
    """

    def __init__(self, root: Path, check_finite: bool = True):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: dataset folder not found")
        self.info = _read_info(self.root / "dataset.json")
        self.kind = "simulated" if self.info else "zenodo"
        if self.info:
            verify_files(self.root, self.info)
        self.images, self.labels = {}, {}
        shape = None
        for split in SPLITS:
            paths = {d: self.root / image_file(d, split) for d in DEPTHS}
            for depth, path in paths.items():
                array = open_npy(path)
                check_images(array, path, check_finite)
                if shape is not None and array.shape[1:] != shape:
                    raise DataError(f"{path}: image shape {array.shape[1:]} differs from {shape} elsewhere")
                shape = array.shape[1:]
                self.images[depth, split] = array
            n10, n1 = len(self.images["Y10", split]), len(self.images["Y1", split])
            if n10 != n1:
                raise DataError(f"{paths['Y1']}: {n1} Y1 images but {paths['Y10']} has {n10}; Y1 and "
                                "Y10 must hold the same galaxies in the same order")
            problem = pairing.same_galaxies_problem(self.images["Y10", split], self.images["Y1", split],
                                                    paths["Y10"], paths["Y1"])
            if problem is not None:
                raise DataError(problem)
            label_path = self.root / label_file(split)
            self.labels[split] = labels_from_one_hot(open_npy(label_path), label_path, n10)
        self.image_shape = shape
        self.subsample = self._open_subsample(check_finite)

    def _open_subsample(self, check_finite: bool):
        names = subsample_names(self.root)
        if names is None:
            return None
        paths = [self.root / n for n in names]
        y10, y1 = open_npy(paths[0]), open_npy(paths[1])
        for array, path in ((y10, paths[0]), (y1, paths[1])):
            check_images(array, path, check_finite)
            if array.shape[1:] != self.image_shape:
                raise DataError(f"{path}: image shape {array.shape[1:]} differs from the splits' "
                                f"{self.image_shape}")
        if y10.shape != y1.shape:
            raise DataError(f"{paths[1]}: shape {y1.shape} differs from {paths[0]} {y10.shape}")
        labels = labels_from_one_hot(open_npy(paths[2]), paths[2], len(y10))
        problem = pairing.same_galaxies_problem(y10, y1, paths[0], paths[1], sample=len(y10))  # every attacked row
        test_index = self._subsample_test_index(y10, y1)
        if problem is None and test_index is not None:
            source = "metadata_150.npz" if (self.root / "metadata_150.npz").exists() else "matching images"
            problem = pairing.subsample_labels_problem(labels, self.labels["test"], test_index, paths[2], source)
        if problem is not None:
            raise DataError(problem)
        return {"Y10": y10, "Y1": y1, "labels": labels, "files": names, "test_index": test_index}

    def _subsample_test_index(self, y10: np.ndarray, y1: np.ndarray) -> np.ndarray | None:
        """(n,) rows of the test split the subsample holds: metadata_150.npz (our simulator),
        else found by content (the Zenodo files record none); None when not from the test split."""
        n_test = len(self.labels["test"])
        path = self.root / "metadata_150.npz"
        if path.exists():
            with np.load(path) as meta:
                if "test_index" not in meta.files:
                    raise DataError(f"{path}: field test_index missing (has {meta.files})")
                index = np.asarray(meta["test_index"], dtype=np.int64)
            if index.shape != (len(y10),) or (index.size and (index.min() < 0 or index.max() >= n_test)):
                raise DataError(f"{path}: test_index must hold {len(y10)} rows of the test split "
                                f"(0..{n_test - 1}), got shape {index.shape}")
            return index
        index = locate_rows(y10, self.images["Y10", "test"])
        if index is None or not np.array_equal(np.asarray(y1, np.float32),
                                               np.asarray(self.images["Y1", "test"][index], np.float32)):
            return None
        return index

    def counts(self) -> dict[str, list[int]]:
        """Images per class (spiral, elliptical, merger) in each split."""
        return {s: np.bincount(self.labels[s], minlength=NUM_CLASSES).tolist() for s in SPLITS}

    def nbytes(self) -> int:
        """Bytes of all split images as float32 (what a device-resident copy needs)."""
        return sum(int(np.prod(a.shape)) * 4 for a in self.images.values())
