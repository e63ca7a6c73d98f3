"""The paper's claims as measured statements: metrics over N seeds and computed verdicts.

A study runs N seeds of both arms on one dataset (jaxrobust/study.py). Here each seed's runs
are reduced to one number per metric and arm (`seed_metrics`), the seeds to a mean with a
two-sided 95 % Student-t interval (mean +- t_{0.975, N-1} s / sqrt(N), s the sample standard
deviation across seeds) plus the per-seed values (`aggregate`), and each claim to the t-interval
of its paired per-seed difference (the two arms of one seed share the data; their seeds
differ only by arm). The verdict is read off that interval (`verdict`): it *holds* when the
whole interval lies on the claimed side of 0, *reverses* when it lies wholly on the other side,
and is *not resolved at this N* otherwise (always with fewer than two seeds).
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
from scipy import stats

from jaxrobust import evaluate, io, latent, robustness

ARMS = (("Reg", "regular"), ("DA", "da"))  # (report name, run folder inside a seed folder)
LEVEL = 0.95
INTERVAL = "two-sided 95 % Student-t interval across seeds: mean +- t(0.975, N-1) sd / sqrt(N)"

HOLDS, REVERSES, UNRESOLVED = "holds", "reverses", "not resolved at this N"

# Paper values per model (Ćiprijanović et al. 2022): Tables 2 and 4 (test accuracy), Tables 3
# and 5 (mean dE over the images flipped under both runs: ConvNet 134, ResNet18 136).
PAPER = {
    "convnet": {"acc_Y10": (0.70, 0.69), "acc_Y1": (0.48, 0.57), "dE_Y10_1P": (3.1, 4.1), "dE_Y10_Y1": (6.7, 8.3)},
    "resnet18": {"acc_Y10": (0.72, 0.82), "acc_Y1": (0.43, 0.66), "dE_Y10_1P": (16.8, 38.1), "dE_Y10_Y1": (20.2, 29.7)},
}

METRICS = {  # name -> what it is (the per-seed value of one arm)
    "acc_Y10": "test accuracy on Y10",
    "acc_Y1": "test accuracy on Y1",
    "success_rate": "one-pixel success rate over attacked images",
    "dE_Y10_1P": "mean dE(Y10, 1P) over images flipped under both arms of the seed",
    "dE_Y10_Y1": "mean dE(Y10, Y1) over images flipped under both arms of the seed",
    "flipped_under_both": "images flipped under both arms of the seed",
    "margin": "median margin (exact latent distance to the nearest class boundary) over attacked images",
    "flip_amplitude": "median minimal flipping amplitude over successful attacks",
    "flip_dE": "median dE at the minimal flip over successful attacks",
    "km_distance_to_flip": "Kaplan-Meier median latent distance to flip (failures censored at their margin)",
    "km_generations_to_flip": "Kaplan-Meier median generations to flip (failures censored at the generations run)",
}


@dataclasses.dataclass(frozen=True)
class Claim:
    """`sign` x (value(arm_a, metric_a) - value(arm_b, metric_b)) > 0 is the claim."""

    key: str
    text: str
    a: tuple[str, str]  # (arm, metric)
    b: tuple[str, str]
    sign: int  # +1: a > b is claimed; -1: a < b
    paper_metric: str | None  # PAPER entry holding (Reg, DA) values, or None
    source: str  # "paper" (a claim of the paper) or "ours" (measures beyond dE)


CLAIMS = (
    Claim("reg_loses_y1", "Regular training loses accuracy on Y1", ("Reg", "acc_Y1"), ("Reg", "acc_Y10"), -1,
          None, "paper"),
    Claim("da_recovers_y1", "DA recovers Y1 accuracy", ("DA", "acc_Y1"), ("Reg", "acc_Y1"), +1, "acc_Y1", "paper"),
    Claim("da_lowers_success", "DA lowers one-pixel success", ("DA", "success_rate"), ("Reg", "success_rate"), -1,
          None, "paper"),
    Claim("da_raises_de_1p", "DA raises dE(Y10, 1P)", ("DA", "dE_Y10_1P"), ("Reg", "dE_Y10_1P"), +1, "dE_Y10_1P",
          "paper"),
    Claim("da_raises_de_y1", "DA raises dE(Y10, Y1)", ("DA", "dE_Y10_Y1"), ("Reg", "dE_Y10_Y1"), +1, "dE_Y10_Y1",
          "paper"),
    Claim("da_raises_margin", "DA raises the margin to the class boundary", ("DA", "margin"), ("Reg", "margin"), +1,
          None, "ours"),
    Claim("da_raises_flip_dE", "DA raises dE at the minimal flip", ("DA", "flip_dE"), ("Reg", "flip_dE"), +1, None,
          "ours"),
    Claim("da_raises_km_distance", "DA raises the censored median latent distance to flip",
          ("DA", "km_distance_to_flip"), ("Reg", "km_distance_to_flip"), +1, None, "ours"),
)


# --- Statistics ---
def t_interval(values, level: float = LEVEL) -> dict:
    """Mean, Student-t interval and the values (NaNs dropped); interval NaN with < 2 values."""
    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return dict(mean=math.nan, ci=(math.nan, math.nan), n=0)
    mean = float(np.mean(x))
    if n < 2:
        return dict(mean=mean, ci=(math.nan, math.nan), n=n)
    half = float(stats.t.ppf(0.5 + level / 2.0, n - 1) * np.std(x, ddof=1) / math.sqrt(n))
    return dict(mean=mean, ci=(mean - half, mean + half), n=n)


def verdict(ci: tuple[float, float], sign: int) -> str:
    """holds / reverses / not resolved, from the interval (lo, hi) of a - b and the claimed sign."""
    lo, hi = ci
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return UNRESOLVED
    if sign * lo > 0 and sign * hi > 0:
        return HOLDS
    if sign * lo < 0 and sign * hi < 0:
        return REVERSES
    return UNRESOLVED


# --- Per seed ---
def _load_attack(run_dir: Path) -> dict:
    path = run_dir / "attack.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path}: the seed's run has no attack yet")
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _finite(x) -> float:
    return math.nan if x is None else float(x)


def seed_metrics(seed_dir) -> dict:
    """{arm: {metric: value}} of one seed folder holding regular/ and da/ (evaluated, attacked,
    robustness measured). NaN where a value is undefined (e.g. nothing flipped under both)."""
    seed_dir = Path(seed_dir)
    attacks = {name: _load_attack(seed_dir / folder) for name, folder in ARMS}
    both = np.logical_and.reduce([attacks[name]["success"].astype(bool) for name, _ in ARMS])
    out = {}
    for name, folder in ARMS:
        run_dir = seed_dir / folder
        evaluation = evaluate.load_evaluation(run_dir)
        a = attacks[name]
        attacked = a["attacked"].astype(bool)
        d_1p = latent.euclidean_distances(a["latent_y10"][both], a["latent_1p"][both])
        d_y1 = latent.euclidean_distances(a["latent_y10"][both], a["latent_y1"][both])
        summary = robustness.load_summary(run_dir) or {}
        out[name] = {
            "acc_Y10": float(evaluation["Y10"]["accuracy"]), "acc_Y1": float(evaluation["Y1"]["accuracy"]),
            "success_rate": float(a["success"][attacked].mean()) if attacked.any() else math.nan,
            "dE_Y10_1P": float(d_1p.mean()) if d_1p.size else math.nan,
            "dE_Y10_Y1": float(d_y1.mean()) if d_y1.size else math.nan,
            "flipped_under_both": float(both.sum()),
            "margin": _finite(summary.get("margin_median_attacked")),
            "flip_amplitude": _finite(summary.get("flip_amplitude_median")),
            "flip_dE": _finite(summary.get("flip_dE_median")),
            "km_distance_to_flip": _finite(summary.get("km_latent_distance_to_flip", {}).get("median")),
            "km_generations_to_flip": _finite(summary.get("km_generations_to_flip", {}).get("median")),
        }
    return out


# --- Across seeds ---
def aggregate(per_seed: list[dict]) -> dict:
    """{arm: {metric: {mean, ci, n, values}}} over the seeds' `seed_metrics` dicts."""
    out = {}
    for name, _ in ARMS:
        out[name] = {}
        for metric in METRICS:
            values = [s[name].get(metric, math.nan) for s in per_seed]
            out[name][metric] = dict(t_interval(values), values=values)
    return out


