"""A tiny dataset folder in the paper's Zenodo layout, made with NumPy (no GalSim), and a tiny
run trained on it through the command line. Test code, shared by test_bad_inputs and test_kill.

Stamps are 32 x 32 x 3 (channel-first on disk, as published): an elliptical Gaussian of random
size, axis ratio and angle, brighter for class 1 and doubled (two blobs) for class 2, plus sky
noise; Y1 is the same galaxy with three times the noise. Every galaxy differs, so the Y1/Y10
pairing check has something to recognise.
"""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np

from jaxrobust.data import store

SIZES = {"train": 24, "valid": 9, "test": 12}
SUBSAMPLE = 6
SIDE = 32
# ConvNet, 2 epochs, batch 8, small attack and analysis: seconds on a CPU once compiled.
ATTACK_ARGS = ("attack.n_images=3", "attack.population=8", "attack.max_generations=2",
               "attack.block_generations=1", "attack.tasks_per_call=2", "attack.evaluator=full")
ANALYSIS_ARGS = ("analysis.isomap_points=8", "analysis.church_windows=1", "analysis.bootstrap=10",
                 "analysis.animation=False", "analysis.isomap_neighbors=3")
TRAIN_ARGS = ("train.epochs=2", "train.batch_size=8", "train.eval_batch_size=8", "train.learning_rate=1e-3",
              "train.data_placement=device", "data.n_attack_subsample=6", "seed=1") + ANALYSIS_ARGS


def galaxies(n: int, rng: np.random.Generator, side: int = SIDE) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3, side, side) noiseless stamps in electrons and (n,) labels 0, 1, 2."""
    labels = np.arange(n) % 3
    rng.shuffle(labels)
    yy, xx = np.mgrid[:side, :side] - (side - 1) / 2
    stamps = np.empty((n, 3, side, side), np.float64)
    for i, label in enumerate(labels):
        sigma, q, angle = rng.uniform(2.0, 5.0), rng.uniform(0.3, 1.0), rng.uniform(0, np.pi)
        c, s = np.cos(angle), np.sin(angle)
        u, v = c * xx + s * yy, -s * xx + c * yy
        blob = np.exp(-0.5 * ((u / sigma) ** 2 + (v / (q * sigma)) ** 2))
        if label == 2:  # a second galaxy beside the first
            dx, dy = rng.uniform(-8, 8, 2)
            blob = blob + 0.7 * np.exp(-0.5 * (((xx - dx) / 2.5) ** 2 + ((yy - dy) / 2.5) ** 2))
        flux = (400.0, 900.0, 600.0)[label]
        stamps[i] = flux * blob[None] * np.array([0.8, 1.0, 1.1])[:, None, None]
    return stamps, labels


def write_dataset(root, seed: int = 0, side: int = SIDE) -> None:
    """Writes the nine split files, the attack subsample and metadata_150.npz into `root`."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    test = None
    for split, n in SIZES.items():
        clean, labels = galaxies(n, rng, side)
        y10 = clean + rng.normal(0.0, 10.0, clean.shape)
        y1 = clean + rng.normal(0.0, 30.0, clean.shape)
        store.write_split(root, split, y10, y1, labels)
        if split == "test":
            test = y10, y1, labels
    pick = np.sort(rng.choice(SIZES["test"], SUBSAMPLE, replace=False))
    store.write_subsample(root, test[0][pick], test[1][pick], test[2][pick], pick)


@functools.cache
def shared_run() -> tuple[Path, Path]:
    """(dataset folder, run folder): a run trained, evaluated and attacked through the command
    line once per test process (test_bad_inputs and test_kill share it). Do not modify: copy."""
    from jaxrobust.cli import main

    root = Path(tempfile.mkdtemp(prefix="jaxrobust_zenodo_tiny_"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    dataset, run = root / "zenodo", root / "run"
    write_dataset(dataset)
    assert main(["train", "--data", str(dataset), "--workdir", str(run), *TRAIN_ARGS]) == 0
    assert main(["evaluate", "--workdir", str(run)]) == 0
    assert main(["attack", "--workdir", str(run), *ATTACK_ARGS]) == 0
    return dataset, run
