"""Benchmark: one-pixel certificates beside the 8-corner scan on the same images, as JSON.

    python scripts/bench_certify.py --run runs/quick/da --data runs/quick/data [--images 1] [--budget 2]
                                    [--no-radius] [--out docs/benchmarks/bench_certify.json]

On a trained ConvNet run (the bounds' difficulty depends on the trained weights, so random
weights would flatter them) it measures, in one process and on the same images of the run's
attack subsample:
  scan         the exhaustive scan with the 8 corner colours (the incremental evaluator),
               seconds per image after a warm-up image
  certify      per bound mode ("linear", "interval"): the whole-box pass only (no radius), after a
               warm-up on the first image: seconds per image, the fraction of pixels decided
               (certified + flippable), mean boxes per pixel, seconds per bounded box
  radius       the whole certificate with the radius (linear bounds): seconds per image
plus the ratios the goals are stated in: certificate time / scan time, and the cost of one
bounded box against one exact candidate evaluation of the scan. Every figure is a ratio
measured in the same run: this machine is shared and noisy.
"""
from __future__ import annotations

import argparse
import math
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

from jaxrobust import attack, certify, checkpoint, scan  # noqa: E402
from jaxrobust.data import load_prepared  # noqa: E402


def _finite(x) -> float | None:
    """A float for strict JSON: None where it is not finite (no radius searched)."""
    return float(x) if math.isfinite(float(x)) else None


def time_scan(model, variables, images, labels) -> dict:
    scan.scan_images(model, variables, images[:1], labels[:1], "corners")  # warm-up: compilation
    start = time.perf_counter()
    arrays = scan.scan_images(model, variables, images, labels, "corners")
    seconds = time.perf_counter() - start
    candidates = images.shape[0] * images.shape[1] * images.shape[2] * 8
    return {"seconds_per_image": seconds / len(images), "candidates_per_second": candidates / seconds,
            "flipping_pixels": arrays["flipping_pixels_any"].tolist()}


def time_certify(model, variables, images, labels, settings: certify.CertifySettings) -> dict:
    certify.certify_images(model, variables, images[:1], labels[:1], settings)  # warm-up: compilation
    start = time.perf_counter()
    out = certify.certify_images(model, variables, images, labels, settings)
    seconds = time.perf_counter() - start
    ok = out["correct"].astype(bool)
    counts = out["counts"][ok].sum(0)
    boxes = int(out["boxes"][ok].sum())
    return {"seconds_per_image": seconds / len(images), "certified": int(counts[0]), "flippable": int(counts[1]),
            "undecided": int(counts[2]), "decided_fraction": float((counts[0] + counts[1]) / max(counts.sum(), 1)),
            "undecided_volume": float(out["undecided_fraction"][ok].sum() / max(counts.sum(), 1)),
            "mean_boxes_per_pixel": float(out["boxes"][ok].mean()) if ok.any() else None,
            "seconds_per_box": seconds / max(boxes, 1),
            "radius": [_finite(r) for r in out["radius"]], "radius_upper": [_finite(r) for r in out["radius_upper"]],
            "radius_limited": out["radius_limited"].tolist()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a trained ConvNet run folder")
    parser.add_argument("--data", required=True, help="its dataset folder")
    parser.add_argument("--images", type=int, default=1, help="images of the attack subsample (default 1)")
    parser.add_argument("--budget", type=int, default=2, help="boxes per pixel on the whole box (default 2)")
    parser.add_argument("--radius-tolerance", type=float, default=1.0 / 64)
    parser.add_argument("--no-radius", action="store_true", help="skip the timing with the radius (the longest part)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    model, variables, config = checkpoint.load_variables(args.run)
    data = load_prepared(args.data, config)
    y10, _, labels, index = attack.attack_images(data, int(config.attack.n_images), int(config.seed))
    images, labels = np.asarray(y10[: args.images], np.float32), np.asarray(labels[: args.images], np.int32)
    result = {"run": str(args.run), "images": int(len(images)), "test_index": [int(i) for i in index[: args.images]],
              "budget": args.budget, "backend": jax.default_backend(), "machine": platform.machine(),
              "cpu_count": os.cpu_count()}
    result["scan"] = time_scan(model, variables, images, labels)
    print(f"scan: {result['scan']['seconds_per_image']:.1f} s per image", file=sys.stderr, flush=True)
    for mode in ("linear", "interval"):
        settings = certify.CertifySettings(max_boxes=args.budget, bounds=mode, radius=False)
        result[f"certify_{mode}"] = time_certify(model, variables, images, labels, settings)
        print(f"certify ({mode}, no radius): {result[f'certify_{mode}']['seconds_per_image']:.1f} s per image",
              file=sys.stderr, flush=True)
    scan_seconds = result["scan"]["seconds_per_image"]
    result["ratios"] = {
        "certify_linear_over_scan": result["certify_linear"]["seconds_per_image"] / scan_seconds,
        "certify_interval_over_scan": result["certify_interval"]["seconds_per_image"] / scan_seconds,
        "box_over_candidate": result["certify_linear"]["seconds_per_box"] * result["scan"]["candidates_per_second"],
    }
    if not args.no_radius:
        settings = certify.CertifySettings(max_boxes=args.budget, radius_tolerance=args.radius_tolerance)
        result["certify_with_radius"] = time_certify(model, variables, images, labels, settings)
        result["ratios"]["certify_with_radius_over_scan"] = result["certify_with_radius"]["seconds_per_image"] / scan_seconds
    return emit(result, args.out)


if __name__ == "__main__":
    main()