def evaluate_claims(per_seed: list[dict], model: str) -> list[dict]:
    """Every claim: paper values, per-arm summaries, the paired difference's interval, verdict."""
    paper = PAPER.get(model, {})
    rows = []
    for claim in CLAIMS:
        (arm_a, m_a), (arm_b, m_b) = claim.a, claim.b
        diffs = [s[arm_a][m_a] - s[arm_b][m_b] for s in per_seed]
        diff = dict(t_interval(diffs), values=diffs)
        ref = None
        if claim.key == "reg_loses_y1" and "acc_Y1" in paper:
            ref = {"a": paper["acc_Y1"][0], "b": paper["acc_Y10"][0]}
        elif claim.paper_metric in paper:
            ref = {"a": paper[claim.paper_metric][1], "b": paper[claim.paper_metric][0]}
        rows.append(dict(key=claim.key, text=claim.text, source=claim.source, a=list(claim.a), b=list(claim.b),
                         sign=claim.sign, paper=ref,
                         a_summary=t_interval([s[arm_a][m_a] for s in per_seed]),
                         b_summary=t_interval([s[arm_b][m_b] for s in per_seed]),
                         difference=diff, verdict=verdict(diff["ci"], claim.sign)))
    return rows


def study_findings(seed_dirs: list, model: str, seeds: list[int] | None = None) -> dict:
    """findings.json contents for a study's seed folders."""
    per_seed = [seed_metrics(d) for d in seed_dirs]
    return {"model": model, "seeds": list(seeds) if seeds is not None else list(range(len(seed_dirs))),
            "seed_dirs": [str(d) for d in seed_dirs], "interval": INTERVAL, "metric_definitions": METRICS,
            "metrics": aggregate(per_seed), "claims": evaluate_claims(per_seed, model), "per_seed": per_seed}


