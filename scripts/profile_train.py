"""Where a train step's time goes: the XLA ops of warm steps, summed and joined to their source.

    python scripts/profile_train.py [--model convnet] [--da] [--steps 5] [--top 25] [--out prof.json]

Runs the benchmark's jitted train step (batch 128, scripts/bench_train.py's setup), traces
`--steps` warm steps with jax.profiler, and sums the time of each XLA op (a fusion, a
convolution, a dot) over them. Each op is joined to the source line and JAX op name recorded in
the compiled module's metadata (from an `--xla_dump_to` dump), so a row reads "fusion.12,
8.1 ms/step, conv_general_dilated transpose(jvp(...)) at models/conv.py:57". Ops run
concurrently on a CPU, so the rows can add up to more than the wall time of a step: read them
as "what is busy", then confirm a lead with an isolated benchmark.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

DUMP_DIR = tempfile.mkdtemp(prefix="jaxrobust_dump_")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to={DUMP_DIR}"
                           " --xla_dump_hlo_module_re=.*device_step.*").strip()

from jaxrobust import hostmem  # noqa: E402

hostmem.keep_freed_memory()

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_train  # noqa: E402  (same model, data and step as the benchmark)

_INSTR = re.compile(r"^\s*(?:ROOT\s+)?(%?[\w.\-]+) = .*?metadata=\{([^}]*)\}")
_META = re.compile(r'(op_name|source_file|source_line)=("([^"]*)"|(\d+))')


def op_sources(dump_dir: str) -> dict[str, str]:
    """HLO instruction name -> 'op_name at file:line' from the after-optimisation dump."""
    files = sorted(glob.glob(os.path.join(dump_dir, "*device_step*cpu_after_optimizations.txt")))
    sources: dict[str, str] = {}
    for path in files[-1:]:
        with open(path) as f:
            for line in f:
                m = _INSTR.match(line)
                if not m:
                    continue
                meta = {k: (v3 or v4) for k, _, v3, v4 in _META.findall(m.group(2))}
                where = f"{os.path.basename(meta.get('source_file', '?'))}:{meta.get('source_line', '?')}"
                sources[m.group(1).lstrip("%")] = f"{meta.get('op_name', '?')} at {where}"
    return sources


def op_times_ms(trace_dir: str) -> dict[str, float]:
    """Total duration (ms) of each named event in the perfetto trace under `trace_dir`."""
    [path] = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
    with gzip.open(path) as f:
        events = json.load(f)["traceEvents"]
    totals: dict[str, float] = collections.defaultdict(float)
    for e in events:
        if e.get("ph") == "X" and "dur" in e:
            totals[e["name"]] += e["dur"] / 1000.0
    return totals


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="convnet", help="convnet or resnet18 (default convnet)")
    parser.add_argument("--da", action="store_true", help="profile the domain-adaptation step")
    parser.add_argument("--steps", type=int, default=5, help="warm steps traced (default 5)")
    parser.add_argument("--top", type=int, default=25, help="rows printed (default 25)")
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args(argv)

    bench_train.jax_images_per_second(args.model, args.da, steps=2)  # compile and warm
    trace_dir = tempfile.mkdtemp(prefix="jaxrobust_trace_")
    start = time.perf_counter()
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        images_per_s = bench_train.jax_images_per_second(args.model, args.da, steps=args.steps)
    del start
    totals = op_times_ms(trace_dir)
    sources = op_sources(DUMP_DIR)
    steps_traced = args.steps + 3  # jax_images_per_second runs 3 warm-up steps before timing
    rows = [{"op": name, "ms_per_step": ms / steps_traced, "source": sources[name]}
            for name, ms in totals.items() if name in sources]
    rows.sort(key=lambda r: -r["ms_per_step"])
    busy = sum(r["ms_per_step"] for r in rows)
    report = {"model": args.model, "domain_adaptation": args.da, "images_per_s": images_per_s,
              "step_ms": 1000 * bench_train.BATCH * (2 if args.da else 1) / images_per_s,
              "op_ms_per_step_total": busy, "rows": rows[: args.top]}
    print(f"{args.model} {'DA' if args.da else 'regular'}: {images_per_s:.0f} images/s, "
          f"{report['step_ms']:.0f} ms/step; ops busy {busy:.0f} ms/step")
    for r in rows[: args.top]:
        print(f"{r['ms_per_step']:8.2f} ms  {r['op']:<28} {r['source'][:150]}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
