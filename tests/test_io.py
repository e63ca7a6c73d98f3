"""jaxrobust.io: atomic writes, JSON of NumPy values, checksums, package versions."""
from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata

import numpy as np
import pytest

from jaxrobust import io


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_write_replaces_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "a.npy"
    for value in (1.0, 2.0):
        io.atomic_save_npy(path, np.full(4, value))
        np.testing.assert_array_equal(np.load(path), np.full(4, value))
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_interrupted_write_keeps_old_file(tmp_path, error):
    path = tmp_path / "labels_train.npy"
    io.atomic_save_npy(path, np.arange(5))
    before = path.read_bytes()

    def writer(handle):
        handle.write(b"half of a new file")
        raise error("interrupted")

    with pytest.raises(error):
        io.atomic_write(path, writer)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["labels_train.npy"]


def test_json_of_numpy_values(tmp_path):
    path = tmp_path / "x.json"
    io.atomic_write_json(path, {"b": np.float32(0.5), "a": np.arange(3), "t": (1, np.int64(2))})
    assert path.read_text() == json.dumps({"a": [0, 1, 2], "b": 0.5, "t": [1, 2]}, indent=2) + "\n"
    with pytest.raises(TypeError, match="not JSON serialisable: set"):
        io.atomic_write_json(path, {"s": {1}})


def test_npz_round_trip(tmp_path):
    io.atomic_save_npz(tmp_path / "m.npz", a=np.arange(4), b=np.ones((2, 2), np.float32))
    with np.load(tmp_path / "m.npz") as f:
        assert sorted(f.files) == ["a", "b"] and f["b"].dtype == np.float32


def test_sha256_reads_in_blocks(tmp_path):
    payload = os.urandom(10_000)
    (tmp_path / "f").write_bytes(payload)
    assert io.sha256(tmp_path / "f", block=999) == hashlib.sha256(payload).hexdigest()


def test_package_versions_lists_the_installed_ones():
    versions = io.package_versions(("numpy", "no-such-distribution-jaxrobust"))
    assert versions == {"numpy": metadata.version("numpy")}
