"""Benchmark: the pieces of a train step that jaxrobust rewrote for the CPU, old way vs new, as JSON.

    python scripts/bench_train_parts.py [--quick] [--parts conv,patches,mmd,faults] [--out parts.json]

- conv: the kernel gradient (forward + dK) of every convolution shape in the ConvNet and
  ResNet18 at batch 128, XLA's own (`weight_grad="xla"`) against the patches product
  (`"patches"`, the CPU default), ms and their ratio.
- patches: building those patches (`conv.conv_patches`, the taps stacked on a new axis) against
  concatenating the taps along channels (the previous way; the same array), ms and their ratio.
- mmd: the gradient of the 19-kernel MMD of 128 + 128 latents (256-d), autodiff through the
  explicit differences against the written-out gradient (`losses.self_sq_distances`).
- faults: page faults and images/s of the ConvNet train step with freed host memory kept
  (jaxrobust.hostmem) and with glibc's default, each in a fresh process.
Each comparison is timed in one run (best of several repetitions): the machine is shared.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from jaxrobust import hostmem

HOST_MEMORY_KEPT = hostmem.keep_freed_memory()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxrobust import losses  # noqa: E402
from jaxrobust.models.conv import conv2d, conv_patches  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # scripts/ helpers
from _bench_json import emit  # noqa: E402

# (name, input H = W, C_in, C_out, kernel, stride, padding): the networks' convolutions at 100 x 100
CONV_SHAPES = (("convnet conv1 (2x2 blocks)", 50, 12, 32, 3, 1, (1, 1)),
               ("convnet conv2", 50, 8, 16, 3, 1, (1, 1)),
               ("convnet conv3", 25, 16, 32, 3, 1, (1, 1)),
               ("resnet stem (2x2 blocks)", 50, 12, 64, 4, 1, (1, 2)),
               ("resnet stage 1", 25, 64, 64, 3, 1, (1, 1)),
               ("resnet stage 2 first", 25, 64, 128, 3, 2, (1, 1)),
               ("resnet stage 2 shortcut", 25, 64, 128, 1, 2, (0, 0)),
               ("resnet stage 2", 13, 128, 128, 3, 1, (1, 1)),
               ("resnet stage 3", 7, 256, 256, 3, 1, (1, 1)),
               ("resnet stage 4", 4, 512, 512, 3, 1, (1, 1)))


def best_ms(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def conv_part(batch: int, repeats: int) -> list[dict]:
    rows = []
    key = jax.random.key(0)
    for name, size, c_in, c_out, k, stride, pad in CONV_SHAPES:
        x = jax.random.normal(key, (batch, size, size, c_in))
        kernel = 0.1 * jax.random.normal(jax.random.fold_in(key, 1), (k, k, c_in, c_out))
        row = {"conv": name, "input": [batch, size, size, c_in], "kernel": [k, k, c_in, c_out], "stride": stride}
        for mode in ("xla", "patches"):
            def loss(w, images, mode=mode):
                return 0.5 * jnp.sum(conv2d(images, w, (stride, stride), (pad, pad), mode) ** 2)

            row[f"{mode}_forward_and_kernel_grad_ms"] = best_ms(jax.jit(jax.grad(loss)), kernel, x, repeats=repeats)
        row["ratio_xla_over_patches"] = row["xla_forward_and_kernel_grad_ms"] / row["patches_forward_and_kernel_grad_ms"]
        rows.append(row)
        print(f"{name:28s} xla {row['xla_forward_and_kernel_grad_ms']:7.1f} ms  patches "
              f"{row['patches_forward_and_kernel_grad_ms']:7.1f} ms", file=sys.stderr, flush=True)
    return rows


def concatenated_patches(x, kernel_hw, strides, padding):
    """conv_patches' array, built the previous way: the taps concatenated along channels."""
    (kh, kw), (sh, sw) = kernel_hw, strides
    xp = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    n, hp, wp, c = xp.shape
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    return jnp.concatenate([xp[:, i:i + (ho - 1) * sh + 1:sh, j:j + (wo - 1) * sw + 1:sw]
                            for i in range(kh) for j in range(kw)], axis=-1)


