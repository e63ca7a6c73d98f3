"""Where the incremental ConvNet evaluator's time goes, stage by stage, as JSON.

    python scripts/profile_incremental.py [--chunk 400] [--repeats 30] [--out profile_incremental.json]

One chunk of candidates (random genes over 16 task images, random weights with BatchNorm
statistics; the timing does not depend on them) is scored by jitted prefixes of
`incremental.candidate_logits`:
  conv1        cut the 10 x 10 image patch, set the pixel, conv1 + ReLU + pool (phase layout)
  conv2        + cut the pool1 patch, splice the new window in, conv2 + ReLU + pool
  conv3        + the same for conv3 (= `incremental.pool3_change`)
  head         + the logits from the window's rows of W_bottleneck W_head (= candidate_logits)
  dense_head   conv3's prefix + the step as it was before: the change placed in the whole
               4,608-wide feature vector, times the 4608 x 256 bottleneck, then the head
Each stage's time is the difference of consecutive prefixes; its FLOPs are counted from the
shapes as executed (conv1 in phase layout does 1.44x the FLOPs of the plain 5 x 5 conv that
bench_attack counts) and compared with this machine's matmul rate
(bench_attack.matmul_flops_per_second), measured in the same run.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench_json import emit  # noqa: E402
from bench_attack import H, W, conv_flops, matmul_flops_per_second, random_variables  # noqa: E402

from jaxrobust import incremental  # noqa: E402
from jaxrobust.candidates import decode  # noqa: E402
from jaxrobust.models import build_model  # noqa: E402
from jaxrobust.models import folded as folded_lib  # noqa: E402
from jaxrobust.models.conv import xla_conv  # noqa: E402
from jaxrobust.models.convnet import space_to_depth  # noqa: E402

TASKS = 16  # attack.tasks_per_call
WINDOW = incremental.WINDOW


def window_stages(folded, cache, task, genes, stages: int):
    """The first `stages` (1-3) window stages of incremental.pool3_change for one candidate."""
    (_, b1), (w2, b2), (w3, b3) = folded["conv"]
    row, col, rgb = decode(genes, H, W)
    zero = jnp.int32(0)
    n1, n2, n3 = cache["pool1"].shape[1] - 2, cache["pool2"].shape[1] - 2, cache["pool3"].shape[1]
    o1r = jnp.clip(jnp.floor_divide(row - 2, 2), 0, n1 - WINDOW)
    o1c = jnp.clip(jnp.floor_divide(col - 2, 2), 0, n1 - WINDOW)
    patch = jax.lax.dynamic_slice(cache["image"], (task, 2 * o1r, 2 * o1c, zero), (1, 10, 10, 3))[0]
    i = jnp.arange(10)
    hit = (i[:, None] == row + 2 - 2 * o1r) & (i[None, :] == col + 2 - 2 * o1c)
    patch = space_to_depth(jnp.where(hit[..., None], rgb, patch)[None])
    out = folded_lib.phase_max_block(xla_conv(patch, folded["conv1_phase"], (1, 1), "VALID"), b1)[0]
    origins = (o1r, o1c)
    for stage, (w, b, source, n_next) in enumerate(((w2, b2, "pool1", n2), (w3, b3, "pool2", n3)), start=2):
        if stages < stage:
            break
        o_r, o_c = incremental._next_origin(origins[0], n_next), incremental._next_origin(origins[1], n_next)
        patch = jax.lax.dynamic_slice(cache[source], (task, 2 * o_r, 2 * o_c, zero), (1, 8, 8, w.shape[2]))[0]
        patch = incremental._splice(patch, out, origins[0] + 1 - 2 * o_r, origins[1] + 1 - 2 * o_c)
        out = folded_lib.conv_block(patch[None], w, b, 0)[0]
        origins = (o_r, o_c)
    if stages == 3:
        old = jax.lax.dynamic_slice(cache["pool3"], (task, *origins, zero), (1, WINDOW, WINDOW, w3.shape[3]))[0]
        return out - old, origins
    return out, origins


def dense_head(folded, cache, tasks, genes):
    """Step 4 as it was: the change in the full (12, 12, 32) grid, through the whole bottleneck."""
    change, rows, cols = jax.vmap(lambda t, g: incremental.pool3_change(folded, cache, t, g))(tasks, genes)
    n3, channels = cache["pool3"].shape[1], cache["pool3"].shape[3]
    grid = jax.vmap(lambda d, r, c: incremental._splice(jnp.zeros((n3, n3, channels), d.dtype), d, r, c))(
        change, rows, cols)
    wb, bb = folded["bottleneck"]
    wh, bh = folded["head"]
    latent = cache["pool3"][tasks].reshape(len(tasks), -1) @ wb + bb + grid.reshape(len(tasks), -1) @ wb
    return latent @ wh + bh


def timed(fn, args, repeats: int) -> float:
    """Best of `repeats` mean times of 5 back-to-back calls (seconds)."""
    jax.block_until_ready(fn(*args))
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(5):
            out = fn(*args)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / 5)
    return best


def stage_flops() -> dict:
    w = 2 * WINDOW
    phase_conv1 = 2 * WINDOW * WINDOW * 32 * 3 * 3 * 12  # 3x3 blocks x (4 phases x 8) x 3x3 x 12
    return {"conv1": phase_conv1, "conv2": conv_flops(w, w, 16, 3, 8), "conv3": conv_flops(w, w, 32, 3, 16),
            "head": 2 * WINDOW * WINDOW * 32 * 3, "dense_head": 2 * 12 * 12 * 32 * 256 + 2 * 256 * 3}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk", type=int, default=400, help="candidates per call (the CPU default chunk)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    model = build_model("convnet")
    variables = random_variables(model, jax.random.key(0))
    evaluator = incremental.IncrementalEvaluator(model, variables, args.chunk)
    images = jax.random.uniform(jax.random.key(1), (TASKS, H, W, 3), minval=0.45, maxval=0.9)
    cache = jax.jit(evaluator.prepare)(images)
    rng = np.random.default_rng(0)
    genes = jnp.asarray(rng.uniform(0, 1, (args.chunk, 5)), jnp.float32)
    tasks = jnp.asarray(rng.integers(0, TASKS, args.chunk), jnp.int32)
    folded = evaluator.folded

    def prefix(stages):
        return jax.jit(jax.vmap(lambda c, t, g: window_stages(folded, c, t, g, stages)[0], in_axes=(None, 0, 0)))

    programs = {"conv1": prefix(1), "conv2": prefix(2), "conv3": prefix(3),
                "head": jax.jit(lambda c, t, g: incremental.candidate_logits(folded, c, t, g)),
                "dense_head": jax.jit(lambda c, t, g: dense_head(folded, c, t, g))}
    new, before = (np.asarray(programs[k](cache, tasks, genes)) for k in ("head", "dense_head"))
    seconds = {name: timed(fn, (cache, tasks, genes), args.repeats) for name, fn in programs.items()}
    peak = matmul_flops_per_second()
    flops = stage_flops()
    previous = {"conv1": None, "conv2": "conv1", "conv3": "conv2", "head": "conv3", "dense_head": "conv3"}
    stages = {}
    for name, before_name in previous.items():
        own = seconds[name] - (seconds[before_name] if before_name else 0.0)
        stages[name] = {"ms_per_chunk": round(1e3 * own, 3), "flops_per_candidate": flops[name],
                        "gflops": round(flops[name] * args.chunk / max(own, 1e-9) / 1e9, 1)}
    total_new, total_before = seconds["head"], seconds["dense_head"]
    per_candidate_new = sum(flops[k] for k in ("conv1", "conv2", "conv3", "head"))
    emit({"chunk": args.chunk, "tasks": TASKS, "matmul_gflops": round(peak / 1e9, 1), "stages": stages,
          "max_abs_logit_difference_new_vs_dense": float(np.abs(new - before).max()),
          "candidates_per_second": {"folded_head": args.chunk / total_new, "dense_head": args.chunk / total_before},
          "speedup_folded_over_dense": total_before / total_new,
          "flops_per_candidate": per_candidate_new,
          "fraction_of_flop_floor": args.chunk / total_new * per_candidate_new / peak}, args.out)


if __name__ == "__main__":
    main()
