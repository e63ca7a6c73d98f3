"""Compare jaxrobust.data.morphology with statmorph 0.7.2 on GalSim stamps.

Draws r-band Y1 stamps (jaxrobust.data.simulate's survey model, docs/data.md) of the
three intended classes, segments each with ``segment_galaxy``, measures G and
M20 with our code and with ``statmorph.source_morphology`` on the same segmap
(gain 1, skybox_size 16: statmorph finds no sky box in 100 x 100 stamps of big galaxies otherwise), and writes

  DIR/morphology_vs_statmorph.json   summary + per-stamp rows
  DIR/morphology_vs_statmorph.png    our G/M20 against statmorph's, G-M20 plane

Our timing includes the segmentation, statmorph's does not.  --also-centroid
adds the faster asym_center=False variant to the comparison.  The stamp recipe
is tests/_galsim_stamps.py, shared with the unit tests.

Example:  python scripts/study_morphology_vs_statmorph.py --n 200 --out runs/morph
Needs galsim, statmorph, matplotlib; about 1.5 min for 200 stamps.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))           # the package, if not installed
sys.path.insert(0, str(ROOT / "tests"))  # the GalSim stamp recipe of the tests

import _galsim_stamps as stamps  # noqa: E402
from jaxrobust.data import morphology  # noqa: E402

INTENDED = morphology.CLASS_NAMES
TARGETS = {"abs_dG": 0.01, "abs_dM20": 0.05, "class_agreement": 0.98}


# ---- measurements ----------------------------------------------------------

def run_ours(image, sky_sigma, asym_center):
    start = time.perf_counter()
    result = morphology.measure(image, sky_sigma, asym_center=asym_center)
    return result, 1e3 * (time.perf_counter() - start)


def run_statmorph(image, segmap):
    import statmorph
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sm = statmorph.source_morphology(image, segmap.astype(np.int32),
                                         gain=1.0, skybox_size=16)[0]
    ms = 1e3 * (time.perf_counter() - start)
    bad = sm.gini == -99.0 or sm.m20 == -99.0 or sm.flag > 2
    g = np.nan if bad else float(sm.gini)
    m = np.nan if bad else float(sm.m20)
    return g, m, int(sm.flag), ms


def measure_all(n, seed, also_centroid):
    rows = []
    for i in range(n):
        image, sky_sigma, params = stamps.random_stamp(i, seed)
        try:
            segmap = morphology.segment_galaxy(image, sky_sigma)
        except ValueError as err:  # nothing detected: not comparable
            print(f"stamp {i} skipped: {err}", flush=True)
            continue
        ours, ms_ours = run_ours(image, sky_sigma, asym_center=True)
        g_sm, m_sm, flag, ms_sm = run_statmorph(image, segmap)
        row = {**params, "gini": ours["gini"], "m20": ours["m20"],
               "label": ours["label"], "ms": ms_ours,
               "gini_statmorph": g_sm, "m20_statmorph": m_sm,
               "label_statmorph": int(morphology.classify(g_sm, m_sm)),
               "flag_statmorph": flag, "ms_statmorph": ms_sm}
        if also_centroid:
            fast, ms_fast = run_ours(image, sky_sigma, asym_center=False)
            row.update(gini_centroid=fast["gini"], m20_centroid=fast["m20"],
                       label_centroid=fast["label"], ms_centroid=ms_fast)
        rows.append(row)
        if (i + 1) % 20 == 0:
            print(f"{i + 1}/{n} stamps", flush=True)
    return rows


# ---- summary ---------------------------------------------------------------

def _stats(diff):
    d = np.abs(np.asarray(diff, dtype=float))
    d = d[np.isfinite(d)]
    return {"max": float(d.max()), "p50": float(np.percentile(d, 50)),
            "p95": float(np.percentile(d, 95)),
            "p99": float(np.percentile(d, 99)), "n": int(d.size)}


def compare(rows, suffix):
    g = np.array([r["gini" + suffix] for r in rows], dtype=float)
    m = np.array([r["m20" + suffix] for r in rows], dtype=float)
    lab = np.array([r["label" + suffix] for r in rows])
    g_sm = np.array([r["gini_statmorph"] for r in rows], dtype=float)
    m_sm = np.array([r["m20_statmorph"] for r in rows], dtype=float)
    lab_sm = np.array([r["label_statmorph"] for r in rows])
    ok = np.isfinite(g_sm) & np.isfinite(m_sm)
    dg, dm = g - g_sm, m - m_sm
    worst = np.argsort(-np.nan_to_num(np.abs(dg), nan=np.inf))[:5]
    return {
        "abs_dG": _stats(dg[ok]), "abs_dM20": _stats(dm[ok]),
        "n_dG_over_0.01": int(np.sum(np.abs(dg[ok]) >= 0.01)),
        "n_dM20_over_0.05": int(np.sum(np.abs(dm[ok]) >= 0.05)),
        "class_agreement": float(np.mean(lab[ok] == lab_sm[ok])),
        "class_disagreements": [int(rows[i]["index"])
                                for i in np.flatnonzero(ok & (lab != lab_sm))],
        "ms_per_stamp_median": float(np.median(
            [r["ms" + suffix] for r in rows])),
        "ms_per_stamp_p90": float(np.percentile(
            [r["ms" + suffix] for r in rows], 90)),
        "worst_dG": [{"index": int(rows[i]["index"]), "dG": float(dg[i]),
                      "dM20": float(dm[i])} for i in worst],
    }


def summarise(rows, also_centroid):
    labels = np.array([r["label_statmorph"] for r in rows])
    intended = [r["intended"] for r in rows]
    summary = {
        "n_stamps": len(rows),
        "n_statmorph_invalid": int(sum(not np.isfinite(r["gini_statmorph"])
                                       for r in rows)),
        "intended_counts": {c: intended.count(c) for c in INTENDED},
        "statmorph_label_counts": {c: int(np.sum(labels == k))
                                   for k, c in enumerate(INTENDED)},
        "ours": compare(rows, ""),
        "statmorph_ms_per_stamp_median": float(np.median(
            [r["ms_statmorph"] for r in rows])),
    }
    if also_centroid:
        summary["ours_centroid_instead_of_asymmetry_centre"] = compare(
            rows, "_centroid")
    for key in ("ours", "ours_centroid_instead_of_asymmetry_centre"):
        if key in summary:
            res = summary[key]
            res["meets_spec_4.6_targets"] = bool(
                res["abs_dG"]["max"] < TARGETS["abs_dG"]
                and res["abs_dM20"]["max"] < TARGETS["abs_dM20"]
                and res["class_agreement"] >= TARGETS["class_agreement"])
    summary["spec_4.6_targets"] = TARGETS
    return summary


# ---- figure ----------------------------------------------------------------

def plot(rows, path):
    """Top: our G and M20 against statmorph's; bottom: the differences;
    right: the G-M20 plane with the F = 0 and S = 0 lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def column(key):
        return np.array([r[key] for r in rows], dtype=float)

    lab_sm = np.array([r["label_statmorph"] for r in rows])
    disagree = np.array([r["label"] for r in rows]) != lab_sm
    colours = ("tab:blue", "tab:red", "tab:green")

    fig = plt.figure(figsize=(16, 8.5))
    grid = fig.add_gridspec(2, 3, height_ratios=(2, 1), width_ratios=(1, 1, 1.3))
    for j, (key, name, tol) in enumerate((("gini", "G", 0.01),
                                          ("m20", "M$_{20}$", 0.05))):
        ours, ref = column(key), column(key + "_statmorph")
        top = fig.add_subplot(grid[0, j])
        bottom = fig.add_subplot(grid[1, j], sharex=top)
        lo, hi = np.nanmin(ref) - 0.02, np.nanmax(ref) + 0.02
        top.plot([lo, hi], [lo, hi], "k-", lw=0.8, label="1:1")
        bottom.axhspan(-tol, tol, color="0.9", label=f"target $\\pm${tol}")
        bottom.axhline(0.0, color="k", lw=0.8)
        for k, cls in enumerate(INTENDED):
            sel = lab_sm == k
            top.scatter(ref[sel], ours[sel], s=12, c=colours[k], label=cls)
            bottom.scatter(ref[sel], (ours - ref)[sel], s=12, c=colours[k])
        d = np.nanmax(np.abs(ours - ref))
        top.set(xlim=(lo, hi), ylim=(lo, hi), ylabel=f"jaxrobust {name}",
                title=f"{name}: {len(rows)} stamps, max |difference| = {d:.4f}")
        top.legend(loc="upper left", fontsize=9, title="statmorph label")
        top.tick_params(labelbottom=False)
        lim = max(1.2 * d, 0.2 * tol)
        bottom.set(ylim=(-lim, lim), xlabel=f"statmorph {name}",
                   ylabel="jaxrobust $-$ statmorph")
        bottom.legend(loc="lower right", fontsize=8)

    ax = fig.add_subplot(grid[:, 2])
    g, m = column("gini"), column("m20")
    g_sm, m_sm = column("gini_statmorph"), column("m20_statmorph")
    m_line = np.linspace(0.2, -3.2, 2)
    ax.plot(m_line, 0.14 * m_line + 0.80, "k-", lw=1.2,
            label="F = 0 (elliptical above)")
    ax.plot(m_line, -0.14 * m_line + 0.33, "k--", lw=1.2,
            label="S = 0 (merger above)")
    for k, cls in enumerate(INTENDED):
        sel = lab_sm == k
        ax.scatter(m_sm[sel], g_sm[sel], s=40, facecolors="none",
                   edgecolors=colours[k], label=f"statmorph: {cls}")
        ax.scatter(m[sel], g[sel], s=6, c=colours[k])
    ax.scatter(m[disagree], g[disagree], s=120, marker="x", c="k",
               label=f"labels differ: {disagree.sum()}")
    ax.set(xlim=(0.1, -3.1), ylim=(0.35, 0.75), xlabel="M$_{20}$", ylabel="G",
           title="G$-$M$_{20}$ plane (dots: jaxrobust, circles: statmorph)")
    ax.legend(loc="lower left", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _finite(obj):
    """nan -> None, so the JSON file stays standard JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="number of stamps")
    parser.add_argument("--out", type=Path, required=True, help="output dir")
    parser.add_argument("--seed", type=int, default=20240607)
    parser.add_argument("--also-centroid", action="store_true",
                        help="also measure with asym_center=False (centroid)")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    rows = measure_all(args.n, args.seed, args.also_centroid)
    summary = summarise(rows, args.also_centroid)
    with open(args.out / "morphology_vs_statmorph.json", "w") as f:
        json.dump(_finite({"summary": summary, "stamps": rows}), f, indent=1)
    plot(rows, args.out / "morphology_vs_statmorph.png")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
