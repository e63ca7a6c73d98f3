"""The paper's claims as measured statements: metrics over N seeds, paired tests and verdicts.

A study runs N seeds of both arms on one dataset (jaxrobust/study.py); the two arms of one seed
share the data and the attacked images. The evidence for each claim ("a > b" or "a < b", with
a, b an (arm, metric) pair) comes in two kinds:

**Across seeds (what the verdict word reads).** Each seed's runs are reduced to one number per
metric and arm (`seed_metrics`), each claim to its paired per-seed difference a - b. With every
difference finite, the claim carries the two-sided 95 % Student-t interval of the mean
difference (mean +- t(0.975, N-1) sd / sqrt(N)) and the p-value of the paired t-test with the
same statistic (the interval excludes 0 exactly when p < 0.05). A metric can be +inf in a seed:
a Kaplan-Meier median "not reached" (more than half the values censored above the last event,
the most robust outcome). Such a value is never dropped: it has no mean, so the claim's interval
is null (with its reason) and its p-value comes from the exact Wilcoxon signed-rank test over
the seeds with every infinite difference ranked above every finite one (two seeds both not
reached tie, a difference of 0). NaN means undefined for that seed (e.g. no image flipped
under both arms); such seeds are left out of that claim's test and counted. The intervals and
these tests cover seeds (the training's and attack's randomness on one dataset).

**Holm's step-down adjustment** (Holm 1979, Scand. J. Statist. 6, 65-70) runs over the claims
of one study that have a p-value; the adjusted p decides the word: *holds* when it is below
0.05 and the estimate lies on the claimed side of 0, *reverses* when below 0.05 on the other
side, *not resolved at this N* otherwise, *not measured* when the run files a claim reads are
absent (a study made before the scan or a certificate existed).

**Per image, beside it.** For the claims with a per-image measure, a paired test over the
images measured under both sides of a seed (for the attack's measures: the images attacked
under both arms). Every seed of a study attacks the same images (one dataset, one subsample),
so pooling the (image, seed) pairs would count each image N times as if independent; instead
the seeds are combined image by image: each side's per-image value is averaged over the seeds
where the image is paired (success: the fraction of those seeds; other measures: the median
over those seeds, +inf when the middle value is censored), and the test runs over images, each
once. With one seed this is exactly the per-seed test. Success: the exact McNemar (1947) test,
a binomial test with p = 1/2 on the discordant images. Continuous measures: the Wilcoxon
(1945) signed-rank test, with a censored value (a failed attack: no flip found within the
generations run) ranked above every observed one; zeros (including two censored values) are
dropped and every censored value is counted and shown. These tests cover images for the
trained models at hand; they do not cover retraining. Holm adjusts them as a second family.

Claims in the image's units (the minimal flipping amplitude, the scan's fraction of flipping
pixels), in DE generations, and in logits are comparable between two differently trained
networks. Latent lengths (the paper's dE, the margin, dE at the minimal flip, the censored
distance) are lengths in one network's latent space, whose scale differs between networks;
they are also reported divided by the run's own latent scale: the median pairwise Euclidean
distance of its Y10 test latents (latents.npz from `evaluate`).

Adding a claim: a Metric in METRICS (a function of (Seed, arm) returning the per-seed value,
None when the run files it reads are absent: `seed.runs[arm].npz("certify.npz")` is None then),
optionally a PerImage measure in PER_IMAGE (returning test-split ids, values and a defined mask,
or None when absent), and a Claim in CLAIMS naming them. A claim no seed can measure reads *not
measured* and stays out of Holm's family; older studies keep working.
"""
from __future__ import annotations

import dataclasses
import json
import math
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import stats
from scipy.spatial.distance import pdist

from jaxrobust import io, latent, robustness

ARMS = (("Reg", "regular"), ("DA", "da"))  # (report name, run folder inside a seed folder)
LEVEL = 0.95
ALPHA = 0.05  # a Holm-adjusted p below this decides a verdict (1 - LEVEL, written exactly)
INTERVAL = "two-sided 95 % Student-t interval across seeds: mean +- t(0.975, N-1) sd / sqrt(N)"
WILCOXON_EXACT_MAX = 400  # pairs up to which the Wilcoxon p is exact (O(n^3) work); beyond, normal
SCALE_MAX_LATENTS = 2000  # latents entering the median pairwise distance (the first ones, test order)

HOLDS, REVERSES, UNRESOLVED, NOT_MEASURED = "holds", "reverses", "not resolved at this N", "not measured"
NOT_REACHED = "not reached: above every observed value (censored)"

# Paper values per model (Ćiprijanović et al. 2022): Tables 2 and 4 (test accuracy), Tables 3
# and 5 (mean dE over the images flipped under both runs: ConvNet 134, ResNet18 136).
PAPER = {
    "convnet": {"acc_Y10": (0.70, 0.69), "acc_Y1": (0.48, 0.57), "dE_Y10_1P": (3.1, 4.1), "dE_Y10_Y1": (6.7, 8.3)},
    "resnet18": {"acc_Y10": (0.72, 0.82), "acc_Y1": (0.43, 0.66), "dE_Y10_1P": (16.8, 38.1), "dE_Y10_Y1": (20.2, 29.7)},
}


# --- Run and seed folders ---
class Run:
    """One run folder's files, each read on first use; an absent file reads as None."""

    def __init__(self, path):
        self.path = Path(path)
        self._cache: dict = {}

    def npz(self, name: str) -> dict | None:
        """{key: array} of RUN/name (large image arrays skipped), or None when absent."""
        if name not in self._cache:
            path = self.path / name
            if path.exists():
                with np.load(path) as f:
                    self._cache[name] = {k: f[k] for k in f.files if k not in ("perturbed", "images")
                                         and not k.startswith("_")}
            else:
                self._cache[name] = None
        return self._cache[name]

    def json(self, name: str) -> dict | None:
        if name not in self._cache:
            path = self.path / name
            self._cache[name] = json.loads(path.read_text()) if path.exists() else None
        return self._cache[name]

    def robustness_summary(self) -> dict | None:
        """robustness.json, or None when absent or made from an earlier attack (robustness.load_summary)."""
        if "robustness_summary" not in self._cache:
            self._cache["robustness_summary"] = robustness.load_summary(self.path)
        return self._cache["robustness_summary"]

    def robustness_arrays(self) -> dict | None:
        """robustness.npz, under the same condition as `robustness_summary`."""
        return None if self.robustness_summary() is None else self.npz("robustness.npz")

    def attack(self) -> dict:
        a = self.npz("attack.npz")
        if a is None:
            raise FileNotFoundError(f"{self.path / 'attack.npz'}: the seed's run has no attack yet")
        return a

    def attack_setting(self, key: str):
        """An attack setting of this run's attack (attack.json), else of its config.json; or None."""
        info = self.json("attack.json") or {}
        if key in info.get("attack_config", {}):
            return info["attack_config"][key]
        return ((self.json("config.json") or {}).get("attack") or {}).get(key)

    def ids(self) -> np.ndarray:
        """(N,) the attacked images' rows in the test split (row positions for older attacks)."""
        a = self.attack()
        return np.asarray(a["test_index"], np.int64) if "test_index" in a else np.arange(len(a["labels"]))


