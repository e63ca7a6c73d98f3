"""Exact robustness measures beside dE: boundary margins, minimal flipping change, censored medians.

dE(Y10, 1P) measures how far the kept one-pixel image lands, which includes the overshoot of a
pixel chosen as the fittest of 400 (often extreme) candidates. Three measures that do not:

- **Margin**: the head (models/common.py `Head`, one `nn.Dense` named "fc") is a single affine
  map latent -> logits with no nonlinearity, so the boundary between the true class t and a class
  k is the hyperplane (w_t - w_k) . z + (b_t - b_k) = 0 and the Euclidean distance of a latent z
  to it is |(l_t - l_k)(z)| / ||w_t - w_k||. The region where t is not the argmax is the union of
  the half-spaces l_k >= l_t, so the distance of a correctly classified latent to it is exactly the
  smallest of these pairwise distances (`margin`). Signed: negative when k outscores t already.
- **Minimal flipping change**: for each successful attack, the winning pixel's colour is moved
  along the segment from the clean colour (amplitude 0) to the winning colour (amplitude 1); a
  fixed number of bisection steps, batched over all images in one jitted call, finds the
  amplitude where the attack's success criterion (targeted p(target) > threshold, untargeted
  p(true) < threshold) switches on, and the latent distance dE from the clean Y10 latent at that
  crossing. The probability along the segment need not be monotone: bisection returns *a*
  crossing within [0, 1] (the smallest one when there is one crossing), accurate to 2^-iterations.
- **Censored statistics**: a failed attack is an "at least" value: its latent distance to a flip
  is at least its margin (no latent closer than the margin flips), its generations at least those
  it ran. Kaplan-Meier medians use every attacked image instead of dropping the failures.

`robustness_run` computes all of them for a run after its attack (robustness.npz, .json).
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust import attack as attack_lib
from jaxrobust import checkpoint, io, provenance

Z_95 = 1.959963984540054  # standard normal 97.5 % quantile: two-sided 95 % pointwise band
BISECTION_STEPS = 20  # amplitude resolution 2^-20 ~ 1e-6, far below a colour quantum of 1/255


# --- Margins (closed form) ---
def head_affine(variables) -> tuple[np.ndarray, np.ndarray]:
    """(kernel (D, C), bias (C,)) float64 of the head: logits = latent @ kernel + bias.

    The head is models/common.py `Head`: one Dense layer "fc" directly on the latent, no
    activation in between, so latent -> logits is exactly this affine map.
    """
    try:
        fc = variables["params"]["head"]["fc"]
    except (KeyError, TypeError) as err:
        raise ValueError("model variables must hold params['head']['fc'] (the linear Head of "
                         "jaxrobust/models/common.py)") from err
    return np.asarray(fc["kernel"], np.float64), np.asarray(fc["bias"], np.float64)


def pairwise_margins(latents: np.ndarray, labels: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Signed distance of each latent to the boundary between its class and every class.

    Args:
      latents: (N, D); labels: (N,) true classes; kernel (D, C), bias (C,): the affine head.
    Returns:
      (N, C) float64: ((l_t - l_k)(z)) / ||w_t - w_k||, latent-space units; NaN at k = t.
      Positive when the true class outscores k.
    """
    z = np.asarray(latents, np.float64)
    labels = np.asarray(labels, np.int64)
    logits = z @ kernel + bias
    gap = np.take_along_axis(logits, labels[:, None], 1) - logits  # (N, C)
    gram = kernel.T @ kernel  # (C, C): ||w_t - w_k||^2 = G_tt + G_kk - 2 G_tk
    diag = np.diag(gram)
    norm_sq = diag[labels][:, None] + diag[None, :] - 2.0 * gram[labels]
    out = gap / np.sqrt(np.maximum(norm_sq, np.finfo(np.float64).tiny))
    out[np.arange(len(labels)), labels] = np.nan
    return out


