"""jaxrobust.findings: t-intervals, verdicts from constructed intervals, seed folders -> claims."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from jaxrobust import findings


@pytest.mark.parametrize("ci, sign, expected", [
    ((0.1, 0.3), +1, findings.HOLDS),
    ((-0.3, -0.1), +1, findings.REVERSES),
    ((-0.1, 0.3), +1, findings.UNRESOLVED),
    ((-0.3, -0.1), -1, findings.HOLDS),
    ((0.1, 0.3), -1, findings.REVERSES),
    ((0.0, 0.3), +1, findings.UNRESOLVED),  # touching 0 is not resolved
    ((math.nan, math.nan), +1, findings.UNRESOLVED),
])
def test_verdict_from_constructed_intervals(ci, sign, expected):
    assert findings.verdict(ci, sign) == expected


def test_t_interval_against_hand_computed_values():
    # two values 1, 3: mean 2, sd sqrt(2), t(0.975, 1) = 12.7062 -> 2 +- 12.7062 * sqrt(2) / sqrt(2)
    s = findings.t_interval([1.0, 3.0])
    assert s["mean"] == 2.0 and s["n"] == 2
    np.testing.assert_allclose(s["ci"], (2 - 12.706204736, 2 + 12.706204736), rtol=1e-8)
    # five values: t(0.975, 4) = 2.776445
    x = np.array([0.1, 0.2, 0.15, 0.3, 0.25])
    s = findings.t_interval(x)
    half = 2.776445105 * np.std(x, ddof=1) / np.sqrt(5)
    np.testing.assert_allclose(s["ci"], (x.mean() - half, x.mean() + half), rtol=1e-7)
    one = findings.t_interval([0.5, math.nan])
    assert one["n"] == 1 and one["mean"] == 0.5 and all(math.isnan(v) for v in one["ci"])


def _write_seed(seed_dir, acc, success, latents, robust):
    """A fake seed folder: evaluation.json, attack.npz, robustness.json per arm."""
    for (name, folder), (acc10, acc1), succ, (z10, z1p, z1), rob in zip(findings.ARMS, acc, success, latents, robust):
        run = seed_dir / folder
        run.mkdir(parents=True)
        (run / "evaluation.json").write_text(json.dumps({"Y10": {"accuracy": acc10}, "Y1": {"accuracy": acc1}}))
        np.savez(run / "attack.npz", attacked=np.ones(len(succ), bool), success=np.asarray(succ, bool),
                 latent_y10=z10, latent_1p=z1p, latent_y1=z1)
        (run / "robustness.json").write_text(json.dumps({
            "margin_median_attacked": rob, "flip_amplitude_median": 0.5, "flip_dE_median": rob + 1,
            "km_latent_distance_to_flip": {"median": rob + 2}, "km_generations_to_flip": {"median": 3.0}}))


def test_seed_metrics_and_claims_from_seed_folders(tmp_path):
    z = np.zeros((4, 2))
    seeds = []
    # DA's 1P latents land farther (3 vs 1) on every seed; Y1 distances equal (no resolution);
    # Y1 accuracy: regular loses 0.3-0.4, DA recovers 0.1-0.2.
    da_success = ([1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0])  # DA - Reg success: -0.25, +0.25, -0.5
    for k, (reg_y1, da_y1, de_y1_da) in enumerate([(0.5, 0.6, 2.5), (0.4, 0.6, 1.5), (0.45, 0.6, 2.0)]):
        d = tmp_path / f"seed_{k}"
        shift = lambda r: np.tile([[r, 0.0]], (4, 1))  # noqa: E731
        _write_seed(d, acc=[(0.8, reg_y1), (0.8, da_y1)],
                    success=[[1, 1, 1, 0], da_success[k]],
                    latents=[(z, shift(1.0), shift(2.0)), (z, shift(3.0), shift(de_y1_da))],
                    robust=[1.0, 2.0 + 0.1 * k])
        seeds.append(d)
    per = findings.seed_metrics(seeds[0])
    assert per["Reg"]["success_rate"] == 0.75 and per["DA"]["success_rate"] == 0.5
    assert per["Reg"]["flipped_under_both"] == 2.0  # images 0 and 1
    assert per["DA"]["dE_Y10_1P"] == 3.0 and per["Reg"]["dE_Y10_Y1"] == 2.0
    out = findings.study_findings(seeds, "convnet")
    claims = {c["key"]: c for c in out["claims"]}
    assert claims["reg_loses_y1"]["verdict"] == findings.HOLDS
    assert claims["da_recovers_y1"]["verdict"] == findings.HOLDS
    assert claims["da_lowers_success"]["verdict"] == findings.UNRESOLVED
    assert claims["da_raises_de_1p"]["verdict"] == findings.HOLDS
    assert claims["da_raises_de_y1"]["verdict"] == findings.UNRESOLVED  # differences 0.5, -0.5, 0
    assert claims["da_raises_margin"]["verdict"] == findings.HOLDS
    assert claims["da_raises_de_1p"]["paper"] == {"a": 4.1, "b": 3.1}
    assert claims["reg_loses_y1"]["paper"] == {"a": 0.48, "b": 0.70}
    np.testing.assert_allclose(claims["da_raises_de_y1"]["difference"]["values"], [0.5, -0.5, 0.0])
    md = findings.render_markdown(out)
    assert md.startswith("## Findings (convnet, 3 seeds")
    # reg_loses_y1, da_recovers_y1, da_raises_de_1p, margin, flip dE, KM distance
    assert md.count("**holds**") == 6 and md.count("**not resolved at this N**") == 2
    path = findings.write_findings(out, tmp_path)
    assert json.loads(path.read_text())["claims"][0]["key"] == "reg_loses_y1"


def test_study_seeds_vary_the_run_seed_only():
    from jaxrobust import rng, study
    from jaxrobust.config import load_config, training_settings

    config = load_config("quick", ["seed=7"])
    assert rng.run_seed(config) == 7  # default -1: the data seed, as before the key existed
    seeded = study.seed_config(config, 2)
    assert rng.run_seed(seeded) == 2 and seeded.seed == 7 and seeded.data == config.data
    assert training_settings(seeded) != training_settings(config)  # a different run folder's training
    assert rng.run_seed({"seed": 4}) == 4  # a run config saved before run_seed existed
