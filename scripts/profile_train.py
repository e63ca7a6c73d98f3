"""Where a train step's time goes: the XLA ops of warm steps, summed and joined to their source.

    python scripts/profile_train.py [--model convnet] [--da] [--steps 5] [--top 25] [--torch] [--out prof.json]

Runs the benchmark's jitted train step (batch 128, scripts/bench_train.py's setup), traces
`--steps` warm steps with jax.profiler, and sums the time of each XLA op (a fusion, a
convolution, a dot) over them. Each op is joined to the JAX op name recorded in the compiled
module's metadata (from an `--xla_dump_to` dump; the source line too when XLA records one), so a
row reads "dot_general.41, 38 ms/step, .../transpose(jvp(ConvNet))/.../conv1/dot_general". Ops run
concurrently on a CPU, so the rows can add up to more than the wall time of a step: read them
as "what is busy", then confirm a lead with an isolated benchmark.

Ops are also summed by kind: "conv_matmul" (convolutions and matrix products, or fusions
containing one) and "other" (batch norm, activations, pooling, the optimiser, ...). With
`--torch`, the same step in eager PyTorch (scripts/_torch_reference.py) is profiled in the same
run with torch.profiler and summed the same way (its convolution, linear and matrix-product
operators, self time), so the two frameworks' kernels can be set side by side.
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

if __name__ == "__main__":  # before JAX starts: dump the compiled train step (imported, e.g. by tests: no dump)
    DUMP_DIR = tempfile.mkdtemp(prefix="jaxrobust_dump_")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to={DUMP_DIR}"
                               " --xla_dump_hlo_module_re=.*device_step.*").strip()

from jaxrobust import hostmem  # noqa: E402

if __name__ == "__main__":
    hostmem.keep_freed_memory()

import jax  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_train  # noqa: E402  (same model, data and step as the benchmark)

_INSTR = re.compile(r"^\s*(?:ROOT\s+)?(%?[\w.\-]+) = .*?metadata=\{([^}]*)\}")
_ANY_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+) = [^ ]+ (\w[\w-]*)\(")
_COMPUTATION = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+) .*\{\s*$")
_CALLS = re.compile(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)")
CONV_MATMUL_OPCODES = {"convolution", "dot"}
_META = re.compile(r'(op_name|source_file|source_line)=("([^"]*)"|(\d+))')


def _dump_text(dump_dir: str) -> list[str]:
    files = sorted(glob.glob(os.path.join(dump_dir, "*device_step*cpu_after_optimizations.txt")))
    if not files:
        raise FileNotFoundError(f"no after-optimisation dump of the train step under {dump_dir}")
    with open(files[-1]) as f:
        return f.readlines()


def op_sources(lines: list[str]) -> dict[str, str]:
    """HLO instruction name -> its JAX op name (and source line, when recorded) from the dump."""
    sources: dict[str, str] = {}
    for line in lines:
        m = _INSTR.match(line)
        if m:
            meta = {k: (v3 or v4) for k, _, v3, v4 in _META.findall(m.group(2))}
            where = f" at {os.path.basename(meta['source_file'])}:{meta.get('source_line', '?')}" if "source_file" in meta else ""
            sources[m.group(1).lstrip("%")] = meta.get("op_name", "?") + where
    return sources


def conv_matmul_ops(lines: list[str]) -> set[str]:
    """Instructions of an HLO text that are, or call a computation holding, a convolution or dot."""
    body: dict[str, list[tuple[str, str, list[str]]]] = collections.defaultdict(list)
    computation = None
    for line in lines:
        m = _ANY_INSTR.match(line)
        if m and computation:
            body[computation].append((m.group(1), m.group(2), _CALLS.findall(line)))
        elif (head := _COMPUTATION.match(line)) and " = " not in line:
            computation = head.group(1)

    holding: dict[str, bool] = {}

    def holds(comp: str) -> bool:
        if comp not in holding:
            holding[comp] = False  # no recursion through a cycle
            holding[comp] = any(op in CONV_MATMUL_OPCODES or any(holds(c) for c in callees)
                                for _, op, callees in body.get(comp, ()))
        return holding[comp]

    return {name for instrs in body.values() for name, op, callees in instrs
            if op in CONV_MATMUL_OPCODES or any(holds(c) for c in callees)}


def op_times_ms(trace_dir: str) -> dict[str, float]:
    """Total duration (ms) of each XLA op of the train step in the perfetto trace under `trace_dir`."""
    [path] = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
    with gzip.open(path) as f:
        events = json.load(f)["traceEvents"]
    totals: dict[str, float] = collections.defaultdict(float)
    for e in events:
        args = e.get("args") or {}
        if e.get("ph") == "X" and "hlo_op" in args and "device_step" in args.get("hlo_module", ""):
            totals[args["hlo_op"]] += e["dur"] / 1000.0
    return totals


def kind_totals(rows: list[dict]) -> dict:
    return {f"{kind}_ms": sum(r["ms_per_step"] for r in rows if r["kind"] == kind) for kind in ("conv_matmul", "other")}


TORCH_CONV_MATMUL = ("conv", "mm", "linear", "matmul", "bmm")


def torch_profile(model: str, domain_adaptation: bool, steps: int, images: int, top: int) -> dict:
    """The eager PyTorch step, profiled: self CPU time per operator and by kind, per step."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    import _torch_reference as ref

    torch.manual_seed(0)
    net = ref.build(model).train()
    step = ref.train_step_fn(net, [1.0, 1.5, 2.0], domain_adaptation)
    x, y = torch.rand(bench_train.BATCH, 3, bench_train.H, bench_train.W), torch.randint(0, 3, (bench_train.BATCH,))
    t = torch.rand_like(x) if domain_adaptation else None
    for _ in range(3):
        step(x, y, t).item()
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step(x, y, t).item()
    step_ms = 1000 * (time.perf_counter() - start) / steps
    rows = [{"op": e.key, "ms_per_step": e.self_cpu_time_total / 1000 / steps, "source": "torch",
             "kind": "conv_matmul" if any(k in e.key.lower() for k in TORCH_CONV_MATMUL) else "other"}
            for e in prof.key_averages() if e.self_cpu_time_total > 0]
    rows.sort(key=lambda r: -r["ms_per_step"])
    return {"images_per_s": 1000 * images / step_ms, "step_ms": step_ms, "profiled": True,
            **kind_totals(rows), "rows": rows[:top]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="convnet", help="convnet or resnet18 (default convnet)")
    parser.add_argument("--da", action="store_true", help="profile the domain-adaptation step")
    parser.add_argument("--steps", type=int, default=5, help="warm steps traced (default 5)")
    parser.add_argument("--top", type=int, default=25, help="rows printed and kept per framework (default 25)")
    parser.add_argument("--torch", action="store_true", help="also profile the eager PyTorch step (needs torch)")
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args(argv)

    images = bench_train.BATCH * (2 if args.da else 1)
    run = bench_train.jax_step_runner(args.model, args.da)  # compiled and warm
    trace_dir = tempfile.mkdtemp(prefix="jaxrobust_trace_")
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        images_per_s = images / run(args.steps)
    totals = op_times_ms(trace_dir)
    lines = _dump_text(DUMP_DIR)
    sources, heavy = op_sources(lines), conv_matmul_ops(lines)
    rows = [{"op": name, "ms_per_step": ms / args.steps, "source": sources[name],
             "kind": "conv_matmul" if name in heavy else "other"}
            for name, ms in totals.items() if name in sources]
    rows.sort(key=lambda r: -r["ms_per_step"])
    report = {"model": args.model, "domain_adaptation": args.da,
              "jax": {"images_per_s": images_per_s, "step_ms": 1000 * images / images_per_s,
                      **kind_totals(rows), "rows": rows[: args.top]}}
    if args.torch:
        report["torch_eager"] = torch_profile(args.model, args.da, args.steps, images, args.top)
    for framework in ("jax", "torch_eager"):
        if framework in report:
            r = report[framework]
            print(f"{framework} {args.model} {'DA' if args.da else 'regular'}: {r['images_per_s']:.0f} images/s, "
                  f"{r['step_ms']:.0f} ms/step; busy per step: conv/matmul {r['conv_matmul_ms']:.0f} ms, "
                  f"other {r['other_ms']:.0f} ms")
            for row in r["rows"][: args.top]:
                print(f"{row['ms_per_step']:8.2f} ms  {row['kind']:<11} {row['op']:<28} {row['source'][:140]}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