class Seed:
    """A seed folder holding regular/ and da/ runs: {arm name: Run}."""

    def __init__(self, seed_dir):
        self.dir = Path(seed_dir)
        self.runs = {name: Run(self.dir / folder) for name, folder in ARMS}
        self._memo: dict = {}

    def memo(self, key, compute: Callable):
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def flipped_under_both(self) -> np.ndarray:
        """(N,) images the attack flipped under both arms."""
        return self.memo("both", lambda: np.logical_and.reduce(
            [self.runs[name].attack()["success"].astype(bool) for name, _ in ARMS]))


# --- Per-seed metrics: value(seed, arm) -> float, None when its files are absent ---
def _accuracy(depth):
    def value(seed, arm):
        evaluation = seed.runs[arm].json("evaluation.json")
        return None if evaluation is None else float(evaluation[depth]["accuracy"])
    return value


def _success_rate(seed, arm):
    a = seed.runs[arm].attack()
    attacked = a["attacked"].astype(bool)
    return float(a["success"][attacked].mean()) if attacked.any() else math.nan


def _de_both(target):
    def value(seed, arm):
        a, both = seed.runs[arm].attack(), seed.flipped_under_both()
        d = latent.euclidean_distances(a["latent_y10"][both], a[target][both])
        return float(d.mean()) if d.size else math.nan
    return value


def _summary(get):
    def value(seed, arm):
        summary = seed.runs[arm].robustness_summary()
        return None if summary is None else _float(get(summary))
    return value


def _float(x) -> float:
    return math.nan if x is None else float(x)


def _flip_amplitude_per_image(seed, arm):
    """Successes with a bracketed crossing at their amplitude, failures +inf (censored)."""
    run = seed.runs[arm]
    r = run.robustness_arrays()
    if r is None:
        return None
    a = run.attack()
    attacked = a["attacked"].astype(bool)
    success = a["success"].astype(bool) & attacked
    valid = r["flip_valid"].astype(bool) & success
    values = np.where(valid, r["flip_amplitude"], np.inf)
    return dict(ids=run.ids(), values=values, defined=valid | (attacked & ~success))


def _flip_amplitude_censored(seed, arm):
    per = _flip_amplitude_per_image(seed, arm)
    if per is None:
        return None
    x = per["values"][per["defined"]]
    if not x.size:
        return math.nan
    return robustness.km_median(x, np.isfinite(x))["median"]


def _generations_per_image(seed, arm):
    """Generations of the kept attack for successes, +inf for failures (censored: the
    generations they ran, summed over the targets, lie above every success's)."""
    run = seed.runs[arm]
    a = run.attack()
    attacked = a["attacked"].astype(bool)
    success = a["success"].astype(bool) & attacked
    return dict(ids=run.ids(), values=np.where(success, a["generations"].astype(np.float64), np.inf),
                defined=attacked)


def _generations_mean_censored(seed, arm):
    """Restricted mean (up to the cap tau = attack.max_generations) of the generations to flip:
    each failure counts as tau. It is the area under the Kaplan-Meier curve up to tau, a lower
    bound of the mean the failures would have given with no cap."""
    run = seed.runs[arm]
    cap = run.attack_setting("max_generations")
    if cap is None:
        return None
    per = _generations_per_image(seed, arm)
    x = per["values"][per["defined"]]
    return float(np.minimum(x, float(cap)).mean()) if x.size else math.nan


def _scan_per_image(seed, arm):
    """Fraction of the image's pixels that flip it (scan.npz; attacked images among the scanned)."""
    run = seed.runs[arm]
    s = run.npz("scan.npz")
    if s is None:
        return None
    a = run.attack()
    n = len(s["labels"])
    if len(a["labels"]) < n or not np.array_equal(a["labels"][:n], s["labels"]) or (
            "test_index" in a and "test_index" in s and not np.array_equal(a["test_index"][:n], s["test_index"])):
        raise ValueError(f"{run.path / 'scan.npz'}: it covers other images than attack.npz; rerun "
                         f"`jaxrobust scan --workdir {run.path}`")
    targeted = run.attack_setting("targeted")
    counts = s["flipping_pixels_any"] if (targeted is None or targeted) else s["flipping_pixels_untargeted"]
    pixels = int(np.prod(s["min_true_probability"].shape[1:]))
    values = np.full(len(a["labels"]), np.nan)
    values[:n] = counts / pixels
    defined = np.zeros(len(a["labels"]), bool)
    defined[:n] = a["attacked"][:n].astype(bool)
    return dict(ids=run.ids(), values=values, defined=defined)


def _scan_fraction(seed, arm):
    per = _scan_per_image(seed, arm)
    if per is None:
        return None
    x = per["values"][per["defined"]]
    return float(x.mean()) if x.size else math.nan


def _logit_margin_per_image(seed, arm):
    """log p(true) - max over other classes of log p(k) of the clean Y10 image: the logit gap
    (softmax keeps logit differences), in nats. +inf where another class's float32 probability
    is 0 (the gap exceeds what float32 resolves: censored above every observed value)."""
    run = seed.runs[arm]
    a = run.attack()
    p = np.asarray(a["probabilities_before"], np.float64)
    labels = np.asarray(a["labels"], np.int64)
    rows = np.arange(len(labels))
    others = p.copy()
    others[rows, labels] = -1.0
    top_other = others.max(1)
    with np.errstate(divide="ignore"):
        gap = np.log(p[rows, labels]) - np.log(top_other)
    return dict(ids=run.ids(), values=np.where(top_other > 0, gap, np.inf), defined=a["attacked"].astype(bool))


