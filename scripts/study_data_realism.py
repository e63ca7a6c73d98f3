"""How realistic (how hard) is the simulated data? The continuous population against the old recipes.

On two quick datasets, the old one (data.population="recipes", labelled on the Y10 stamp, today's
quick brightness) and the new default (one continuous population labelled by the catalogue
rendering), measures:
  (a) shortcut features that are not morphology: a logistic regression on g - r colour, r-band
      half-light radius and log total r flux, measured on the Y10 stamps, fitted on the train
      split and scored on the test split (and the test split's majority-class rate);
  (b) the fraction of unique galaxies within 0.01 in G of the F = 0 or S = 0 line (vertical
      distance |F| / 4.95 or |S| / 0.990) in the labeller's G-M20;
  (c) how often the catalogue's label agrees with the Y10-stamp G-M20 label (for the old
      population the catalogue is rendered afterwards for a sample of its galaxies);
  (d) figures: the labelling G-M20 planes side by side, and a preview grid per class;
plus each dataset's Y1 and Y10 p_lo / p_hi after the 0.1 / 99.9 percentile clip (the archive:
-0.208 and -0.061, from the update_sinh ranges of the Zenodo arrays; docs/data.md) and its simulation time.

Missing datasets are simulated first (a few minutes each on 2 cores).

Example:
  python scripts/study_data_realism.py --old data/realism_recipes --new data/realism_continuous \\
      --out docs/benchmarks/data_realism.json --figures docs/figures
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package, if not installed
sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/ helpers

from _bench_json import emit  # noqa: E402
from jaxrobust.config import load_config  # noqa: E402
from jaxrobust.data import catalogue, simulate  # noqa: E402

CLASS_NAMES = simulate.CLASS_NAMES
# The per-class recipes' quick dataset: labelled on the Y10 i-band stamp, r = 17-20.5.
OLD_OVERRIDES = ["data.population=recipes", "data.label_by=gini_m20", "data.mag_r_range=(17.0, 20.5)",
                 "data.catalogue_mag_shift=-3.0", "data.preview=False"]
NEW_OVERRIDES = ["data.preview=False"]
ARCHIVE_P_RATIO = {"Y1": -0.208, "Y10": -0.061}  # update_sinh ranges of the Zenodo arrays (docs/data.md)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, default=Path("data/realism_recipes"))
    parser.add_argument("--new", type=Path, default=Path("data/realism_continuous"))
    parser.add_argument("--config", default="quick")
    parser.add_argument("--workers", type=int, default=0, help="simulation processes (0: all cores)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="simulate this fraction of the config's class counts (missing datasets only)")
    parser.add_argument("--catalogue-sample", type=int, default=300,
                        help="old-population galaxies rendered for the catalogue afterwards")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/data_realism.json"))
    parser.add_argument("--figures", type=Path, default=Path("docs/figures"))
    return parser.parse_args(argv)


def ensure_dataset(folder: Path, config_name: str, overrides: list[str], workers: int, scale: float) -> dict:
    if (folder / "dataset.json").exists():
        return json.loads((folder / "dataset.json").read_text())
    base = load_config(config_name, overrides)
    counts = [f"data.{key}={max(3, int(round(scale * base.data[key])))}"
              for key in ("n_spiral", "n_elliptical", "n_merger")]
    config = load_config(config_name, overrides + counts)
    return simulate.simulate_dataset(config, folder, workers=workers)


def load_split(folder: Path, split: str) -> dict:
    out = dict(y10=np.load(folder / f"images_Y10_{split}.npy", mmap_mode="r"),
               y1=np.load(folder / f"images_Y1_{split}.npy", mmap_mode="r"),
               labels=np.load(folder / f"labels_{split}.npy").argmax(axis=1))
    with np.load(folder / f"metadata_{split}.npz") as meta:
        out.update({f"meta_{k}": meta[k] for k in meta.files})
    return out


# --- (a) shortcut features ---
def shortcut_features(y10: np.ndarray, pixel_scale: float = simulate.PIXEL_SCALE_ARCSEC) -> np.ndarray:
    """(N, 3): g - r colour, r-band half-light radius (arcsec), log10 total r flux, from the whole
    Y10 stamp (N, 3, H, W) in e-; the half-light radius from the curve of growth about the
    r-band flux-weighted centre (positive pixels), out to 40 pixels."""
    n, _, h, w = y10.shape
    y, x = np.indices((h, w), dtype=np.float64)
    features = np.empty((n, 3))
    for k in range(n):
        g, r = np.asarray(y10[k, 0], dtype=np.float64), np.asarray(y10[k, 1], dtype=np.float64)
        flux_g, flux_r = max(g.sum(), 1.0), max(r.sum(), 1.0)
        positive = np.clip(r, 0.0, None)
        total = positive.sum()
        xc, yc = (positive * x).sum() / total, (positive * y).sum() / total
        radius = np.hypot(x - xc, y - yc).ravel()
        order = np.argsort(radius)
        growth = np.cumsum(r.ravel()[order])
        inside = radius[order] <= 40.0
        half = growth[inside][-1] / 2.0
        hlr = radius[order][np.searchsorted(growth[inside], half)] if half > 0 else 0.0
        features[k] = (-2.5 * math.log10(flux_g / flux_r), hlr * pixel_scale, math.log10(flux_r))
    return features


def shortcut_accuracy(train: dict, test: dict) -> dict:
    from sklearn.linear_model import LogisticRegression  # scikit-learn: used by the study only
    from sklearn.preprocessing import StandardScaler

    x_train, x_test = shortcut_features(train["y10"]), shortcut_features(test["y10"])
    scaler = StandardScaler().fit(x_train)
    model = LogisticRegression(max_iter=2000).fit(scaler.transform(x_train), train["labels"])
    predicted = model.predict(scaler.transform(x_test))
    majority = np.bincount(test["labels"], minlength=3).max() / len(test["labels"])
    per_feature = {}
    for j, name in enumerate(("g_minus_r", "r_half_light_radius", "log_r_flux")):
        one = LogisticRegression(max_iter=2000).fit(scaler.transform(x_train)[:, [j]], train["labels"])
        per_feature[name] = round(float((one.predict(scaler.transform(x_test)[:, [j]]) == test["labels"]).mean()), 4)
    return dict(test_accuracy=round(float((predicted == test["labels"]).mean()), 4),
                test_majority_class=round(float(majority), 4), test_images=int(len(test["labels"])),
                single_feature_test_accuracy=per_feature,
                class_means={name: np.round(x_test[test["labels"] == c].mean(axis=0), 3).tolist()
                             for c, name in enumerate(CLASS_NAMES)})


# --- (b) galaxies near the class boundaries ---
def unique_galaxies(splits: dict) -> dict:
    """Per unique galaxy (identity augmentation rows of every split): label and metadata."""
    rows = {}
    for split in splits.values():
        keep = split["meta_augmentation"] == 0
        for key in [k for k in split if k.startswith("meta_")] + ["labels"]:
            rows.setdefault(key, []).append(np.asarray(split[key])[keep])
    return {k: np.concatenate(v) for k, v in rows.items()}


def near_boundary(gini: np.ndarray, f: np.ndarray, s: np.ndarray, tolerance: float = 0.01) -> dict:
    """Share of galaxies within `tolerance` in G of the F = 0 or S = 0 line (vertical distance)."""
    ok = np.isfinite(f) & np.isfinite(s)
    near = (np.abs(f[ok]) / 4.95 <= tolerance) | (np.abs(s[ok]) / 0.990 <= tolerance)
    return dict(fraction=round(float(near.mean()), 4), galaxies=int(ok.sum()), tolerance_in_gini=tolerance)


# --- (c) label agreement ---
def catalogue_labels_afterwards(folder: Path, info: dict, sample: int) -> tuple[np.ndarray, np.ndarray]:
    """Catalogue labels of the first `sample` recipe galaxies (galaxies.jsonl), rendered now."""
    config = load_config("quick", [])
    spec = simulate.SimulationSpec(folding_threshold=float(config.data.gsparams_folding_threshold),
                                   maxk_threshold=float(config.data.gsparams_maxk_threshold))
    shift = float(info["config"]["data"].get("catalogue_mag_shift", 0.0))
    psf = catalogue.psf(spec.gsparams)
    cat, stamp = [], []
    with open(folder / "galaxies.jsonl") as lines:
        for k, line in enumerate(lines):
            if k >= sample:
                break
            galaxy = json.loads(line)
            profile = simulate.recipe_band_profile(galaxy, catalogue.LABEL_BAND, spec.gsparams)
            stats = catalogue.label_profile(profile.withScaledFlux(10 ** (-0.4 * shift)), galaxy["seed"],
                                            spec.gsparams, psf)
            cat.append(stats["label"])
            stamp.append(galaxy["label"])  # the recipes were labelled on the Y10 stamp
    return np.array(cat), np.array(stamp)


# --- noise level ---
def noise_level(folder: Path) -> dict:
    out = {}
    for depth in ("Y1", "Y10"):
        images = np.load(folder / f"images_{depth}_train.npy")
        p_lo, p_hi = np.percentile(images.astype(np.float64), [0.1, 99.9])
        out[depth] = dict(p_lo=round(float(p_lo), 2), p_hi=round(float(p_hi), 2), ratio=round(float(p_lo / p_hi), 4),
                          archive_ratio=ARCHIVE_P_RATIO[depth])
    return out


# --- (d) figures ---
def figures(out_dir: Path, populations: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = ("tab:blue", "tab:red", "tab:green")
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(populations), figsize=(6.0 * len(populations), 5.0), squeeze=False)
    for ax, (name, pop) in zip(axes[0], populations.items()):
        u = pop["unique"]
        for c, cname in enumerate(CLASS_NAMES):
            sel = u["labels"] == c
            ax.scatter(u["meta_m20"][sel], u["meta_gini"][sel], s=6, alpha=0.6, color=colours[c],
                       label=f"{cname} ({int(sel.sum())})")
        m20_0 = -0.47 / 0.28
        left, right = np.linspace(-3.0, m20_0, 10), np.linspace(m20_0, 0.0, 10)
        both = np.concatenate([left, right])
        ax.plot(both, -0.14 * both + 0.33, "k-", lw=1.0)
        ax.plot(left, (0.693 * left + 3.96) / 4.95, "k--", lw=1.0)
        ax.set_xlim(0.0, -3.0)
        ax.set_ylim(0.25, 0.75)
        ax.set_xlabel("M20")
        ax.set_ylabel("Gini")
        ax.set_title(f"{name}: {pop['labelled_on']}", fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    paths = [out_dir / "data_realism_gini_m20.png"]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)

    per_class = 6
    fig, axes = plt.subplots(3 * len(populations), per_class, figsize=(1.6 * per_class, 1.7 * 3 * len(populations)))
    for p, (name, pop) in enumerate(populations.items()):
        test = pop["test"]
        identity = np.asarray(test["meta_augmentation"]) == 0
        for c, cname in enumerate(CLASS_NAMES):
            members = np.flatnonzero((test["labels"] == c) & identity)[:per_class]
            for j in range(per_class):
                ax = axes[3 * p + c, j]
                ax.set_xticks([])
                ax.set_yticks([])
                if j < len(members):
                    image = np.asarray(test["y10"][members[j]], dtype=np.float64)[::-1]  # (i, r, g) -> RGB
                    scale = np.percentile(image, 99.5)
                    rgb = np.arcsinh(np.clip(image, 0, None) / max(scale, 1e-9) * 3).transpose(1, 2, 0)
                    ax.imshow(np.clip(rgb / max(rgb.max(), 1e-9), 0, 1), origin="lower")
                if j == 0:
                    ax.set_ylabel(f"{name}\n{cname}", fontsize=8, color=colours[c])
    fig.suptitle("Y10 g, r, i stamps per label (old recipes above, continuous population below)", fontsize=10)
    fig.tight_layout()
    paths.append(out_dir / "data_realism_preview.png")
    fig.savefig(paths[1], dpi=60)  # noisy stamps compress badly: keep the PNG small
    plt.close(fig)
    return [str(p) for p in paths]


def study(folder: Path, info: dict, name: str, catalogue_sample: int) -> dict:
    splits = {split: load_split(folder, split) for split in ("train", "valid", "test")}
    unique = unique_galaxies(splits)
    result = dict(population=info["config"]["data"].get("population", "recipes"),
                  label_by=info["config"]["data"]["label_by"],
                  mag_r_range=info["config"]["data"]["mag_r_range"],
                  unique_galaxies=info["unique_galaxies"], simulation_seconds=info["simulation_seconds"],
                  workers=info.get("workers"), candidates_tried=info["candidates_tried"])
    result["shortcut_logistic_regression"] = shortcut_accuracy(splits["train"], splits["test"])
    result["near_boundary"] = near_boundary(unique["meta_gini"], unique["meta_F"], unique["meta_S"])
    if "meta_catalogue_label" in unique and (unique["meta_catalogue_label"] >= 0).any():
        agreement = simulate.label_agreement(unique["meta_catalogue_label"], unique["meta_stamp_label"])
    else:
        cat, stamp = catalogue_labels_afterwards(folder, info, catalogue_sample)
        agreement = dict(simulate.label_agreement(cat, stamp), note=f"catalogue rendered afterwards for "
                         f"the first {len(cat)} galaxies of galaxies.jsonl")
    result["label_agreement"] = agreement
    result["noise_p_lo_over_p_hi"] = noise_level(folder)
    labelled_on = "catalogue (Pan-STARRS-like i)" if result["label_by"] == "catalogue" else "Y10 i stamp"
    return result, dict(unique=unique, test=splits["test"], labelled_on=labelled_on)


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    infos = {"old (recipes)": (args.old, ensure_dataset(args.old, args.config, OLD_OVERRIDES, args.workers, args.scale)),
             "new (continuous)": (args.new, ensure_dataset(args.new, args.config, NEW_OVERRIDES, args.workers, args.scale))}
    report, populations = {}, {}
    for name, (folder, info) in infos.items():
        report[name], populations[name] = study(folder, info, name, args.catalogue_sample)
    report["figures"] = figures(args.figures, populations)
    report["command"] = "python scripts/study_data_realism.py " + " ".join(sys.argv[1:] if argv is None else argv)
    report["seconds"] = round(time.perf_counter() - start, 1)
    return emit(report, args.out)


if __name__ == "__main__":
    main()
