"""scripts/device_check.py: the choice of recommended chunk defaults and the goals (hand-made
rows, fast), and a --quick run on the CPU: its JSON schema and its correctness checks (slow:
it compiles some twenty programs, minutes on a shared 2-core machine)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

import _synthetic as syn

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "device_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row(model, evaluator, chunk, tasks, rate, error=None):
    return {"model": model, "variant": model, "evaluator": evaluator, "chunk_candidates": chunk,
            "tasks_per_call": tasks, "candidates_per_second": rate, "error": error}


def test_recommended_takes_the_fastest_setting_and_skips_failures():
    dc = load_script()
    rows = [row("convnet", "incremental", 4096, 256, 2.0e5), row("convnet", "incremental", 16384, 256, 9.0e5),
            row("convnet", "incremental", 65536, 256, None, "XlaRuntimeError: RESOURCE_EXHAUSTED"),
            row("convnet", "incremental", 16384, 600, 8.0e5), row("convnet", "full", 256, 256, 3.0e4),
            row("resnet18", "full", 1024, 64, 1.0e4), row("resnet18", "incremental", 1024, 64, 1.2e4)]
    rec = dc.recommended(rows)
    assert rec["convnet"]["incremental"] == {"chunk_candidates": 16384, "tasks_per_call": 256,
                                             "candidates_per_second": 9.0e5}
    assert rec["convnet"]["full"]["chunk_candidates"] == 256
    assert rec["resnet18"]["incremental"]["candidates_per_second"] == 1.2e4


def test_goals_from_the_measured_rates():
    dc = load_script()
    rec = {"convnet": {"incremental": {"candidates_per_second": 1.5e6}},
           "resnet18": {"full": {"candidates_per_second": 2.0e4}, "incremental": {"candidates_per_second": 4.0e4}}}
    train_rows = [{"model": "convnet", "domain_adaptation": True, "images_per_second": 30000.0},
                  {"model": "convnet", "domain_adaptation": False, "images_per_second": 15000.0}]
    goals = dc.goals(rec, train_rows, quick=False)
    assert goals["convnet_attack_candidates_per_second"]["met"] is True
    # 150 x 2 x 400 x 81 = 9,720,000 candidates at the faster ResNet18 rate, 40,000/s: 243 s
    assert goals["resnet18_paper_protocol_seconds"]["measured"] == pytest.approx(243.0)
    assert goals["resnet18_paper_protocol_seconds"]["met"] is True
    assert goals["convnet_train_images_per_second"]["measured"] == 15000.0  # the regular step
    assert goals["convnet_train_images_per_second"]["met"] is False
    assert all(g["met"] is None for g in dc.goals(rec, train_rows, quick=True).values())


SCHEMA = {
    "schema_version": int, "quick": bool, "seconds": float,
    "device": {"backend": str, "kind": str, "count": int},
    "versions": {"python": str, "jax": str, "jaxlib": str, "flax": str},
    "correctness": {"ok": bool, "da_train_step_vs_cpu": {"ok": bool, "loss": float, "loss_cpu": float,
                                                          "max_param_relative_difference": float},
                    "attack_chunk_determinism": {"ok": bool, "chunks": list, "identical": dict},
                    "incremental_vs_full": {"convnet": {"ok": bool, "max_abs_difference": float},
                                            "resnet18": {"ok": bool, "max_abs_difference": float}}},
    "timings": {"attack": list, "train": list},
    "recommended": {"convnet": {"incremental": dict, "full": dict}, "resnet18": {"incremental": dict, "full": dict}},
    "goals": {"convnet_attack_candidates_per_second": dict, "resnet18_paper_protocol_seconds": dict,
              "convnet_train_images_per_second": dict},
}


def check_schema(value, schema, where="report"):
    if isinstance(schema, dict):
        assert isinstance(value, dict), where
        for key, sub in schema.items():
            assert key in value, f"{where}.{key} missing"
            check_schema(value[key], sub, f"{where}.{key}")
    else:
        assert isinstance(value, schema), f"{where}: {type(value).__name__}, expected {schema.__name__}"


@pytest.mark.slow
def test_quick_run_on_the_cpu(tmp_path):
    out = tmp_path / "check.json"
    env = syn.subprocess_env(JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)], capture_output=True,
                            text=True, env=env, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    check_schema(report, SCHEMA)
    assert report["quick"] is True and report["device"]["backend"] == "cpu"
    c = report["correctness"]
    assert c["ok"], c
    for model in ("convnet", "resnet18"):
        assert 0 <= c["incremental_vs_full"][model]["max_abs_difference"] <= 1e-4
    # on a CPU the "device" step is the CPU step: the same program, the same numbers
    assert c["da_train_step_vs_cpu"]["loss"] == c["da_train_step_vs_cpu"]["loss_cpu"]
    assert all(c["attack_chunk_determinism"]["identical"].values())
    assert {(r["model"], r["domain_adaptation"]) for r in report["timings"]["train"]} == \
        {(m, da) for m in ("convnet", "resnet18") for da in (False, True)}
    assert all(r["images_per_second"] > 0 for r in report["timings"]["train"])
    assert {(r["model"], r["evaluator"]) for r in report["timings"]["attack"]} == \
        {(m, e) for m in ("convnet", "resnet18") for e in ("incremental", "full")}
    assert all(r["candidates_per_second"] > 0 and r["error"] is None for r in report["timings"]["attack"])
    scan = report["timings"]["scan"]
    assert scan is None or scan["candidates_per_second"] > 0
    assert all(g["met"] is None for g in report["goals"].values())
    assert "recommended attack defaults" in result.stdout