def _logit_margin(seed, arm):
    per = _logit_margin_per_image(seed, arm)
    x = per["values"][per["defined"]]
    return float(np.median(x)) if x.size else math.nan


def latent_scale(latents: np.ndarray, max_latents: int = SCALE_MAX_LATENTS) -> float:
    """Median pairwise Euclidean distance of (N, D) latents (the first `max_latents` rows)."""
    z = np.asarray(latents, np.float64)[:max_latents]
    return float(np.median(pdist(z))) if len(z) > 1 else math.nan


def _latent_scale(seed, arm):
    def compute():
        latents = seed.runs[arm].npz("latents.npz")
        return None if latents is None else latent_scale(latents["latent_y10"])
    return seed.memo(("scale", arm), compute)


def _scaled(metric):
    def value(seed, arm):
        v, scale = METRICS[metric].value(seed, arm), _latent_scale(seed, arm)
        return None if v is None or scale is None else v / scale
    return value


def _overshoot(seed, arm):
    """median dE(Y10, 1P) / median dE at the minimal flip, both over the same images: flipped
    under both arms with a bracketed crossing under both."""
    robust = [seed.runs[name].robustness_arrays() for name, _ in ARMS]
    if any(r is None for r in robust):
        return None
    same = seed.flipped_under_both() & np.logical_and.reduce([r["flip_valid"].astype(bool) for r in robust])
    if not same.any():
        return math.nan
    r = seed.runs[arm].robustness_arrays()
    return float(np.median(r["dE_1p"][same]) / np.median(r["flip_dE"][same]))


def _overshoot_images(seed, arm):
    robust = [seed.runs[name].robustness_arrays() for name, _ in ARMS]
    if any(r is None for r in robust):
        return None
    return float((seed.flipped_under_both()
                  & np.logical_and.reduce([r["flip_valid"].astype(bool) for r in robust])).sum())


def _certificate_per_image(key):
    """Per certified image (certify.npz, correctly classified ones): the fraction of its pixels
    certified over the whole colour box, or its certified one-pixel radius (stretched units)."""
    def value(seed, arm):
        c = seed.runs[arm].npz("certify.npz")
        if c is None:
            return None
        if key == "certified_fraction":
            counts = np.asarray(c["counts"], np.float64)
            values = counts[:, 0] / counts.sum(1)
        else:
            values = np.asarray(c["radius"], np.float64)
        return dict(ids=np.asarray(c["test_index"], np.int64), values=values, defined=c["correct"].astype(bool))
    return value


def _certificate_mean(key):
    def value(seed, arm):
        per = _certificate_per_image(key)(seed, arm)
        if per is None:
            return None
        x = per["values"][per["defined"] & np.isfinite(per["values"])]
        return float(x.mean()) if x.size else math.nan
    return value


@dataclasses.dataclass(frozen=True)
class Metric:
    definition: str
    value: Callable  # (Seed, arm name) -> float (inf: not reached; NaN: undefined) or None (files absent)
    latent_length: bool = False  # a length in the run's latent space (also reported / latent scale)


METRICS = {
    "acc_Y10": Metric("test accuracy on Y10", _accuracy("Y10")),
    "acc_Y1": Metric("test accuracy on Y1", _accuracy("Y1")),
    "success_rate": Metric("one-pixel success rate over attacked images", _success_rate),
    "dE_Y10_1P": Metric("mean dE(Y10, 1P) over images flipped under both arms of the seed (the paper's measure)",
                        _de_both("latent_1p"), True),
    "dE_Y10_Y1": Metric("mean dE(Y10, Y1) over images flipped under both arms of the seed (the paper's measure)",
                        _de_both("latent_y1"), True),
    "flipped_under_both": Metric("images flipped under both arms of the seed",
                                 lambda seed, arm: float(seed.flipped_under_both().sum())),
    "flip_amplitude_censored": Metric(
        "median minimal flipping amplitude over attacked images, failures censored above every success "
        "(Kaplan-Meier; successes without a bracketed crossing left out); image units", _flip_amplitude_censored),
    "flip_amplitude": Metric("median minimal flipping amplitude over successful attacks (failures left out)",
                             _summary(lambda s: s.get("flip_amplitude_median"))),
    "flip_not_bracketed": Metric("successful attacks without a bracketed crossing (left out of the amplitudes)",
                                 _summary(lambda s: s.get("flip_not_bracketed"))),
    "flipping_pixel_fraction": Metric(
        "mean over the scanned attacked images of the fraction of pixels that flip the image (exhaustive scan; "
        "towards some other class when the attack is targeted)", _scan_fraction),
    "generations_mean_censored": Metric(
        "mean DE generations to flip over attacked images, failures counted at the cap (restricted mean up to "
        "attack.max_generations)", _generations_mean_censored),
    "km_generations_to_flip": Metric(
        "Kaplan-Meier median generations to flip (failures censored at the generations run)",
        _summary(lambda s: s.get("km_generations_to_flip", {}).get("median"))),
    "certified_fraction": Metric(
        "mean over the certified (correctly classified) images of the fraction of pixels proved unable to flip the "
        "image at any colour of [0, 1]^3 (certify.npz)", _certificate_mean("certified_fraction")),
    "certified_radius": Metric(
        "mean certified one-pixel radius over the certified images: no pixel moved by at most this much "
        "(L-infinity, stretched units) flips the image (certify.npz)", _certificate_mean("radius")),
    "logit_margin": Metric("median logit margin log p(true) - max log p(other) of the clean Y10 image over "
                           "attacked images (nats)", _logit_margin),
    "margin": Metric("median margin (exact latent distance to the nearest class boundary) over attacked images",
                     _summary(lambda s: s.get("margin_median_attacked")), True),
    "flip_dE": Metric("median dE at the minimal flip over successful attacks",
                      _summary(lambda s: s.get("flip_dE_median")), True),
    "km_distance_to_flip": Metric(
        "Kaplan-Meier median latent distance to flip (failures censored at their margin)",
        _summary(lambda s: s.get("km_latent_distance_to_flip", {}).get("median")), True),
    "latent_scale": Metric("median pairwise Euclidean distance of the run's Y10 test latents (latents.npz)",
                           _latent_scale),
    "overshoot": Metric("median dE(Y10, 1P) / median dE at the minimal flip, over the images flipped under both "
                        "arms with a bracketed crossing under both (same statistic, same images)", _overshoot),
    "overshoot_images": Metric("images entering the overshoot ratio", _overshoot_images),
}
for _name in [m for m, spec in METRICS.items() if spec.latent_length]:
    METRICS[f"{_name}_scaled"] = Metric(f"{_name} / latent_scale of the same run", _scaled(_name))