def margin(latents: np.ndarray, labels: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """(N,) smallest pairwise margin: for a correctly classified latent, its exact Euclidean
    distance to the region where another class wins; negative for a misclassified one."""
    return np.nanmin(pairwise_margins(latents, labels, kernel, bias), axis=1)


# --- Minimal flipping change (bisection on the device) ---
def set_pixel(images: jax.Array, rows: jax.Array, cols: jax.Array, colours: jax.Array) -> jax.Array:
    """images (B, H, W, C) with pixel (rows[b], cols[b]) set to colours (B, C)."""
    _, h, w, _ = images.shape
    hit = (jnp.arange(h)[None, :, None] == rows[:, None, None]) & (jnp.arange(w)[None, None, :] == cols[:, None, None])
    return jnp.where(hit[..., None], colours[:, None, None, :], images)


@functools.lru_cache(maxsize=8)
def _bisector(model, iterations: int, targeted: bool):
    """Jitted bisection over a batch: one compiled program runs every step for every image."""

    def forward(variables, images, rows, cols, start, end, amplitude):
        colours = start + amplitude[:, None] * (end - start)
        latent, logits = model.apply(variables, set_pixel(images, rows, cols, colours), train=False)
        return latent, jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

    def flips(probs, objective, threshold):
        p = jnp.take_along_axis(probs, objective[:, None], 1)[:, 0]
        return p > threshold if targeted else p < threshold

    @jax.jit
    def run(variables, images, rows, cols, start, end, objective, threshold):
        def probe(amplitude):
            return flips(forward(variables, images, rows, cols, start, end, amplitude)[1], objective, threshold)

        n = images.shape[0]
        ones = jnp.ones((n,), jnp.float32)

        def step(_, bounds):
            lo, hi = bounds
            mid = 0.5 * (lo + hi)
            flipped = probe(mid)
            return jnp.where(flipped, lo, mid), jnp.where(flipped, mid, hi)

        lo, hi = jax.lax.fori_loop(0, iterations, step, (0.0 * ones, ones))
        latent_hi, probs_hi = forward(variables, images, rows, cols, start, end, hi)
        latent_0, _ = forward(variables, images, rows, cols, start, end, 0.0 * ones)
        return dict(amplitude=hi, lower=lo, latent=latent_hi, latent_clean=latent_0,
                    flips_at_one=probe(ones), flips_at_zero=probe(0.0 * ones),
                    probability=jnp.take_along_axis(probs_hi, objective[:, None], 1)[:, 0])

    return run


def minimal_flip(model, variables, images: np.ndarray, pixels: np.ndarray, objective: np.ndarray,
                 targeted: bool, threshold: float, iterations: int = BISECTION_STEPS, batch: int = 64) -> dict:
    """Smallest colour change of each winning pixel that still meets the success criterion.

    Args:
      model, variables: `model.apply(variables, x, train=False) -> (latent, logits)`.
      images: (N, H, W, C) clean stretched images; pixels: (N, 5) winning (row, col, g, r, i).
      objective: (N,) target class (targeted) or true class (untargeted).
      targeted, threshold: success is p(objective) > threshold, else p(objective) < threshold.
      iterations: bisection steps (fixed); batch: images per compiled call (the last is padded).
    Returns NumPy arrays (N,): amplitude in [0, 1] (flipping side of the bracket), bracket
      `lower`, dE = ||latent at amplitude - clean latent||, `valid` (the full change flips and the
      clean image does not: otherwise there is no crossing to bracket and amplitude is NaN).
    """
    images = np.asarray(images, np.float32)
    pixels = np.asarray(pixels, np.float32)
    n = len(images)
    if n == 0:
        empty = np.zeros(0, np.float64)
        return dict(amplitude=empty, lower=empty, dE=empty, valid=np.zeros(0, bool), probability=empty)
    rows = pixels[:, 0].astype(np.int32)
    cols = pixels[:, 1].astype(np.int32)
    start = images[np.arange(n), rows, cols]  # the clean colour of the winning pixel
    end = np.clip(pixels[:, 2:5], 0.0, 1.0)
    run = _bisector(model, int(iterations), bool(targeted))
    parts = []
    for s in range(0, n, batch):
        sl = slice(s, s + batch)
        k = len(images[sl])
        pad = lambda a: np.concatenate([a, np.repeat(a[:1], batch - k, 0)]) if k < batch else a  # noqa: E731
        out = run(variables, pad(images[sl]), pad(rows[sl]), pad(cols[sl]), pad(start[sl]), pad(end[sl]),
                  pad(np.asarray(objective[sl], np.int32)), jnp.float32(threshold))
        parts.append({key: np.asarray(v)[:k] for key, v in out.items()})
    res = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    valid = res["flips_at_one"] & ~res["flips_at_zero"]
    d_e = np.sqrt(np.sum((res["latent"].astype(np.float64) - res["latent_clean"]) ** 2, axis=1))
    return dict(amplitude=np.where(valid, res["amplitude"], np.nan).astype(np.float64),
                lower=np.where(valid, res["lower"], np.nan).astype(np.float64),
                dE=np.where(valid, d_e, np.nan), valid=valid, probability=res["probability"].astype(np.float64))


# --- Censored statistics: Kaplan-Meier ---
def kaplan_meier(times: np.ndarray, observed: np.ndarray) -> dict:
    """Kaplan-Meier survival curve with Greenwood's variance.

    Args:
      times: (N,) values (an event's value, or a censored "at least" value).
      observed: (N,) bool, True for an event, False for a censored value.
    Returns: dict of arrays over the distinct event times: time, at_risk, events, survival
      S(t) (just after t), variance (Greenwood: S^2 sum d / (n (n - d))). At tied values events
      come before censorings (a value censored at t was still at risk at t).
    """
    times = np.asarray(times, np.float64)
    observed = np.asarray(observed, bool)
    if times.shape != observed.shape or times.ndim != 1:
        raise ValueError(f"times and observed must be matching 1-d arrays, got {times.shape} and {observed.shape}")
    event_times = np.unique(times[observed])
    at_risk = np.array([np.sum(times >= t) for t in event_times], np.float64)
    events = np.array([np.sum((times == t) & observed) for t in event_times], np.float64)
    survival = np.cumprod(1.0 - events / at_risk)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(at_risk > events, events / (at_risk * (at_risk - events)), np.inf)
        # once every value at risk has had its event S = 0 and so is its variance (not 0 * inf)
        variance = np.where(survival == 0.0, 0.0, survival ** 2 * np.cumsum(terms))
    return dict(time=event_times, at_risk=at_risk, events=events, survival=survival, variance=variance)


def km_median(times: np.ndarray, observed: np.ndarray, level: float = 0.95) -> dict:
    """Kaplan-Meier median with a Greenwood-based interval (Brookmeyer-Crowley construction).

    The median is the first event time where S(t) <= 0.5 (inf when S never gets there: more than
    half the values are censored above the last event). The interval runs from the first time
    where the lower pointwise band S - z se <= 0.5 to the first where the upper band S + z se
    <= 0.5 (inf when never), z = the normal quantile of `level`, se = sqrt(Greenwood).
    """
    times = np.asarray(times, np.float64)
    observed = np.asarray(observed, bool)
    n, n_events = int(times.size), int(observed.sum())
    if n == 0:
        return dict(median=math.nan, ci=(math.nan, math.nan), n=0, events=0)
    curve = kaplan_meier(times, observed)
    z = Z_95 if level == 0.95 else _normal_quantile(0.5 + level / 2.0)
    se = np.sqrt(curve["variance"])

    def first_at_or_below_half(s):
        hit = np.flatnonzero(s <= 0.5)
        return float(curve["time"][hit[0]]) if hit.size else math.inf

    return dict(median=first_at_or_below_half(curve["survival"]),
                ci=(first_at_or_below_half(curve["survival"] - z * se),
                    first_at_or_below_half(curve["survival"] + z * se)),
                n=n, events=n_events)


def _normal_quantile(p: float) -> float:
    from scipy.stats import norm  # scipy is a dependency (latent.py); only for non-default levels

    return float(norm.ppf(p))


# --- One run ---
def run_measures(model, variables, attack: dict, clean_images: np.ndarray, targeted: bool,
                 target_threshold: float, untargeted_threshold: float,
                 iterations: int = BISECTION_STEPS) -> dict:
    """Per-image arrays for a run's attack (attack.npz contents) and its clean Y10 images.

    Returns (N,) arrays: margin (to the nearest other class), margin_target (to the boundary of
    the attack's target; NaN without one), margins (N, C), flip_amplitude and flip_dE (NaN
    unless a successful attack had a bracketed crossing), flip_valid, dE_1p.
    """
    kernel, bias = head_affine(variables)
    labels = np.asarray(attack["labels"], np.int64)
    n = len(labels)
    margins = pairwise_margins(attack["latent_y10"], labels, kernel, bias)
    target = np.asarray(attack["target"], np.int64)
    has_target = target >= 0
    margin_target = np.full(n, np.nan)
    margin_target[has_target] = margins[np.flatnonzero(has_target), target[has_target]]
    success = np.asarray(attack["success"], bool)
    idx = np.flatnonzero(success)
    objective = target[idx] if targeted else labels[idx]
    threshold = target_threshold if targeted else untargeted_threshold
    flip = minimal_flip(model, variables, np.asarray(clean_images)[idx], np.asarray(attack["pixel"])[idx],
                        objective, targeted, threshold, iterations)
    amplitude, d_flip, valid = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, bool)
    amplitude[idx], d_flip[idx], valid[idx] = flip["amplitude"], flip["dE"], flip["valid"]
    d_1p = np.sqrt(np.sum((np.asarray(attack["latent_1p"], np.float64) - attack["latent_y10"]) ** 2, axis=1))
    return dict(margins=margins, margin=np.nanmin(margins, axis=1), margin_target=margin_target,
                flip_amplitude=amplitude, flip_dE=d_flip, flip_valid=valid, dE_1p=d_1p)


