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

from jaxrobust import config as config_lib
from jaxrobust.data import store

VARIANTS = (("regular", False), ("da", True))


def dataset_is_current(data_dir: Path, config) -> bool:
    """A complete simulated dataset (checksums verified) made with the same data settings."""
    if not store.is_complete(data_dir, verify_checksums=True):
        return False
    info = json.loads((Path(data_dir) / "dataset.json").read_text())
    made_with = info.get("config", {})
    current = json.loads(config_lib.to_json(config))
    return made_with.get("data") == current["data"] and made_with.get("seed") == current["seed"]


def ensure_dataset(config, workdir: Path, data_dir: Path | None, log=print) -> Path:
    """The dataset folder to use: --data as given, else workdir/data (simulated if needed)."""
    if data_dir is not None:
        return Path(data_dir)
    data_dir = Path(workdir) / "data"
    if dataset_is_current(data_dir, config):
        log(f"[data] {data_dir} is complete and current: skipped")
        return data_dir
    from jaxrobust.data import simulate

    log(f"[data] simulating into {data_dir}")
    info = simulate.simulate_dataset(config, data_dir)
    log(f"[data] {info['unique_galaxies']} galaxies in {info['simulation_seconds']:.0f} s "
        f"(rejection rate {info['rejection_rate']})")
    return data_dir


def same_training(run_dir: Path, config) -> bool:
    """Whether the run folder was trained with the same data, model and training settings."""
    path = Path(run_dir) / "config.json"
    return path.exists() and config_lib.training_settings(json.loads(path.read_text())) == \
        config_lib.training_settings(json.loads(config_lib.to_json(config)))


def training_finished(run_dir: Path, config) -> bool:
    from jaxrobust import checkpoint

    if not same_training(run_dir, config):
        return False
    meta = checkpoint.read_meta(run_dir, "latest")
    return bool(meta) and (meta.get("stopped") or meta.get("epoch") == config.train.epochs - 1)


def _newer(output: Path, *inputs: Path) -> bool:
    return output.exists() and all(output.stat().st_mtime >= p.stat().st_mtime for p in inputs if p.exists())


def run_variant(config, run_dir: Path, data, log=print) -> None:
    """Train (or resume), evaluate and attack one variant; each step skipped when current."""
    from jaxrobust import attack, checkpoint, evaluate, robustness, train

    run_dir = Path(run_dir)
    name = run_dir.name
    if training_finished(run_dir, config):
        log(f"[{name}] training finished earlier: skipped")
    else:
        resume = same_training(run_dir, config) and checkpoint.latest_step(run_dir) is not None
        log(f"[{name}] {'resuming' if resume else 'training'} {config.model.name}")
        train.train_and_evaluate(config, run_dir, data, resume=resume, log=log)
    best = run_dir / "checkpoints" / "best"
    if _newer(run_dir / "evaluation.json", best) and (run_dir / "latents.npz").exists():
        log(f"[{name}] evaluation current: skipped")
    else:
        evaluate.evaluate_run(run_dir, data, log=log)
    info_path = run_dir / "attack.json"
    current_attack = json.loads(config_lib.to_json(config))["attack"]
    if (_newer(run_dir / "attack.npz", best) and info_path.exists()
            and json.loads(info_path.read_text()).get("attack_config") == current_attack):
        log(f"[{name}] attack current: skipped")
    else:
        attack.attack_run(run_dir, data, config, log=log)
    if robustness.is_current(run_dir):
        log(f"[{name}] robustness measures current: skipped")
    else:
        robustness.robustness_run(run_dir, data, config, log=log)


def reproduce(config, workdir: Path, data_dir: Path | None = None, log=print) -> dict:
    """Simulate (or reuse) the dataset, train regular and DA, evaluate, attack, analyse."""
    from jaxrobust import report
    from jaxrobust.data import load_prepared

    start = time.perf_counter()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = ensure_dataset(config, workdir, data_dir, log)
    data = load_prepared(data_dir, config)
    timings = {}
    for name, domain_adaptation in VARIANTS:
        variant = config_lib.copy_with(config, {"train.domain_adaptation": domain_adaptation,
                                                "data.source": str(Path(data_dir).resolve())})
        t0 = time.perf_counter()
        run_variant(variant, workdir / name, data, log)
        timings[name] = round(time.perf_counter() - t0, 1)
    result = report.analyze([workdir / name for name, _ in VARIANTS], out_dir=workdir, log=log)
    total = round(time.perf_counter() - start, 1)
    store.atomic_write_json(workdir / "timings.json", dict(timings, total_seconds=total))
    log(f"reproduce finished in {total:.0f} s: {workdir / 'report.md'}")
    return result