# --- Per-image measures: value(seed, arm) -> {ids, values, defined} or None when files are absent ---
def _correct(depth):
    def value(seed, arm):
        p = seed.runs[arm].npz("predictions.npz")
        if p is None:
            return None
        correct = (np.asarray(p[f"predicted_{depth.lower()}"]) == np.asarray(p["labels"])).astype(np.float64)
        return dict(ids=np.arange(len(correct)), values=correct, defined=np.ones(len(correct), bool))
    return value


def _success_per_image(seed, arm):
    run = seed.runs[arm]
    a = run.attack()
    return dict(ids=run.ids(), values=a["success"].astype(np.float64), defined=a["attacked"].astype(bool))


@dataclasses.dataclass(frozen=True)
class PerImage:
    definition: str
    value: Callable  # (Seed, arm name) -> {ids (N,), values (N,) float, +inf censored; defined (N,) bool} or None
    binary: bool = False  # 0/1 values: compared by the exact McNemar test, else by Wilcoxon signed-rank


PER_IMAGE = {
    "correct_Y10": PerImage("Y10 test image classified correctly (every test image)", _correct("Y10"), True),
    "correct_Y1": PerImage("Y1 test image classified correctly (every test image)", _correct("Y1"), True),
    "success": PerImage("the one-pixel attack flipped the image (attacked images)", _success_per_image, True),
    "flip_amplitude": PerImage("minimal flipping amplitude; a failed attack censored above every success",
                               _flip_amplitude_per_image),
    "flipping_pixel_fraction": PerImage("fraction of pixels that flip the image (scanned attacked images)",
                                        _scan_per_image),
    "generations": PerImage("DE generations to flip; a failed attack censored above every success",
                            _generations_per_image),
    "logit_margin": PerImage("logit margin of the clean Y10 image (attacked images)", _logit_margin_per_image),
    "certified_fraction": PerImage("fraction of the image's pixels certified (certified images)",
                                   _certificate_per_image("certified_fraction")),
    "certified_radius": PerImage("certified one-pixel radius (certified images)", _certificate_per_image("radius")),
}


# --- Claims ---
@dataclasses.dataclass(frozen=True)
class Claim:
    """`sign` x (value(arm_a, metric_a) - value(arm_b, metric_b)) > 0 is the claim.

    units: what the compared quantity is measured in ("accuracy", "image", "DE generations",
    "logit", "latent (the paper's measure)", "latent"); caveat: the paper's own expectation or
    reservation about this comparison, shown beside the verdict; image_measure: a PER_IMAGE
    measure compared image by image as (arm_a, measure_a) vs (arm_b, measure_b), or None.
    """

    key: str
    text: str
    a: tuple[str, str]  # (arm, metric)
    b: tuple[str, str]
    sign: int  # +1: a > b is claimed; -1: a < b
    paper_metric: str | None  # PAPER entry holding (Reg, DA) values, or None
    source: str  # "paper" (a claim of the paper) or "ours"
    units: str
    caveat: str | None = None
    image_a: tuple[str, str] | None = None  # (arm, PER_IMAGE measure)
    image_b: tuple[str, str] | None = None


DE_Y1_CAVEAT = ("The paper expects this only when the new domain lands near the known data: it states that when "
                "the unknown data lie far from the known data in the regular model's latent space, domain "
                "adaptation reduces the distance between the two domains' latents (Ciprijanovic et al. 2022, "
                "Sec. 5.3). Regular training here sends the Y1 latents far away (every Y1 image called a merger), "
                "so a lower dE(Y10, Y1) with DA is the case the paper anticipates, not a contradiction of it.")
LATENT_CAVEAT = ("A length in one network's latent space: the arms' latent scales differ (see the table in units "
                 "of each run's latent scale).")

CLAIMS = (
    Claim("reg_loses_y1", "Regular training loses accuracy on Y1", ("Reg", "acc_Y1"), ("Reg", "acc_Y10"), -1,
          None, "paper", "accuracy", image_a=("Reg", "correct_Y1"), image_b=("Reg", "correct_Y10")),
    Claim("da_recovers_y1", "DA recovers Y1 accuracy", ("DA", "acc_Y1"), ("Reg", "acc_Y1"), +1, "acc_Y1", "paper",
          "accuracy", image_a=("DA", "correct_Y1"), image_b=("Reg", "correct_Y1")),
    Claim("da_lowers_success", "DA lowers one-pixel success", ("DA", "success_rate"), ("Reg", "success_rate"), -1,
          None, "paper", "image", image_a=("DA", "success"), image_b=("Reg", "success")),
    Claim("da_raises_generations", "DA needs more DE generations to flip", ("DA", "generations_mean_censored"),
          ("Reg", "generations_mean_censored"), +1, None, "paper", "DE generations",
          image_a=("DA", "generations"), image_b=("Reg", "generations")),
    Claim("da_raises_de_1p", "DA raises dE(Y10, 1P)", ("DA", "dE_Y10_1P"), ("Reg", "dE_Y10_1P"), +1, "dE_Y10_1P",
          "paper", "latent (the paper's measure)", LATENT_CAVEAT),
    Claim("da_raises_de_y1", "DA raises dE(Y10, Y1)", ("DA", "dE_Y10_Y1"), ("Reg", "dE_Y10_Y1"), +1, "dE_Y10_Y1",
          "paper", "latent (the paper's measure)", DE_Y1_CAVEAT),
    Claim("da_raises_flip_amplitude", "DA raises the minimal flipping amplitude", ("DA", "flip_amplitude_censored"),
          ("Reg", "flip_amplitude_censored"), +1, None, "ours", "image",
          image_a=("DA", "flip_amplitude"), image_b=("Reg", "flip_amplitude")),
    Claim("da_lowers_flipping_pixels", "DA lowers the fraction of flipping pixels (exhaustive scan)",
          ("DA", "flipping_pixel_fraction"), ("Reg", "flipping_pixel_fraction"), -1, None, "ours", "image",
          image_a=("DA", "flipping_pixel_fraction"), image_b=("Reg", "flipping_pixel_fraction")),
    Claim("da_raises_certified_fraction", "DA raises the certified fraction of pixels", ("DA", "certified_fraction"),
          ("Reg", "certified_fraction"), +1, None, "ours", "image",
          image_a=("DA", "certified_fraction"), image_b=("Reg", "certified_fraction")),
    Claim("da_raises_certified_radius", "DA raises the certified one-pixel radius", ("DA", "certified_radius"),
          ("Reg", "certified_radius"), +1, None, "ours", "image",
          image_a=("DA", "certified_radius"), image_b=("Reg", "certified_radius")),
    Claim("da_raises_logit_margin", "DA raises the logit margin", ("DA", "logit_margin"), ("Reg", "logit_margin"),
          +1, None, "ours", "logit", image_a=("DA", "logit_margin"), image_b=("Reg", "logit_margin")),
    Claim("da_raises_margin", "DA raises the margin to the class boundary", ("DA", "margin"), ("Reg", "margin"), +1,
          None, "ours", "latent", LATENT_CAVEAT),
    Claim("da_raises_flip_dE", "DA raises dE at the minimal flip", ("DA", "flip_dE"), ("Reg", "flip_dE"), +1, None,
          "ours", "latent", LATENT_CAVEAT),
    Claim("da_raises_km_distance", "DA raises the censored median latent distance to flip",
          ("DA", "km_distance_to_flip"), ("Reg", "km_distance_to_flip"), +1, None, "ours", "latent", LATENT_CAVEAT),
)


