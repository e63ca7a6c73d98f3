"""`jaxrobust reproduce --seeds 2` on a tiny study: one dataset, seeds differ, findings match the runs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from jaxrobust import checkpoint, findings, robustness
from jaxrobust.cli import main

import _tiny_dataset

RUN = list(_tiny_dataset.TINY_OVERRIDES) + [
    "train.epochs=2", "train.batch_size=8", "train.learning_rate=1e-3", "attack.n_images=6",
    "attack.population=40", "attack.max_generations=6", "attack.block_generations=3",
    "analysis.isomap_points=12", "analysis.church_windows=1", "analysis.bootstrap=100", "analysis.animation=False"]


@pytest.mark.slow  # four tiny trainings and attacks: minutes on two shared cores
def test_two_seed_study(tmp_path):
    workdir = tmp_path / "study"
    assert main(["reproduce", "--seeds", "2", "--workdir", str(workdir), *RUN]) == 0
    assert (workdir / "data" / "dataset.json").exists()
    assert not (workdir / "seed_0" / "data").exists()  # the dataset is simulated once
    for seed in (0, 1):
        for folder in ("regular", "da"):
            run = workdir / f"seed_{seed}" / folder
            config = json.loads((run / "config.json").read_text())
            assert config["run_seed"] == seed and config["seed"] == 3
            assert robustness.is_current(run)
    # different run seeds: different initial weights, hence different trained weights
    _, v0, _ = checkpoint.load_variables(workdir / "seed_0" / "regular")
    _, v1, _ = checkpoint.load_variables(workdir / "seed_1" / "regular")
    assert not np.allclose(v0["params"]["head"]["fc"]["kernel"], v1["params"]["head"]["fc"]["kernel"])
    result = json.loads((workdir / "findings.json").read_text())
    for seed in (0, 1):
        per = findings.seed_metrics(workdir / f"seed_{seed}")
        for arm in ("Reg", "DA"):
            for metric, value in per[arm].items():
                stored = result["per_seed"][seed][arm][metric]  # strict JSON: null where not finite
                assert stored == value or (stored is None and (value is None or not np.isfinite(value))), \
                    (seed, arm, metric)
    report = (workdir / "report.md").read_text()
    assert report.index("## Findings") < report.index("## Per seed")
    words = (findings.HOLDS, findings.REVERSES, findings.UNRESOLVED, findings.NOT_MEASURED)
    per_image = sum(claim.image_a is not None for claim in findings.CLAIMS)  # their own verdict column
    assert sum(report.count(f"**{v}**") for v in words) == len(findings.CLAIMS) + per_image
