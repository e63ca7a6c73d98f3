"""kill -9 in the windows where a run or dataset folder is half written: what is left is either
refused with a sentence or resumed to the same results.

Windows: a training run before its first checkpoint, an attack between attack.npz and
attack.json, a simulation before dataset.json. The last two are hit exactly: the subprocess
wraps the function that writes the second file so that it SIGKILLs its own process first.
"""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from jaxrobust.cli import main

import _synthetic
import _zenodo_tiny as tiny

# Runs `jaxrobust ARGS` with MODULE.FUNCTION replaced by one that SIGKILLs the process when its
# first argument is a path named NAME (and otherwise calls the original).
KILLER = textwrap.dedent("""
    import importlib, os, signal, sys
    from pathlib import Path
    module_name, function, name, *args = sys.argv[1:]
    module = importlib.import_module(module_name)
    original = getattr(module, function)
    def killing(path, *a, **k):
        if Path(path).name == name or (Path(path) / name).exists() or name == "*":
            os.kill(os.getpid(), signal.SIGKILL)
        return original(path, *a, **k)
    setattr(module, function, killing)
    from jaxrobust.cli import main
    sys.exit(main(args))
""")


def run_killed(module: str, function: str, name: str, *args) -> int:
    done = subprocess.run([sys.executable, "-c", KILLER, module, function, name, *map(str, args)],
                          env=_synthetic.subprocess_env(), capture_output=True, text=True, timeout=600)
    return done.returncode


def cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def test_kill_before_the_first_checkpoint_resumes_from_scratch_to_identical_numbers(capsys, tmp_path):
    dataset, reference = tiny.shared_run()
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "jaxrobust.cli", "train", "--data", str(dataset), "--workdir", str(killed),
           *tiny.TRAIN_ARGS]
    proc = subprocess.Popen(cmd, env=_synthetic.subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "config.json").exists():  # written before the first step is compiled
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not any((killed / "checkpoints").glob("*/[0-9]*"))
    # what an interrupted epoch may leave: a line of metrics without its checkpoint
    (killed / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "train_loss": 9.0}) + "\n")
    code, out, err = cli(capsys, "train", "--data", dataset, "--workdir", killed, "--resume", *tiny.TRAIN_ARGS)
    assert code == 0, err
    assert "starting over" in out
    assert "removed a stale lock of `jaxrobust train`" in out  # the killed command's lock
    # the same numbers as the uninterrupted run (same data, settings and seed), each epoch once
    assert _synthetic.metric_rows(_rows(killed)) == _synthetic.metric_rows(_rows(reference))


def test_ctrl_c_during_train_says_how_to_resume_and_a_second_writer_is_refused(capsys, tmp_path):
    """A second command on the folder while train runs is refused; Ctrl-C (SIGINT) ends train
    with a sentence (exit 130) and `--resume` then reaches the uninterrupted run's numbers."""
    dataset, reference = tiny.shared_run()
    work = tmp_path / "interrupted"
    cmd = [sys.executable, "-m", "jaxrobust.cli", "train", "--data", str(dataset), "--workdir", str(work),
           *tiny.TRAIN_ARGS]
    proc = subprocess.Popen(cmd, env=_synthetic.subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 300
    while not (work / "config.json").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.02)
    code, _, err = cli(capsys, "train", "--data", dataset, "--workdir", work, "--resume", *tiny.TRAIN_ARGS)
    assert code == 2 and "in use by `jaxrobust train`" in err and f"pid {proc.pid}" in err, err
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    if proc.returncode == 0:
        pytest.skip("training finished before the interrupt arrived")
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "interrupted (Ctrl-C)" in lines[0] and "--resume" in lines[0], stderr
    assert not (work / ".jaxrobust.lock").exists()  # given back on the way out
    code, out, err = cli(capsys, "train", "--data", dataset, "--workdir", work, "--resume", *tiny.TRAIN_ARGS)
    assert code == 0, err
    assert _synthetic.metric_rows(_rows(work)) == _synthetic.metric_rows(_rows(reference))


def test_a_truncated_checkpoint_array_prints_one_line_and_nothing_after_it(tmp_path):
    """In a process of its own: orbax's finalizers may print "Exception ignored ... Traceback"
    lines at exit, after the sentence; only the sentence may reach the user."""
    run = tmp_path / "run"
    shutil.copytree(tiny.shared_run()[1], run)
    step = next(p for p in (run / "checkpoints" / "best").iterdir() if p.name.isdigit())
    biggest = max((p for p in step.rglob("*") if p.is_file() and "meta" not in p.parts), key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 3])
    done = subprocess.run([sys.executable, "-m", "jaxrobust.cli", "evaluate", "--workdir", str(run)],
                          env=_synthetic.subprocess_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if line.startswith("error:")]
    assert errors == [len(lines) - 1], done.stderr  # one sentence, and nothing after it
    assert lines[-1].startswith(f"error: {run / 'checkpoints'}") and "TensorStore" not in lines[-1]
    assert "Exception ignored" not in done.stderr + done.stdout and "Traceback" not in done.stderr


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_kill_between_the_attack_files_is_refused_then_redone(capsys, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny.shared_run()[1], run)
    old_json = (run / "attack.json").read_bytes()
    # a second attack, killed after attack.npz and before attack.json
    assert run_killed("jaxrobust.io", "atomic_write_json", "attack.json", "attack", "--workdir", run,
                      *tiny.ATTACK_ARGS, "attack.max_generations=1") == -signal.SIGKILL
    assert (run / "attack.json").read_bytes() == old_json
    code, _, err = cli(capsys, "analyze", "--workdir", run)
    assert code == 2 and "attack.json" in err and "jaxrobust attack" in err
    assert main(["attack", "--workdir", str(run), *tiny.ATTACK_ARGS]) == 0
    assert not list(run.glob(".attack.*.tmp"))
    code, _, err = cli(capsys, "analyze", "--workdir", run)
    assert code == 0, err


@pytest.mark.slow  # a GalSim simulation in a subprocess: ~30-60 s on two busy cores
def test_kill_before_dataset_json_leaves_a_folder_that_is_refused(capsys, tmp_path):
    import _tiny_dataset

    out = tmp_path / "sim"
    assert run_killed("jaxrobust.data.store", "write_info", "*", "simulate", "--out", out,
                      *_tiny_dataset.TINY_OVERRIDES) == -signal.SIGKILL
    assert not (out / "dataset.json").exists() and (out / "images_Y10_train.npy").exists()
    code, _, err = cli(capsys, "train", "--data", out, "--workdir", tmp_path / "run", *tiny.TRAIN_ARGS)
    assert code == 2 and "incomplete" in err and f"--out {out}" in err
    shutil.rmtree(out)