def _finite_median(x: np.ndarray) -> float:
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else math.nan


def summarize(measures: dict, attack: dict) -> dict:
    """Run-level numbers: medians over attacked / successful images and censored KM medians.

    Censored quantities (every attacked image enters):
      latent_distance_to_flip: successes at flip_dE (valid crossings), failures censored at
        their margin (no closer latent flips). Successes without a bracketed crossing are left
        out and counted.
      generations_to_flip: successes at the generations of the kept attack, failures censored
        at the generations they ran (the cap, summed over targets when targeted).
    """
    attacked = np.asarray(attack["attacked"], bool)
    success = np.asarray(attack["success"], bool) & attacked
    fail = attacked & ~success
    valid = measures["flip_valid"] & success
    use = valid | fail
    distance = np.where(valid, measures["flip_dE"], measures["margin"])[use]
    generations = np.asarray(attack["generations"], np.float64)
    return {
        "attacked": int(attacked.sum()), "successful": int(success.sum()),
        "margin_median_attacked": _finite_median(measures["margin"][attacked]),
        "margin_mean_attacked": float(np.mean(measures["margin"][attacked])) if attacked.any() else math.nan,
        "margin_median_successful": _finite_median(measures["margin"][success]),
        "margin_median_failed": _finite_median(measures["margin"][fail]),
        "margin_target_median_successful": _finite_median(measures["margin_target"][success]),
        "flip_amplitude_median": _finite_median(measures["flip_amplitude"][valid]),
        "flip_dE_median": _finite_median(measures["flip_dE"][valid]),
        "dE_1p_median_successful": _finite_median(measures["dE_1p"][success]),
        "flip_bracketed": int(valid.sum()), "flip_not_bracketed": int((success & ~valid).sum()),
        "km_latent_distance_to_flip": km_median(distance, valid[use]),
        "km_generations_to_flip": km_median(generations[attacked], success[attacked]),
    }