# --- Statistics ---
def _kind(x) -> str:
    """'missing' (None), 'undefined' (NaN), 'infinite' (+-inf) or 'finite'."""
    if x is None:
        return "missing"
    x = float(x)
    return "undefined" if math.isnan(x) else "infinite" if math.isinf(x) else "finite"


def t_interval(values, level: float = LEVEL) -> dict:
    """Mean and Student-t interval of per-seed values, every value accounted for.

    values: floats; +-inf (a median not reached) and NaN (undefined) are counted, never dropped
    silently; None (not measured) is counted. Returns mean and ci (lo, hi), None where they do
    not exist (any infinite value: no mean; fewer than two finite values: no interval) with
    `reason`; n (finite values used), infinite, undefined, not_measured.
    """
    kinds = [_kind(v) for v in values]
    x = np.array([float(v) for v, k in zip(values, kinds) if k == "finite"], np.float64)
    n = int(x.size)
    out = dict(mean=None, ci=None, n=n, infinite=kinds.count("infinite"), undefined=kinds.count("undefined"),
               not_measured=kinds.count("missing"), reason=None)
    if out["infinite"]:
        out["reason"] = f"{out['infinite']} of {len(values)} values not finite (not reached): no mean"
        return out
    if n == 0:
        out["reason"] = "not measured" if out["not_measured"] == len(values) else "no finite value"
        return out
    out["mean"] = float(np.mean(x))
    if n < 2:
        out["reason"] = "one value: no interval"
        return out
    half = float(stats.t.ppf(0.5 + level / 2.0, n - 1) * np.std(x, ddof=1) / math.sqrt(n))
    out["ci"] = (out["mean"] - half, out["mean"] + half)
    if out["undefined"]:
        out["reason"] = f"{out['undefined']} undefined value(s) left out"
    return out


def paired_t_test(diffs) -> dict:
    """Two-sided one-sample t-test of finite paired differences against 0 (N >= 2): the test
    whose 95 % acceptance region is the t-interval. p = 0 when every difference is the same
    nonzero number (sd 0), 1 when all are 0."""
    x = np.asarray(diffs, np.float64)
    n, mean, sd = int(x.size), float(np.mean(x)), float(np.std(x, ddof=1))
    if sd == 0.0:
        return dict(t=None, df=n - 1, p=1.0 if mean == 0.0 else 0.0)
    t = mean / (sd / math.sqrt(n))
    return dict(t=t, df=n - 1, p=float(2.0 * stats.t.sf(abs(t), n - 1)))


def wilcoxon_signed_rank(d, exact_max: int = WILCOXON_EXACT_MAX) -> dict:
    """Two-sided Wilcoxon (1945) signed-rank test of paired differences d = a - b against 0.

    d: (n,) floats, +-inf allowed: a censored value lies above every observed one, so its |d|
    ranks above every finite |d| (the infinite ones tie with each other). Zeros are dropped
    (Wilcoxon's convention; scipy's zero_method="wilcox") and counted; ties take mid-ranks.
    p: exact when at most `exact_max` differences remain (the distribution of W+ over the 2^n
    equally likely sign assignments of the given mid-ranks, by dynamic programming over twice the
    ranks), else the normal approximation with the tie-corrected variance
    n(n+1)(2n+1)/24 - sum(t^3 - t)/48, no continuity correction.
    Returns n (nonzero differences), zeros, w_plus, w_minus, p, method, direction (sign of
    w_plus - w_minus).
    """
    d = np.asarray(d, np.float64)
    if np.isnan(d).any():
        raise ValueError("wilcoxon_signed_rank: NaN differences must be left out by the caller")
    nonzero = d[d != 0]
    n = int(nonzero.size)
    out = dict(n=n, zeros=int(d.size - n), w_plus=0.0, w_minus=0.0, p=1.0, method="no nonzero difference",
               direction=0)
    if n == 0:
        return out
    ranks = stats.rankdata(np.abs(nonzero))  # +inf sorts last, ties share their mid-rank
    w_plus, w_minus = float(ranks[nonzero > 0].sum()), float(ranks[nonzero < 0].sum())
    out.update(w_plus=w_plus, w_minus=w_minus, direction=int(np.sign(w_plus - w_minus)))
    if n <= exact_max:
        twice = np.rint(2.0 * ranks).astype(np.int64)  # mid-ranks are multiples of 1/2
        dist = np.zeros(int(twice.sum()) + 1)
        dist[0] = 1.0
        for r in twice:
            shifted = np.zeros_like(dist)
            shifted[r:] = dist[:dist.size - r]
            dist = 0.5 * dist + 0.5 * shifted
        k = int(round(2.0 * w_plus))
        out.update(p=float(min(1.0, 2.0 * min(dist[:k + 1].sum(), dist[k:].sum()))), method="exact")
    else:
        _, ties = np.unique(ranks, return_counts=True)
        var = n * (n + 1) * (2 * n + 1) / 24.0 - float(np.sum(ties ** 3 - ties)) / 48.0
        z = (w_plus - n * (n + 1) / 4.0) / math.sqrt(var)
        out.update(p=float(2.0 * stats.norm.sf(abs(z))), method="normal approximation (tie-corrected)")
    return out


