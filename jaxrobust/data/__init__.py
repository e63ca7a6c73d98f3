"""Data: simulate (GalSim), label (Gini-M20), store (Zenodo layout), preprocess (arcsinh), tfds.

`load_prepared(data_dir, config)` is the one entry point the trainer, evaluator and attack use
(and so `jaxrobust train/evaluate/attack/reproduce --data DIR`). It recognises DIR by content
(`store.detect_kind`):
  simulated  a folder written by `jaxrobust simulate` (Zenodo files + metadata + dataset.json)
  zenodo     the paper's published .npy files only (doi 10.5281/zenodo.5514180; NCHW, any float)
  tfds       a TFDS dataset prepared by `jaxrobust.data.tfds` (dataset_info.json + features.json,
             at DIR or up to name/config/version below it; read without TensorFlow)
validates it up front (errors name the file and the field), loads every array as NHWC float32
(memory-mapped files converted chunk by chunk) and normalises it per `config.preprocess`.
Without attack-subsample files the subsample is drawn from the test split
(`data.n_attack_subsample` images, seeded by `seed`).
"""
from __future__ import annotations

from pathlib import Path

from jaxrobust.data.preprocess import PreparedData, prepare
from jaxrobust.data.store import DataError, RawDataset, detect_kind


def prepare_options(config) -> dict:
    """prepare()'s keyword arguments from a config (preprocess.*, data.n_attack_subsample, seed)."""
    pre = config.preprocess
    return dict(percentiles=tuple(pre.percentiles), stretch=float(pre.stretch), stats_from=pre.stats_from,
                subsample_size=int(config.data.n_attack_subsample), seed=int(config.seed))


def load_prepared(data_dir, config, check_finite: bool = True) -> PreparedData:
    """Validated, normalised arrays of the dataset in `data_dir` (simulated, Zenodo or TFDS)."""
    if data_dir in (None, "", "simulate"):
        raise DataError("no dataset folder given: pass --data DIR (a folder made by `jaxrobust "
                        "simulate`, the paper's Zenodo .npy files, or a TFDS dataset folder)")
    data_dir = Path(data_dir)
    if detect_kind(data_dir) == "tfds":
        from jaxrobust.data import tfds

        return tfds.load_prepared_tfds(data_dir, check_finite=check_finite, **prepare_options(config))
    raw = RawDataset(data_dir, check_finite=check_finite)
    return prepare(raw, **prepare_options(config))


__all__ = ["DataError", "PreparedData", "RawDataset", "detect_kind", "load_prepared", "prepare"]
