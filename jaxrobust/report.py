"""`jaxrobust analyze`: latent-space analysis of one run (or a regular/DA pair) and report.md.

Reads what train, evaluate and attack wrote (evaluation.json, latents.npz, predictions.npz,
attack.npz), computes the paper's robustness measures with jaxrobust.latent, draws the figures
with jaxrobust.plots, and writes analysis.json and report.md with our numbers beside the
paper's Tables 2-5.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from jaxrobust import certify, checkpoint, evaluate, io, latent, parallel, plots, provenance, robustness, scan, train
from jaxrobust.config import CLASS_NAMES, read_run_config

# The paper's numbers (Ćiprijanović et al. 2022, TNG100 data), one row per model.
# Tables 2 and 4: (accuracy, precision, recall, F1) of Reg Y10, Reg Y1, DA Y10, DA Y1.
PAPER_METRICS = {
    "resnet18": ((0.72, 0.76, 0.72, 0.72), (0.43, 0.61, 0.43, 0.36), (0.82, 0.82, 0.82, 0.82), (0.66, 0.67, 0.66, 0.67)),
    "convnet": ((0.70, 0.72, 0.70, 0.70), (0.48, 0.67, 0.48, 0.42), (0.69, 0.70, 0.69, 0.69), (0.57, 0.62, 0.57, 0.58)),
}
# Tables 3 and 5: dE (median, mean, st. err.) of Y10-Y1 Reg, Y10-Y1 DA, Y10-1P Reg, Y10-1P DA.
PAPER_DISTANCES = {
    "resnet18": ((18.1, 20.2, 1.0), (26.4, 29.7, 1.5), (16.0, 16.8, 0.4), (35.8, 38.1, 1.3)),
    "convnet": ((6.3, 6.7, 0.2), (6.9, 8.3, 0.3), (2.8, 3.1, 0.1), (3.6, 4.1, 0.2)),
}
# Figure 6: JS distance (Y10-Y1, Y10-1P; the ConvNet 1P value is not legible in the text) and
# the images flipped under both trainings.
PAPER_JS = {"resnet18": (0.24, 0.64), "convnet": (0.26, None)}
PAPER_FLIPPED_UNDER_BOTH = {"resnet18": 136, "convnet": 134}


def _paper(model: str) -> dict:
    """The paper's numbers of one model as the report reads them (metrics, distances, js, flipped)."""
    metrics = dict(zip(("Reg Y10", "Reg Y1", "DA Y10", "DA Y1"), PAPER_METRICS[model]))
    distances = dict(zip(("Y10-Y1 Reg", "Y10-Y1 DA", "Y10-1P Reg", "Y10-1P DA"), PAPER_DISTANCES[model]))
    return {
        "metrics": {t: {d: dict(zip(evaluate.METRIC_NAMES, metrics[f"{t} {d}"])) for d in ("Y10", "Y1")}
                    for t in ("Reg", "DA")},
        "distances": {k: {t: distances[f"{k} {t}"] for t in ("Reg", "DA")} for k in ("Y10-Y1", "Y10-1P")},
        "js": dict(zip(("Y10-Y1", "Y10-1P"), PAPER_JS[model])),
        "flipped_under_both": PAPER_FLIPPED_UNDER_BOTH[model],
    }


PAPER = {model: _paper(model) for model in PAPER_METRICS}


def load_attack(run_dir: Path) -> dict:
    path = Path(run_dir) / "attack.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path}: run `jaxrobust attack --workdir {run_dir}` first")
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _load_npz(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"{path}: run `jaxrobust evaluate --workdir {path.parent}` first")
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def complete_history(run_dir: Path) -> list[dict]:
    """metrics.jsonl of a run to report on: every line whole. A torn last line is refused, not
    dropped: the report would count one epoch less (none at all for a one-epoch run)."""
    path = Path(run_dir) / "metrics.jsonl"
    text = path.read_text() if path.exists() else ""
    rows = train.read_metrics(run_dir)
    lines = [line for line in text.splitlines() if line.strip()]
    if len(rows) == len(lines):
        return rows
    meta = checkpoint.read_meta(run_dir, "latest") or {}
    last = meta.get("epoch")
    if last is not None and len(rows) == int(last) + 1:  # the line of an epoch that never checkpointed
        raise provenance.ProvenanceError(
            f"{path}: its last line is torn: training was interrupted during epoch {len(rows) + 1} (its "
            f"checkpoint was never written); finish it with `jaxrobust train --workdir {run_dir} --resume` "
            "(same --data, config and overrides), then evaluate and attack again")
    raise provenance.ProvenanceError(
        f"{path}: its last line is torn although epoch {len(lines)} finished; the run folder is damaged: retrain "
        f"with `jaxrobust train --workdir {run_dir} --overwrite`")