def mcnemar_exact(b: int, c: int) -> dict:
    """Exact McNemar (1947) test on a paired 2x2 table's discordant counts: b pairs with a
    only, c with b only. Under H0 each discordant pair is a fair coin, b ~ Binomial(b + c, 1/2);
    two-sided p = min(1, 2 P(X <= min(b, c))), computed in exact rational arithmetic."""
    b, c = int(b), int(c)
    n = b + c
    if n == 0:
        return dict(b=b, c=c, p=1.0, direction=0)
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return dict(b=b, c=c, p=float(min(Fraction(1), Fraction(2 * tail, 2 ** n))), direction=int(np.sign(b - c)))


def holm(pvalues) -> list:
    """Holm (1979) step-down adjusted p-values in the given order: the i-th smallest of m is
    max over j <= i of min(1, (m - j + 1) p_(j)). None entries stay None and do not count in m."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    m = len(idx)
    out: list = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        out[i] = running
    return out


def verdict(p_adjusted: float | None, direction: int, sign: int, alpha: float = ALPHA) -> str:
    """holds / reverses / not resolved, from an adjusted p and the sign of the estimate of
    a - b (not resolved without a p, e.g. with one seed)."""
    if p_adjusted is not None and p_adjusted < alpha and direction != 0:
        return HOLDS if direction == sign else REVERSES
    return UNRESOLVED


def censored_difference(a, b):
    """a - b where either may be +inf (censored above every observed value): +-inf when one
    is, 0 when both are (a tie: neither is known to exceed the other); NaN / None propagate."""
    if a is None or b is None:
        return None
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return 0.0 if a == b else a - b


def seed_test(diffs) -> dict:
    """The across-seeds test of one claim's per-seed differences (see the module docstring)."""
    kinds = [_kind(d) for d in diffs]
    used = [float(d) for d, k in zip(diffs, kinds) if k in ("finite", "infinite")]
    out = dict(test=None, p=None, direction=0, seeds=len(used), infinite=kinds.count("infinite"),
               undefined=kinds.count("undefined"), not_measured=kinds.count("missing"), reason=None)
    if not used:
        out["reason"] = "not measured" if out["not_measured"] == len(diffs) else "undefined in every seed"
    elif out["infinite"]:
        w = wilcoxon_signed_rank(used)
        out.update(test="Wilcoxon signed-rank over seeds (non-finite differences ranked above every finite one)",
                   p=w["p"], direction=w["direction"],
                   reason=f"{out['infinite']} seed difference(s) not finite: no mean, rank test")
    elif len(used) < 2:
        out["reason"] = "one seed: no test"
    else:
        t = paired_t_test(used)
        out.update(test="paired t-test over seeds", p=t["p"], direction=int(np.sign(np.mean(used))))
    return out


# --- Per image ---
def _pairs(seed: Seed, side_a, side_b):
    """{id: (a value, b value)} of the images defined on both sides in one seed; None if absent."""
    (arm_a, m_a), (arm_b, m_b) = side_a, side_b
    pa, pb = PER_IMAGE[m_a].value(seed, arm_a), PER_IMAGE[m_b].value(seed, arm_b)
    if pa is None or pb is None:
        return None
    va = {int(i): float(v) for i, v, ok in zip(pa["ids"], pa["values"], pa["defined"]) if ok}
    vb = {int(i): float(v) for i, v, ok in zip(pb["ids"], pb["values"], pb["defined"]) if ok}
    return {i: (va[i], vb[i]) for i in sorted(set(va) & set(vb))}


def per_image_test(per_seed_pairs: list, binary: bool) -> dict:
    """The paired per-image test of one claim, seeds combined image by image.

    per_seed_pairs: per seed {image id: (a value, b value)} (None for a seed without the files).
    binary: values are 0/1 (success, correct) -> exact McNemar on the images whose success
    fraction over their seeds differs between a and b; else Wilcoxon signed-rank on a - b of the
    per-image medians over seeds, +inf (censored) handled by `censored_difference`.
    """
    measured = [p for p in per_seed_pairs if p is not None]
    if not measured:
        return dict(test=None, p=None, direction=0, reason="not measured", seeds=0)
    by_image: dict = {}
    for pairs in measured:
        for i, ab in pairs.items():
            by_image.setdefault(i, []).append(ab)
    pairs_total = sum(len(p) for p in measured)
    base = dict(seeds=len(measured), seeds_not_measured=len(per_seed_pairs) - len(measured),
                images=len(by_image), pairs=pairs_total)
    if binary:
        diff = np.array([np.mean([a for a, _ in v]) - np.mean([b for _, b in v]) for v in by_image.values()])
        m = mcnemar_exact(int((diff > 0).sum()), int((diff < 0).sum()))
        return dict(base, test="exact McNemar (binomial on discordant images)", p=m["p"], direction=m["direction"],
                    a_more=m["b"], b_more=m["c"], ties=int((diff == 0).sum()), reason=None)
    a_med = [float(np.median([a for a, _ in v])) for v in by_image.values()]
    b_med = [float(np.median([b for _, b in v])) for v in by_image.values()]
    diff = np.array([censored_difference(a, b) for a, b in zip(a_med, b_med)], np.float64)
    w = wilcoxon_signed_rank(diff)
    a_inf, b_inf = np.isinf(a_med), np.isinf(b_med)
    return dict(base, test=f"Wilcoxon signed-rank ({w['method']})", p=w["p"], direction=w["direction"],
                a_more=int((diff > 0).sum()), b_more=int((diff < 0).sum()), ties=w["zeros"],
                censored_a_only=int((a_inf & ~b_inf).sum()), censored_b_only=int((b_inf & ~a_inf).sum()),
                censored_both=int((a_inf & b_inf).sum()), w_plus=w["w_plus"], w_minus=w["w_minus"], reason=None)


