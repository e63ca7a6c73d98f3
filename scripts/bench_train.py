"""Benchmark: training-step throughput (images/s) at batch 128, regular and DA, as JSON.

    python scripts/bench_train.py [--quick] [--out bench_train.json]

For the ConvNet and ResNet18 it times jaxrobust's jitted train step (dataset on the device,
batch gathered by index, state donated, metrics kept on the device) and, when PyTorch is
installed, the same networks, optimiser (Adam, coupled L2) and losses (weighted CE, 19-kernel
MMD) in plain PyTorch, eager and under torch.compile, in the same process. A DA step forwards
128 Y10 + 128 Y1 images; images/s counts both. Speeds are reported as ratios to PyTorch
measured in the same run because this machine is shared and noisy. Both frameworks run with
freed host memory kept (jaxrobust.hostmem, which speeds PyTorch up as well);
JAXROBUST_KEEP_FREED_MEMORY=0 measures them under glibc's default malloc.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time

from jaxrobust import hostmem

HOST_MEMORY_KEPT = hostmem.keep_freed_memory()  # before JAX or PyTorch start threads; both run under it

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench_json import emit  # noqa: E402

from jaxrobust import losses, parallel, train  # noqa: E402
from jaxrobust.models import build_model, uses_dropout  # noqa: E402

H = W = 100
BATCH = 128


def jax_step_runner(name: str, domain_adaptation: bool, n_data: int = 512):
    """The compiled, warmed-up train step: `run(steps)` runs that many steps, returns s per step."""
    model = build_model(name)
    tx = train.make_optimizer(1e-5, 0.7, 0.8, 1e-8, 1e-4 if domain_adaptation else 1e-3)
    mesh = parallel.make_mesh()
    state = jax.jit(lambda k: train.create_state(model, tx, k, (H, W, 3)),
                    out_shardings=parallel.replicated(mesh))(jax.random.key(0))
    rng = np.random.default_rng(0)
    data = jax.device_put({"y10": rng.uniform(0.45, 0.9, (n_data, H, W, 3)).astype(np.float32),
                           "y1": rng.uniform(0.45, 0.9, (n_data, H, W, 3)).astype(np.float32),
                           "labels": rng.integers(0, 3, n_data).astype(np.int32)}, parallel.replicated(mesh))
    spec = train.StepSpec("mmd" if domain_adaptation else "none", 0.05, "biased", uses_dropout(name))
    weights = jnp.asarray(losses.class_weights(np.asarray(data["labels"])))
    step_fn = train.make_device_step(spec, weights, jax.random.key(1), mesh, n_data, BATCH)
    rows = train.epoch_rows(jax.random.key(2), 0, n_data, BATCH)
    # every argument on the same (committed) placement: mixing committed and uncommitted
    # arrays made the step 40 % slower on a CPU
    carry = [state, jax.device_put(train.zero_sums(), parallel.replicated(mesh))]

    def run(steps: int) -> float:
        start = time.perf_counter()
        for i in range(steps):
            carry[0], carry[1] = step_fn(carry[0], carry[1], data, rows, rows, np.int32(i % len(rows)))
        jax.block_until_ready(carry[1])
        return (time.perf_counter() - start) / steps

    run(3)  # compile, then let the allocator's heap grow to the step's peak
    return run


def jax_images_per_second(name: str, domain_adaptation: bool, steps: int, n_data: int = 512,
                          counters: dict | None = None) -> float:
    """images/s of the jitted train step; `counters`, if given, gets the page faults per timed step."""
    run = jax_step_runner(name, domain_adaptation, n_data)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    per_step = run(steps)
    if counters is not None:
        counters["page_faults_per_step"] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
    return BATCH * (2 if domain_adaptation else 1) / per_step


def torch_images_per_second(name: str, domain_adaptation: bool, steps: int, compiled: bool) -> float | str:
    try:
        import torch

        import _torch_reference as ref
    except ImportError:
        return "PyTorch is not installed"
    torch.manual_seed(0)
    model = ref.build(name).train()
    step = ref.train_step_fn(model, [1.0, 1.5, 2.0], domain_adaptation)
    if compiled:
        try:
            step = torch.compile(step)
        except Exception as err:  # needs a C++ toolchain
            return f"torch.compile failed: {type(err).__name__}"
    x = torch.rand(BATCH, 3, H, W)
    y = torch.randint(0, 3, (BATCH,))
    t = torch.rand(BATCH, 3, H, W) if domain_adaptation else None
    try:
        for _ in range(3):
            step(x, y, t).item()  # warm-up (and compile)
    except Exception as err:
        return f"failed: {type(err).__name__}: {str(err)[:150]}"
    start = time.perf_counter()
    for _ in range(steps):
        step(x, y, t).item()
    return BATCH * (2 if domain_adaptation else 1) * steps / (time.perf_counter() - start)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps")
    parser.add_argument("--models", default="convnet,resnet18")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    steps = {"convnet": 4 if args.quick else 12, "resnet18": 2 if args.quick else 4}
    result = {"benchmark": "train", "batch": BATCH, "backend": jax.default_backend(), "jax_version": jax.__version__,
              "devices": [str(d) for d in jax.devices()], "machine": platform.machine(), "cpu_count": os.cpu_count(),
              # JAXROBUST_KEEP_FREED_MEMORY=0 measures both frameworks under glibc's default malloc
              "host_memory_kept": HOST_MEMORY_KEPT}
    for name in args.models.split(","):
        entry = {}
        for da in (False, True):
            mode = "da" if da else "regular"
            row = {"jax": jax_images_per_second(name, da, steps[name])}
            if not args.no_torch:
                row["torch_eager"] = torch_images_per_second(name, da, steps[name], compiled=False)
                if not args.no_compile:
                    row["torch_compiled"] = torch_images_per_second(name, da, steps[name], compiled=True)
            for key in ("torch_eager", "torch_compiled"):
                if isinstance(row.get(key), float):
                    row[f"ratio_jax_over_{key}"] = row["jax"] / row[key]
            entry[mode] = row
        result[name] = entry
    return emit(result, args.out)


if __name__ == "__main__":
    main()