def patches_part(batch: int, repeats: int) -> list[dict]:
    rows = []
    for name, size, c_in, _, k, stride, pad in CONV_SHAPES:
        if k == 1:
            continue  # a 1x1 conv's patches are its (strided) input
        x = jax.random.normal(jax.random.key(0), (batch, size, size, c_in))
        args = ((k, k), (stride, stride), (pad, pad))
        stacked = jax.jit(lambda a: conv_patches(a, *args))
        concatenated = jax.jit(lambda a: concatenated_patches(a, *args))
        if not bool(jnp.array_equal(stacked(x), concatenated(x))):
            raise AssertionError(f"{name}: stacked and concatenated patches differ")
        row = {"conv": name, "input": [batch, size, size, c_in], "kernel": [k, k],
               "stacked_ms": best_ms(stacked, x, repeats=repeats),
               "concatenated_ms": best_ms(concatenated, x, repeats=repeats)}
        row["ratio_concatenated_over_stacked"] = row["concatenated_ms"] / row["stacked_ms"]
        rows.append(row)
        print(f"{name:28s} patches stacked {row['stacked_ms']:7.1f} ms  concatenated {row['concatenated_ms']:7.1f} ms",
              file=sys.stderr, flush=True)
    return rows


def mmd_part(repeats: int) -> dict:
    rng = np.random.default_rng(0)
    source = jnp.asarray(rng.normal(size=(128, 256)), jnp.float32)
    target = jnp.asarray(rng.normal(size=(128, 256)), jnp.float32)

    def autodiff_mmd(a, b):  # the same estimator, distances differentiated by autodiff
        joint = jnp.concatenate([a, b])
        w = jnp.concatenate([jnp.full(a.shape[0], 1.0 / a.shape[0]), jnp.full(b.shape[0], -1.0 / b.shape[0])])
        kernel = losses.rbf_kernel_sum(losses.pairwise_sq_distances(joint, joint))
        return jnp.maximum(jnp.sum(w[:, None] * w[None, :] * kernel), losses.MMD_FLOOR)

    old = best_ms(jax.jit(jax.grad(autodiff_mmd, argnums=(0, 1))), source, target, repeats=repeats)
    new = best_ms(jax.jit(jax.grad(losses.mmd, argnums=(0, 1))), source, target, repeats=repeats)
    return {"latents": [128, 128, 256], "autodiff_ms": old, "written_out_ms": new, "ratio": old / new}


def faults_child(steps: int) -> dict:
    """One ConvNet train step loop in this process: page faults per step and images/s."""
    import bench_train  # scripts/ is on sys.path (module top)

    counters = {}
    images_per_second = bench_train.jax_images_per_second("convnet", False, steps, counters=counters)
    return {"host_memory_kept": HOST_MEMORY_KEPT, "images_per_second": images_per_second, **counters}


def faults_part(steps: int) -> dict:
    result = {}
    for label, value in (("kept", "1"), ("default", "0")):
        done = subprocess.run([sys.executable, os.path.abspath(__file__), "--faults-child", str(steps)],
                              env=dict(os.environ, JAXROBUST_KEEP_FREED_MEMORY=value),
                              capture_output=True, text=True, check=True)
        result[label] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batch 16 convolutions, fewer repetitions and steps")
    parser.add_argument("--parts", default="conv,patches,mmd,faults", help="comma-separated (default: all)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--faults-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.faults_child is not None:
        print(json.dumps(faults_child(args.faults_child)))
        return {}
    parts = args.parts.split(",")
    unknown = set(parts) - {"conv", "patches", "mmd", "faults"}
    if unknown:
        parser.error(f"--parts: unknown {sorted(unknown)}; choose from conv, patches, mmd, faults")
    repeats = 2 if args.quick else 5
    result = {"benchmark": "train_parts", "backend": jax.default_backend(), "jax_version": jax.__version__,
              "cpu_count": os.cpu_count(), "host_memory_kept": HOST_MEMORY_KEPT}
    if "conv" in parts:
        result["conv_kernel_grad"] = conv_part(16 if args.quick else 128, repeats)
    if "patches" in parts:
        result["conv_patches"] = patches_part(16 if args.quick else 128, repeats)
    if "mmd" in parts:
        result["mmd_grad"] = mmd_part(repeats)
    if "faults" in parts:
        result["convnet_step_host_memory"] = faults_part(3 if args.quick else 10)
    return emit(result, args.out)


if __name__ == "__main__":
    main()