# --- Per seed and across seeds ---
def seed_metrics(seed_dir) -> dict:
    """{arm: {metric: value}} of one seed folder holding regular/ and da/ (evaluated, attacked,
    robustness measured, optionally scanned). NaN where a value is undefined (e.g. nothing
    flipped under both), +inf where a median is not reached, None where the run files it reads
    are absent (not measured)."""
    seed = seed_dir if isinstance(seed_dir, Seed) else Seed(seed_dir)
    return {name: {metric: spec.value(seed, name) for metric, spec in METRICS.items()} for name, _ in ARMS}


def aggregate(per_seed: list[dict]) -> dict:
    """{arm: {metric: {mean, ci, n, ..., values}}} over the seeds' `seed_metrics` dicts."""
    out = {}
    for name, _ in ARMS:
        out[name] = {}
        for metric in METRICS:
            values = [s[name].get(metric) for s in per_seed]
            out[name][metric] = dict(t_interval(values), values=values)
    return out


def _paper_reference(claim: Claim, model: str):
    paper = PAPER.get(model, {})
    if claim.key == "reg_loses_y1" and "acc_Y1" in paper:
        return {"a": paper["acc_Y1"][0], "b": paper["acc_Y10"][0]}
    if claim.paper_metric in paper:
        return {"a": paper[claim.paper_metric][1], "b": paper[claim.paper_metric][0]}
    return None


def evaluate_claims(per_seed: list[dict], model: str, seeds: list[Seed] | None = None) -> list[dict]:
    """Every claim: paper values, per-arm summaries, the paired difference's interval, the
    across-seeds p raw and Holm-adjusted, the verdict; with `seeds`, the per-image test."""
    rows = []
    for claim in CLAIMS:
        (arm_a, m_a), (arm_b, m_b) = claim.a, claim.b
        diffs = [censored_difference(s[arm_a][m_a], s[arm_b][m_b]) for s in per_seed]
        row = dict(key=claim.key, text=claim.text, source=claim.source, units=claim.units, caveat=claim.caveat,
                   a=list(claim.a), b=list(claim.b), sign=claim.sign, paper=_paper_reference(claim, model),
                   a_summary=t_interval([s[arm_a][m_a] for s in per_seed]),
                   b_summary=t_interval([s[arm_b][m_b] for s in per_seed]),
                   difference=dict(t_interval(diffs), values=diffs), seed_test=seed_test(diffs))
        if METRICS[m_a].latent_length and METRICS[m_b].latent_length:
            sa, sb = f"{m_a}_scaled", f"{m_b}_scaled"
            scaled = [censored_difference(s[arm_a][sa], s[arm_b][sb]) for s in per_seed]
            row["scaled"] = dict(a_summary=t_interval([s[arm_a][sa] for s in per_seed]),
                                 b_summary=t_interval([s[arm_b][sb] for s in per_seed]),
                                 difference=dict(t_interval(scaled), values=scaled), seed_test=seed_test(scaled))
        row["per_image"] = None
        if claim.image_a is not None and seeds is not None:
            binary = PER_IMAGE[claim.image_a[1]].binary
            row["per_image"] = dict(per_image_test([_pairs(s, claim.image_a, claim.image_b) for s in seeds], binary),
                                    a=list(claim.image_a), b=list(claim.image_b))
        rows.append(row)
    for adjusted, row in zip(holm([r["seed_test"]["p"] for r in rows]), rows):
        row["seed_test"]["p_holm"] = adjusted
        row["verdict"] = (NOT_MEASURED if row["seed_test"]["reason"] == "not measured"
                          else verdict(adjusted, row["seed_test"]["direction"], row["sign"]))
    with_image = [r for r in rows if r["per_image"] is not None]
    for adjusted, row in zip(holm([r["per_image"]["p"] for r in with_image]), with_image):
        row["per_image"]["p_holm"] = adjusted
        row["per_image"]["verdict"] = (NOT_MEASURED if row["per_image"]["reason"] == "not measured"
                                       else verdict(adjusted, row["per_image"]["direction"], row["sign"]))
    return rows


STATISTICS = (
    "Across seeds: the paired per-seed difference a - b; its " + INTERVAL + ", and the two-sided paired t-test "
    "(the same statistic), or, when a seed's value is not finite (a median not reached), the exact Wilcoxon "
    "signed-rank test over seeds with those differences ranked above every finite one. Holm (1979) adjusts the "
    "claims' p-values as one family; the adjusted p < 0.05 decides the verdict with the sign of the estimate. "
    "Per image: seeds combined image by image (each image once; the seeds share the images), exact McNemar for "
    "success and accuracy, Wilcoxon signed-rank for the continuous measures with failed attacks censored above "
    "every success; Holm adjusts these as a second family. Intervals and the seed tests cover seeds; the "
    "per-image tests cover images.")


def study_findings(seed_dirs: list, model: str, seeds: list[int] | None = None) -> dict:
    """findings.json contents for a study's seed folders, in strict JSON form (`strict`)."""
    loaded = [Seed(d) for d in seed_dirs]
    per_seed = [seed_metrics(s) for s in loaded]
    return strict({"model": model, "seeds": list(seeds) if seeds is not None else list(range(len(seed_dirs))),
                   "seed_dirs": [str(d) for d in seed_dirs], "interval": INTERVAL, "statistics": STATISTICS,
                   "alpha": ALPHA, "metric_definitions": {k: m.definition for k, m in METRICS.items()},
                   "per_image_definitions": {k: m.definition for k, m in PER_IMAGE.items()},
                   "metrics": aggregate(per_seed), "claims": evaluate_claims(per_seed, model, loaded),
                   "per_seed": per_seed})


# --- Strict JSON ---
def _reason(x: float) -> str:
    return "undefined (NaN)" if math.isnan(x) else NOT_REACHED if x > 0 else "below every observed value (-inf)"


