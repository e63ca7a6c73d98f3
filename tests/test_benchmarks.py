"""The benchmark scripts run and write their JSON (slow: kept out of CI; `pytest -m slow`)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def run(script, *args, tmp_path):
    out = tmp_path / f"{script}.json"
    done = subprocess.run([sys.executable, str(SCRIPTS / f"{script}.py"), *args, "--out", str(out)],
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_bench_attack_quick(tmp_path):
    result = run("bench_attack", "--quick", "--models", "convnet", "--no-torch", tmp_path=tmp_path)
    convnet = result["convnet"]
    assert convnet["ours_incremental"]["candidates_per_second"] > convnet["ours_full"]["candidates_per_second"]
    assert convnet["ours_incremental"]["flops_per_candidate"] < convnet["flops_per_forward"] / 20


@pytest.mark.slow
def test_bench_train_quick(tmp_path):
    result = run("bench_train", "--quick", "--models", "convnet", "--no-torch", tmp_path=tmp_path)
    assert result["convnet"]["regular"]["jax"] > 0 and result["convnet"]["da"]["jax"] > 0


@pytest.mark.slow
def test_bench_simulate_small(tmp_path):
    result = run("bench_simulate", "--n-per-class", "2", "--workers", "1", "--dataset-fraction", "0.02",
                 tmp_path=tmp_path)
    assert result["gsparams"]["draw_time_ratio_default_over_config"] > 0


@pytest.mark.slow
def test_bench_train_parts_quick(tmp_path):
    result = run("bench_train_parts", "--quick", tmp_path=tmp_path)
    assert len(result["conv_kernel_grad"]) == 10 and result["mmd_grad"]["ratio"] > 0
    assert len(result["conv_patches"]) == 9 and all(r["ratio_concatenated_over_stacked"] > 0 for r in result["conv_patches"])
    memory = result["convnet_step_host_memory"]
    assert memory["kept"]["host_memory_kept"] and not memory["default"]["host_memory_kept"]
    assert memory["kept"]["page_faults_per_step"] < memory["default"]["page_faults_per_step"]


@pytest.mark.slow
def test_profile_train_finds_the_convolutions(tmp_path):
    result = run("profile_train", "--steps", "1", tmp_path=tmp_path)
    jax_rows = result["jax"]["rows"]
    assert result["jax"]["conv_matmul_ms"] > 0 and result["jax"]["other_ms"] > 0
    assert any(r["kind"] == "conv_matmul" and "conv1" in r["source"] for r in jax_rows)
