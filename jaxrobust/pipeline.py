"""`jaxrobust reproduce`: the whole study as stages that skip when their outputs are valid.

    workdir/data/        simulated dataset (or --data DIR, used in place)
    workdir/regular/     training run without domain adaptation: checkpoints, evaluation, attack
    workdir/da/          the same with domain adaptation (Y10 -> Y1 MMD)
    workdir/report.md    the comparison report (+ analysis.json, figures/)

A rerun after an interruption resumes: a finished stage is skipped, an interrupted training
run resumes from its last epoch checkpoint, and everything else is recomputed only when its
inputs changed (a different config).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from jaxrobust import attack, certify, checkpoint, evaluate, io, plots, provenance, report, robustness, scan, train
from jaxrobust import config as config_lib
from jaxrobust.data import ensure_simulated, load_prepared, preprocess, store

VARIANTS = (("regular", "none"), ("da", "mmd"))  # (run folder, train.da_loss): the paper's two arms


def ensure_dataset(config, workdir: Path, data_dir: Path | None, log=print) -> Path:
    """The dataset folder to use: --data as given, else workdir/data (simulated if needed,
    with its figures when `data.preview`)."""
    if data_dir is not None:
        return Path(data_dir)
    data_dir = Path(workdir) / "data"
    if ensure_simulated(config, data_dir, log) is not None and config.data.preview:
        write_dataset_figures(data_dir)
    return data_dir


def write_dataset_figures(data_dir: Path) -> list[Path]:
    """preview.png (paper Fig. 2: test galaxies per class, each depth's array arcsinh-stretched)
    and gini_m20.png (paper Fig. 1: the G-M20 plane of every unique galaxy) of a simulated folder."""
    data_dir = Path(data_dir)
    label_path = data_dir / store.label_file("test")
    labels = store.labels_from_one_hot(store.open_npy(label_path), label_path)
    stretched = {d: preprocess.normalize(store.to_nhwc(store.open_npy(data_dir / store.image_file(d, "test"))))[0]
                 for d in store.DEPTHS}
    galaxies = [json.loads(line) for line in (data_dir / "galaxies.jsonl").read_text().splitlines()]
    gini, m20, classes = (np.array([g[k] for g in galaxies]) for k in ("gini", "m20", "label"))
    return [plots.dataset_preview(data_dir / "preview.png", stretched["Y10"], stretched["Y1"], labels),
            plots.gini_m20_diagram(data_dir / "gini_m20.png", gini, m20, classes)]


def same_training(run_dir: Path, config) -> bool:
    """Whether the run folder was trained with the same data, model and training settings."""
    return (Path(run_dir) / config_lib.RUN_CONFIG_FILE).exists() and \
        config_lib.training_settings(config_lib.read_run_config(run_dir)) == config_lib.training_settings(config)


def training_finished(run_dir: Path, config) -> bool:
    if not same_training(run_dir, config):
        return False
    meta = checkpoint.read_meta(run_dir, "latest")
    return bool(meta) and (meta.get("stopped") or meta.get("epoch") == config.train.epochs - 1)


def _newer(output: Path, *inputs: Path) -> bool:
    return output.exists() and all(output.stat().st_mtime >= p.stat().st_mtime for p in inputs if p.exists())


def run_variant(config, run_dir: Path, data, log=print) -> None:
    """Train (or resume), evaluate and attack one variant; each step skipped when current. The
    run folder is taken for the duration (provenance.folder_lock): a second writer is refused."""
    with provenance.folder_lock(run_dir, "reproduce", log):
        _run_variant(config, Path(run_dir), data, log)


def _run_variant(config, run_dir: Path, data, log=print) -> None:
    run_dir = Path(run_dir)
    name = run_dir.name
    same_data = provenance.same_data(run_dir, data)  # a re-simulated dataset: train again
    if training_finished(run_dir, config) and same_data:
        log(f"[{name}] training finished earlier: skipped")
    else:
        resume = same_training(run_dir, config) and same_data and checkpoint.latest_step(run_dir) is not None
        log(f"[{name}] {'resuming' if resume else 'training'} {config.model.name}")
        train.train_and_evaluate(config, run_dir, data, resume=resume, log=log)
    best = run_dir / "checkpoints" / "best"
    # current = made from this best checkpoint and these data (the units record both), not by file times
    source = provenance.checkpoint_source(run_dir, checkpoint.read_meta(run_dir, "best"))
    inputs = {"data": provenance.data_digest(getattr(data, "source", None))}
    if provenance.unit_current(run_dir, "evaluate", source, inputs) and _newer(run_dir / "evaluation.json", best):
        log(f"[{name}] evaluation current: skipped")
    else:
        evaluate.evaluate_run(run_dir, data, log=log)
        report.write_run_figures(run_dir)
    info_path = run_dir / "attack.json"
    current_attack = json.loads(config_lib.to_json(config))["attack"]
    if (provenance.unit_current(run_dir, "attack", source, inputs) and _newer(run_dir / "attack.npz", best)
            and info_path.exists()
            and json.loads(info_path.read_text()).get("attack_config") == current_attack):
        log(f"[{name}] attack current: skipped")
    else:
        attack.attack_run(run_dir, data, config, log=log)
    if robustness.is_current(run_dir):
        log(f"[{name}] robustness measures current: skipped")
    else:
        robustness.robustness_run(run_dir, data, config, log=log)
    if config.scan.enabled:
        if scan.is_current(run_dir, config) and provenance.unit_current(run_dir, "scan", source, inputs):
            log(f"[{name}] scan current: skipped")
        else:
            scan.scan_run(run_dir, data, config, log=log)
    if not config.certify.enabled:
        return
    if config.model.name != "convnet":
        log(f"[{name}] certificates: the {config.model.name} is not supported (ConvNet only): skipped")
    elif certify.is_current(run_dir, config) and provenance.unit_current(run_dir, "certify", source, inputs):
        log(f"[{name}] certificates current: skipped")
    else:
        certify.certify_run(run_dir, data, config, log=log)


def reproduce(config, workdir: Path, data_dir: Path | None = None, log=print) -> dict:
    """Simulate (or reuse) the dataset, train regular and DA, evaluate, attack, analyse."""
    start = time.perf_counter()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = ensure_dataset(config, workdir, data_dir, log)
    data = load_prepared(data_dir, config)
    timings = {}
    for name, da_loss in VARIANTS:
        variant = config_lib.copy_with(config, {"train.da_loss": da_loss,
                                                "data.source": str(Path(data_dir).resolve())})
        t0 = time.perf_counter()
        run_variant(variant, workdir / name, data, log)
        timings[name] = round(time.perf_counter() - t0, 1)
    result = report.analyze([workdir / name for name, _ in VARIANTS], out_dir=workdir, log=log)
    total = round(time.perf_counter() - start, 1)
    io.atomic_write_json(workdir / "timings.json", dict(timings, total_seconds=total))
    log(f"reproduce finished in {total:.0f} s: {workdir / 'report.md'}")
    return result
