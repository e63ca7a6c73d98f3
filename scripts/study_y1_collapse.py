"""Why does a model trained on Y10 call Y1 images mergers? Trained runs' checkpoints, no retraining.

    python scripts/study_y1_collapse.py RUN [RUN ...] --data DIR --out JSON [--figures DIR]

Three measurements per run (its `best` checkpoint by default), on the test split of the simulated
dataset DIR (a folder written by `jaxrobust simulate` / `reproduce`, which knows its sky level):

1. Noise ladder. The Y10 test images brought to t of the ten years' exposure, t = 10, 9, ..., 1
   (`jaxrobust.data.noise_ladder`: binomial thinning of the Y10 counts, exactly the sky + source
   Poisson noise of a t-year observation; t = 10 is the Y10 array itself, t = 1 a Y1 observation
   of the same galaxies with other photons than the dataset's Y1 array), preprocessed as the run's
   data are: with `preprocess.stats_from="train"` every depth t is stretched with the percentiles
   of the Y10 training split brought to the same t (as the Y1 arrays take the Y1 training
   split's), with "self" with its own. Accuracy, the fraction called merger and the clip bounds
   p_lo / p_hi against t show where between Y10 and Y1 the predictions move.
2. AdaBN (Li et al. 2016, "Revisiting Batch Normalization for practical domain adaptation",
   arXiv:1603.04779): every BatchNorm layer's mean and variance replaced by the population
   statistics of the target images (one forward pass over all of them in train mode, so each
   layer's statistics are taken on inputs that the adapted layers below it normalised), weights
   unchanged. Adapted on the Y1 test images (transductive), on the Y1 training images (unlabelled,
   inductive) and, as a control, on the Y10 test images. Also per layer: how far the Y1 and Y10
   test statistics lie from the stored running ones (mean shift in stored standard deviations,
   variance ratio).
   A control ladder stretches depth t with the Y10 array's clip bounds scaled by t / 10: the
   galaxy's signal then lands on the same stretched values at every t and only the noise grows,
   which separates the noise from the change of the clip bounds.
3. Accuracy in bins of the galaxy's total r magnitude (metadata_test.npz `mag_r`, companions and
   stars excluded), bins of equal counts, at Y10 and Y1, with the stored statistics and with AdaBN
   on the Y1 test images, with Wilson 95 % intervals.

Writes the JSON to --out and three figures (y1_noise_ladder.png, y1_adabn.png,
y1_magnitude_bins.png) to --figures.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench_json import emit  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxrobust import checkpoint  # noqa: E402
from jaxrobust import config as config_lib  # noqa: E402
from jaxrobust.config import CLASS_NAMES  # noqa: E402
from jaxrobust.data import load_prepared, preprocess, store  # noqa: E402
from jaxrobust.data.noise_ladder import noise_ladder  # noqa: E402
from jaxrobust.models.common import BatchNorm  # noqa: E402
from jaxrobust.predict import make_predict  # noqa: E402

MERGER = CLASS_NAMES.index("merger")
YEARS = tuple(range(10, 0, -1))
RNG_SPLIT = {"test": 0, "train": 1}  # the ladder's noise stream per split


def wilson(k: int, n: int, z: float = 1.959963984540054) -> list[float]:
    """Wilson score interval of a binomial proportion k / n (Wilson 1927)."""
    if n == 0:
        return [math.nan, math.nan]
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # the bounds are exactly 0 at k = 0 and 1 at k = n; rounding may miss them by 1e-16
    return [0.0 if k == 0 else centre - half, 1.0 if k == n else centre + half]


def scores(predicted: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy (with its Wilson interval), fraction called merger, predicted counts per class."""
    correct = int(np.sum(predicted == labels))
    return dict(n=int(len(labels)), accuracy=correct / max(len(labels), 1), accuracy_ci95=wilson(correct, len(labels)),
                merger_fraction=float(np.mean(predicted == MERGER)) if len(labels) else math.nan,
                predicted=dict(zip(CLASS_NAMES, np.bincount(predicted, minlength=len(CLASS_NAMES)).tolist())))


