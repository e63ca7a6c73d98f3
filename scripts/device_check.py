"""One-shot accelerator check: correctness there, the timings that matter, one JSON.

    python scripts/device_check.py [--quick] [--out device_check.json]

Run it once on a new accelerator (a GPU: `pip install -e .[cuda]`, i.e. jax[cuda12]); it
needs nothing but the package and JAX (no PyTorch, no statmorph) and on a machine without an
accelerator it runs on the CPU and writes the same JSON (for testing). It
  1. checks correctness on the device, at float32 matmul precision "highest" so that TF32
     cannot hide a real difference: the incremental evaluator against full forward passes
     (ConvNet and ResNet18, random weights and BatchNorm statistics), one domain-adaptation
     train step against the same step on the CPU (`jax.devices("cpu")`), and the attack's
     results across chunk sizes (they must not depend on chunking);
  2. times, at the default precision (what a user gets): attack candidates/s for both models
     and both evaluators over a sweep of attack.chunk_candidates, then of tasks per call
     (attack.tasks_per_call) at the best chunk; train images/s for both models with and
     without DA; the exhaustive scan's candidates/s when jaxrobust.scan is installed (null
     otherwise);
  3. writes one JSON (device, versions, every figure, the goals and whether they are met) and
     prints the recommended chunk defaults.

--quick: tiny settings (a one-block-per-stage ResNet18 in place of ResNet18, few candidates),
seconds to a minute on a CPU; its timings are not representative and its goals are null.
Random weights: the timings do not depend on them (no early stop: the success threshold is
unreachable in the timing runs).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from jaxrobust import attack, incremental, losses, train  # noqa: E402
from jaxrobust.candidates import FullEvaluator, logits_function  # noqa: E402
from jaxrobust.models import build_model  # noqa: E402

SCHEMA_VERSION = 1
H = W = 100
POPULATION = 400  # the paper's population (onepixel_attack.py)
# The goals for an H200 (ConvNet incremental attack, ResNet18 paper protocol, ConvNet training).
GOAL_CONVNET_CANDIDATES_PER_S = 1_000_000
GOAL_RESNET_PROTOCOL_S = 300.0
GOAL_CONVNET_TRAIN_IMAGES_PER_S = 20_000
# The paper's protocol: 150 images x 2 targets x population 400 x (80 generations + the initial
# population), the worst case where every attack runs to the cap (church_window.py).
PAPER_PROTOCOL_CANDIDATES = 150 * 2 * POPULATION * 81
TOLERANCE_PROBABILITY = 1e-4  # float32 at "highest" precision: observed ~1e-6 on a CPU
TOLERANCE_TRAIN_STEP = 1e-4  # relative, loss and parameters after one Adam step (lr 1e-5)


def settings(quick: bool) -> dict:
    """Sizes of every check and sweep; --quick shrinks all of them."""
    if quick:
        # one setting per sweep and few programs: compiling dominates a CPU run
        return dict(models={"convnet": "convnet", "resnet18": "_resnet_tiny"}, population=32,
                    generations={"convnet": 2, "resnet18": 2}, chunks={"windows": (64,), "maps": (64,)},
                    tasks={"convnet": (2,), "resnet18": (2,)}, default_tasks={"convnet": 2, "resnet18": 2},
                    determinism_chunks=(16, 48), determinism_evaluators=("incremental",),
                    train_batch=4, train_steps=1, scan_images=1, check_images=2, check_candidates=16,
                    scan_chunk=64, scan_colours_per_call=1)
    # chunks: "windows" for the ConvNet's incremental evaluator (a few small windows per
    # candidate), "maps" wherever a candidate carries whole feature maps (full forwards,
    # ResNet18's stages 2-4), whose memory caps the chunk
    return dict(models={"convnet": "convnet", "resnet18": "resnet18"}, population=POPULATION,
                generations={"convnet": 8, "resnet18": 4},
                chunks={"windows": (4096, 16384, 65536), "maps": (256, 1024, 4096)},
                tasks={"convnet": (64, 256, 600), "resnet18": (16, 64, 150)},
                default_tasks={"convnet": 256, "resnet18": 64},
                determinism_chunks=(POPULATION // 2, POPULATION, 3 * POPULATION),
                determinism_evaluators=("incremental", "full"), train_batch=256, train_steps=20,
                scan_images=8, check_images=4, check_candidates=400,
                scan_chunk=0, scan_colours_per_call=0)  # 0: the scan's own defaults


# --- Models with random weights and non-trivial BatchNorm statistics ---
def random_variables(name: str, seed: int = 0):
    """(model, variables): initial weights, BatchNorm running statistics drawn at random so
    that folding them into the convolutions is really exercised."""
    from jaxrobust import checkpoint

    model = build_model(name)
    variables = checkpoint.init_variables(model, jax.random.key(seed), (H, W, 3))
    leaves, tree = jax.tree_util.tree_flatten_with_path(variables["batch_stats"])
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    stats = []
    for (path, leaf), key in zip(leaves, keys):
        if "var" in jax.tree_util.keystr(path):
            stats.append(jax.random.uniform(key, leaf.shape, leaf.dtype, 0.5, 2.0))
        else:
            stats.append(0.1 * jax.random.normal(key, leaf.shape, leaf.dtype))
    return model, dict(variables, batch_stats=jax.tree_util.tree_unflatten(tree, stats))


def test_images(n: int, seed: int = 0) -> np.ndarray:
    """(n, 100, 100, 3) stretched-image-like values in [0, 1]."""
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n, H, W, 3)).astype(np.float32)


# --- 1. Correctness ---
def incremental_vs_full(name: str, n_images: int, n_candidates: int) -> dict:
    """Max |p_incremental - p_full| over random candidates of random images."""
    model, variables = random_variables(name)
    images = jnp.asarray(test_images(n_images))
    genes = attack.init_population(jax.random.key(3), n_images * n_candidates).reshape(n_images, n_candidates, 5)
    active = jnp.ones(n_images, bool)
    chunk = n_candidates
    full = FullEvaluator(logits_function(model, variables), chunk)
    inc = incremental.IncrementalEvaluator(model, variables, chunk)
    with jax.default_matmul_precision("highest"):
        p_full = jax.jit(full.probabilities)(full.prepare(images), genes, active)
        p_inc = jax.jit(inc.probabilities)(jax.jit(inc.prepare)(images), genes, active)
    diff = float(jnp.max(jnp.abs(p_full - p_inc)))
    return {"model": name, "candidates": n_images * n_candidates, "max_abs_difference": diff,
            "tolerance": TOLERANCE_PROBABILITY, "ok": bool(diff <= TOLERANCE_PROBABILITY)}


def da_step_vs_cpu(name: str = "convnet", batch: int = 8) -> dict:
    """One domain-adaptation train step on the default device and on the CPU: loss and params."""
    model = build_model(name)
    tx = train.make_optimizer(1e-5, 0.7, 0.8, 1e-8, 1e-4)  # the paper's DA optimiser (training.py)
    spec = train.StepSpec("mmd", 0.05, "biased", False)
    labels = (np.arange(batch) % 3).astype(np.int32)
    batch_arrays = {"image": test_images(batch, 1), "label": labels, "mask": np.ones(batch, np.float32),
                    "target_image": test_images(batch, 2), "target_mask": np.ones(batch, np.float32)}
    weights = np.asarray(losses.class_weights(labels), np.float32)

    init = jax.jit(lambda k: train.create_state(model, tx, k, (H, W, 3)))
    step = jax.jit(partial(train.train_step, spec=spec, class_weights=jnp.asarray(weights),
                           dropout_key=jax.random.key(1)))  # one jit: on a CPU-only machine one compile

    def run(device):
        with jax.default_device(device), jax.default_matmul_precision("highest"):
            state = init(jax.device_put(jax.random.key(0), device))
            placed = jax.device_put(batch_arrays, device)
            new_state, sums = step(state, jax.device_put(train.zero_sums(), device), placed)
            return jax.device_get(new_state.variables["params"]), float(sums["loss"] / sums["count"])

    params, loss = run(jax.devices()[0])
    params_cpu, loss_cpu = run(jax.devices("cpu")[0])
    rel = [float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))
           for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(params_cpu))]
    loss_rel = abs(loss - loss_cpu) / abs(loss_cpu)
    return {"model": name, "batch": batch, "loss": loss, "loss_cpu": loss_cpu, "loss_relative_difference": loss_rel,
            "max_param_relative_difference": max(rel), "tolerance": TOLERANCE_TRAIN_STEP,
            "ok": bool(loss_rel <= TOLERANCE_TRAIN_STEP and max(rel) <= TOLERANCE_TRAIN_STEP)}


def attack_chunk_determinism(s: dict) -> dict:
    """The same attack (ConvNet; incremental, and full unless --quick) at several chunk sizes:
    the same results (success, generations, genes)."""
    model, variables = random_variables("convnet")
    n = max(2, s["check_images"])
    images = test_images(n, 4)
    objective = np.arange(n, dtype=np.int32) % 3
    population = s["population"]
    chunks, evaluators = s["determinism_chunks"], s["determinism_evaluators"]
    runs = {}
    with jax.default_matmul_precision("highest"):
        for evaluator in evaluators:
            for chunk in chunks:
                spec = attack.AttackSpec(population=population, max_generations=4, block_generations=2,
                                         tasks_per_call=2, chunk_candidates=chunk, target_threshold=0.999)
                engine = incremental.make_evaluator(evaluator, model, variables, chunk)
                res = attack.run_attack(engine, images, objective, np.arange(n), jax.random.key(7), spec,
                                        targeted=True, progress=False)
                runs[evaluator, chunk] = res
    same = {}
    for evaluator in evaluators:
        first = runs[evaluator, chunks[0]]
        same[evaluator] = all(np.array_equal(first.success, r.success) and np.array_equal(first.generations, r.generations)
                              and np.allclose(first.genes, r.genes, rtol=0, atol=1e-6)
                              for (e, _), r in runs.items() if e == evaluator)
    return {"chunks": list(chunks), "tasks": n, "identical": same, "ok": all(same.values())}


# --- 2. Timings ---
def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def attack_rate(engine, images: np.ndarray, population: int, generations: int, tasks_per_call: int,
                chunk: int) -> float:
    """Candidates/s of run_attack (compiled first), every task running all `generations`."""
    spec = attack.AttackSpec(population=population, max_generations=generations, target_threshold=2.0,
                             block_generations=generations, tasks_per_call=tasks_per_call, chunk_candidates=chunk)
    n = len(images)
    objective, ids = np.ones(n, np.int32), np.arange(n)
    attack.run_attack(engine, images[:tasks_per_call], objective[:tasks_per_call], ids[:tasks_per_call],
                      jax.random.key(0), spec, True, progress=False)  # compile
    seconds = _timed(lambda: attack.run_attack(engine, images, objective, ids, jax.random.key(1), spec, True,
                                               progress=False))
    return n * population * (generations + 1) / seconds


def attack_sweep(role: str, name: str, s: dict, log) -> list[dict]:
    """Both evaluators: a sweep of chunk sizes at the default tasks per call, then of tasks per
    call at the best chunk. A setting that fails (e.g. out of device memory) is recorded with
    its error and a null rate; the sweep goes on."""
    model, variables = random_variables(name)
    rows = []
    for evaluator in ("incremental", "full"):
        def measure(chunk, tasks):
            row = {"model": role, "variant": name, "evaluator": evaluator, "chunk_candidates": chunk,
                   "tasks_per_call": tasks, "candidates_per_second": None, "error": None}
            try:
                engine = incremental.make_evaluator(evaluator, model, variables, chunk)
                row["candidates_per_second"] = attack_rate(engine, test_images(2 * tasks, 5), s["population"],
                                                           s["generations"][role], tasks, chunk)
                log(f"attack {name:12s} {evaluator:11s} chunk {chunk:6d} tasks {tasks:4d}: "
                    f"{row['candidates_per_second']:12,.0f} candidates/s")
            except Exception as err:  # noqa: BLE001 (an OOM at one setting must not end the run)
                row["error"] = f"{type(err).__name__}: {str(err)[:300]}"
                log(f"attack {name:12s} {evaluator:11s} chunk {chunk:6d} tasks {tasks:4d}: {row['error']}")
            rows.append(row)
            return row["candidates_per_second"] or 0.0

        windows = role == "convnet" and evaluator == "incremental"
        default_tasks = s["default_tasks"][role]
        rates = {chunk: measure(chunk, default_tasks) for chunk in s["chunks"]["windows" if windows else "maps"]}
        best_chunk = max(rates, key=rates.get)
        for tasks in s["tasks"][role]:
            if tasks != default_tasks:
                measure(best_chunk, tasks)
    return rows


def train_rate(name: str, domain_adaptation: bool, batch: int, steps: int) -> float:
    """Train images/s of the jitted device step (images counted over both DA halves)."""
    import bench_train  # scripts/bench_train.py: the benchmark's own step runner

    bench_train.BATCH = batch
    run = bench_train.jax_step_runner(name, domain_adaptation, n_data=4 * batch)
    return batch * (2 if domain_adaptation else 1) / run(steps)


def scan_rate(s: dict) -> dict | None:
    """Candidates/s of the exhaustive scan (ConvNet, incremental, the 8 RGB corners), or None
    when jaxrobust.scan is not installed."""
    try:
        from jaxrobust import scan
    except ImportError:
        return None
    model, variables = random_variables("convnet")
    images = test_images(s["scan_images"], 6)
    labels = np.zeros(len(images), np.int32)
    colours = scan.colour_set("corners", images)
    spec = attack.AttackSpec(chunk_candidates=s["scan_chunk"])
    run = partial(scan.scan_images, model, variables, spec=spec, colours_per_call=s["scan_colours_per_call"])
    run(images[:1], labels[:1], colours)  # compile
    seconds = _timed(lambda: run(images, labels, colours))
    n_colours = int(np.shape(colours)[-2])  # one set (K, 3) or one per image (N, K, 3)
    return {"images": len(images), "colours": n_colours,
            "candidates_per_second": len(images) * H * W * n_colours / seconds}


# --- 3. The report ---
def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for package in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "jaxrobust"):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            out[package] = None
    return out


def device_info() -> dict:
    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    return {"backend": jax.default_backend(), "kind": device.device_kind, "count": jax.device_count(),
            "memory_bytes": stats.get("bytes_limit"), "host": platform.node(),
            "matmul_precision_timings": jax.config.jax_default_matmul_precision or "default"}


def recommended(attack_rows: list[dict]) -> dict:
    """Per model and evaluator, the fastest (chunk_candidates, tasks_per_call)."""
    out = {}
    for row in attack_rows:
        if row["candidates_per_second"] is None:
            continue
        best = out.setdefault(row["model"], {}).get(row["evaluator"])
        if best is None or row["candidates_per_second"] > best["candidates_per_second"]:
            out[row["model"]][row["evaluator"]] = {k: row[k] for k in ("chunk_candidates", "tasks_per_call",
                                                                       "candidates_per_second")}
    return out


def goals(rec: dict, train_rows: list[dict], quick: bool) -> dict:
    """The H200 goals (GOAL_*) with the measured figures; `met` is null in --quick runs."""
    convnet = rec.get("convnet", {}).get("incremental", {}).get("candidates_per_second")
    resnet = max((v["candidates_per_second"] for v in rec.get("resnet18", {}).values()), default=None)
    protocol_s = PAPER_PROTOCOL_CANDIDATES / resnet if resnet else None
    train_convnet = next((r["images_per_second"] for r in train_rows
                          if r["model"] == "convnet" and not r["domain_adaptation"]), None)

    def met(ok):
        return None if quick or ok is None else bool(ok)

    return {
        "convnet_attack_candidates_per_second": {"goal": GOAL_CONVNET_CANDIDATES_PER_S, "measured": convnet,
                                                 "met": met(convnet and convnet >= GOAL_CONVNET_CANDIDATES_PER_S)},
        "resnet18_paper_protocol_seconds": {
            "goal": GOAL_RESNET_PROTOCOL_S, "measured": protocol_s, "candidates": PAPER_PROTOCOL_CANDIDATES,
            "note": "150 images x 2 targets x 400 x 81 at the best measured ResNet18 rate (every attack to the cap)",
            "met": met(protocol_s and protocol_s <= GOAL_RESNET_PROTOCOL_S)},
        "convnet_train_images_per_second": {"goal": GOAL_CONVNET_TRAIN_IMAGES_PER_S, "measured": train_convnet,
                                            "met": met(train_convnet and train_convnet >= GOAL_CONVNET_TRAIN_IMAGES_PER_S)},
    }


def run_checks(quick: bool, log=print) -> dict:
    s = settings(quick)
    start = time.perf_counter()
    report = {"schema_version": SCHEMA_VERSION, "quick": quick, "device": device_info(), "versions": versions()}
    correctness = {"incremental_vs_full": {role: incremental_vs_full(name, s["check_images"], s["check_candidates"])
                                           for role, name in s["models"].items()},
                   "da_train_step_vs_cpu": da_step_vs_cpu(),
                   "attack_chunk_determinism": attack_chunk_determinism(s)}
    correctness["ok"] = bool(all(v["ok"] for v in correctness["incremental_vs_full"].values())
                             and correctness["da_train_step_vs_cpu"]["ok"]
                             and correctness["attack_chunk_determinism"]["ok"])
    report["correctness"] = correctness
    log(f"correctness: {'ok' if correctness['ok'] else 'FAILED'} ({time.perf_counter() - start:.0f} s)")
    attack_rows = [row for role, name in s["models"].items() for row in attack_sweep(role, name, s, log)]
    train_rows = []
    for role, name in s["models"].items():
        for da in (False, True):
            rate = train_rate(name, da, s["train_batch"], s["train_steps"])
            train_rows.append({"model": role, "variant": name, "domain_adaptation": da,
                               "batch_size": s["train_batch"], "images_per_second": rate})
            log(f"train  {name:12s} {'DA' if da else 'regular':7s} batch {s['train_batch']}: {rate:10,.0f} images/s")
    scan = scan_rate(s)
    log("scan: jaxrobust.scan not installed" if scan is None else
        f"scan   convnet incremental: {scan['candidates_per_second']:12,.0f} candidates/s")
    rec = recommended(attack_rows)
    report["timings"] = {"attack": attack_rows, "train": train_rows, "scan": scan,
                         "attack_settings": {"population": s["population"], "generations": s["generations"],
                                             "images_per_measurement": "2 x tasks_per_call"}}
    report["recommended"] = rec
    report["goals"] = goals(rec, train_rows, quick)
    report["seconds"] = round(time.perf_counter() - start, 1)
    return report


def write_json(path: Path, report: dict) -> None:
    """Atomic: a temporary file in the same folder, renamed over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(report, handle, indent=1)
    os.replace(handle.name, path)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny settings (seconds to a minute on a CPU)")
    parser.add_argument("--out", type=Path, default=Path("device_check.json"), help="the JSON to write")
    args = parser.parse_args(argv)
    report = run_checks(args.quick)
    write_json(args.out, report)
    print(f"wrote {args.out} ({report['seconds']} s); correctness {'ok' if report['correctness']['ok'] else 'FAILED'}")
    print("recommended attack defaults on this device (attack.chunk_candidates, attack.tasks_per_call):")
    for model, per_evaluator in report["recommended"].items():
        for evaluator, best in per_evaluator.items():
            print(f"  {model:9s} {evaluator:11s} chunk_candidates={best['chunk_candidates']} "
                  f"tasks_per_call={best['tasks_per_call']}  ({best['candidates_per_second']:,.0f} candidates/s)")
    return report


if __name__ == "__main__":
    main()