def robustness_run(run_dir, data, config=None, log=print) -> dict:
    """Margins, minimal flips and censored medians of a run's attack: robustness.npz and .json.

    Needs the clean Y10 images of the attack subsample (the winning pixel's clean colour is not
    stored in attack.npz), taken from `data` exactly as the attack took them.
    """
    run_dir = Path(run_dir)
    model, variables, run_config = checkpoint.load_variables(run_dir)
    config = config or run_config
    path = run_dir / "attack.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path}: run `jaxrobust attack --workdir {run_dir}` first")
    with np.load(path) as f:
        attack = {k: f[k] for k in f.files}
    n_images = attack_lib.recorded_n_images(run_dir)  # 0 = every test image; older runs: the count
    y10, _, labels, index = attack_lib.attack_images(data, len(attack["labels"]) if n_images is None else n_images,
                                                     int(config.seed))
    if not np.array_equal(np.asarray(labels), attack["labels"]) or (
            "test_index" in attack and not np.array_equal(np.asarray(index), attack["test_index"])):
        raise ValueError(f"{path}: the attacked images are not the dataset's attack subsample "
                         "(different data or data seed)")
    measures = run_measures(model, variables, attack, y10, bool(config.attack.targeted),
                            float(config.attack.target_threshold), float(config.attack.untargeted_threshold))
    summary = summarize(measures, attack)
    # one unit, tagged with the attack it measures: a later attack makes it stale (is_current)
    source = provenance.checkpoint_source(run_dir, checkpoint.read_meta(run_dir, "best"))
    provenance.write_unit(run_dir, "robustness", source, npz={"robustness.npz": measures},
                          json_files={"robustness.json": summary}, inputs={"attack_unit": _attack_unit(run_dir)})
    log(f"{run_dir}: margin median {summary['margin_median_attacked']:.3g}, minimal flip amplitude median "
        f"{summary['flip_amplitude_median']:.3g}, KM median latent distance to flip "
        f"{summary['km_latent_distance_to_flip']['median']:.3g}")
    return summary