def strict(obj):
    """A copy of `obj` that JSON can hold without Infinity / NaN: NumPy values become Python
    ones; a non-finite float under key k becomes null with `k_reason` beside it; a list under
    key k holding non-finite floats gets null there and `k_reasons` (a reason or null per item)."""
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            value = _plain(value)
            if isinstance(value, float) and not math.isfinite(value):
                out[key], out[f"{key}_reason"] = None, _reason(value)
            elif isinstance(value, (list, tuple)) and any(isinstance(_plain(v), float) and not math.isfinite(_plain(v))
                                                          for v in value):
                items = [_plain(v) for v in value]
                bad = [isinstance(v, float) and not math.isfinite(v) for v in items]
                out[key] = [None if b else strict(v) for v, b in zip(items, bad)]
                out[f"{key}_reasons"] = [_reason(v) if b else None for v, b in zip(items, bad)]
            else:
                out[key] = strict(value)
        return out
    obj = _plain(obj)
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _plain(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def dumps(findings: dict) -> str:
    """Strict JSON text (sorted keys, no Infinity / NaN tokens)."""
    return json.dumps(strict(findings), indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_findings(findings: dict, out_dir) -> Path:
    """findings.json into `out_dir` (atomic, strict JSON); returns its path."""
    path = Path(out_dir) / "findings.json"
    io.atomic_write_bytes(path, dumps(findings).encode())
    return path


# --- Markdown ---
def _fmt(x, digits: int = 3, reason: str | None = None) -> str:
    if x is None:
        if reason and reason.startswith("not reached"):
            return "not reached"
        return "n/a" if not reason else reason.split(":")[0].split(" (")[0]
    if isinstance(x, float) and not math.isfinite(x):
        return "not reached" if x > 0 else "n/a"
    return f"{x:.{digits}g}"


def _p(x) -> str:
    return "n/a" if x is None else f"{x:.2g}" if x >= 1e-4 else f"{x:.1e}"


def _with_ci(s: dict) -> str:
    if s["mean"] is None:
        return f"n/a ({s['reason']})" if s.get("reason") else "n/a"
    if s["ci"] is None:
        return _fmt(s["mean"])
    lo, hi = s["ci"]
    return f"{_fmt(s['mean'])} [{_fmt(lo)}, {_fmt(hi)}]"


def _values(container: dict, key: str = "values") -> str:
    reasons = container.get(f"{key}_reasons") or [None] * len(container[key])
    return ", ".join(_fmt(v, reason=r) for v, r in zip(container[key], reasons))


def _side(arm_metric) -> str:
    return f"{arm_metric[0]} {arm_metric[1]}"


def _counts(test: dict) -> str:
    parts = [f"{test['images']} images ({test['pairs']} pairs over {test['seeds']} seed(s))",
             f"a > b {test['a_more']}, a < b {test['b_more']}, ties {test['ties']}"]
    if "censored_a_only" in test:
        parts.append(f"censored: a only {test['censored_a_only']}, b only {test['censored_b_only']}, "
                     f"both {test['censored_both']}")
    return "; ".join(parts)


def render_markdown(findings: dict) -> str:
    """The "Findings" section for the top of a study's report.md (from `study_findings`)."""
    findings = strict(findings)
    n = len(findings["seeds"])
    lines = [f"## Findings ({findings['model']}, {n} seed{'s' if n != 1 else ''}: {findings['seeds']})\n",
             "Each claim compares a - b per seed (paired: one dataset, both arms per seed). " + STATISTICS + "\n",
             "| Claim | units | a vs b | paper a / b | ours a | ours b | a - b [95 %] | per-seed a - b | p | "
             "p (Holm) | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    notes = []
    for row in findings["claims"]:
        ref = row["paper"]
        ref_txt = f"{ref['a']} / {ref['b']}" if ref else "not reported"
        tag = "" if row["source"] == "paper" else " (ours)"
        test = row["seed_test"]
        mark = ""
        if row.get("caveat"):
            if row["caveat"] not in notes:
                notes.append(row["caveat"])
            mark = f" (note {notes.index(row['caveat']) + 1})"
        p_txt = _p(test["p"]) + ("" if test["p"] is None or test["test"].startswith("paired t") else " (rank)")
        lines.append(f"| {row['text']}{tag} | {row['units']} | {_side(row['a'])} vs {_side(row['b'])} | {ref_txt} | "
                     f"{_with_ci(row['a_summary'])} | {_with_ci(row['b_summary'])} | {_with_ci(row['difference'])} | "
                     f"{_values(row['difference'])} | {p_txt} | {_p(test.get('p_holm'))} | "
                     f"**{row['verdict']}**{mark} |")
    if notes:
        lines += ["", "Notes (the paper's own expectation or a reservation about the measure):", ""]
        lines += [f"{i}. {text}" for i, text in enumerate(notes, 1)]
    image_rows = [r for r in findings["claims"] if r.get("per_image")]
    if image_rows:
        lines += ["", "### Per image (seeds combined image by image; Holm over these tests)\n",
                  "| Claim | test | images and counts | p | p (Holm) | verdict |", "| --- | --- | --- | --- | --- | --- |"]
        for row in image_rows:
            t = row["per_image"]
            if t["p"] is None:
                lines.append(f"| {row['text']} | | {t['reason']} | n/a | n/a | **{NOT_MEASURED}** |")
                continue
            lines.append(f"| {row['text']} | {t['test']} | {_counts(t)} | {_p(t['p'])} | {_p(t['p_holm'])} | "
                         f"**{t['verdict']}** |")
    scaled = [r for r in findings["claims"] if r.get("scaled")]
    if scaled:
        lines += ["", "### Latent lengths in units of each run's latent scale\n",
                  "Each run's latent lengths divided by its latent scale: the median pairwise Euclidean distance of "
                  "its Y10 test latents (latents.npz). Raw p, descriptive (not in the Holm family).\n",
                  "| Claim | ours a | ours b | a - b [95 %] | per-seed a - b | p |", "| --- | --- | --- | --- | --- | --- |"]
        for row in scaled:
            s = row["scaled"]
            lines.append(f"| {row['text']} | {_with_ci(s['a_summary'])} | {_with_ci(s['b_summary'])} | "
                         f"{_with_ci(s['difference'])} | {_values(s['difference'])} | {_p(s['seed_test']['p'])} |")
    lines += ["", "### Every metric across seeds (mean [95 % t-interval]; per-seed values)\n",
              "| Metric | " + " | ".join(name for name, _ in ARMS) + " | definition |",
              "| --- |" + " --- |" * len(ARMS) + " --- |"]
    for metric, definition in findings["metric_definitions"].items():
        cells = []
        for name, _ in ARMS:
            s = findings["metrics"][name][metric]
            cells.append(f"{_with_ci(s)}; ({_values(s)})")
        lines.append(f"| {metric} | " + " | ".join(cells) + f" | {definition} |")
    return "\n".join(lines) + "\n"
