"""Benchmark: one-pixel attack throughput (candidate evaluations per second), as JSON.

    python scripts/bench_attack.py [--quick] [--out bench_attack.json]

For the ConvNet and ResNet18 (random weights; the timing does not depend on them), population
400, no early stop (the success threshold is unreachable), it measures in the same run:
  ours_full         jaxrobust's batched DE, every candidate a full forward pass (BN folded)
  ours_incremental  the same with the exact incremental evaluator (ConvNet)
  jax_paper_loop    the paper's structure: one batch-1 forward per candidate, Python loop
  jax_batched       one image at a time, the population batched in one forward per generation
  torch_*           the same two baselines in PyTorch eager, and batched under torch.compile
plus the machine's matmul FLOP/s and the fraction of the full-forward FLOP floor reached
(25.9 MFLOP per ConvNet forward, 883 MFLOP per ResNet18 forward, counted from the layer shapes).
Rates are ratios to baselines measured in the same process: this machine is shared and noisy.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

from jaxrobust import hostmem

hostmem.keep_freed_memory()  # before JAX or PyTorch start threads; both run under it

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench_json import emit  # noqa: E402

from jaxrobust import attack, incremental  # noqa: E402
from jaxrobust.candidates import FullEvaluator, logits_function, perturb  # noqa: E402
from jaxrobust.models import build_model  # noqa: E402

H = W = 100
POPULATION = 400


# --- FLOP counts from the layer shapes ---
def conv_flops(out_h, out_w, c_out, k, c_in):
    return 2 * out_h * out_w * c_out * k * k * c_in


def convnet_flops() -> float:
    return (conv_flops(100, 100, 8, 5, 3) + conv_flops(50, 50, 16, 3, 8) + conv_flops(25, 25, 32, 3, 16)
            + 2 * 4608 * 256 + 2 * 256 * 3)


def resnet18_flops() -> float:
    total = conv_flops(50, 50, 64, 7, 3)
    size, c_in = 25, 64
    for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        out = -(-size // stride)
        total += conv_flops(out, out, c_out, 3, c_in) + conv_flops(out, out, c_out, 3, c_out)  # block 1
        if stride != 1 or c_in != c_out:
            total += conv_flops(out, out, c_out, 1, c_in)
        total += 2 * conv_flops(out, out, c_out, 3, c_out)  # block 2
        size, c_in = out, c_out
    return total + 2 * 512 * 256 + 2 * 256 * 3


def incremental_flops() -> float:
    """Counted per candidate: three 6x6 conv windows, then the 3x3x32 change times the window's
    rows of W_bottleneck W_head (the bottleneck and head folded into one 4608 x 3 map)."""
    w = incremental.WINDOW
    return (conv_flops(2 * w, 2 * w, 8, 5, 3) + conv_flops(2 * w, 2 * w, 16, 3, 8) + conv_flops(2 * w, 2 * w, 32, 3, 16)
            + 2 * w * w * 32 * 3)


def matmul_flops_per_second(n: int = 2048, repeats: int = 5) -> float:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = min(_timed(lambda: f(a).block_until_ready()) for _ in range(repeats))
    return 2 * n ** 3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --- Our attack ---
def ours(evaluator, images, generations: int, tasks_per_call: int) -> dict:
    spec = attack.AttackSpec(population=POPULATION, max_generations=generations, target_threshold=2.0,
                             block_generations=min(8, max(generations, 1)), tasks_per_call=tasks_per_call,
                             chunk_candidates=evaluator.chunk)
    n = len(images)
    objective, ids = np.ones(n, np.int32), np.arange(n)
    warm = attack.AttackSpec(**{**spec.__dict__, "max_generations": 1})
    attack.run_attack(evaluator, images, objective, ids, jax.random.key(0), warm, True, progress=False)  # compile
    seconds = _timed(lambda: attack.run_attack(evaluator, images, objective, ids, jax.random.key(1), spec, True,
                                               progress=False))
    evaluations = n * POPULATION * (generations + 1)
    return {"candidates_per_second": evaluations / seconds, "seconds_per_image": seconds / n,
            "images": n, "generations": generations, "seconds": seconds}


# --- JAX baselines ---
def jax_paper_loop(logits_fn, image, candidates: int) -> dict:
    """Batch-1 forward per candidate from a Python loop (onepixel_attack.py `evaluate`)."""
    forward = jax.jit(lambda img, g: jax.nn.softmax(logits_fn(perturb(img[None], g[None])))[0])
    genes = np.asarray(attack.init_population(jax.random.key(0), candidates))
    img = jnp.asarray(image)
    forward(img, jnp.asarray(genes[0])).block_until_ready()
    seconds = _timed(lambda: [float(forward(img, jnp.asarray(g))[1]) for g in genes])
    return {"candidates_per_second": candidates / seconds}


def jax_batched(logits_fn, image, generations: int) -> dict:
    """One image; each generation's population in one jitted forward, DE in NumPy (the peers)."""
    forward = jax.jit(lambda img, g: jax.nn.softmax(logits_fn(perturb(jnp.broadcast_to(img, (len(g),) + img.shape), g)))[:, 1])
    img = jnp.asarray(image)
    rng = np.random.default_rng(0)
    genes = np.array(attack.init_population(jax.random.key(0), POPULATION))
    forward(img, jnp.asarray(genes)).block_until_ready()

    def run():
        nonlocal genes
        fitness = np.array(forward(img, jnp.asarray(genes)))
        for _ in range(generations):
            idx = np.array([rng.choice(POPULATION, 3, replace=False) for _ in range(POPULATION)])
            child = genes[idx[:, 0]] + 0.5 * (genes[idx[:, 1]] - genes[idx[:, 2]])
            bad = (child < 0) | (child > 1)
            child[bad] = rng.random(bad.sum())
            child_fit = np.asarray(forward(img, jnp.asarray(child)))
            better = child_fit > fitness
            genes[better], fitness[better] = child[better], child_fit[better]

    seconds = _timed(run)
    return {"candidates_per_second": POPULATION * (generations + 1) / seconds}