# --- Markdown ---
def _fmt(x, digits: int = 3) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{x:.{digits}g}"


def _with_ci(s: dict) -> str:
    lo, hi = s["ci"]
    return f"{_fmt(s['mean'])} [{_fmt(lo)}, {_fmt(hi)}]" if np.isfinite(lo) else _fmt(s["mean"])


def _side(arm_metric) -> str:
    return f"{arm_metric[0]} {arm_metric[1]}"


def render_markdown(findings: dict) -> str:
    """The "Findings" section for the top of a study's report.md."""
    n = len(findings["seeds"])
    lines = [f"## Findings ({findings['model']}, {n} seed{'s' if n != 1 else ''}: {findings['seeds']})\n",
             f"Each claim compares a - b per seed (paired: one dataset, both arms per seed); the interval is the "
             f"{INTERVAL}. Verdict (computed): *holds* if the interval of the difference lies wholly on the "
             f"claimed side of 0, *reverses* if wholly on the other side, else *not resolved at this N*.\n",
             "| Claim | a vs b | paper a / b | ours a | ours b | a - b [95 %] | per-seed a - b | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in findings["claims"]:
        ref = row["paper"]
        ref_txt = f"{ref['a']} / {ref['b']}" if ref else "not reported"
        per_seed = ", ".join(_fmt(v) for v in row["difference"]["values"])
        tag = "" if row["source"] == "paper" else " (ours)"
        lines.append(f"| {row['text']}{tag} | {_side(row['a'])} vs {_side(row['b'])} | {ref_txt} | "
                     f"{_with_ci(row['a_summary'])} | {_with_ci(row['b_summary'])} | {_with_ci(row['difference'])} | "
                     f"{per_seed} | **{row['verdict']}** |")
    lines += ["", "### Every metric across seeds (mean [95 % t-interval]; per-seed values)\n",
              "| Metric | " + " | ".join(name for name, _ in ARMS) + " | definition |",
              "| --- |" + " --- |" * len(ARMS) + " --- |"]
    for metric, definition in METRICS.items():
        cells = []
        for name, _ in ARMS:
            s = findings["metrics"][name][metric]
            cells.append(f"{_with_ci(s)}; ({', '.join(_fmt(v) for v in s['values'])})")
        lines.append(f"| {metric} | " + " | ".join(cells) + f" | {definition} |")
    return "\n".join(lines) + "\n"


def write_findings(findings: dict, out_dir) -> Path:
    """findings.json into `out_dir` (atomic); returns its path."""
    path = Path(out_dir) / "findings.json"
    io.atomic_write_json(path, findings)
    return path
