"""Benchmark: the exhaustive one-pixel scan's throughput beside the incremental attack's, as JSON.

    python scripts/bench_scan.py [--images 150] [--resnet-images 2] [--colours corners] [--out bench_scan.json]

For the ConvNet and ResNet18 (random weights; the timing does not depend on them) it measures in
the same process:
  attack_incremental  the DE attack with the incremental evaluator (bench_attack.ours: population
                      400, no early stop), candidates per second
  scan                jaxrobust.scan over --images (ConvNet) / --resnet-images (ResNet18) images x
                      every pixel x the colour set, candidates per second, after one warm-up image
                      (compilation, reported apart) and one timed probe image that gives the ETA
                      printed before the timed run
plus the scan-to-attack rate ratio, the time of a 150-image scan at the measured rate, and an
accelerator estimate from the FLOP count: the scan's FLOPs (incremental ConvNet 0.46 MFLOP per
candidate, ResNet18 the 76 % of a forward its windows do not avoid) at --accelerator-tflops
(default 67: an H100 SXM's FP32 peak without tensor cores, NVIDIA's datasheet) times the
fraction of this machine's matmul peak the scan reaches here. Rates are ratios measured in the
same run: this machine is shared and noisy.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

from jaxrobust import hostmem

hostmem.keep_freed_memory()  # before JAX starts its threads

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench_json import emit  # noqa: E402

from bench_attack import (H, W, convnet_flops, incremental_flops, matmul_flops_per_second, ours,  # noqa: E402
                          random_variables, resnet18_flops)

from jaxrobust import incremental, scan  # noqa: E402
from jaxrobust.models import build_model  # noqa: E402

PAPER_IMAGES = 150  # the attack subsample (Ćiprijanović et al. 2022, section 4.1)


def flops_per_candidate(name: str) -> float:
    """FLOPs of one incremental candidate, counted from the layer shapes (bench_attack)."""
    if name == "convnet":
        return incremental_flops()
    return resnet18_flops() * (1 - incremental.resnet_flops_saved())


def bench_scan(evaluator, images: np.ndarray, colours: str, attack_rate: float) -> dict:
    """Warm-up (compile + 1 image), a timed probe image, the ETA, then the timed scan of all images.

    An ETA from the attack's rate (measured just before) is printed before anything runs."""
    labels = np.zeros(len(images), np.int32)
    colour_array = scan.colour_set(colours, images)
    per_image = H * W * colour_array.shape[1]
    print(f"  scan ETA at the attack's rate ({attack_rate:.0f} candidates/s): {per_image / attack_rate:.1f} s per "
          f"image, {(len(images) + 2) * per_image / attack_rate:.0f} s for warm-up, probe and {len(images)} images "
          "(plus compilation)", file=sys.stderr, flush=True)
    start = time.perf_counter()
    scan.scan_with_evaluator(evaluator, images[:1], labels[:1], colour_array[:1])
    warm = time.perf_counter() - start
    start = time.perf_counter()
    scan.scan_with_evaluator(evaluator, images[:1], labels[:1], colour_array[:1])
    probe = time.perf_counter() - start
    print(f"  scan: compile + first image {warm:.1f} s, one image {probe:.2f} s; "
          f"ETA for {len(images)} images: {probe * len(images):.0f} s", file=sys.stderr, flush=True)
    start = time.perf_counter()
    scan.scan_with_evaluator(evaluator, images, labels, colour_array)
    seconds = time.perf_counter() - start
    candidates = len(images) * H * W * colour_array.shape[1]
    return {"images": len(images), "colours": colours, "n_colours": int(colour_array.shape[1]),
            "candidates": candidates, "seconds": seconds, "candidates_per_second": candidates / seconds,
            "seconds_per_image": seconds / len(images), "compile_and_first_image_seconds": warm,
            "chunk": evaluator.chunk}


def bench_model(name: str, n_images: int, args, peak: float) -> dict:
    model = build_model(name)
    variables = random_variables(model, jax.random.key(0))
    images = np.asarray(jax.random.uniform(jax.random.key(1), (n_images, H, W, 3), minval=0.45, maxval=0.9),
                        np.float32)
    evaluator = incremental.IncrementalEvaluator(model, variables)  # the measured default chunk
    flops = flops_per_candidate(name)
    out = {"flops_per_candidate": flops, "flops_per_forward": convnet_flops() if name == "convnet" else resnet18_flops()}
    print(f"{name}: attack ({args.attack_images} images x {args.attack_generations} generations) ...",
          file=sys.stderr, flush=True)
    out["attack_incremental"] = ours(evaluator, images[: args.attack_images] if n_images >= args.attack_images
                                     else np.resize(images, (args.attack_images,) + images.shape[1:]),
                                     args.attack_generations, args.attack_images)
    print(f"{name}: scan ...", file=sys.stderr, flush=True)
    out["scan"] = bench_scan(evaluator, images, args.colours, out["attack_incremental"]["candidates_per_second"])
    rate = out["scan"]["candidates_per_second"]
    out["scan_to_attack_rate"] = rate / out["attack_incremental"]["candidates_per_second"]
    per_image = out["scan"]["candidates"] / n_images
    out["seconds_for_150_images"] = PAPER_IMAGES * per_image / rate
    fraction = rate * flops / peak
    out["fraction_of_matmul_peak"] = fraction
    accelerator_rate = args.accelerator_tflops * 1e12 * fraction / flops  # candidates per second
    out["accelerator_estimate"] = {
        "assumed_peak_tflops": args.accelerator_tflops, "assumed_fraction_of_peak": fraction,
        "candidates_per_second": accelerator_rate, "seconds_for_150_images": PAPER_IMAGES * per_image / accelerator_rate}
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=PAPER_IMAGES, help="ConvNet images to scan (default 150)")
    parser.add_argument("--resnet-images", type=int, default=2, help="ResNet18 images to scan (slow on a CPU)")
    parser.add_argument("--colours", default="corners", help="colour set: corners, minmax, grid:K or a file")
    parser.add_argument("--models", default="convnet,resnet18", help="comma-separated: convnet, resnet18")
    parser.add_argument("--attack-images", type=int, default=8, help="images in the attack measurement")
    parser.add_argument("--attack-generations", type=int, default=20, help="DE generations in the attack measurement")
    parser.add_argument("--accelerator-tflops", type=float, default=67.0,
                        help="FP32 peak of the accelerator to estimate for (H100 SXM: 67)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    peak = matmul_flops_per_second()
    result = {"benchmark": "scan", "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
              "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
              "matmul_gflops": peak / 1e9, "jax_version": jax.__version__, "args": vars(args)}
    for name in args.models.split(","):
        n = args.images if name == "convnet" else args.resnet_images
        result[name] = bench_model(name, n, args, peak)
    return emit(result, args.out, default=float)


if __name__ == "__main__":
    main()
