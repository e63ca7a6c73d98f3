"""One-pixel certificates: for every pixel, a proof that no colour flips the class, or a colour that does.

For a correctly classified image and each pixel (r, c), the question is decided over the whole
continuous colour box [0, 1]^3 (stretched units: the box the attack's colour genes are clipped
to), by branch and bound on that 3-D box:

  certified   a sound proof that for every colour v in the box, z_true(v) > z_k(v) for every
              other class k (bounds.margin_bounds: lower bounds of the margins through the
              windows the pixel reaches, in float64). The true class stays the argmax, so
              p(true) stays the largest of the 3 probabilities: then p(k) <= 1/2 for every
              other k, since p(k) > 1/2 would make k the argmax, which rules out DE's targeted
              success p(target) > 0.5; and p(true) >= 1/3 > 0.05, which rules out its
              untargeted success p(true) < 0.05.
  flippable   a concrete colour at which another class wins, found at a candidate point of a
              box (its centre, or the corner that minimises a margin's linear lower bound) and
              confirmed by a full float32 forward pass of the whole perturbed image.
  undecided   the per-pixel budget of boxes ran out first; the undecided fraction of the box's
              volume is reported.

A box whose bounds neither prove it nor are refuted at a candidate point is split in two along
its widest side. All pixels of an image share one frontier: a fixed-size array of boxes inside
`lax.while_loop`, `batch` boxes bounded per step, so one jitted call decides a whole image
without a Python loop over pixels or boxes.

What "proof" covers: the network in exact arithmetic, with the trained float32 weights. The
bounds are computed in float64, and a box counts as certified only when every margin's lower
bound exceeds the float64 rounding allowance (bounds.rounding_allowance scaled to float64).
A float32 forward pass of the model can differ from exact arithmetic by a worst-case bound that
is reported per image (`float32_allowance`); the certified pixels whose margin is below it are
counted (`certified_below_float32_allowance`).

The certified one-pixel radius of an image is the largest r such that every pixel is certified
over the colours within r (L-infinity, stretched units) of its clean colour (the clean colour
clipped to [0, 1]^3, the box intersected with it), found by bisection to `radius_tolerance`;
the pixel and colour that flip just above it are kept. It is a length in the image's own units,
comparable between any two networks; an image whose radius covers the whole box (r = 1) is a
certified robust image.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust import bounds, parallel
from jaxrobust.config import ConfigError
from jaxrobust.candidates import encode, model_logits
from jaxrobust.incremental import candidate_logits, convnet_cache, fold_convnet_head
from jaxrobust.models import ConvNet
from jaxrobust.progress import progress_bar

CERTIFIED, FLIPPABLE, UNDECIDED = 0, 1, 2
STATUS_NAMES = ("certified", "flippable", "undecided")


def _volume(lo, hi):
    return jnp.prod(jnp.maximum(hi - lo, 0.0), axis=-1)


def _split_side(slack, slope, width):
    """(B,) the side to split: where the worst margin's lower linear bound falls most across the
    box (|slope| x width), so colour channels the margin does not depend on are not split; the
    widest side when that is zero everywhere."""
    worst = jnp.argmin(slack, axis=-1)
    fall = jnp.abs(jnp.take_along_axis(slope, worst[:, None, None], axis=1)[:, 0]) * width  # (B, 3)
    return jnp.where(jnp.max(fall, axis=-1) > 0, jnp.argmax(fall, axis=-1), jnp.argmax(width, axis=-1))


def branch_and_bound(weights, cache, points, label, rows, cols, lo, hi, threshold, active=None, *, max_boxes: int,
                     batch: int, capacity: int, mode: str = "linear", stop_on_flip: bool = False):
    """Decides every pixel of one image over its own colour box, in one `lax.while_loop`.

    Args:
      weights, cache: bounds.certificate_weights and bounds.clean_cache of the image (float64).
      points: (weights, cache) of the float32 incremental evaluator (incremental.fold_convnet_head,
        incremental.convnet_cache of the image): candidate colours are scored as the model runs.
      label: the true class (scalar int).
      rows, cols: (P,) int pixel positions.
      lo, hi: (P, 3) float64 colour boxes, one per pixel.
      active: (P,) bool, the pixels to decide (default all); the others come back certified
        with 0 boxes and must be ignored.
      threshold: (classes,) a margin's lower bound must exceed it to certify (the rounding
        allowance; 0 at the label).
      max_boxes: per-pixel budget of bounded boxes; a pixel that reaches it with open boxes is
        undecided.
      batch: boxes bounded per loop step; capacity: size of the frontier (>= P + batch).
      mode: "linear" or "interval" bounds (bounds.BOUND_MODES).
      stop_on_flip: end the loop as soon as any pixel is flippable (the radius search only
        needs to know whether one exists).
    Returns:
      dict of (P,) arrays: status (CERTIFIED / FLIPPABLE / UNDECIDED), witness (P, 3) colour
      (flippable pixels), boxes (bounded boxes), undecided_fraction (of the box's volume), and
      "steps" (loop steps run).
    """
    p = rows.shape[0]
    if capacity < p + batch:
        raise ConfigError(f"the frontier's capacity ({capacity}) must hold every pixel's box plus a batch ({p} + {batch})")
    dtype = lo.dtype
    height, width = points[1]["image"].shape[1] - 4, points[1]["image"].shape[2] - 4
    f_lo = jnp.zeros((capacity, 3), dtype).at[:p].set(lo)
    f_hi = jnp.zeros((capacity, 3), dtype).at[:p].set(hi)
    f_pix = jnp.zeros(capacity, jnp.int32).at[:p].set(jnp.arange(p, dtype=jnp.int32))
    f_alive = jnp.zeros(capacity, bool).at[:p].set(True if active is None else active)
    root_volume = _volume(lo, hi)
    max_steps = -(-p * max_boxes // batch) + 2 * max_boxes + 8

    bound_box = jax.vmap(lambda r, c, a, b: bounds.margin_bounds(weights, cache, r, c, label, a, b, mode))

    def score_points(r, c, colours):  # (B,), (B, Q, 3) -> (B, Q) float32 logits' argmax != label
        b, q = colours.shape[:2]
        genes = encode(jnp.repeat(r, q), jnp.repeat(c, q), colours.reshape(b * q, 3), height, width)
        logits = candidate_logits(points[0], points[1], jnp.zeros(b * q, jnp.int32), genes)
        return (jnp.argmax(logits, axis=-1) != label).reshape(b, q)

    def step(state):
        f_lo, f_hi, f_pix, f_alive, status, witness, boxes, open_volume, n = state
        sel = jnp.nonzero(f_alive, size=batch, fill_value=capacity)[0]
        valid = sel < capacity
        sel = jnp.minimum(sel, capacity - 1)
        b_lo, b_hi, pix = f_lo[sel], f_hi[sel], f_pix[sel]
        pixel_open = (status[pix] == CERTIFIED) & (boxes[pix] < max_boxes) & valid
        lower, slope = bound_box(rows[pix], cols[pix], b_lo, b_hi)  # (B, C), (B, C, 3)
        certified = jnp.all(lower > threshold, axis=-1)
        candidates = jnp.concatenate([((b_lo + b_hi) / 2)[:, None, :], jax.vmap(bounds.box_corners)(b_lo, b_hi)],
                                     axis=1)  # (B, 9, 3): the centre, then the corners
        flips = score_points(rows[pix], cols[pix], candidates.astype(jnp.float32))  # (B, 9)
        flip = jnp.any(flips, axis=-1) & pixel_open
        found = jnp.take_along_axis(candidates, jnp.argmax(flips, axis=-1)[:, None, None], axis=1)[:, 0]
        split = pixel_open & ~certified & ~flip
        over_budget = valid & (status[pix] == CERTIFIED) & (boxes[pix] >= max_boxes)
        # the pixel's outcome
        status = status.at[jnp.where(flip, pix, p)].max(FLIPPABLE, mode="drop")
        witness = witness.at[jnp.where(flip, pix, p)].set(found, mode="drop")
        boxes = boxes.at[jnp.where(pixel_open, pix, p)].add(1, mode="drop")
        open_volume = open_volume.at[jnp.where(over_budget, pix, p)].add(_volume(b_lo, b_hi), mode="drop")
        # the frontier: drop decided boxes, split the rest into the parent slot and a free one
        f_alive = f_alive.at[jnp.where(valid, sel, capacity)].set(split, mode="drop")
        free = jnp.nonzero(~f_alive, size=batch, fill_value=capacity)[0]
        rank = jnp.cumsum(split) - 1
        slot = jnp.where(split, free[jnp.clip(rank, 0, batch - 1)], capacity)
        can = split & (slot < capacity)
        side = _split_side(lower - threshold, slope, b_hi - b_lo)
        mid = (b_lo + b_hi) / 2
        is_side = jnp.arange(3)[None, :] == side[:, None]
        left_hi = jnp.where(is_side, mid, b_hi)
        right_lo = jnp.where(is_side, mid, b_lo)
        parent = jnp.where(can, sel, capacity)
        f_hi = f_hi.at[parent].set(left_hi, mode="drop")
        f_lo = f_lo.at[slot].set(right_lo, mode="drop")
        f_hi = f_hi.at[slot].set(b_hi, mode="drop")
        f_pix = f_pix.at[slot].set(pix, mode="drop")
        f_alive = f_alive.at[slot].set(True, mode="drop")
        return f_lo, f_hi, f_pix, f_alive, status, witness, boxes, open_volume, n + 1

    def running(state):
        f_alive, status, n = state[3], state[4], state[8]
        go = jnp.any(f_alive) & (n < max_steps)
        if stop_on_flip:
            go = go & ~jnp.any(status == FLIPPABLE)
        return go

    state = (f_lo, f_hi, f_pix, f_alive, jnp.zeros(p, jnp.int8), jnp.zeros((p, 3), dtype),
             jnp.zeros(p, jnp.int32), jnp.zeros(p, dtype), jnp.int32(0))
    f_lo, f_hi, f_pix, f_alive, status, witness, boxes, open_volume, n = jax.lax.while_loop(running, step, state)
    # boxes still open when the loop stopped (step cap) are undecided volume too
    left = f_alive & (status[f_pix] == CERTIFIED)
    open_volume = open_volume.at[jnp.where(left, f_pix, p)].add(_volume(f_lo, f_hi), mode="drop")
    undecided = (status == CERTIFIED) & (open_volume > 0)
    status = jnp.where(undecided, UNDECIDED, status).astype(jnp.int8)
    fraction = jnp.where(status == UNDECIDED, open_volume / jnp.maximum(root_volume, 1e-300), 0.0)
    return {"status": status, "witness": witness, "boxes": boxes, "undecided_fraction": fraction, "steps": n}




def pixel_grid(height: int, width: int) -> tuple[jax.Array, jax.Array]:
    """(H W,) rows and columns of every pixel, row-major."""
    rows, cols = jnp.meshgrid(jnp.arange(height, dtype=jnp.int32), jnp.arange(width, dtype=jnp.int32), indexing="ij")
    return rows.ravel(), cols.ravel()



# --- One image: the whole box, then the radius ---
@dataclasses.dataclass(frozen=True)
class CertifySettings:
    """What decides a certificate besides the model and the images (config section `certify`).

    max_boxes: per-pixel budget of bounded boxes on the whole box (--budget). batch: boxes bounded
    per loop step. bounds: "linear" or "interval". radius: whether to search the radius at all.
    radius_tolerance: the bisection stops when the bracket of the radius is narrower (stretched
    units). radius_max_boxes: the per-pixel budget of each bisection step (small boxes around the
    clean colour need splits near the boundary, where the whole box's budget would stop early).
    """

    max_boxes: int = 32
    batch: int = 1024
    bounds: str = "linear"
    radius: bool = True
    radius_tolerance: float = 1.0 / 256
    radius_max_boxes: int = 16

    @classmethod
    def from_config(cls, config) -> "CertifySettings":
        section = config.certify
        return cls(max_boxes=int(section.max_boxes), batch=int(section.batch), bounds=str(section.bounds),
                   radius=bool(section.radius), radius_tolerance=float(section.radius_tolerance),
                   radius_max_boxes=int(section.radius_max_boxes))

    def validate(self) -> None:
        if self.max_boxes < 1:
            raise ConfigError(f"certify.max_boxes (--budget) must be an integer >= 1 boxes per pixel, got {self.max_boxes}")
        if self.radius_max_boxes < 1:
            raise ConfigError(f"certify.radius_max_boxes must be an integer >= 1 boxes per pixel, got {self.radius_max_boxes}")
        if self.batch < 1:
            raise ConfigError(f"certify.batch must be an integer >= 1 boxes per step, got {self.batch}")
        if self.bounds not in bounds.BOUND_MODES:
            raise ConfigError(f"certify.bounds must be one of {bounds.BOUND_MODES}, got {self.bounds!r}")
        if not 0 < self.radius_tolerance < 1:
            raise ConfigError(f"certify.radius_tolerance must lie in (0, 1) (stretched units), got {self.radius_tolerance}")


class Certifier:
    """The certificate machinery of one trained ConvNet: float64 bounds, float32 candidate
    scoring, full-forward confirmation, each compiled once and shared by every image."""

    def __init__(self, model, variables, settings: CertifySettings):
        if not isinstance(model, ConvNet):
            raise ConfigError(f"certify supports the ConvNet; {type(model).__name__} is not supported "
                             "(its pixel reaches the whole network after two stages: no window bounds yet)")
        if "batch_stats" not in variables:
            raise ConfigError("certify needs eval-mode BatchNorm statistics (variables['batch_stats'])")
        settings.validate()
        self.settings = settings
        with jax.enable_x64(True):
            self.weights = bounds.certificate_weights(variables)
        self.points = fold_convnet_head(variables)
        self.logits_fn, self.params = model_logits(model, variables)
        self._forward = jax.jit(self.logits_fn)

    def decide(self, image, label, lo, hi, active=None, threshold=None, stop_on_flip: bool = False) -> dict:
        """branch_and_bound over the pixels of one (H, W, 3) image, as one compiled call.

        lo, hi: (H W, 3) colour boxes (row-major pixels) inside [0, 1]^3; active (H W,) bool,
        default all; threshold (classes,), default the image's float64 rounding allowance.
        stop_on_flip: a step of the radius's bisection: ends at the first flip, with
        certify.radius_max_boxes boxes per pixel. Returns NumPy arrays (no full-forward confirmation:
        see `certify_image`).
        """
        h, w = image.shape[:2]
        lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
        if lo.shape != (h * w, 3) or hi.shape != (h * w, 3):
            raise ConfigError(f"colour boxes must be ({h * w}, 3) arrays (one per pixel), got {lo.shape} and {hi.shape}")
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and lo.min() >= 0 and hi.max() <= 1
                and np.all(lo <= hi)):
            raise ConfigError("colour boxes must lie inside [0, 1]^3 (stretched units, the attack's colour range) "
                              f"with lo <= hi, got lo in [{np.nanmin(lo):.3g}, {np.nanmax(lo):.3g}] and hi in "
                              f"[{np.nanmin(hi):.3g}, {np.nanmax(hi):.3g}]")
        active = np.ones(h * w, bool) if active is None else np.asarray(active, bool)
        if threshold is None:
            threshold = self.allowance(image, label) * bounds.FLOAT64_PER_FLOAT32
        s = self.settings  # the weights are arguments: models of these settings share one program
        max_boxes = s.radius_max_boxes if stop_on_flip else s.max_boxes  # the radius's steps stop on a flip
        key = (h, w, stop_on_flip, max_boxes, s.batch, s.bounds)
        if key not in _DECIDE:
            def decide(weights, points, image64, label, lo, hi, active, threshold):
                cache = bounds.clean_cache(weights, image64)
                cache32 = convnet_cache(points, image64[None].astype(jnp.float32))
                rows, cols = pixel_grid(h, w)
                return branch_and_bound(weights, cache, (points, cache32), label, rows, cols, lo, hi, threshold, active,
                                        max_boxes=max_boxes, batch=s.batch, capacity=h * w + 16 * s.batch,
                                        mode=s.bounds, stop_on_flip=stop_on_flip)

            _DECIDE[key] = jax.jit(decide)
        with jax.enable_x64(True):
            out = _DECIDE[key](self.weights, self.points, jnp.asarray(image, jnp.float64), jnp.int32(label),
                               jnp.asarray(lo, jnp.float64), jnp.asarray(hi, jnp.float64), jnp.asarray(active),
                               jnp.asarray(threshold, jnp.float64))
            return jax.tree_util.tree_map(np.asarray, out)

    def allowance(self, image, label) -> np.ndarray:
        """(classes,) float32 worst-case rounding allowance of the image (bounds.rounding_allowance)."""
        with jax.enable_x64(True):
            return np.asarray(_ALLOWANCE(self.weights, jnp.asarray(image, jnp.float64), jnp.int32(label)))

    def confirm(self, image, pixels: np.ndarray, colours: np.ndarray, label: int) -> np.ndarray:
        """(n,) bool: a full float32 forward pass of the image with pixel i set to colour i flips it."""
        out = np.zeros(len(pixels), bool)
        for start in range(0, len(pixels), CONFIRM_CHUNK):
            rows = slice(start, start + CONFIRM_CHUNK)
            n = len(pixels[rows])
            batch = np.repeat(np.asarray(image, np.float32)[None], CONFIRM_CHUNK, axis=0)
            batch[np.arange(n), pixels[rows, 0], pixels[rows, 1]] = colours[rows]
            logits = np.asarray(self._forward(self.params, jnp.asarray(batch)))[:n]
            out[rows] = logits.argmax(-1) != label
        return out

    def certify_image(self, image: np.ndarray, label: int, log=None) -> dict:
        """Every pixel of one correctly classified (H, W, 3) image over [0, 1]^3, and its radius.

        Returns NumPy values: status (H, W) int8, witness (H, W, 3), boxes (H, W),
        undecided_fraction (H, W), unconfirmed (flippable colours a full forward pass did not
        confirm, counted as undecided), float32_allowance (classes,), radius, radius_upper,
        radius_pixel (2,), radius_colour (3,) (-1 / NaN when no flip bounds it), radius_limited
        (the budget, not a flip, stopped the bisection), seconds.
        """
        start = time.perf_counter()
        h, w, _ = image.shape
        p = h * w
        tau32 = self.allowance(image, label)
        threshold = tau32 * bounds.FLOAT64_PER_FLOAT32
        everything = np.ones(p, bool)
        out = self.decide(image, label, np.zeros((p, 3)), np.ones((p, 3)), everything, threshold, False)
        status, witness = out["status"].copy(), out["witness"]
        pixels = np.stack(np.divmod(np.arange(p), w), axis=-1)
        flippable = np.flatnonzero(status == FLIPPABLE)
        confirmed = self.confirm(image, pixels[flippable], witness[flippable].astype(np.float32), label)
        status[flippable[~confirmed]] = UNDECIDED
        result = {"status": status.reshape(h, w), "witness": witness.reshape(h, w, 3).astype(np.float32),
                  "boxes": out["boxes"].reshape(h, w), "unconfirmed": int((~confirmed).sum()),
                  "undecided_fraction": out["undecided_fraction"].reshape(h, w).astype(np.float32),
                  "float32_allowance": tau32.astype(np.float64)}
        result.update(self.radius(image, label, status, witness, threshold, log))
        result["seconds"] = time.perf_counter() - start
        return result

    def radius(self, image, label, status, witness, threshold, log=None) -> dict:
        """The certified one-pixel radius by bisection over the pixels not certified on the whole box."""
        h, w, _ = image.shape
        centre = np.clip(np.asarray(image, np.float64).reshape(-1, 3), 0.0, 1.0)
        open_pixels = status != CERTIFIED
        none = {"radius_pixel": np.array([-1, -1], np.int32), "radius_colour": np.full(3, np.nan, np.float32)}
        if not open_pixels.any():
            return dict(none, radius=1.0, radius_upper=1.0, radius_limited=False)
        flippable = np.flatnonzero(status == FLIPPABLE)
        best = dict(none)
        upper = 1.0
        if flippable.size:
            distance = np.abs(witness[flippable] - centre[flippable]).max(-1)
            j = int(np.argmin(distance))
            upper = float(distance[j])
            best = {"radius_pixel": np.array(divmod(int(flippable[j]), w), np.int32),
                    "radius_colour": witness[flippable[j]].astype(np.float32)}
        lower, limited = 0.0, False
        if not self.settings.radius:
            return dict(best, radius=math.nan, radius_upper=upper, radius_limited=False)
        # a pixel certified over its r-box is certified over every smaller one: not redone below r
        certified_to = np.zeros(h * w)
        while upper - lower > self.settings.radius_tolerance:
            r = (lower + upper) / 2
            active = open_pixels & (certified_to < r)
            out = self.decide(image, label, np.clip(centre - r, 0, 1), np.clip(centre + r, 0, 1), active,
                               threshold, True)
            certified_to[active & (out["status"] == CERTIFIED)] = r
            flips = np.flatnonzero((out["status"] == FLIPPABLE) & active)
            if flips.size:
                ok = self.confirm(image, np.stack(np.divmod(flips, w), -1), out["witness"][flips].astype(np.float32), label)
                flips = flips[ok]
            if flips.size:
                distance = np.abs(out["witness"][flips] - centre[flips]).max(-1)
                j = int(np.argmin(distance))
                upper = max(float(distance[j]), lower)
                best = {"radius_pixel": np.array(divmod(int(flips[j]), w), np.int32),
                        "radius_colour": out["witness"][flips[j]].astype(np.float32)}
            elif np.any((out["status"] != CERTIFIED) & active):
                upper, limited = r, True
            else:
                lower = r
        return dict(best, radius=lower, radius_upper=upper, radius_limited=limited)


CONFIRM_CHUNK = 256  # perturbed images per full forward pass when confirming flips
_DECIDE: dict = {}


@jax.jit
def _ALLOWANCE(weights, image, label):
    return bounds.rounding_allowance(weights, image, label)



# --- The stage: certify.npz + certify.json of a run ---
PARTS_DIR = "certify_parts"  # an unfinished certificate's per-image results


def images_to_certify(config, n_images: int | None = None) -> int:
    """How many images of the attack subsample to certify: `n_images` (or certify.n_images), at
    most attack.n_images when that is not 0 (0: every test image)."""
    n = int(n_images if n_images is not None else config.certify.n_images)
    if n < 1:
        raise ConfigError(f"certify.n_images / --images must be an integer >= 1, got {n}")
    cap = int(config.attack.n_images)
    return n if cap == 0 else min(n, cap)


def certify_settings(config, n_images: int) -> dict:
    """What determines a run's certify.npz besides the model and the data."""
    settings = dataclasses.asdict(CertifySettings.from_config(config))
    settings.update(n_images=int(n_images), seed=int(config.seed), attack_n_images=int(config.attack.n_images),
                    unit_roundoff=bounds.UNIT_ROUNDOFF)
    return settings


def certify_images(model, variables, images: np.ndarray, labels: np.ndarray,
                   settings: CertifySettings | None = None, progress: bool = False, on_image=None, log=None) -> dict:
    """Certificates of (N, H, W, 3) stretched images with true labels (N,): the Python API.

    Returns NumPy arrays with N rows: correct (bool: clean argmax = label; misclassified images
    are not certified, their status maps read FLIPPABLE at the clean colour and radius 0),
    status (N, H, W) int8 (CERTIFIED 0, FLIPPABLE 1, UNDECIDED 2), witness (N, H, W, 3),
    boxes (N, H, W), undecided_fraction (N, H, W), counts (N, 3) per status, unconfirmed (N,),
    float32_allowance (N, classes), radius, radius_upper (N,), radius_pixel (N, 2),
    radius_colour (N, 3), radius_limited (N,), seconds (N,). `on_image(i, row)` is called after
    each image (how `certify_run` stores parts).
    """
    settings = settings or CertifySettings()
    certifier = Certifier(model, variables, settings)
    images, labels = np.asarray(images, np.float32), np.asarray(labels, np.int32)
    rows = []
    bar = progress_bar(total=len(images), desc="certify", unit="image", disable=not progress)
    for i, (image, label) in enumerate(zip(images, labels)):
        clean = np.asarray(certifier._forward(certifier.params, jnp.asarray(image[None])))[0]
        if int(np.argmax(clean)) != int(label):
            row = _misclassified(image, clean)
        else:
            row = certifier.certify_image(image, int(label), log)
            row["correct"] = True
        row["counts"] = np.bincount(row["status"].ravel(), minlength=3).astype(np.int32)
        rows.append(row)
        if on_image is not None:
            on_image(i, row)
        bar.update(1)
    bar.close()
    return stack_rows(rows)


def _misclassified(image: np.ndarray, clean_logits: np.ndarray) -> dict:
    h, w, _ = image.shape
    return {"correct": False, "status": np.full((h, w), FLIPPABLE, np.int8), "witness": image.astype(np.float32),
            "boxes": np.zeros((h, w), np.int32), "undecided_fraction": np.zeros((h, w), np.float32),
            "unconfirmed": 0, "float32_allowance": np.zeros(len(clean_logits)), "radius": 0.0, "radius_upper": 0.0,
            "radius_pixel": np.array([-1, -1], np.int32), "radius_colour": np.full(3, np.nan, np.float32),
            "radius_limited": False, "seconds": 0.0}


def stack_rows(rows: list[dict]) -> dict:
    """Per-image result dicts -> arrays with a leading image axis."""
    return {key: np.stack([np.asarray(r[key]) for r in rows]) for key in rows[0]}


def certify_run(run_dir, data, config=None, n_images: int | None = None, progress: bool = True, log=print,
                stop_after: int | None = None) -> dict | None:
    """Certificates of a run's best model on the first n images of the attack subsample.

    Each image's result goes to RUN/certify_parts/ as soon as it is decided, so an interrupted
    run continues where it stopped; when every image is done, certify.npz and certify.json are
    written (atomically, one provenance unit) and the parts removed. `stop_after` decides at most
    that many new images and returns None (how the tests interrupt it). Returns certify.json.
    """
    from jaxrobust import attack as attack_lib
    from jaxrobust import checkpoint, io, provenance

    run_dir = Path(run_dir)
    model, variables, run_config = checkpoint.load_variables(run_dir)
    config = config or run_config
    settings = CertifySettings.from_config(config)
    settings.validate()
    n = images_to_certify(config, n_images)
    y10, _, labels, index = attack_lib.attack_images(data, int(config.attack.n_images), int(config.seed))
    y10, labels, index = np.asarray(y10[:n], np.float32), np.asarray(labels[:n]), np.asarray(index[:n])
    record = {"settings": certify_settings(config, len(labels)),
              "source": provenance.checkpoint_source(run_dir, checkpoint.read_meta(run_dir, "best"))}
    parts, todo = provenance.open_parts(run_dir / PARTS_DIR, record, "certificates", len(labels), log, stop_after)
    if todo.size:
        log(f"{run_dir}: certifying {todo.size} images x {y10.shape[1] * y10.shape[2]} pixels over [0, 1]^3 "
            f"({settings.bounds} bounds, at most {settings.max_boxes} boxes per pixel)")

        def save(j, row):
            io.atomic_save_npz(provenance.part_path(parts, int(todo[j])), **row)
            counts = row["counts"].tolist()
            log(f"{run_dir}: image {int(todo[j])}: certified / flippable / undecided pixels {counts}, radius "
                f"{float(row['radius']):.4f} (a flip within {float(row['radius_upper']):.4f}), {float(row['seconds']):.0f} s")

        certify_images(model, variables, y10[todo], labels[todo], settings, progress, on_image=save, log=log)
    if not all(provenance.part_path(parts, i).exists() for i in range(len(labels))):
        return None
    rows = []
    for i in range(len(labels)):
        with np.load(provenance.part_path(parts, i)) as f:
            rows.append({k: f[k] for k in f.files})
    arrays = stack_rows(rows)
    arrays.update(test_index=index, labels=labels.astype(np.int32))
    info = dict(summarize(arrays), settings=record["settings"])
    if parallel.is_main_process():
        provenance.write_unit(run_dir, "certify", record["source"], {"certify.npz": arrays}, {"certify.json": info},
                              inputs={"data": provenance.data_digest(getattr(data, "source", None))})
        shutil.rmtree(parts, ignore_errors=True)
        log(f"{run_dir}: certificates of {info['images']} images: certified {info['certified_fraction']:.3f}, "
            f"flippable {info['flippable_fraction']:.3f}, undecided {info['undecided_fraction']:.3f} of the pixels of "
            f"correctly classified images; median radius {_number(info['median_radius'])}; {info['seconds']:.0f} s")
    return info


def _number(x, digits: int = 3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def summarize(arrays: dict) -> dict:
    """certify.json's counts: over the correctly classified images, the pixel fractions per
    status, the radii, the undecided volume, the time."""
    correct = arrays["correct"].astype(bool)
    counts = arrays["counts"][correct].sum(0)
    pixels = max(int(counts.sum()), 1)
    radius = arrays["radius"][correct]
    finite = radius[np.isfinite(radius)]
    return {"images": int(len(correct)), "correct": int(correct.sum()),
            "certified_pixels": int(counts[CERTIFIED]), "flippable_pixels": int(counts[FLIPPABLE]),
            "undecided_pixels": int(counts[UNDECIDED]), "certified_fraction": float(counts[CERTIFIED] / pixels),
            "flippable_fraction": float(counts[FLIPPABLE] / pixels),
            "undecided_fraction": float(counts[UNDECIDED] / pixels),
            "undecided_volume": float(arrays["undecided_fraction"][correct].sum() / pixels),
            "unconfirmed_flips": int(arrays["unconfirmed"][correct].sum()),
            "certified_robust_images": int((finite >= 1.0).sum()),
            "median_radius": float(np.median(finite)) if finite.size else None,
            "radii": [None if not np.isfinite(r) else round(float(r), 6) for r in radius],
            "radius_limited_by_budget": int(arrays["radius_limited"][correct].sum()),
            "mean_boxes_per_pixel": float(arrays["boxes"][correct].mean()) if correct.any() else None,
            "seconds": round(float(arrays["seconds"].sum()), 2)}


def load_certify(run_dir) -> dict:
    """certify.npz of a run as NumPy arrays (provenance tags left out)."""
    path = Path(run_dir) / "certify.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path}: run `jaxrobust certify --workdir {run_dir}` first")
    with np.load(path) as f:
        return {k: f[k] for k in f.files if not k.startswith("_")}


def is_current(run_dir, config, n_images: int | None = None) -> bool:
    """certify.json exists and was made with these settings (the checkpoint is compared by
    provenance.unit_current)."""
    path = Path(run_dir) / "certify.json"
    if not (path.exists() and (Path(run_dir) / "certify.npz").exists()):
        return False
    recorded = json.loads(path.read_text()).get("settings", {})
    return recorded == json.loads(json.dumps(certify_settings(config, images_to_certify(config, n_images))))


# --- DE vs scan vs certificate (the report's table) ---
def agreement(certificate: dict, attack: dict, scan: dict | None = None) -> dict:
    """How the DE attack and the exhaustive scan compare with the certificate on the same images.

    certificate: certify.npz arrays; attack: attack.npz arrays (its first images are the
    certified ones); scan: scan.npz arrays or None. Over the certified, correctly classified
    images: DE successes whose pixel is certified (a bug if ever > 0: DE's success criteria imply
    another class's argmax, which a certificate excludes), scan-flipping pixels (p(other) above
    the attack's threshold at a colour of the set) on certified pixels (likewise 0) and on
    flippable ones, and flippable pixels no colour of the scan's set flips (the colours between
    the corners that only a continuous search finds).
    """
    n = len(certificate["correct"])
    if len(attack["labels"]) < n or ("test_index" in attack and not np.array_equal(
            attack["test_index"][:n], certificate["test_index"])):
        raise ValueError("certify.npz and attack.npz cover different images (rerun `jaxrobust certify`)")
    ok = certificate["correct"].astype(bool)
    status = certificate["status"]
    success = attack["success"][:n].astype(bool) & attack["attacked"][:n].astype(bool) & ok
    rows, cols = attack["pixel"][:n, 0].astype(int), attack["pixel"][:n, 1].astype(int)
    de_status = status[np.arange(n), rows, cols]
    out = {"images": int(ok.sum()), "de_successes": int(success.sum()),
           "de_on_certified": int((success & (de_status == CERTIFIED)).sum()),
           "de_on_flippable": int((success & (de_status == FLIPPABLE)).sum())}
    if scan is not None:
        k = min(n, len(scan["labels"]))
        if "test_index" in scan and not np.array_equal(scan["test_index"][:k], certificate["test_index"][:k]):
            raise ValueError("certify.npz and scan.npz cover different images (rerun `jaxrobust scan`)")
        labels = scan["labels"][:k]
        others = np.arange(scan["max_probability"].shape[1])[None, :] != labels[:, None]  # (k, C)
        flips = np.any((scan["max_probability"][:k] > float(scan["target_threshold"])) & others[..., None, None], axis=1)
        both = ok[:k, None, None]
        out.update(scanned=int(ok[:k].sum()), n_colours=int(scan["colours"].shape[1]),
                   scan_flips=int((flips & both).sum()),
                   scan_flips_on_certified=int((flips & both & (status[:k] == CERTIFIED)).sum()),
                   scan_flips_on_flippable=int((flips & both & (status[:k] == FLIPPABLE)).sum()),
                   flippable_missed_by_scan=int((~flips & both & (status[:k] == FLIPPABLE)).sum()))
    return out


def render_markdown(summaries: dict, rows: dict) -> str:
    """The report's "Certificates" section: {training: certify.json} and {training: agreement(...)}."""
    lines = ["\n## One-pixel certificates\n\n",
             "Every pixel of each certified image, decided over the whole colour box [0, 1]^3 (stretched units) by "
             "branch and bound on float64 bounds (`jaxrobust certify`, docs/certify.md): *certified* (proved: no "
             "colour makes another class the argmax), *flippable* (a colour that does, confirmed by a full forward "
             "pass), *undecided* (the per-pixel budget ran out). The radius is the largest L-infinity change of one "
             "pixel's colour that is certified for every pixel of the image: a length in the image's own units, "
             "comparable between networks. Fractions are of the pixels of correctly classified images.\n\n",
             "| Training | images | certified | flippable | undecided (volume) | radius per image | limited by budget "
             "| boxes per pixel | seconds |\n", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"]
    for name, s in summaries.items():
        radii = ", ".join("n/a" if r is None else f"{r:.3f}" for r in s["radii"])
        lines.append(f"| {name} | {s['correct']} of {s['images']} | {s['certified_fraction']:.4f} | "
                     f"{s['flippable_fraction']:.4f} | {s['undecided_fraction']:.4f} ({s['undecided_volume']:.4f}) | "
                     f"{radii} | {s['radius_limited_by_budget']} | {_number(s['mean_boxes_per_pixel'], 2)} | "
                     f"{s['seconds']:.0f} |\n")
    if rows:
        lines += ["\nDE and the scan against the certificate, on the certified images. A DE success or a scan flip on "
                  "a certified pixel would be a bug; a flippable pixel no colour of the scan's set flips is one the "
                  "continuous search adds.\n\n",
                  "| Training | DE successes | on certified pixels | on flippable pixels | scan flips (colours) | on "
                  "certified | on flippable | flippable, missed by the scan |\n",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |\n"]
        for name, r in rows.items():
            scan_cells = (f"{r['scan_flips']} ({r['n_colours']}) | {r['scan_flips_on_certified']} | "
                          f"{r['scan_flips_on_flippable']} | {r['flippable_missed_by_scan']}"
                          if "scan_flips" in r else "n/a | n/a | n/a | n/a")
            lines.append(f"| {name} | {r['de_successes']} | {r['de_on_certified']} | {r['de_on_flippable']} | "
                         f"{scan_cells} |\n")
    return "".join(lines)


__all__ = ["CERTIFIED", "FLIPPABLE", "STATUS_NAMES", "UNDECIDED", "CertifySettings", "Certifier", "branch_and_bound",
           "agreement", "certify_images", "certify_run", "render_markdown", "certify_settings", "images_to_certify", "is_current", "load_certify",
           "pixel_grid", "summarize"]