def dataset_sky_y1(data_dir: Path) -> tuple[np.ndarray, float]:
    """(one-year sky per pixel in e- per band, sky area per pixel) of a simulated dataset."""
    info_path = data_dir / "dataset.json"
    if not info_path.exists():
        raise SystemExit(f"error: {info_path} not found: the noise ladder needs a dataset written by "
                         "`jaxrobust simulate` or `reproduce` (its sky level is in dataset.json)")
    area = float(json.loads(info_path.read_text())["config"]["data"]["sky_area_per_pixel_arcsec2"])
    from jaxrobust.data import simulate  # GalSim: imported only for the sky formula

    return simulate.sky_electrons_per_pixel("Y1", area), area


class Run:
    """One trained run: its model, variables, preprocessing and a compiled predictor."""

    def __init__(self, folder: Path, data_dir: Path, series: str):
        self.folder = folder
        self.model, self.variables, config = checkpoint.load_variables(folder, series)
        self.config = config_lib.copy_with(config, {"data.source": str(data_dir)})
        self.predict = make_predict(self.model, int(config.train.eval_batch_size))
        pre = self.config.preprocess
        self.preprocess_key = (tuple(pre.percentiles), float(pre.stretch), pre.stats_from)

    def classify(self, images: np.ndarray, variables=None) -> np.ndarray:
        return np.argmax(self.predict(variables or self.variables, images)[1], axis=-1)


