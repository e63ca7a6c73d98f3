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

`ensure_simulated(config, DIR)` simulates `config.data` into DIR unless a current dataset is
already there (`store.dataset_is_current`): what `jaxrobust reproduce` and the TFDS builder's
simulated config do.
"""
from __future__ import annotations

from pathlib import Path

from jaxrobust.data.preprocess import PreparedData, prepare
from jaxrobust.data import store
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
        from jaxrobust.data import tfds  # tensorflow_datasets: an optional extra, slow to import

        return tfds.load_prepared_tfds(data_dir, check_finite=check_finite, **prepare_options(config))
    raw = RawDataset(data_dir, check_finite=check_finite)
    return prepare(raw, **prepare_options(config))


def ensure_simulated(config, data_dir, log=print) -> dict | None:
    """Simulates `config.data` into `data_dir` unless a current dataset is already there.

    Returns the new dataset.json contents, or None when the folder was current and reused.
    """
    data_dir = Path(data_dir)
    if store.dataset_is_current(data_dir, config):
        log(f"[data] {data_dir} is complete and current: skipped")
        return None
    from jaxrobust.data import simulate  # GalSim: slow to import, needed only to simulate

    log(f"[data] simulating into {data_dir}")
    info = simulate.simulate_dataset(config, data_dir)
    log(f"[data] {info['unique_galaxies']} galaxies in {info['simulation_seconds']:.0f} s "
        f"(rejection rate {info['rejection_rate']})")
    return info


__all__ = ["DataError", "PreparedData", "RawDataset", "detect_kind", "ensure_simulated", "load_prepared", "prepare"]