def _training_name(config) -> str:
    """"Reg" for regular training, "DA" for a run with a domain-adaptation loss (MMD or CORAL)."""
    return "Reg" if config.train.da_loss == "none" else "DA"


class RunArtifacts:
    """Everything a finished run wrote, loaded once."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir)
        self.config = read_run_config(self.dir)
        self.name = _training_name(self.config)
        self.evaluation = evaluate.load_evaluation(self.dir)
        self.latents = _load_npz(self.dir / "latents.npz")
        self.predictions = _load_npz(self.dir / "predictions.npz")
        self.attack = load_attack(self.dir)
        info = self.dir / "attack.json"
        self.attack_info = json.loads(info.read_text()) if info.exists() else {}
        self.history = complete_history(self.dir)

    def head_fn(self):
        model, variables, _ = checkpoint.load_variables(self.dir)
        return lambda z: model.apply(variables, z, method=model.head)


def distance_sets(run: RunArtifacts, selection: np.ndarray) -> dict:
    """dE(Y10, Y1) and dE(Y10, 1P) over the selected attacked images."""
    a = run.attack
    return {"Y10-Y1": latent.euclidean_distances(a["latent_y10"][selection], a["latent_y1"][selection]),
            "Y10-1P": latent.euclidean_distances(a["latent_y10"][selection], a["latent_1p"][selection])}


def church_windows(run: RunArtifacts, images: np.ndarray, figures: Path, analysis_config) -> list[str]:
    """Church-window figures for the given attacked images; returns the file names."""
    head = run.head_fn()
    a, axis, names = run.attack, latent.window_axis(), []
    for i in images:
        classes = latent.church_window(head, a["latent_y10"][i], a["latent_1p"][i], a["latent_y1"][i])
        name = f"church_window_{run.name.lower()}_{int(i)}.png"
        plots.church_window(figures / name, classes, axis, int(a["labels"][i]), int(a["target"][i]),
                            title_prefix=f"{run.name}: ")
        names.append(name)
    return names


def isomaps(run: RunArtifacts, triplets: np.ndarray, figures: Path, analysis_config, seed: int) -> list[str]:
    """2D and 3D isomaps of random test galaxies (Y10 and Y1) plus the attacked triplets."""
    rng = np.random.default_rng(seed)
    n_test = len(run.latents["latent_y10"])
    pick = np.sort(rng.choice(n_test, size=min(int(analysis_config.isomap_points), n_test), replace=False))
    z10, z1 = run.latents["latent_y10"][pick], run.latents["latent_y1"][pick]
    p10, p1 = run.predictions["predicted_y10"][pick], run.predictions["predicted_y1"][pick]
    a = run.attack
    trip = [a["latent_y10"][triplets], a["latent_y1"][triplets], a["latent_1p"][triplets]]
    trip_classes = [np.argmax(a["probabilities_before"][triplets], 1), np.argmax(a["probabilities_y1"][triplets], 1),
                    np.argmax(a["probabilities_after"][triplets], 1)]
    n = len(pick)
    proj = latent.isomap(np.concatenate([z10, z1] + trip), 2, analysis_config.isomap_neighbors)
    k = len(triplets)
    proj_trip = [proj[2 * n + j * k: 2 * n + (j + 1) * k] for j in range(3)]
    tag = run.name.lower()
    title = f"{run.config.model.name}, {run.name}: {n} test galaxies, Y10 filled / Y1 empty"
    names = [plots.isomap_2d(figures / f"isomap2d_{tag}.png", proj[:n], proj[n:2 * n], p10, p1, proj_trip,
                             trip_classes, title).name]
    proj3 = latent.isomap(np.concatenate([z10, z1]), 3, analysis_config.isomap_neighbors)
    names.append(plots.isomap_3d(figures / f"isomap3d_{tag}.png", proj3[:n], proj3[n:], p10, p1, title).name)
    if analysis_config.animation:
        names.append(plots.isomap_animation(figures / f"isomap3d_{tag}.gif", proj3[:n], proj3[n:], p10, p1,
                                            title=f"{run.config.model.name}, {run.name}").name)
    return names


def certify_section(runs: list[RunArtifacts]) -> dict | None:
    """Certificates (when every run has certify.npz): per run certify.json's counts and the
    agreement of DE and the scan with the certificate."""
    if not all((r.dir / "certify.npz").exists() for r in runs):
        return None
    out = {"summaries": {}, "rows": {}}
    for run in runs:
        out["summaries"][run.name] = {k: v for k, v in json.loads((run.dir / "certify.json").read_text()).items()
                                      if k != provenance.PROVENANCE_KEY}
        arrays = certify.load_certify(run.dir)
        scanned = scan.load_scan(run.dir) if (run.dir / "scan.npz").exists() else None
        out["rows"][run.name] = certify.agreement(arrays, run.attack, scanned)
    return out


def scan_section(runs: list[RunArtifacts], figures: Path, analysis_config) -> dict | None:
    """DE vs the exhaustive scan (when every run has scan.npz): per run the comparison counts,
    vulnerability figures of its first `analysis.church_windows` vulnerable attacked images,
    and (two runs) the flipping-pixel count distributions of regular vs DA training."""
    if not all((r.dir / "scan.npz").exists() for r in runs):
        return None
    out = {"rows": {}, "figures": [], "colours": None}
    panels = {}
    for run in runs:
        arrays = scan.load_scan(run.dir)
        targeted = bool(run.config.attack.targeted)
        out["rows"][run.name] = scan.de_vs_exhaustive(run.attack, arrays, targeted)
        out["colours"] = json.loads((run.dir / "scan.json").read_text())["settings"]["colours"]
        n = len(arrays["labels"])
        attacked = run.attack["attacked"][:n].astype(bool)
        counts = arrays["flipping_pixels_any"] if targeted else arrays["flipping_pixels_untargeted"]
        order = np.flatnonzero(attacked & (counts > 0)).tolist() + np.flatnonzero(attacked & (counts == 0)).tolist()
        for i in order[: int(analysis_config.church_windows)]:
            threshold = arrays["target_threshold"] if targeted else arrays["untargeted_threshold"]
            vulnerability, flipping = scan.vulnerability_map(arrays, i, float(threshold), targeted)
            de_pixel = run.attack["pixel"][i, :2].astype(int) if run.attack["success"][i] else None
            name = f"scan_{run.name.lower()}_{i}.png"
            plots.scan_vulnerability(figures / name, arrays["images"][i], vulnerability, flipping,
                                     f"{run.name}: image {i}, {plots.CLASS_NAMES[int(arrays['labels'][i])]}, "
                                     f"{int(flipping.sum())} flipping pixels", de_pixel)
            out["figures"].append(name)
        arm = "regular" if run.name == "Reg" else "da"
        size = int(arrays["max_probability"][0, 0].size)
        for c, class_name in enumerate(plots.CLASS_NAMES[: arrays["max_probability"].shape[1]]):
            towards = arrays["flipping_pixels_targeted"][:n, c]
            panels.setdefault(f"towards {class_name}", {})[arm] = towards[attacked & (towards >= 0)]
        panels.setdefault("any other class" if targeted else "untargeted", {})[arm] = counts[attacked]
    if len(runs) == 2:
        name = f"scan_flip_counts_{runs[0].config.model.name}.png"
        plots.scan_flip_counts(figures / name, panels, size, title=f"{runs[0].config.model.name}: flipping pixels "
                               f"per attacked image, colour set {out['colours']}")
        out["figures"].append(name)
    return out


def write_run_figures(run_dir: Path) -> list[Path]:
    """figures/training_curves.png (from metrics.jsonl) and figures/confusion_matrices.png (from
    evaluation.json) of one run, each where its input exists; process 0 only.

    Drawn here, above train and evaluate, so that the trainer and the evaluator never import
    plots (docs/architecture.md): the CLI, `reproduce` and `analyze` call this after those stages.
    """
    if not parallel.is_main_process():
        return []
    run_dir = Path(run_dir)
    written = []
    history = train.read_metrics(run_dir)
    if history:
        config = read_run_config(run_dir)
        arm = "regular" if config.train.da_loss == "none" else f"DA ({config.train.da_loss.upper()})"
        written.append(plots.training_curves(run_dir / "figures" / "training_curves.png", history,
                                             title=f"{config.model.name}, {arm}"))
    evaluation = run_dir / "evaluation.json"
    if evaluation.exists():
        results = json.loads(evaluation.read_text())
        written.append(plots.confusion_matrices(run_dir / "figures" / "confusion_matrices.png",
                                                [results["Y10"]["confusion"], results["Y1"]["confusion"]],
                                                ["Y10 test", "Y1 test"], CLASS_NAMES))
    return written


def analyze(run_dirs: list[Path], out_dir: Path | None = None, log=print) -> dict:
    """Analysis of one run, or of a regular and a DA run of the same model (any order).

    Writes analysis.json, figures/ and report.md into `out_dir` (default: the first run).
    """
    start = time.perf_counter()
    if len(run_dirs) == 2:  # one dataset, the same attacked images: else the pairing means nothing
        provenance.check_pair(*run_dirs)
    for run_dir in run_dirs:
        write_run_figures(run_dir)
    runs = [RunArtifacts(d) for d in run_dirs]
    if len({r.name for r in runs}) != len(runs):
        raise ValueError("compare a regular run with a DA run (`--compare`); both given runs are "
                         f"{runs[0].name}")
    runs.sort(key=lambda r: r.name != "Reg")
    out_dir = Path(out_dir or runs[0].dir)
    figures = out_dir / "figures"
    analysis_config = runs[0].config.analysis
    success = [r.attack["success"].astype(bool) for r in runs]
    selection = np.logical_and.reduce(success) if len(runs) == 2 else success[0]
    chosen = np.flatnonzero(selection)
    result = {"runs": {}, "selection": {"n": int(selection.sum()),
                                        "rule": "flipped under both runs" if len(runs) == 2 else "successful attacks"}}
    distances = {}
    for run in runs:
        distances[run.name] = distance_sets(run, selection)
        attacked = run.attack["attacked"].astype(bool)
        result["runs"][run.name] = {
            "dir": str(run.dir), "model": run.config.model.name, "test_metrics": run.evaluation,
            "attack": {"attacked": int(attacked.sum()), "successful": int(run.attack["success"].sum()),
                       "success_rate": float(run.attack["success"][attacked].mean()) if attacked.any() else float("nan"),
                       "median_generations_success": float(np.median(run.attack["generations"][run.attack["success"]]))
                       if run.attack["success"].any() else float("nan"), **run.attack_info},
            "distances": {k: latent.distance_summary(v, int(analysis_config.bootstrap)) for k, v in distances[run.name].items()},
            "training": {"epochs": len(run.history), "seconds": float(sum(h["seconds"] for h in run.history))},
        }
    figure_names = {"church_windows": [], "isomaps": [], "histograms": []}
    if chosen.size:
        triplets = chosen[: max(1, int(analysis_config.church_windows))]
        for run in runs:
            figure_names["church_windows"] += church_windows(run, triplets, figures, analysis_config)
            figure_names["isomaps"] += isomaps(run, triplets[:1], figures, analysis_config, seed=runs[0].config.seed)
    if len(runs) == 2 and chosen.size:
        bins = int(analysis_config.histogram_bins)
        panels = []
        for key in ("Y10-Y1", "Y10-1P"):
            reg, da = distances["Reg"][key], distances["DA"][key]
            js = latent.js_distance(reg, da, bins)
            result.setdefault("js_distance", {})[key] = js
            panels.append({"title": f"{key} distance", "regular": reg, "da": da,
                           "bins": latent.common_bins(reg, da, bins), "js": js})
        name = f"distances_{runs[0].config.model.name}.png"
        plots.distance_histograms(figures / name, panels, title=f"{runs[0].config.model.name}: latent distances "
                                  f"({int(selection.sum())} images flipped under both)")
        figure_names["histograms"].append(name)
    result["figures"] = figure_names
    result["scan"] = scan_section(runs, figures, analysis_config)
    result["certify"] = certify_section(runs)
    result["seconds"] = round(time.perf_counter() - start, 2)
    io.atomic_write_json(out_dir / "analysis.json", result)
    io.atomic_write_bytes(out_dir / "report.md", render_report(runs, result, out_dir).encode())
    log(f"wrote {out_dir / 'report.md'}")
    return result


# --- report.md ---
def _fmt(x, digits=2):
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}f}"


def distance_table(result: dict, paper: dict | None) -> str:
    lines = ["| Perturbation | Training | Median | Mean | St. err. | mean 95 % CI | paper median / mean / st. err. |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for key in ("Y10-Y1", "Y10-1P"):
        for name, run in result["runs"].items():
            s = run["distances"][key]
            ref = paper["distances"][key][name] if paper else None
            ref_txt = " / ".join(f"{v}" for v in ref) if ref else ""
            lines.append(f"| {key} | {name} | {_fmt(s['median'])} | {_fmt(s['mean'])} | ±{_fmt(s['std_error'])} | "
                         f"[{_fmt(s['mean_ci'][0])}, {_fmt(s['mean_ci'][1])}] | {ref_txt} |")
    return "\n".join(lines) + "\n"


def render_report(runs: list[RunArtifacts], result: dict, out_dir: Path) -> str:
    model = runs[0].config.model.name
    paper = PAPER.get(model)
    rel = lambda p: Path(p).name  # noqa: E731
    parts = [f"# jaxrobust report: {model}, {' vs '.join(r.name for r in runs)}\n",
             "All numbers below come from the runs in this folder; the paper's numbers (TNG100 data, "
             "Ćiprijanović et al. 2022) are in brackets or in the last column. Our simulated data differ "
             "from the paper's, so levels differ; the directions are what to compare.\n",
             "## Classification (paper Tables 2 and 4)\n",
             evaluate.metrics_table({r.name: result["runs"][r.name]["test_metrics"] for r in runs},
                                    paper["metrics"] if paper else None)]
    parts.append("\n## One-pixel attack\n")
    parts.append("| Training | attacked (correct in Y10) | successful | success rate | median generations (successes) |"
                 " seconds |\n| --- | --- | --- | --- | --- | --- |\n")
    for r in runs:
        a = result["runs"][r.name]["attack"]
        parts.append(f"| {r.name} | {a['attacked']} | {a['successful']} | {_fmt(a['success_rate'])} | "
                     f"{_fmt(a['median_generations_success'], 1)} | {_fmt(a.get('seconds'), 1)} |\n")
    sel = result["selection"]
    parts.append(f"\n## Latent distances (paper Tables 3 and 5): {sel['n']} images, {sel['rule']}\n\n")
    if paper and len(runs) == 2:
        parts.append(f"(paper: {paper['flipped_under_both']} images)\n\n")
    parts.append(distance_table(result, paper if len(runs) == 2 else None))
    if "js_distance" in result:
        js = result["js_distance"]
        parts.append(f"\nJensen-Shannon distance (base 2) between the regular and DA dE histograms: "
                     f"Y10-Y1 {_fmt(js['Y10-Y1'])}, Y10-1P {_fmt(js['Y10-1P'])}"
                     + (f" (paper: {paper['js']['Y10-Y1']}, {_fmt(paper['js']['Y10-1P'])})" if paper else "") + ".\n")
    summaries = {r.name: robustness.load_summary(r.dir) for r in runs}
    if all(s is not None for s in summaries.values()):
        parts.append("\n## Exact robustness measures: margin, minimal flip, censored medians\n\n"
                     + robustness.render_markdown(summaries))
    for r in runs:  # `evaluate --force` / `attack --force`: allowed, and said where the numbers appear
        forced = provenance.units_of_other_data(r.dir)
        if forced:
            parts.append(f"\nNote: {r.name}'s {' and '.join(forced)} results come from other data than the run "
                         f"was trained on (`--force`); rerun them without --force for the run's own data.\n")
    stale = [reason for r in runs if (reason := robustness.stale_reason(r.dir)) is not None]
    if stale:  # never the measures of an earlier attack beside this one's counts
        parts.append("\nThe exact robustness measures are left out: " + "; ".join(stale) + ".\n")
    if result.get("scan"):
        parts.append(scan.de_vs_exhaustive_markdown(result["scan"]["rows"], result["scan"]["colours"]))
        parts.extend(f"\n![scan](figures/{rel(name)})\n" for name in result["scan"]["figures"])
    if result.get("certify"):
        parts.append(certify.render_markdown(result["certify"]["summaries"], result["certify"]["rows"]))
    parts.append("\n## Figures\n")
    figs = result["figures"]
    for name in figs["histograms"]:
        parts.append(f"\n![distances](figures/{rel(name)})\n")
    for name in figs["church_windows"]:
        parts.append(f"\n![church window](figures/{rel(name)})\n")
    for name in figs["isomaps"]:
        parts.append(f"\n![isomap](figures/{rel(name)})\n")
    for r in runs:
        for fig in ("training_curves.png", "confusion_matrices.png"):
            if (r.dir / "figures" / fig).exists():
                parts.append(f"\n![{r.name} {fig}]({os.path.relpath(r.dir / 'figures' / fig, out_dir)})\n")
    parts.append("\n## Runs, timings and versions\n\n")
    for r in runs:
        run = result["runs"][r.name]
        parts.append(f"- {r.name}: `{r.dir}`; {run['training']['epochs']} epochs in "
                     f"{run['training']['seconds']:.0f} s; attack {_fmt(run['attack'].get('seconds'), 0)} s\n")
    parts.append(f"- analysis: {result['seconds']:.0f} s\n")
    parts.append(f"- platform: {platform.platform()}, Python {platform.python_version()}\n")
    parts.append(f"- versions: {json.dumps(io.package_versions())}\n")
    parts.append("\n<details><summary>Config of the first run</summary>\n\n```json\n"
                 + json.dumps(runs[0].config.to_dict(), indent=1, default=list) + "\n```\n</details>\n")
    return "".join(parts)