def adapted_variables(model, variables, images: np.ndarray) -> dict:
    """AdaBN: `variables` with every BatchNorm's statistics replaced by those of `images`.

    One forward pass over all images in train mode: each BatchNorm normalises with the moments
    of its input over the whole set and writes momentum x 0 + (1 - momentum) x moments into
    zeroed running statistics, which are divided back out.
    """
    momentum = BatchNorm.momentum
    zeroed = jax.tree_util.tree_map(jnp.zeros_like, variables["batch_stats"])
    _, updates = model.apply({"params": variables["params"], "batch_stats": zeroed}, jnp.asarray(images),
                             train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
    stats = jax.tree_util.tree_map(lambda s: s / (1.0 - momentum), updates["batch_stats"])
    return {"params": variables["params"], "batch_stats": stats}


def check_adapted(run: Run, adapted: dict, images: np.ndarray) -> float:
    """max |logit| difference between eval mode with the adapted statistics and train mode on the
    same set (they normalise with the same moments, so it should be float rounding)."""
    _, logits_eval = run.model.apply(adapted, jnp.asarray(images), train=False)
    (_, logits_train), _ = run.model.apply(adapted, jnp.asarray(images), train=True, mutable=["batch_stats"],
                                           rngs={"dropout": jax.random.key(0)})
    return float(jnp.max(jnp.abs(logits_eval - logits_train)))


def layer_shift(stored: dict, adapted: dict) -> dict:
    """Per BatchNorm layer: mean |shift of the channel means| in stored standard deviations and the
    median ratio of the adapted to the stored channel variances."""
    out = {}
    flat_stored = dict(jax.tree_util.tree_flatten_with_path(stored)[0])
    flat_adapted = dict(jax.tree_util.tree_flatten_with_path(adapted)[0])
    layers = sorted({path[:-1] for path in flat_stored}, key=lambda p: [str(k) for k in p])
    for layer in layers:
        key = lambda name: layer + (jax.tree_util.DictKey(name),)  # noqa: E731
        mean_s, var_s = np.asarray(flat_stored[key("mean")]), np.asarray(flat_stored[key("var")])
        mean_a, var_a = np.asarray(flat_adapted[key("mean")]), np.asarray(flat_adapted[key("var")])
        name = "/".join(str(getattr(k, "key", k)) for k in layer)
        out[name] = dict(mean_shift_in_sd=float(np.mean(np.abs(mean_a - mean_s) / np.sqrt(var_s + 1e-5))),
                         median_var_ratio=float(np.median(var_a / (var_s + 1e-5))))
    return out


def prepared_ladder(data_dir: Path, preprocess_key, sky_y1: np.ndarray, seed: int, reference_y10_test: np.ndarray):
    """{t: {"images", "bounds", "images_y10_stretch"}} of the Y10 test split at depth t.

    "images" are stretched as the run's data are (the bounds used are "bounds"); the control
    "images_y10_stretch" uses the Y10 array's bounds scaled by t / 10, so a galaxy's signal
    (t I) lands on the same stretched values at every t and only the noise changes.
    """
    percentiles, stretch, stats_from = preprocess_key
    raw = store.RawDataset(data_dir)
    ladder = {}
    for years in YEARS:
        def at_depth(split):
            rng = np.random.default_rng([seed, years, RNG_SPLIT[split]])
            return store.to_nhwc(noise_ladder(raw.images["Y10", split], years, sky_y1, rng))

        test = at_depth("test")
        # the same rule as preprocess.prepare_arrays: the training split's bounds at this depth,
        # or the array's own
        bounds = preprocess.stretch_bounds(at_depth("train") if stats_from == "train" else test, percentiles)
        if years == 10:
            y10_bounds = bounds
        scaled = preprocess.StretchBounds(y10_bounds.p_lo * years / 10, y10_bounds.p_hi * years / 10)
        control, _ = preprocess.normalize(test, scaled, stretch=stretch)
        images, _ = preprocess.normalize(test, bounds, stretch=stretch, in_place=True)
        if years == 10 and not np.array_equal(images, reference_y10_test):
            raise AssertionError("the ladder at t = 10 is not the run's prepared Y10 test array: the "
                                 "script's preprocessing differs from jaxrobust.data.prepare")
        ladder[years] = dict(images=images, bounds=bounds, images_y10_stretch=control)
        print(f"[ladder] t = {years}: p_lo / p_hi = {bounds.p_lo / bounds.p_hi:.3f}", flush=True)
    return ladder


def magnitude_bins(mag: np.ndarray, n_bins: int) -> np.ndarray:
    """Edges of `n_bins` bins holding equal numbers of galaxies (quantiles of `mag`)."""
    return np.quantile(mag, np.linspace(0.0, 1.0, n_bins + 1))


def study(run_dirs, data_dir: Path, series: str, seed: int, n_bins: int) -> dict:
    sky_y1, area = dataset_sky_y1(data_dir)
    runs = [Run(Path(r), data_dir, series) for r in run_dirs]
    metadata = store.read_metadata(data_dir, "test")
    if "mag_r" not in metadata:
        raise SystemExit(f"error: {data_dir / 'metadata_test.npz'} has no mag_r: the magnitude bins need "
                         "a dataset written by this version of `jaxrobust simulate`")
    mag = np.asarray(metadata["mag_r"])
    edges = magnitude_bins(mag, n_bins)
    result = dict(data=str(data_dir), series=series, seed=seed, sky_area_per_pixel_arcsec2=area,
                  sky_y1_e_per_pixel=dict(zip(("g", "r", "i"), sky_y1.round(1).tolist())),
                  years=list(YEARS), magnitude_bin_edges=edges.tolist(), runs={})
    prepared_by_key, ladders = {}, {}
    for run in runs:
        if run.preprocess_key not in prepared_by_key:
            prepared_by_key[run.preprocess_key] = load_prepared(data_dir, run.config)
        data = prepared_by_key[run.preprocess_key]
        labels = data.labels["test"]
        result["test_labels"] = dict(zip(CLASS_NAMES, np.bincount(labels, minlength=len(CLASS_NAMES)).tolist()))
        y10, y1 = data.images["Y10", "test"], data.images["Y1", "test"]
        if run.preprocess_key not in ladders:
            ladders[run.preprocess_key] = prepared_ladder(data_dir, run.preprocess_key, sky_y1, seed, y10)
        ladder = ladders[run.preprocess_key]
        print(f"[run] {run.folder}", flush=True)
        entry = dict(preprocess=dict(zip(("percentiles", "stretch", "stats_from"), run.preprocess_key)),
                     model=run.config.model.name, da_loss=run.config.train.da_loss)
        pred_y10, pred_y1 = run.classify(y10), run.classify(y1)
        entry["Y10"], entry["Y1"] = scores(pred_y10, labels), scores(pred_y1, labels)
        entry["Y1_bounds_p_lo_over_p_hi"] = data.bounds["Y1", "test"].p_lo / data.bounds["Y1", "test"].p_hi
        entry["ladder"] = []
        for years in YEARS:
            step = ladder[years]
            bounds = step["bounds"]
            entry["ladder"].append(dict(years=years, p_lo=bounds.p_lo, p_hi=bounds.p_hi,
                                        p_lo_over_p_hi=bounds.p_lo / bounds.p_hi,
                                        **scores(run.classify(step["images"]), labels),
                                        y10_stretch=scores(run.classify(step["images_y10_stretch"]), labels)))
        adapted = {"Y1_test": adapted_variables(run.model, run.variables, y1),
                   "Y1_train": adapted_variables(run.model, run.variables, data.images["Y1", "train"]),
                   "Y10_test": adapted_variables(run.model, run.variables, y10)}
        pred_adabn_y1 = run.classify(y1, adapted["Y1_test"])
        entry["adabn"] = {
            "Y1 with Y1 test statistics": scores(pred_adabn_y1, labels),
            "Y1 with Y1 train statistics": scores(run.classify(y1, adapted["Y1_train"]), labels),
            "Y10 with Y10 test statistics (control)": scores(run.classify(y10, adapted["Y10_test"]), labels),
            "Y10 with Y1 test statistics": scores(run.classify(y10, adapted["Y1_test"]), labels),
            "max_logit_difference_eval_vs_train_mode": check_adapted(run, adapted["Y1_test"], y1),
            "layers_Y1_test_vs_stored": layer_shift(run.variables["batch_stats"], adapted["Y1_test"]["batch_stats"]),
            "layers_Y10_test_vs_stored": layer_shift(run.variables["batch_stats"], adapted["Y10_test"]["batch_stats"]),
        }
        bins = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            rows = (mag >= lo) & ((mag < hi) if hi < edges[-1] else (mag <= hi))
            bins.append(dict(mag_r=[float(lo), float(hi)],
                             labels=dict(zip(CLASS_NAMES, np.bincount(labels[rows], minlength=3).tolist())),
                             Y10=scores(pred_y10[rows], labels[rows]), Y1=scores(pred_y1[rows], labels[rows]),
                             Y1_adabn=scores(pred_adabn_y1[rows], labels[rows])))
        entry["magnitude_bins"] = bins
        result["runs"][str(run.folder)] = entry
    return result


def run_label(folder: str, entry: dict) -> str:
    arm = "DA" if entry["da_loss"] != "none" else "regular"
    return f"{arm} ({Path(folder).parent.name}/{Path(folder).name})"


def figures(result: dict, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "y1_noise_ladder.png", out_dir / "y1_adabn.png", out_dir / "y1_magnitude_bins.png"]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    runs = list(result["runs"].items())

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for colour, (folder, entry) in zip(colours, runs):
        years = [row["years"] for row in entry["ladder"]]
        label = run_label(folder, entry)
        axes[0].plot(years, [row["accuracy"] for row in entry["ladder"]], "o-", color=colour, label=label)
        axes[0].plot([1], [entry["Y1"]["accuracy"]], "*", ms=13, color=colour, label=f"{label}: dataset's Y1")
        axes[1].plot(years, [row["merger_fraction"] for row in entry["ladder"]], "o-", color=colour, label=label)
        for ax, key in zip(axes[:2], ("accuracy", "merger_fraction")):
            ax.plot(years, [row["y10_stretch"][key] for row in entry["ladder"]], "x--", color=colour, alpha=0.7,
                    label=f"{label}: Y10 clip bounds x t/10" if key == "accuracy" else None)
        axes[1].plot([1], [entry["Y1"]["merger_fraction"]], "*", ms=13, color=colour)
    first = runs[0][1]
    axes[2].plot([r["years"] for r in first["ladder"]], [r["p_lo_over_p_hi"] for r in first["ladder"]], "o-", color="k")
    axes[2].plot([1], [first["Y1_bounds_p_lo_over_p_hi"]], "*", ms=13, color="k", label="dataset's Y1")
    for ax, title in zip(axes, ("test accuracy", "fraction called merger", "clip bounds p_lo / p_hi")):
        ax.set_xlabel("exposure t (years of 10): 10 = Y10, 1 = Y1 depth")
        ax.set_title(title)
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
    axes[1].axhline(result["test_labels"]["merger"] / sum(result["test_labels"].values()), ls=":", color="grey",
                    label="mergers among the labels")
    axes[1].legend(fontsize=7)
    axes[0].legend(fontsize=7)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    cases = [("Y10, stored", lambda e: e["Y10"]), ("Y1, stored", lambda e: e["Y1"]),
             ("Y1, AdaBN Y1 test", lambda e: e["adabn"]["Y1 with Y1 test statistics"]),
             ("Y1, AdaBN Y1 train", lambda e: e["adabn"]["Y1 with Y1 train statistics"]),
             ("Y10, AdaBN Y10 test", lambda e: e["adabn"]["Y10 with Y10 test statistics (control)"])]
    width = 0.8 / len(runs)
    x = np.arange(len(cases))
    for i, (colour, (folder, entry)) in enumerate(zip(colours, runs)):
        for ax, key in zip(axes, ("accuracy", "merger_fraction")):
            values = [get(entry)[key] for _, get in cases]
            ax.bar(x + (i - (len(runs) - 1) / 2) * width, values, width, color=colour, label=run_label(folder, entry))
    for ax, title in zip(axes, ("test accuracy", "fraction called merger")):
        ax.set_xticks(x, [name for name, _ in cases], rotation=20, fontsize=8)
        ax.set_title(title)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths[1], dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 4), squeeze=False)
    for ax, (folder, entry) in zip(axes[0], runs):
        centres = [np.mean(b["mag_r"]) for b in entry["magnitude_bins"]]
        for key, style in (("Y10", "o-"), ("Y1", "s-"), ("Y1_adabn", "^--")):
            acc = np.array([b[key]["accuracy"] for b in entry["magnitude_bins"]])
            ci = np.array([b[key]["accuracy_ci95"] for b in entry["magnitude_bins"]])
            ax.errorbar(centres, acc, yerr=np.clip([acc - ci[:, 0], ci[:, 1] - acc], 0, None), fmt=style, capsize=3,
                        label={"Y1_adabn": "Y1, AdaBN"}.get(key, key))
        share = [b["labels"]["merger"] / max(sum(b["labels"].values()), 1) for b in entry["magnitude_bins"]]
        ax.plot(centres, share, ":", color="grey", label="mergers among the labels (the accuracy of calling all mergers)")
        ax.set_xlabel("galaxy r magnitude (bins of equal counts)")
        ax.set_title(f"{run_label(folder, entry)}: accuracy (Wilson 95 %)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths[2], dpi=100)
    plt.close(fig)
    return [str(p) for p in paths]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="training run folders (config.json, checkpoints/)")
    parser.add_argument("--data", required=True, type=Path, help="the simulated dataset folder the runs were trained on")
    parser.add_argument("--out", required=True, help="write the JSON here")
    parser.add_argument("--figures", type=Path, default=Path("docs/figures"), help="folder of the three figures")
    parser.add_argument("--series", default="best", choices=("latest", "best"), help="which checkpoint")
    parser.add_argument("--seed", type=int, default=0, help="seed of the ladder's noise draws")
    parser.add_argument("--bins", type=int, default=5, help="magnitude bins of equal counts")
    parser.add_argument("--redraw", action="store_true", help="only redraw the figures from the JSON at --out")
    args = parser.parse_args(argv)
    if args.redraw:
        result = json.loads(Path(args.out).read_text())
    else:
        result = study(args.runs, args.data, args.series, args.seed, args.bins)
        result["command"] = "python scripts/study_y1_collapse.py " + " ".join(sys.argv[1:] if argv is None else argv)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")  # kept if a figure fails
    result["figures"] = figures(result, args.figures)
    return emit(result, args.out)


if __name__ == "__main__":
    main()
