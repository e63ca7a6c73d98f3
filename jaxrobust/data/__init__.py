"""Data: simulate (GalSim), label (Gini-M20), store (Zenodo layout), preprocess (arcsinh).

`load_prepared(data_dir, config)` is the one entry point the trainer, evaluator and attack use:
it validates the folder (a simulated dataset or the paper's Zenodo files), loads every array as
NHWC float32 and normalises it per `config.preprocess`.
"""
from __future__ import annotations

from pathlib import Path

from jaxrobust.data.preprocess import PreparedData, prepare
from jaxrobust.data.store import DataError, RawDataset


def load_prepared(data_dir, config, check_finite: bool = True) -> PreparedData:
    """Validated, normalised arrays of the dataset in `data_dir`."""
    if data_dir in (None, "", "simulate"):
        raise DataError("no dataset folder given: pass --data DIR (a folder made by `jaxrobust "
                        "simulate`, or the paper's Zenodo .npy files)")
    raw = RawDataset(Path(data_dir), check_finite=check_finite)
    pre = config.preprocess
    return prepare(raw, tuple(pre.percentiles), float(pre.stretch), pre.stats_from)


__all__ = ["DataError", "PreparedData", "RawDataset", "load_prepared", "prepare"]
