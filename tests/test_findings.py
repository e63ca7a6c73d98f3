"""jaxrobust.findings: the statistics against scipy and hand computations, strict JSON, and the
claims read from constructed seed folders (every file the loaders read, written by hand)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from jaxrobust import findings, robustness


def refuse(token):
    raise ValueError(f"non-strict JSON token {token}")


# --- Statistics ---
@pytest.mark.parametrize("p, direction, sign, expected", [
    (0.01, +1, +1, findings.HOLDS),
    (0.01, -1, +1, findings.REVERSES),
    (0.01, -1, -1, findings.HOLDS),
    (0.01, +1, -1, findings.REVERSES),
    (0.05, +1, +1, findings.UNRESOLVED),  # the threshold itself does not decide
    (0.2, +1, +1, findings.UNRESOLVED),
    (None, +1, +1, findings.UNRESOLVED),  # one seed: no test
    (0.0, 0, +1, findings.UNRESOLVED),  # no direction
])
def test_verdict_from_adjusted_p_and_direction(p, direction, sign, expected):
    assert findings.verdict(p, direction, sign) == expected


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


def test_t_interval_counts_every_non_finite_value():
    undefined = findings.t_interval([0.5, math.nan, 0.7])
    assert undefined["n"] == 2 and undefined["undefined"] == 1 and undefined["mean"] == pytest.approx(0.6)
    assert "undefined" in undefined["reason"]
    reached = findings.t_interval([0.5, math.inf, 0.7])  # a median not reached has no mean
    assert reached["mean"] is None and reached["ci"] is None and reached["infinite"] == 1
    assert "not reached" in reached["reason"]
    one = findings.t_interval([0.5, None])
    assert one["mean"] == 0.5 and one["ci"] is None and one["not_measured"] == 1


def test_paired_t_test_against_scipy():
    d = np.array([0.31, 0.12, 0.44, 0.05, 0.2])
    ours = findings.paired_t_test(d)
    ref = stats.ttest_1samp(d, 0.0)
    assert ours["t"] == pytest.approx(ref.statistic) and ours["p"] == pytest.approx(ref.pvalue, rel=1e-10)
    # the interval excludes 0 exactly when p < 0.05
    for d, excludes in (([0.3, -0.1, 0.5], False), ([0.3, 0.31, 0.29], True)):
        assert findings.paired_t_test(d)["p"] < 0.05 and findings.t_interval(d)["ci"][0] > 0 or not excludes
        assert findings.paired_t_test(d)["p"] >= 0.05 and findings.t_interval(d)["ci"][0] <= 0 or excludes
    assert findings.paired_t_test([0.25, 0.25, 0.25])["p"] == 0.0 and findings.paired_t_test([0, 0])["p"] == 1.0


def test_holm_against_a_hand_computation():
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): 4 x 0.005 = 0.02, 3 x 0.01 = 0.03, 2 x 0.03 = 0.06,
    # 1 x 0.04 = 0.04 -> kept monotone at 0.06
    assert findings.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # a claim without a p is not in the family: m = 2
    adjusted = findings.holm([0.01, None, 0.04])
    assert adjusted[1] is None and adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.04)
    assert findings.holm([0.6, 0.5]) == [1.0, 1.0]  # capped at 1


@pytest.mark.parametrize("b, c", [(8, 0), (12, 5), (30, 30), (3, 17), (1, 0), (40, 61)])
def test_exact_mcnemar_against_scipy_binomtest(b, c):
    ours = findings.mcnemar_exact(b, c)
    assert ours["p"] == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-12)
    assert ours["direction"] == np.sign(b - c)


def test_mcnemar_per_image_on_a_constructed_paired_table():
    # one seed, 40 images: a only 9, b only 3, both 20, neither 8
    a = np.array([1] * 9 + [0] * 3 + [1] * 20 + [0] * 8, float)
    b = np.array([0] * 9 + [1] * 3 + [1] * 20 + [0] * 8, float)
    out = findings.per_image_test([{i: (a[i], b[i]) for i in range(40)}], binary=True)
    assert (out["a_more"], out["b_more"], out["ties"], out["images"]) == (9, 3, 28, 40)
    assert out["p"] == pytest.approx(stats.binomtest(9, 12, 0.5).pvalue, rel=1e-12)
    assert findings.mcnemar_exact(0, 0)["p"] == 1.0


def test_wilcoxon_exact_without_ties_against_scipy():
    d = np.random.default_rng(0).normal(0.4, 1.0, 18)
    ours = findings.wilcoxon_signed_rank(d)
    ref = stats.wilcoxon(d, method="exact")
    assert ours["method"] == "exact" and ours["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert min(ours["w_plus"], ours["w_minus"]) == pytest.approx(ref.statistic)


def test_wilcoxon_with_ties_and_zeros_against_scipy():
    rng = np.random.default_rng(1)
    d = np.round(rng.normal(0.1, 1.0, 600), 1)  # many ties, some zeros: the normal approximation
    ours = findings.wilcoxon_signed_rank(d)
    ref = stats.wilcoxon(d, zero_method="wilcox", correction=False, method="approx")
    assert ours["zeros"] == int((d == 0).sum()) > 0
    assert ours["method"].startswith("normal") and ours["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    # small n with ties: exact over the 2^n sign assignments (scipy's permutation test enumerates them)
    d = np.array([0.5, -0.5, 1.0, 1.0, 2.0, -0.25, 3.0, 1.0, 0.5, 4.0])
    ours = findings.wilcoxon_signed_rank(d)
    ranks = stats.rankdata(np.abs(d))
    ref = stats.permutation_test((d,), lambda x: ranks[x > 0].sum(), permutation_type="samples",
                                 alternative="two-sided", n_resamples=np.inf)
    assert ours["method"] == "exact" and ours["p"] == pytest.approx(ref.pvalue, rel=1e-9)


def test_wilcoxon_ranks_censored_values_above_every_finite_one():
    # +-inf: censored; they tie with each other above the largest finite |d|: the same test as a
    # common value larger than every finite |d|
    d = np.array([0.3, -0.1, np.inf, 0.2, np.inf, -np.inf, 0.05, 0.4, 0.0])
    big = np.where(np.isinf(d), np.sign(d) * 100.0, d)
    ours = findings.wilcoxon_signed_rank(d)
    ranks = stats.rankdata(np.abs(big[big != 0]))
    ref = stats.permutation_test((big[big != 0],), lambda x: ranks[x > 0].sum(), permutation_type="samples",
                                 n_resamples=np.inf)
    assert ours["zeros"] == 1 and ours["n"] == 8
    assert ours["w_plus"] == pytest.approx(ranks[big[big != 0] > 0].sum())
    assert ours["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert findings.censored_difference(math.inf, 0.4) == math.inf
    assert findings.censored_difference(math.inf, math.inf) == 0.0
    assert math.isnan(findings.censored_difference(math.nan, 1.0)) and findings.censored_difference(None, 1) is None


def test_seed_test_keeps_a_not_reached_seed():
    out = findings.seed_test([0.3, 0.31, math.inf])
    # Wilcoxon over 3 seeds, all positive: exact p = 2 x (1/8)
    assert out["infinite"] == 1 and out["seeds"] == 3 and out["p"] == pytest.approx(0.25)
    assert out["direction"] == 1 and out["test"].startswith("Wilcoxon") and "not finite" in out["reason"]
    finite = findings.seed_test([0.3, 0.31, None, math.nan])
    assert finite["not_measured"] == 1 and finite["undefined"] == 1 and finite["seeds"] == 2
    assert finite["p"] == pytest.approx(stats.ttest_1samp([0.3, 0.31], 0.0).pvalue)


def test_strict_json_refuses_nothing_and_keeps_reasons():
    record = {"median": math.inf, "values": [1.0, math.nan, -math.inf], "nested": [{"x": np.float32(np.inf)}],
              "ci": (0.0, np.float64(2.0)), "n": np.int64(3)}
    with pytest.raises(ValueError):  # the check can fail: the default encoder writes Infinity
        json.loads(json.dumps(record, default=float), parse_constant=refuse)
    loaded = json.loads(findings.dumps(record), parse_constant=refuse)
    assert loaded["median"] is None and loaded["median_reason"].startswith("not reached")
    assert loaded["values"] == [1.0, None, None]
    assert loaded["values_reasons"][0] is None and "NaN" in loaded["values_reasons"][1]
    assert loaded["nested"][0]["x"] is None and loaded["ci"] == [0.0, 2.0] and loaded["n"] == 3


# --- Seed folders: every file the loaders read, written by hand ---
H = W = 10  # scan maps: 100 pixels


def _write_run(run, *, acc, success, generations, amplitude, p_true, latents, scale=1.0, attacked=None,
               scan_counts=None, cap=10):
    """One fake run folder. success / generations / amplitude: per image (6 images, all class 0);
    amplitude NaN where the attack failed; latents: (z10, z1p, z1) (6, 2) arrays; p_true: the clean
    probability of the true class (the other two share the rest); scale multiplies the Y10 test
    latents of latents.npz (the run's latent scale); scan_counts: flipping pixels of the first
    len(scan_counts) images (scan.npz), None for no scan."""
    run.mkdir(parents=True)
    n = len(success)
    labels = np.zeros(n, np.int32)
    attacked = np.ones(n, bool) if attacked is None else np.asarray(attacked, bool)
    success = np.asarray(success, bool)
    z10, z1p, z1 = latents
    (run / "evaluation.json").write_text(json.dumps({"Y10": {"accuracy": acc[0]}, "Y1": {"accuracy": acc[1]}}))
    probs = np.tile([[p_true, (1 - p_true) / 2, (1 - p_true) / 2]], (n, 1)).astype(np.float32)
    attack = dict(attacked=attacked, success=success, labels=labels, target=np.ones(n, np.int32),
                  generations=np.asarray(generations, np.int32), probabilities_before=probs,
                  latent_y10=z10, latent_1p=z1p, latent_y1=z1, test_index=np.arange(10, 10 + n))
    np.savez(run / "attack.npz", **attack)
    (run / "attack.json").write_text(json.dumps({"attack_config": {"max_generations": cap, "targeted": True,
                                                                   "n_images": n}}))
    amplitude = np.asarray(amplitude, float)
    valid = success & np.isfinite(amplitude)
    d_1p = np.linalg.norm(z1p - z10, axis=1)
    measures = dict(margins=np.zeros((n, 3)), margin=np.linalg.norm(z10, axis=1) + 1.0,
                    margin_target=np.full(n, np.nan), flip_amplitude=np.where(valid, amplitude, np.nan),
                    flip_dE=np.where(valid, d_1p / 2, np.nan), flip_valid=valid, dE_1p=d_1p)
    np.savez(run / "robustness.npz", **measures)
    (run / "robustness.json").write_text(json.dumps(robustness.summarize(measures, attack)))
    grid = np.random.default_rng(0).normal(size=(12, 2))  # Y10 test latents: median distance x scale
    np.savez(run / "latents.npz", latent_y10=scale * grid, latent_y1=grid, labels=np.zeros(12, np.int32))
    predicted = np.zeros(8, np.int64)
    predicted[: round(8 * (1 - acc[1]))] = 1
    np.savez(run / "predictions.npz", labels=np.zeros(8, np.int32), predicted_y10=np.zeros(8, np.int64),
             predicted_y1=predicted)
    if scan_counts is not None:
        k = len(scan_counts)
        np.savez(run / "scan.npz", labels=labels[:k], test_index=attack["test_index"][:k],
                 flipping_pixels_any=np.asarray(scan_counts, np.int32),
                 flipping_pixels_untargeted=np.zeros(k, np.int32), min_true_probability=np.ones((k, H, W)))


def _study(tmp_path, scan=True, not_reached_seed=None):
    """Three seeds. Per seed k: Reg flips images 0-3 at amplitudes 0.2-0.5 (generations 0-3) and
    fails on 4-5; DA flips images 0-2 at 0.5, 0.6, 0.7 + 0.01 k (generations 5, 6, 7 + k) and
    fails on 3-5. Scan: Reg 50, 60, 40, 30 of 100 pixels flip images 0-3, DA 5, 6, 4, 3 + k."""
    seeds = []
    z = np.zeros((6, 2))
    shift = lambda r: np.tile([[r, 0.0]], (6, 1))  # noqa: E731
    for k in range(3):
        d = tmp_path / f"seed_{k}"
        _write_run(d / "regular", acc=(0.8, 0.25), success=[1, 1, 1, 1, 0, 0], generations=[0, 1, 2, 3, 20, 20],
                   amplitude=[0.2, 0.3, 0.4, 0.5, np.nan, np.nan], p_true=0.8,
                   latents=(z, shift(1.0), shift(4.0)), scale=2.0, scan_counts=[50, 60, 40, 30] if scan else None)
        da_success = [1, 1, 1, 0, 0, 0] if k != not_reached_seed else [1, 1, 0, 0, 0, 0]
        _write_run(d / "da", acc=(0.8 - 0.01 * k, 0.5 + 0.01 * k), success=da_success,
                   generations=[5, 6, 7 + k, 20, 20, 20], amplitude=[0.5, 0.6, 0.7 + 0.01 * k, np.nan, np.nan, np.nan],
                   p_true=0.6 + 0.01 * k, latents=(z, shift(3.0), shift(2.0 + k)), scale=1.0,
                   scan_counts=[5, 6, 4, 3 + k] if scan else None)
        seeds.append(d)
    return seeds


def test_image_unit_claims_from_seed_folders(tmp_path):
    seeds = _study(tmp_path)
    per = findings.seed_metrics(seeds[0])
    # Kaplan-Meier median over 6 attacked images, failures censored above every success:
    # Reg events 0.2, 0.3, 0.4, (0.5): S = 5/6, 4/6, 3/6 -> 0.4; DA 0.5, 0.6, 0.7 -> 0.7
    assert per["Reg"]["flip_amplitude_censored"] == pytest.approx(0.4)
    assert per["DA"]["flip_amplitude_censored"] == pytest.approx(0.7)
    # restricted mean up to the cap 10: Reg (0 + 1 + 2 + 3 + 10 + 10) / 6, DA (5 + 6 + 7 + 30) / 6
    assert per["Reg"]["generations_mean_censored"] == pytest.approx(26 / 6)
    assert per["DA"]["generations_mean_censored"] == pytest.approx(48 / 6)
    assert per["Reg"]["flipping_pixel_fraction"] == pytest.approx(0.45)
    assert per["DA"]["flipping_pixel_fraction"] == pytest.approx(0.045)
    assert per["Reg"]["logit_margin"] == pytest.approx(math.log(0.8 / 0.1), rel=1e-6)
    # Reg's latent scale is twice DA's (the same latents x 2)
    assert per["Reg"]["latent_scale"] == pytest.approx(2 * per["DA"]["latent_scale"])
    assert per["Reg"]["margin_scaled"] == pytest.approx(per["Reg"]["margin"] / per["Reg"]["latent_scale"])
    # images 0-2 flipped under both: dE(Y10, 1P) 1 (Reg) and 3 (DA), dE at the flip half of it:
    # the overshoot ratio is 2 in both arms, over the same 3 images
    assert per["Reg"]["overshoot"] == pytest.approx(2.0) and per["DA"]["overshoot"] == pytest.approx(2.0)
    assert per["Reg"]["overshoot_images"] == 3.0

    out = findings.study_findings(seeds, "convnet")
    json.loads(findings.dumps(out), parse_constant=refuse)
    claims = {c["key"]: c for c in out["claims"]}
    assert len(claims) == len(findings.CLAIMS)
    # differences 0.30, 0.31, 0.32: t = 0.31 / (0.01 / sqrt 3), tiny p even x 12 (Holm)
    amp = claims["da_raises_flip_amplitude"]
    np.testing.assert_allclose(amp["difference"]["values"], [0.3, 0.31, 0.32])
    assert amp["seed_test"]["p"] == pytest.approx(stats.ttest_1samp([0.3, 0.31, 0.32], 0).pvalue)
    assert amp["seed_test"]["p_holm"] <= len(findings.CLAIMS) * amp["seed_test"]["p"]
    assert amp["verdict"] == findings.HOLDS
    assert claims["da_raises_generations"]["verdict"] == findings.HOLDS  # 3.67, 3.83, 4.00
    assert claims["da_lowers_flipping_pixels"]["verdict"] == findings.HOLDS  # -0.405, -0.4025, -0.40
    assert claims["da_raises_logit_margin"]["verdict"] == findings.REVERSES  # ln 3.x - ln 8 < 0 in every seed
    assert claims["da_recovers_y1"]["verdict"] == findings.HOLDS  # 0.25, 0.26, 0.27
    # success 4/6 vs 3/6 in every seed: a constant difference, p = 0 -> holds
    assert claims["da_lowers_success"]["verdict"] == findings.HOLDS
    # dE(Y10, Y1): Reg 4, DA 2, 3, 4 -> -2, -1, 0: not resolved, and the paper's caveat travels with it
    assert claims["da_raises_de_y1"]["verdict"] == findings.UNRESOLVED
    assert "far" in claims["da_raises_de_y1"]["caveat"]
    # the adjusted p is Holm's over every claim with a p
    raw = [c["seed_test"]["p"] for c in out["claims"]]
    assert [c["seed_test"]["p_holm"] for c in out["claims"]] == pytest.approx(findings.holm(raw))

    # per image, seeds combined: DA medians 0.5, 0.6, 0.71, inf, inf, inf vs Reg 0.2, 0.3, 0.4, 0.5,
    # inf, inf -> +0.3, +0.3, +0.31, +inf, tie, tie: 4 positive of 4, exact p = 2 / 16
    image = amp["per_image"]
    assert (image["images"], image["pairs"], image["seeds"]) == (6, 18, 3)
    assert (image["a_more"], image["b_more"], image["ties"]) == (4, 0, 2)
    assert (image["censored_a_only"], image["censored_b_only"], image["censored_both"]) == (1, 0, 2)
    assert image["p"] == pytest.approx(2 / 16)
    success = claims["da_lowers_success"]["per_image"]  # image 3: Reg only, every seed
    assert (success["a_more"], success["b_more"]) == (0, 1) and success["p"] == 1.0
    md = findings.render_markdown(out)
    assert "| DA raises the minimal flipping amplitude (ours) | image |" in md and "censored: a only 1" in md
    assert "units of each run's latent scale" in md and "far" in md


def _write_certificates(run, certified, radius, correct, test_index):
    """certify.npz of a run: per image certified pixel counts (of 100), radii, correctness."""
    certified = np.asarray(certified)
    counts = np.stack([certified, 100 - certified, np.zeros_like(certified)], axis=1).astype(np.int32)
    np.savez(run / "certify.npz", counts=counts, radius=np.asarray(radius, np.float64),
             correct=np.asarray(correct, bool), test_index=np.asarray(test_index))


def test_certificate_claims_from_seed_folders(tmp_path):
    """Certified fraction and radius: the means over correctly classified images, compared by
    seed and image by image; a misclassified image is left out on its side."""
    seeds = _study(tmp_path)
    for k, d in enumerate(seeds):
        _write_certificates(d / "regular", [10, 20, 30], [0.1, 0.2, 0.3], [True, True, False], [10, 11, 12])
        _write_certificates(d / "da", [40, 50, 60 + k], [0.3, 0.4 + 0.01 * k, 0.5], [True, True, True], [10, 11, 12])
    per = findings.seed_metrics(seeds[1])
    assert per["Reg"]["certified_fraction"] == pytest.approx(0.15)  # (10 + 20) / 2 / 100
    assert per["DA"]["certified_fraction"] == pytest.approx((40 + 50 + 61) / 300)
    assert per["Reg"]["certified_radius"] == pytest.approx(0.15)
    assert per["DA"]["certified_radius"] == pytest.approx((0.3 + 0.41 + 0.5) / 3)
    out = findings.study_findings(seeds, "convnet")
    claims = {c["key"]: c for c in out["claims"]}
    fraction, radius = claims["da_raises_certified_fraction"], claims["da_raises_certified_radius"]
    np.testing.assert_allclose(fraction["difference"]["values"], [150 / 300 - 0.15 + k / 300 for k in range(3)])
    assert fraction["verdict"] == findings.HOLDS and radius["verdict"] == findings.HOLDS
    # per image: images 10 and 11 on both sides (12 is misclassified under Reg): DA higher in both
    image = radius["per_image"]
    assert (image["images"], image["a_more"], image["b_more"]) == (2, 2, 0)
    assert image["p"] == pytest.approx(stats.wilcoxon([0.2, 0.21], alternative="two-sided").pvalue)


def test_a_not_reached_seed_is_kept_and_counted(tmp_path):
    # seed 2: DA flips 2 of 6 images -> its censored median amplitude is not reached
    seeds = _study(tmp_path, not_reached_seed=2)
    out = findings.study_findings(seeds, "convnet")
    text = findings.dumps(out)
    loaded = json.loads(text, parse_constant=refuse)
    amp = {c["key"]: c for c in loaded["claims"]}["da_raises_flip_amplitude"]
    assert amp["difference"]["values"][:2] == pytest.approx([0.3, 0.31]) and amp["difference"]["values"][2] is None
    assert amp["difference"]["values_reasons"][2].startswith("not reached")
    assert amp["difference"]["infinite"] == 1 and amp["difference"]["mean"] is None
    assert amp["seed_test"]["test"].startswith("Wilcoxon") and amp["seed_test"]["p"] == pytest.approx(0.25)
    assert amp["verdict"] == findings.UNRESOLVED
    da = loaded["metrics"]["DA"]["flip_amplitude_censored"]
    assert da["infinite"] == 1 and da["values"][2] is None and da["values_reasons"][2].startswith("not reached")
    assert loaded["per_seed"][2]["DA"]["flip_amplitude_censored"] is None
    assert loaded["per_seed"][2]["DA"]["flip_amplitude_censored_reason"].startswith("not reached")
    assert "not reached" in findings.render_markdown(out)


def test_claims_without_their_files_are_not_measured(tmp_path):
    seeds = _study(tmp_path, scan=False)
    for d in seeds:  # an old study: no latents.npz either
        for folder in ("regular", "da"):
            (d / folder / "latents.npz").unlink()
    out = findings.study_findings(seeds, "convnet")
    claims = {c["key"]: c for c in out["claims"]}
    pixels = claims["da_lowers_flipping_pixels"]
    assert pixels["verdict"] == findings.NOT_MEASURED and pixels["seed_test"]["p"] is None
    assert pixels["per_image"]["reason"] == "not measured" and pixels["per_image"]["verdict"] == findings.NOT_MEASURED
    assert claims["da_raises_margin"]["scaled"]["seed_test"]["reason"] == "not measured"
    # not measured claims stay out of Holm's family: m = the claims with a p
    raw = [c["seed_test"]["p"] for c in out["claims"]]
    assert sum(p is not None for p in raw) == len(findings.CLAIMS) - 3  # no scan, no certificates
    assert [c["seed_test"]["p_holm"] for c in out["claims"]] == findings.holm(raw)
    assert f"**{findings.NOT_MEASURED}**" in findings.render_markdown(out)


# --- Every test image attacked (attack.n_images = 0) ---
def test_n_images_zero_attacks_every_test_image(tmp_path):
    from jaxrobust import attack, scan
    from jaxrobust.config import ConfigError, load_config
    from jaxrobust.data.preprocess import PreparedData

    rng = np.random.default_rng(0)
    test = {d: rng.random((7, 4, 4, 3), np.float32) for d in ("Y10", "Y1")}
    labels = np.arange(7) % 3
    subsample = {"Y10": test["Y10"][[1, 4]], "Y1": test["Y1"][[1, 4]], "labels": labels[[1, 4]],
                 "test_index": np.array([1, 4])}
    data = PreparedData({(d, "test"): test[d] for d in test}, {"test": labels}, subsample, {})
    y10, y1, got, index = attack.attack_images(data, 0, seed=3)
    assert np.array_equal(index, np.arange(7)) and np.array_equal(got, labels)
    assert np.array_equal(y10, test["Y10"]) and np.array_equal(y1, test["Y1"])
    assert np.array_equal(attack.attack_images(data, 5, seed=3)[3], [1, 4])  # the subsample, as before
    config = load_config("quick", ["attack.n_images=0", "scan.n_images=40"])
    assert scan.images_to_scan(config) == 40  # no cap from attack.n_images = 0
    assert scan.images_to_scan(load_config("quick", ["attack.n_images=3", "scan.n_images=40"])) == 3
    with pytest.raises(ConfigError, match="every test image"):
        load_config("quick", ["attack.n_images=-1"])
    (tmp_path / "attack.json").write_text(json.dumps({"attack_config": {"n_images": 0}}))
    assert attack.recorded_n_images(tmp_path) == 0 and attack.recorded_n_images(tmp_path / "none") is None


def test_study_seeds_vary_the_run_seed_only():
    from jaxrobust import rng, study
    from jaxrobust.config import load_config, training_settings

    config = load_config("quick", ["seed=7"])
    assert rng.run_seed(config) == 7  # default -1: the data seed, as before the key existed
    seeded = study.seed_config(config, 2)
    assert rng.run_seed(seeded) == 2 and seeded.seed == 7 and seeded.data == config.data
    assert training_settings(seeded) != training_settings(config)  # a different run folder's training
    assert rng.run_seed({"seed": 4, "run_seed": -1}) == 4  # -1: the data seed (an old run's, read_run_config)
