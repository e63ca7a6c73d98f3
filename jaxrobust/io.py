"""Files on disk: atomic writes, JSON of NumPy values, checksums, installed package versions.

The bottom layer (with config, rng and parallel): it imports nothing from jaxrobust. Every file
the package writes (datasets, run folders, reports) goes through `atomic_write`, so a reader
never sees a half-written file and an interrupted write leaves the previous one in place.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np

# The packages whose versions a dataset.json and a report record (their distribution names).
RECORDED_PACKAGES = ("jaxrobust", "galsim", "numpy", "jax", "flax", "optax", "orbax-checkpoint", "scikit-learn")

_UMASK = os.umask(0)  # read once (os.umask can only be read by setting it) and restored at once
os.umask(_UMASK)


def atomic_write(path: Path, write) -> None:
    """Calls `write(file)` on a temporary file beside `path`, then renames it into place.

    A reader never sees a half-written file, and an interrupted write leaves the old one.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    atomic_write(path, lambda f: f.write(payload))


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, array))


def atomic_save_npz(path: Path, **arrays) -> None:
    atomic_write(path, lambda f: np.savez(f, **arrays))


def atomic_write_json(path: Path, obj) -> None:
    """`obj` as indented JSON with sorted keys; NumPy scalars and arrays become numbers and lists."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=json_default) + "\n"
    atomic_write_bytes(path, text.encode())


def json_default(obj):
    """`json.dumps(default=...)` for NumPy scalars, NumPy arrays and tuples."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256(path: Path, block: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read `block` bytes at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def package_versions(names=RECORDED_PACKAGES) -> dict[str, str]:
    """{distribution name: installed version} of those installed (metadata only: imports none)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions
