"""`jaxrobust reproduce` end to end on a tiny simulated study: outputs, resume, the report."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from jaxrobust import latent, pipeline
from jaxrobust.cli import main

import _tiny_dataset

RUN = list(_tiny_dataset.TINY_OVERRIDES) + [
    "train.epochs=2", "train.batch_size=8", "train.learning_rate=1e-3", "attack.n_images=6",
    "attack.population=40", "attack.max_generations=6", "attack.block_generations=3",
    "analysis.isomap_points=12", "analysis.church_windows=1", "analysis.bootstrap=100",
    "scan.n_images=1",  # the scan stage runs; compile time, not images, is most of its cost
    "certify.enabled=True", "certify.n_images=1", "certify.max_boxes=1", "certify.radius=False"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("study")
    assert main(["reproduce", "--workdir", str(workdir), *RUN]) == 0
    return workdir


def test_every_stage_wrote_its_outputs(study):
    assert (study / "data" / "dataset.json").exists()
    for name in ("regular", "da"):
        run = study / name
        for path in ("config.json", "metrics.jsonl", "evaluation.json", "predictions.npz", "latents.npz",
                     "attack.npz", "attack.json", "scan.npz", "scan.json", "certify.npz", "certify.json",
                     "figures/training_curves.png",
                     "figures/confusion_matrices.png"):
            assert (run / path).exists(), f"{name}/{path}"
        assert json.loads((run / "config.json").read_text())["train"]["da_loss"] == {"regular": "none", "da": "mmd"}[name]
    for path in ("analysis.json", "report.md", "timings.json"):
        assert (study / path).exists()


def test_analysis_numbers_match_a_direct_computation(study):
    analysis = json.loads((study / "analysis.json").read_text())
    attacks = {name: dict(np.load(study / folder / "attack.npz")) for name, folder in (("Reg", "regular"), ("DA", "da"))}
    both = attacks["Reg"]["success"] & attacks["DA"]["success"]
    assert analysis["selection"]["n"] == int(both.sum())
    for name, a in attacks.items():
        d_1p = np.sqrt(((a["latent_y10"][both] - a["latent_1p"][both]) ** 2).sum(1))
        d_y1 = np.sqrt(((a["latent_y10"][both] - a["latent_y1"][both]) ** 2).sum(1))
        got = analysis["runs"][name]["distances"]
        if both.any():
            assert got["Y10-1P"]["mean"] == pytest.approx(d_1p.mean(), rel=1e-9)
            assert got["Y10-Y1"]["median"] == pytest.approx(np.median(d_y1), rel=1e-9)
        attacked = a["attacked"].astype(bool)
        assert analysis["runs"][name]["attack"]["attacked"] == int(attacked.sum())
        assert analysis["runs"][name]["attack"]["successful"] == int(a["success"].sum())
        # the attacked images are exactly those the model classifies right in Y10
        assert np.array_equal(attacked, a["probabilities_before"].argmax(1) == a["labels"])
    if both.any():
        reg = np.sqrt(((attacks["Reg"]["latent_y10"][both] - attacks["Reg"]["latent_1p"][both]) ** 2).sum(1))
        da = np.sqrt(((attacks["DA"]["latent_y10"][both] - attacks["DA"]["latent_1p"][both]) ** 2).sum(1))
        assert analysis["js_distance"]["Y10-1P"] == pytest.approx(latent.js_distance(reg, da, 20), rel=1e-9)


def test_successful_perturbations_differ_in_one_pixel_and_flip_the_class(study):
    a = dict(np.load(study / "regular" / "attack.npz"))
    from jaxrobust.config import load_config
    from jaxrobust.data import load_prepared

    data = load_prepared(study / "data", load_config("quick", RUN))
    clean = data.subsample["Y10"][: len(a["labels"])]
    for i in np.flatnonzero(a["attacked"]):
        changed = np.argwhere(np.any(a["perturbed"][i] != clean[i], axis=-1))
        assert len(changed) <= 1  # one pixel (or none when the colour happened to match)
        if a["success"][i]:
            assert a["probabilities_after"][i][a["target"][i]] > 0.5
            row, col = a["pixel"][i][:2].astype(int)
            assert (len(changed) == 0) or (tuple(changed[0]) == (row, col))


def test_report_puts_our_tables_beside_the_papers(study):
    report = (study / "report.md").read_text()
    assert "| Reg | Accuracy |" in report and "| DA | Accuracy |" in report
    assert "(0.70)" in report  # the paper's ConvNet regular Y10 accuracy, in brackets
    assert "Jensen-Shannon" in report or "flipped under both" in report
    assert "## One-pixel certificates" in report
    assert "| Reg | 1 of 1 |" in report or "| Reg | 0 of 1 |" in report  # correctly classified of certified
    for line in report.splitlines():
        if line.startswith("![") and "](" in line:
            target = line.split("](", 1)[1].rstrip(")")
            assert (study / target).exists(), target


def test_rerun_skips_finished_stages(study, capsys):
    before = {p: os.stat(study / p).st_mtime for p in ("regular/attack.npz", "da/evaluation.json", "data/dataset.json")}
    capsys.readouterr()
    assert main(["reproduce", "--workdir", str(study), *RUN]) == 0
    out = capsys.readouterr().out
    assert "[data]" in out and "skipped" in out
    assert out.count("training finished earlier: skipped") == 2
    assert out.count("attack current: skipped") == 2
    assert out.count("certificates current: skipped") == 2
    after = {p: os.stat(study / p).st_mtime for p in before}
    assert after == before
    # a changed attack setting reruns the attacks only
    changed = [o for o in RUN if not o.startswith("attack.max_generations=")] + ["attack.max_generations=5"]
    assert main(["reproduce", "--workdir", str(study), *changed]) == 0
    out = capsys.readouterr().out
    assert out.count("training finished earlier: skipped") == 2
    assert "attack current: skipped" not in out


def test_a_killed_study_resumes_where_it_stopped(study, tmp_path):
    """SIGKILL during the DA training; the rerun skips what is done and resumes DA.

    The fixture's dataset (a copy: no second simulation) and training settings (its compiled
    steps come from the session's cache), no scan (the fixture's study scans; the resume is
    about training)."""
    import signal
    import subprocess
    import sys
    import time

    work = tmp_path / "study"
    shutil.copytree(study / "data", work / "data")
    args = [*_tiny_dataset.TINY_OVERRIDES, "train.epochs=4", "train.batch_size=8", "train.learning_rate=1e-3",
            "attack.n_images=2", "attack.population=20", "attack.max_generations=2", "analysis.isomap_points=12",
            "analysis.animation=False", "scan.enabled=False"]
    cmd = [sys.executable, "-m", "jaxrobust.cli", "reproduce", "--workdir", str(work), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = work / "da" / "checkpoints" / "latest"
    deadline = time.time() + 600
    while not (marker.exists() and any(p.name.isdigit() for p in marker.iterdir())):
        assert proc.poll() is None, "reproduce ended before the DA run wrote a checkpoint"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    epochs_done = len((work / "da" / "metrics.jsonl").read_text().splitlines())
    assert 1 <= epochs_done < 4 and not (work / "report.md").exists()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "[regular] training finished earlier: skipped" in done.stdout
    assert "[da] resuming" in done.stdout
    epochs = [json.loads(line)["epoch"] for line in (work / "da" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(len(epochs))) and (work / "report.md").exists()


def test_dataset_figures_of_a_simulated_folder(tmp_path):
    """`simulate` with data.preview=True: preview.png and gini_m20.png beside the dataset, drawn
    from the test split and galaxies.jsonl after dataset.json (the data layer draws no figures)."""
    folder, _ = _tiny_dataset.tiny_dataset()
    copy = tmp_path / "data"
    shutil.copytree(folder, copy)
    assert not (copy / "preview.png").exists()
    paths = pipeline.write_dataset_figures(copy)
    assert [p.name for p in paths] == ["preview.png", "gini_m20.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in copy.glob(".*")) == []  # no temporary files left