def _attack_unit(run_dir) -> str | None:
    return provenance.unit_record(run_dir, "attack").get("unit_id")


def stale_reason(run_dir) -> str | None:
    """Why robustness.json/.npz do not describe the run's current attack (a sentence), or None
    when they do or are absent. Units written before they recorded their attack are judged by
    file times (newer than attack.npz)."""
    run_dir = Path(run_dir)
    outputs = [run_dir / name for name in provenance.UNITS["robustness"]]
    if not any(p.exists() for p in outputs):
        return None
    remedy = f"rerun `jaxrobust reproduce` (or robustness.robustness_run) for {run_dir}"
    if not all(p.exists() for p in outputs):
        return f"{run_dir / 'robustness.json'}: robustness.json and robustness.npz are not both present; {remedy}"
    recorded = provenance.unit_record(run_dir, "robustness")
    if recorded.get("unit_id") is None:
        attack_path = run_dir / "attack.npz"
        if attack_path.exists() and any(p.stat().st_mtime < attack_path.stat().st_mtime for p in outputs):
            return f"{run_dir / 'robustness.json'}: older than attack.npz (made from an earlier attack); {remedy}"
        return None
    try:
        provenance.check_outputs(run_dir, None, units=("robustness",))
    except provenance.ProvenanceError as err:
        return str(err)
    if (recorded.get("inputs") or {}).get("attack_unit") != _attack_unit(run_dir):
        return f"{run_dir / 'robustness.json'}: made from an earlier attack than attack.npz; {remedy}"
    return None


def is_current(run_dir) -> bool:
    """robustness.json and .npz exist and measure the run's current attack (stale_reason)."""
    run_dir = Path(run_dir)
    return (run_dir / "attack.npz").exists() and (run_dir / "robustness.json").exists() and \
        stale_reason(run_dir) is None


def load_summary(run_dir) -> dict | None:
    """robustness.json of a run, or None when the run has none yet or it measures an earlier
    attack (stale_reason says which; the report says so)."""
    path = Path(run_dir) / "robustness.json"
    if not path.exists() or stale_reason(run_dir) is not None:
        return None
    summary = json.loads(path.read_text())
    summary.pop(provenance.PROVENANCE_KEY, None)
    return summary


# --- report.md ---
def _fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float) and math.isinf(x):
        return "not reached"
    return f"{x:.{digits}g}"


def _km(entry: dict) -> str:
    lo, hi = entry["ci"]
    return f"{_fmt(entry['median'])} [{_fmt(lo)}, {_fmt(hi)}] ({entry['events']}/{entry['n']} events)"


def render_markdown(summaries: dict) -> str:
    """A report.md section: {run name: summarize() dict} -> Markdown table with a legend."""
    rows = [("Margin to nearest other class, median over attacked", lambda s: _fmt(s["margin_median_attacked"])),
            ("Margin, median over successful / failed", lambda s: f"{_fmt(s['margin_median_successful'])} / "
                                                                  f"{_fmt(s['margin_median_failed'])}"),
            ("Margin to the attack's target, median over successful", lambda s: _fmt(s["margin_target_median_successful"])),
            ("Minimal flipping amplitude, median (successful)", lambda s: _fmt(s["flip_amplitude_median"])),
            ("dE at the flip crossing, median (successful)", lambda s: _fmt(s["flip_dE_median"])),
            ("dE(Y10, 1P) of the kept pixel, median (successful)", lambda s: _fmt(s["dE_1p_median_successful"])),
            ("KM median latent distance to flip [95 %]", lambda s: _km(s["km_latent_distance_to_flip"])),
            ("KM median generations to flip [95 %]", lambda s: _km(s["km_generations_to_flip"]))]
    names = list(summaries)
    lines = ["| Measure | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    lines += [f"| {label} | " + " | ".join(get(summaries[n]) for n in names) + " |" for label, get in rows]
    legend = ("\nMargin: exact Euclidean distance of the clean Y10 latent to the nearest hyperplane where another "
              "class's logit equals the true class's (the head is affine). Minimal flipping amplitude: fraction of "
              "the way from the clean colour to the winning colour of the kept pixel at which the attack's success "
              "criterion first holds (bisection, 20 steps); dE at the crossing excludes the overshoot in dE(Y10, 1P). "
              "KM: Kaplan-Meier medians over all attacked images, failures censored at their margin (distance) or "
              "at the generations they ran; 95 % interval by the Greenwood band; 'not reached' = more than half "
              "censored.\n")
    return "\n".join(lines) + "\n" + legend