# --- PyTorch baselines ---
def torch_baselines(name: str, image: np.ndarray, loop_candidates: int, batched_generations: int) -> dict:
    try:
        import torch

        import _torch_reference as ref
    except ImportError:
        return {"skipped": "PyTorch is not installed"}
    torch.manual_seed(0)
    model = ref.build(name).eval()
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    genes = np.random.default_rng(0).random((max(loop_candidates, POPULATION), 5)).astype(np.float32)

    def perturbed(batch_genes):
        imgs = x.unsqueeze(0).repeat(len(batch_genes), 1, 1, 1)
        rows = np.clip(np.round(batch_genes[:, 0] * H), 0, H - 1).astype(int)
        cols = np.clip(np.round(batch_genes[:, 1] * W), 0, W - 1).astype(int)
        imgs[np.arange(len(batch_genes)), :, rows, cols] = torch.from_numpy(np.clip(batch_genes[:, 2:], 0, 1))
        return imgs

    out = {"torch_version": torch.__version__, "threads": torch.get_num_threads()}
    with torch.no_grad():
        def loop():
            for g in genes[:loop_candidates]:
                torch.softmax(model(perturbed(g[None]))[1], 1)[0, 1].item()
        loop()
        out["torch_paper_loop"] = {"candidates_per_second": loop_candidates / _timed(loop)}

        def batched(fn):
            def run():
                for _ in range(batched_generations + 1):
                    torch.softmax(fn(perturbed(genes[:POPULATION]))[1], 1)[:, 1].numpy()
            run()
            return {"candidates_per_second": POPULATION * (batched_generations + 1) / _timed(run)}

        out["torch_batched"] = batched(model)
        try:
            compiled = torch.compile(model)
            out["torch_compiled_batched"] = batched(compiled)
        except Exception as err:  # torch.compile needs a C++ toolchain and may fail
            out["torch_compiled_batched"] = {"skipped": f"{type(err).__name__}: {str(err)[:200]}"}
    return out


def random_variables(model, key):
    variables = model.init({"params": key, "dropout": key}, jnp.zeros((1, H, W, 3)))
    return variables


def bench_model(name: str, args, peak: float) -> dict:
    model = build_model(name)
    variables = random_variables(model, jax.random.key(0))
    images = np.asarray(jax.random.uniform(jax.random.key(1), (args.images[name], H, W, 3), minval=0.45, maxval=0.9))
    gens = args.generations[name]
    flops = convnet_flops() if name == "convnet" else resnet18_flops()
    floor = peak / flops
    out = {"flops_per_forward": flops, "full_forward_floor_candidates_per_second": floor}
    full = FullEvaluator(logits_function(model, variables))  # the measured default chunk
    out["ours_full"] = ours(full, images, gens, args.images[name])
    out["ours_full"]["fraction_of_floor"] = out["ours_full"]["candidates_per_second"] / floor
    if incremental.supports(model):
        inc = incremental.IncrementalEvaluator(model, variables)  # the measured default chunk
        out["ours_incremental"] = ours(inc, images, gens, args.images[name])
        counted = incremental_flops() if name == "convnet" else flops * (1 - incremental.resnet_flops_saved())
        out["ours_incremental"]["flops_per_candidate"] = counted
        out["ours_incremental"]["fraction_of_flops_saved"] = 1 - counted / flops
        out["ours_incremental"]["times_full_forward_floor"] = out["ours_incremental"]["candidates_per_second"] / floor
    logits_fn = logits_function(model, variables)
    out["jax_paper_loop"] = jax_paper_loop(logits_fn, images[0], args.loop_candidates[name])
    out["jax_batched"] = jax_batched(logits_fn, images[0], args.batched_generations[name])
    if not args.no_torch:
        out.update(torch_baselines(name, images[0], args.loop_candidates[name], args.batched_generations[name]))
    best = max(v["candidates_per_second"] for k, v in out.items() if k.startswith("ours") and isinstance(v, dict))
    out["speedup_vs_paper_loop"] = {k: best / v["candidates_per_second"] for k, v in out.items()
                                    if isinstance(v, dict) and "loop" in k and "candidates_per_second" in v}
    out["speedup_vs_torch_compiled"] = (best / out["torch_compiled_batched"]["candidates_per_second"]
                                        if "candidates_per_second" in out.get("torch_compiled_batched", {}) else None)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few generations and images (a minute or two)")
    parser.add_argument("--models", default="convnet,resnet18", help="comma-separated: convnet, resnet18")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch baselines")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    q = args.quick
    args.images = {"convnet": 4 if q else 8, "resnet18": 1}
    args.generations = {"convnet": 3 if q else 80, "resnet18": 1 if q else 4}
    args.loop_candidates = {"convnet": 200 if q else 800, "resnet18": 20 if q else 100}
    args.batched_generations = {"convnet": 2 if q else 10, "resnet18": 0 if q else 2}
    peak = matmul_flops_per_second()
    result = {"benchmark": "attack", "quick": q, "population": POPULATION, "backend": jax.default_backend(),
              "devices": [str(d) for d in jax.devices()], "machine": platform.processor() or platform.machine(),
              "cpu_count": os.cpu_count(), "matmul_gflops": peak / 1e9,
              "jax_version": jax.__version__}
    for name in args.models.split(","):
        result[name] = bench_model(name, args, peak)
    return emit(result, args.out, default=float)


if __name__ == "__main__":
    main()
