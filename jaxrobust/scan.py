"""Exhaustive one-pixel scan: every pixel position x every colour of a finite set, scored exactly.

The DE attack (attack.py) samples one-pixel perturbations: when it fails, nobody knows whether
the image is robust or the search was unlucky, and when it succeeds it says nothing about how
many pixels would have done. The scan scores all of them for a finite colour set: H x W
positions x K colours (10,000 x 8 for the corners of the RGB cube), with the attack's own
evaluators (incremental where the model supports it, full forward passes otherwise) and its
chunked scoring, so every probability is the one the attack would have seen for that
candidate. A candidate is the attack's gene (row / H, col / W, g, r, i), which `decode` maps
back to exactly that pixel and colour.

Per image it returns, for each class, the max probability over the colours at every pixel (an
H x W vulnerability map) and the colour reaching it; the min probability of the true class at
every pixel; the number of pixels that flip the image at the attack's thresholds (targeted per
class: p(class) > attack.target_threshold; untargeted: p(true) < attack.untargeted_threshold;
and towards any other class, the paper's targeted protocol); the best pixel and colour.

Colour sets (`colour_set`; config `scan.colours`, CLI `--colours`), in the stretched units the
model sees, clipped to [0, 1] as the attack's genes are:
  corners   the 8 corners of the RGB cube {0, 1}^3 (default): the extremes of the range the
            attack's colour genes are clipped to, where a single pixel departs most from a
            galaxy's smooth light (our choice of default)
  minmax    per image, the 8 combinations of each band's own min and max over the image:
            colours that blend into the image's range
  grid:K    the K^3 colours of a regular grid of [0, 1]^3 (K >= 2; grid:2 is the corners)
  FILE      a .npy or .txt file holding an N x 3 array of colours in [0, 1]

One jitted call scores a batch of images (one per device by default, shard_map over devices as
the attack), looping on the device over blocks of colours: no Python loop over pixels.
"""
from __future__ import annotations

import functools
import itertools
import json
import shutil
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust import parallel
from jaxrobust.attack import AttackSpec, check_stamps, mesh_key, place_evaluator
from jaxrobust.candidates import NUM_GENES, UNROLL_MAX_CHUNKS, CandidateEvaluator, encode
from jaxrobust.incremental import make_evaluator
from jaxrobust.progress import progress_bar

BUILTIN_SETS = ("corners", "minmax", "grid:K")


# --- Colour sets ---
def corner_colours() -> np.ndarray:
    """(8, 3) float32: the corners of the RGB cube, (0, 0, 0) first, in itertools.product order."""
    return np.array(list(itertools.product((0.0, 1.0), repeat=3)), np.float32)


def grid_colours(k: int) -> np.ndarray:
    """(k^3, 3) float32: every combination of k evenly spaced levels in [0, 1] per band."""
    if int(k) != k or k < 2:
        raise ValueError(f"colour set grid:K needs an integer K >= 2 (two levels per band at least), got {k!r}")
    levels = np.linspace(0.0, 1.0, int(k), dtype=np.float32)
    return np.array(list(itertools.product(levels, repeat=3)), np.float32)


def minmax_colours(images: np.ndarray) -> np.ndarray:
    """(N, 8, 3) float32: per image, each band at its own min or max over the image, clipped to [0, 1]."""
    images = np.asarray(images, np.float32)
    lo, hi = images.min(axis=(1, 2)), images.max(axis=(1, 2))  # (N, 3)
    choice = corner_colours().astype(bool)  # (8, 3): True takes the band's max
    return np.clip(np.where(choice[None], hi[:, None, :], lo[:, None, :]), 0.0, 1.0).astype(np.float32)


def load_colour_file(path: Path) -> np.ndarray:
    """(K, 3) float32 colours from a .npy or whitespace/comma-separated .txt file."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            colours = np.load(path, allow_pickle=False)
        else:
            colours = np.loadtxt(path, delimiter="," if "," in path.read_text() else None, ndmin=2)
        colours = np.asarray(colours, np.float64)
    except (ValueError, TypeError, EOFError, UnicodeDecodeError) as err:  # words, a torn file, text in a .npy
        reason = " ".join(str(err).split())[:120]
        raise ValueError(f"{path}: not a colour file ({reason}); expected N lines of three numbers g r i in "
                         "[0, 1] (stretched units), or a .npy array of shape N x 3") from err
    if colours.ndim != 2 or colours.shape[1] != 3 or len(colours) == 0:
        raise ValueError(f"{path}: a colour file must hold an N x 3 array of (g, r, i) colours, got shape {colours.shape}")
    if not np.all(np.isfinite(colours)) or colours.min() < 0 or colours.max() > 1:
        raise ValueError(f"{path}: colours must lie in [0, 1] (stretched units), got range "
                         f"[{np.nanmin(colours):.3g}, {np.nanmax(colours):.3g}]")
    return colours.astype(np.float32)


def colour_set(name: str, images: np.ndarray) -> np.ndarray:
    """(N, K, 3) float32 colours per image for a set name: corners, minmax, grid:K or a file."""
    name = str(name).strip()
    n = len(images)
    if name == "corners":
        colours = corner_colours()
    elif name == "minmax":
        return minmax_colours(images)
    elif name.startswith("grid:"):
        text = name.split(":", 1)[1]
        try:
            k = int(text)
        except ValueError:
            raise ValueError(f"colour set {name!r}: grid:K needs an integer K >= 2, got {text!r}") from None
        colours = grid_colours(k)
    elif name.endswith((".npy", ".txt")) and Path(name).is_file():
        colours = load_colour_file(Path(name))
    else:
        raise ValueError(f"unknown colour set {name!r} (scan.colours / --colours): expected corners, minmax, "
                         "grid:K with K >= 2, or an existing .npy/.txt file of N x 3 colours in [0, 1]")
    return np.broadcast_to(colours, (n,) + colours.shape).copy()


# --- The scan on the device ---
def pixel_coordinates(height: int, width: int) -> jax.Array:
    """(H W, 2) coordinate genes of every pixel, row-major, written by candidates.encode (exact)."""
    rows, cols = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
    return encode(rows.ravel(), cols.ravel(), jnp.zeros((height * width, 3)), height, width)[:, :2]


def _scan_batch(target_threshold: float, untargeted_threshold: float, evaluator, images: jax.Array,
                colours: jax.Array, labels: jax.Array, valid: jax.Array) -> dict:
    """Every pixel x colour of T images: images (T, H, W, 3), colours (S, T, Kb, 3) in S blocks.

    Returns per image the maps and counts described in `scan_images` (device arrays). Colour
    blocks run in a `lax.scan`; within a block all T x Kb x H W candidates go through the
    evaluator's chunked scoring at once. Ties keep the first colour (strict comparisons).
    """
    t, h, w, _ = images.shape
    steps, _, kb, _ = colours.shape
    hw = h * w
    cache = evaluator.prepare(images)
    coords = pixel_coordinates(h, w)

    def block(carry, inputs):
        block_colours, step = inputs  # (T, Kb, 3), scalar
        genes = jnp.concatenate([jnp.broadcast_to(coords[None, None], (t, kb, hw, 2)),
                                 jnp.broadcast_to(block_colours[:, :, None, :], (t, kb, hw, 3))], axis=-1)
        probs = evaluator.probabilities(cache, genes.reshape(t, kb * hw, NUM_GENES), valid)
        probs = probs.reshape(t, kb, hw, -1)  # (T, Kb, HW, C)
        p_true = jnp.take_along_axis(probs, labels[:, None, None, None], axis=-1)[..., 0]  # (T, Kb, HW)
        best_max, arg_max, best_min, arg_min = carry
        block_max, block_arg = probs.max(1), probs.argmax(1) + step * kb
        block_min, block_argmin = p_true.min(1), p_true.argmin(1) + step * kb
        up, down = block_max > best_max, block_min < best_min
        return (jnp.where(up, block_max, best_max), jnp.where(up, block_arg, arg_max),
                jnp.where(down, block_min, best_min), jnp.where(down, block_argmin, arg_min)), None

    # the clean image: pixel (0, 0) set to its own value (exact for images in [0, 1])
    own = encode(jnp.zeros(t), jnp.zeros(t), jnp.clip(images[:, 0, 0, :], 0.0, 1.0), h, w)
    clean = evaluator.score(cache, jnp.arange(t), own)
    n_classes = clean.shape[-1]
    init = (jnp.full((t, hw, n_classes), -1.0), jnp.zeros((t, hw, n_classes), jnp.int32),
            jnp.full((t, hw), 2.0), jnp.zeros((t, hw), jnp.int32))
    (max_p, max_c, min_p, min_c), _ = jax.lax.scan(block, init, (colours, jnp.arange(steps)))
    is_true = jnp.arange(n_classes)[None, :] == labels[:, None]  # (T, C)
    flips = max_p > target_threshold  # (T, HW, C)
    return {
        "max_probability": max_p.transpose(0, 2, 1).reshape(t, n_classes, h, w),
        "max_colour": max_c.transpose(0, 2, 1).reshape(t, n_classes, h, w),
        "min_true_probability": min_p.reshape(t, h, w), "min_true_colour": min_c.reshape(t, h, w),
        "clean_probability": clean,
        "flipping_pixels_targeted": jnp.where(is_true, -1, flips.sum(1)),
        "flipping_pixels_any": jnp.any(flips & ~is_true[:, None, :], axis=-1).sum(1),
        "flipping_pixels_untargeted": (min_p < untargeted_threshold).sum(1),
        "best_pixel_index": max_p.argmax(1), "untargeted_best_index": min_p.argmin(1),
    }


def colours_per_step(chunk: int, images_per_call: int, pixels: int, n_colours: int) -> int:
    """Colours scored per block: as many as fill UNROLL_MAX_CHUNKS chunks (the attack's fast,
    unrolled chunk path), at least one and at most all of them."""
    return int(np.clip((chunk * UNROLL_MAX_CHUNKS) // max(images_per_call * pixels, 1), 1, n_colours))


_COMPILED: dict = {}  # (thresholds, mesh) -> the jitted batch function, shared by every evaluator


def _compiled_scan(target_threshold: float, untargeted_threshold: float, mesh):
    """fn(evaluator, images, colours, labels, valid), jitted; shard_map over a mesh of several devices.

    The evaluator is an argument (its weights are leaves), so evaluators of the same shapes and
    configuration share one compiled program (attack._compile).
    """
    key = (target_threshold, untargeted_threshold, mesh_key(mesh))
    if key not in _COMPILED:
        fn = functools.partial(_scan_batch, target_threshold, untargeted_threshold)
        if mesh is not None and parallel.num_shards(mesh) > 1:
            rows = jax.sharding.PartitionSpec(parallel.DATA_AXIS)
            blocks = jax.sharding.PartitionSpec(None, parallel.DATA_AXIS)
            fn = jax.shard_map(fn, mesh=mesh, in_specs=(jax.sharding.PartitionSpec(), rows, blocks, rows, rows),
                               out_specs=rows, check_vma=False)
        _COMPILED[key] = jax.jit(fn)
    return _COMPILED[key]


def scan_with_evaluator(evaluator, images: np.ndarray, labels: np.ndarray, colours: np.ndarray,
                        spec: AttackSpec | None = None, mesh=None, images_per_call: int = 0,
                        colours_per_call: int = 0, progress: bool = False,
                        on_batch: Callable | None = None) -> dict:
    """The exhaustive scan with a given evaluator (candidates.FullEvaluator, IncrementalEvaluator, ...).

    Args:
      evaluator: a candidates.CandidateEvaluator (prepare, score, probabilities, chunk).
      images: (N, H, W, 3) stretched clean images.
      labels: (N,) true classes.
      colours: (K, 3) one set for all images, or (N, K, 3) per image; values in [0, 1].
      spec: the attack settings whose thresholds define a flip (default AttackSpec()).
      mesh: device mesh (default: every device); images are split over its devices.
      images_per_call: images per jitted call (0: one per device).
      colours_per_call: colours scored together in one block of the device loop (0: as many as
        fill UNROLL_MAX_CHUNKS chunks, `colours_per_step`).
      on_batch: called as on_batch(indices, arrays) after each call with that batch's rows,
        e.g. to store partial results.
    Returns:
      NumPy arrays, N rows each (C classes, K colours):
        max_probability (N, C, H, W): max over colours of p(class) with the pixel set to the colour
        max_colour (N, C, H, W) int32: index of the colour reaching it (first on ties)
        min_true_probability (N, H, W), min_true_colour (N, H, W): the same for min p(true class)
        clean_probability (N, C)
        flipping_pixels_targeted (N, C) int32: pixels with max p(class) > target_threshold; -1 at
          the true class
        flipping_pixels_any (N,): pixels flipping the image towards some other class
        flipping_pixels_untargeted (N,): pixels with min p(true) < untargeted_threshold
        best_pixel (N, C, 2) (row, col), best_colour (N, C, 3), best_probability (N, C): per
          class, the candidate with the highest p(class)
        untargeted_best_pixel (N, 2), untargeted_best_colour (N, 3), untargeted_best_probability (N,)
        colours (N, K, 3), labels (N,)
    """
    spec = spec or AttackSpec()
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels, np.int32)
    check_stamps(images, labels, "scan")
    colours = np.asarray(colours, np.float32)
    if colours.ndim == 2:
        colours = np.broadcast_to(colours, (len(images),) + colours.shape)
    if colours.ndim != 3 or colours.shape[0] != len(images) or colours.shape[2] != 3 or colours.shape[1] == 0:
        raise ValueError(f"colours must be (K, 3) or ({len(images)}, K, 3), got shape {colours.shape}")
    n, h, w, _ = images.shape
    k = colours.shape[1]
    mesh = mesh or parallel.make_mesh()
    shards = parallel.num_shards(mesh)
    per_call = parallel.round_up(max(int(images_per_call), 1) if images_per_call else shards, shards)
    kb = min(int(colours_per_call), k) if colours_per_call else colours_per_step(evaluator.chunk, per_call, h * w, k)
    steps = -(-k // kb)
    # pad the colour list by repeating the last colour: a repeat never wins a strict comparison
    padded = np.concatenate([colours, np.repeat(colours[:, -1:], steps * kb - k, axis=1)], axis=1)
    fn = _compiled_scan(float(spec.target_threshold), float(spec.untargeted_threshold), mesh)
    evaluator = place_evaluator(evaluator, mesh)
    out = None
    bar = progress_bar(total=n, desc="scan", unit="image", disable=not progress)
    for start in range(0, n, per_call):
        index = np.arange(start, min(start + per_call, n))
        take = np.resize(index, per_call)  # the last call repeats images into its empty slots
        valid = np.arange(per_call) < len(index)
        block_colours = padded[take].reshape(per_call, steps, kb, 3).transpose(1, 0, 2, 3)
        rows = jax.device_get(fn(evaluator, jnp.asarray(images[take]), jnp.asarray(block_colours),
                                 jnp.asarray(labels[take]), jnp.asarray(valid)))
        rows = _finish(rows, colours[take], labels[take], w)
        rows = {key: value[: len(index)] for key, value in rows.items()}
        if out is None:
            out = {key: np.zeros((n,) + value.shape[1:], value.dtype) for key, value in rows.items()}
        for key, value in rows.items():
            out[key][index] = value
        if on_batch is not None:
            on_batch(index, rows)
        bar.update(len(index))
    bar.close()
    return out


def _finish(rows: dict, colours: np.ndarray, labels: np.ndarray, width: int) -> dict:
    """Host side: flat pixel indices -> (row, col), colour indices -> colours."""
    rows = {key: np.asarray(value) for key, value in rows.items()}
    t = len(labels)
    best = rows.pop("best_pixel_index")  # (T, C)
    n_classes = best.shape[1]
    max_colour = rows["max_colour"].reshape(t, n_classes, -1)
    best_colour_index = np.take_along_axis(max_colour, best[..., None], axis=-1)[..., 0]  # (T, C)
    rows["best_pixel"] = np.stack([best // width, best % width], axis=-1).astype(np.int32)
    rows["best_colour"] = np.take_along_axis(colours, best_colour_index[..., None], axis=1).astype(np.float32)
    rows["best_probability"] = np.take_along_axis(rows["max_probability"].reshape(t, n_classes, -1),
                                                  best[..., None], axis=-1)[..., 0]
    ub = rows.pop("untargeted_best_index")  # (T,)
    rows["untargeted_best_pixel"] = np.stack([ub // width, ub % width], axis=-1).astype(np.int32)
    ub_colour = rows["min_true_colour"].reshape(t, -1)[np.arange(t), ub]
    rows["untargeted_best_colour"] = colours[np.arange(t), ub_colour].astype(np.float32)
    rows["untargeted_best_probability"] = rows["min_true_probability"].reshape(t, -1)[np.arange(t), ub]
    rows["colours"] = np.asarray(colours, np.float32)
    rows["labels"] = np.asarray(labels, np.int32)
    for key in ("max_colour", "min_true_colour", "flipping_pixels_targeted", "flipping_pixels_any",
                "flipping_pixels_untargeted"):
        rows[key] = rows[key].astype(np.int32)
    return rows


def scan_images(model, variables, images: np.ndarray, labels: np.ndarray, colours="corners",
                spec: AttackSpec | None = None, evaluator: str = "auto", mesh=None, images_per_call: int = 0,
                colours_per_call: int = 0, progress: bool = False, on_batch: Callable | None = None) -> dict:
    """The exhaustive one-pixel scan of a trained model (see `scan_with_evaluator` for the arrays).

    `colours`: a set name (corners, minmax, grid:K, a .npy/.txt file) or an array (K, 3) /
    (N, K, 3). `evaluator`: "auto" (incremental where supported), "incremental" or "full", with
    the attack's chunk size (`spec.chunk_candidates`; 0 = the evaluator's measured default).
    """
    spec = spec or AttackSpec()
    if isinstance(colours, (str, Path)):
        colours = colour_set(str(colours), images)
    engine = make_evaluator(evaluator, model, variables, spec.chunk_candidates)
    return scan_with_evaluator(engine, images, labels, colours, spec, mesh, images_per_call, colours_per_call,
                               progress, on_batch)


# --- DE restricted to a colour set (the test that the scan bounds DE) ---
class ColourSetEvaluator(CandidateEvaluator):
    """An evaluator whose candidates may only take colours of a finite set.

    Gene 2 picks colour floor(g2 K) (clipped to K - 1) of `colours` (K, 3); genes 3-4 are
    ignored. Passed to attack.run_attack in place of the model's evaluator, it runs the DE
    over pixel positions x that colour set, the space the scan enumerates, without any change
    to the attack; `restrict(genes)` gives the genes the DE's result actually scored.
    """

    def __init__(self, inner, colours: np.ndarray):
        self.inner, self.colours = inner, jnp.asarray(colours, jnp.float32)
        self.name, self.chunk = f"{inner.name} restricted to {len(colours)} colours", inner.chunk

    def tree_flatten(self):
        return (self.inner, self.colours), (self.name, self.chunk)

    @classmethod
    def tree_unflatten(cls, static, children):
        evaluator = object.__new__(cls)
        (evaluator.inner, evaluator.colours), (evaluator.name, evaluator.chunk) = children, static
        return evaluator

    def restrict(self, genes):
        k = self.colours.shape[0]
        index = jnp.clip(jnp.floor(genes[..., 2] * k).astype(jnp.int32), 0, k - 1)
        return jnp.concatenate([genes[..., :2], self.colours[index]], axis=-1)

    def prepare(self, images):
        return self.inner.prepare(images)

    def logits(self, cache, image, genes):
        return self.inner.logits(cache, image, self.restrict(genes))


# --- A run's scan: scan.npz + scan.json, resumable per image ---
PARTS_DIR = "scan_parts"  # per-image results of an unfinished scan (removed when scan.npz is written)
MAP_KEYS = ("max_probability", "max_colour", "min_true_probability", "min_true_colour")


def images_to_scan(config, n_images: int | None = None) -> int:
    """How many images of the attack subsample to scan: `n_images` (or scan.n_images), at most
    attack.n_images (0: every test image, no cap here), so every scanned image is one the attack saw."""
    n = int(n_images if n_images is not None else config.scan.n_images)
    if n < 1:
        raise ValueError(f"scan.n_images / --images must be an integer >= 1, got {n}")
    cap = int(config.attack.n_images)
    return n if cap <= 0 else min(n, cap)


def scan_settings(config, colours: str, n_images: int, evaluator_name: str) -> dict:
    """What determines a run's scan.npz besides the model (a colour file by its content hash)."""
    from jaxrobust import io

    settings = {"colours": str(colours), "n_images": int(n_images), "seed": int(config.seed),
                "attack_n_images": int(config.attack.n_images), "evaluator": evaluator_name,
                "target_threshold": float(config.attack.target_threshold),
                "untargeted_threshold": float(config.attack.untargeted_threshold)}
    if Path(str(colours)).suffix in (".npy", ".txt") and Path(str(colours)).is_file():
        settings["colours_sha256"] = io.sha256(Path(str(colours)))
    return settings


def scan_run(run_dir, data, config=None, colours: str | None = None, n_images: int | None = None,
             progress: bool = True, log=print, stop_after: int | None = None) -> dict | None:
    """The exhaustive scan of a run's best model over the attack subsample: scan.npz + scan.json.

    Scans the first n images (`images_to_scan`) of the images `attack` uses (attack.attack_images
    with attack.n_images and the config seed) with the colour set `colours` (default
    scan.colours). Each image's result is stored in RUN/scan_parts/ as soon as it is scored, so
    an interrupted scan continues where it stopped; when every image is done, scan.npz and
    scan.json are written (atomically, one provenance unit) and the parts removed.
    `stop_after` scores at most that many new images and returns None without writing scan.npz
    (how the tests interrupt a scan). Returns the scan.json record.
    """
    from jaxrobust import attack as attack_lib
    from jaxrobust import checkpoint, io, provenance

    run_dir = Path(run_dir)
    model, variables, run_config = checkpoint.load_variables(run_dir)
    config = config or run_config
    colours = str(colours or config.scan.colours)
    n = images_to_scan(config, n_images)
    spec = AttackSpec.from_config(config)
    y10, _, labels, index = attack_lib.attack_images(data, int(config.attack.n_images), int(config.seed))
    y10, labels, index = np.asarray(y10[:n], np.float32), np.asarray(labels[:n]), np.asarray(index[:n])
    colour_array = colour_set(colours, y10)
    engine = make_evaluator(str(config.attack.evaluator), model, variables, spec.chunk_candidates)
    settings = scan_settings(config, colours, len(labels), engine.name)
    source = provenance.checkpoint_source(run_dir, checkpoint.read_meta(run_dir, "best"))
    parts, todo = provenance.open_parts(run_dir / PARTS_DIR, {"settings": settings, "source": source}, "scan",
                                        len(labels), log, stop_after)
    if todo.size:
        log(f"{run_dir}: scanning {todo.size} images x {y10.shape[1]} x {y10.shape[2]} pixels x {colour_array.shape[1]} colours "
            f"({colours}) with the {engine.name} evaluator")
        clock = [time.perf_counter()]

        def save_part(batch, rows):
            now = time.perf_counter()
            seconds = (now - clock[0]) / len(batch)
            clock[0] = now
            for j, i in enumerate(todo[batch]):
                io.atomic_save_npz(provenance.part_path(parts, int(i)), seconds=np.float64(seconds),
                                   **{k: v[j] for k, v in rows.items()})

        scan_with_evaluator(engine, y10[todo], labels[todo], colour_array[todo], spec, progress=progress,
                            on_batch=save_part)
    if stop_after is not None and not all(provenance.part_path(parts, i).exists() for i in range(len(labels))):
        return None
    rows = []
    for i in range(len(labels)):
        with np.load(provenance.part_path(parts, i)) as f:
            rows.append({k: f[k] for k in f.files})
    arrays = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    seconds = float(arrays.pop("seconds").sum())
    arrays.update(test_index=index, images=y10.astype(np.float16),
                  target_threshold=np.float32(spec.target_threshold),
                  untargeted_threshold=np.float32(spec.untargeted_threshold))
    info = dict(summarize(arrays), settings=settings, seconds=round(seconds, 2),
                candidate_evaluations=int(arrays["max_probability"][:, 0].size * colour_array.shape[1]))
    info["candidates_per_second"] = round(info["candidate_evaluations"] / max(seconds, 1e-9), 1)
    if parallel.is_main_process():
        provenance.write_unit(run_dir, "scan", source, {"scan.npz": _narrow(arrays)}, {"scan.json": info},
                              inputs={"data": provenance.data_digest(getattr(data, "source", None))})
        shutil.rmtree(parts, ignore_errors=True)
        log(f"{run_dir}: scan of {info['images']} images: {info['vulnerable_targeted']} of {info['correct']} "
            f"correctly classified images have a flipping pixel; {seconds:.1f} s "
            f"({info['candidates_per_second']:.0f} candidates/s)")
    return info


def _narrow(arrays: dict) -> dict:
    """Colour indices in the smallest unsigned type that holds them (uint8 for up to 256 colours)."""
    k = arrays["colours"].shape[1]
    dtype = np.uint8 if k <= 256 else np.uint16 if k <= 65536 else np.int32
    return {key: value.astype(dtype) if key in ("max_colour", "min_true_colour") else value
            for key, value in arrays.items()}


def summarize(arrays: dict) -> dict:
    """Counts of scan.json: images, correctly classified ones, vulnerable ones, median flips."""
    correct = arrays["clean_probability"].argmax(1) == arrays["labels"]
    any_target, untargeted = arrays["flipping_pixels_any"], arrays["flipping_pixels_untargeted"]
    median = lambda x: float(np.median(x)) if x.size else float("nan")  # noqa: E731
    return {"images": int(len(correct)), "correct": int(correct.sum()),
            "vulnerable_targeted": int((any_target[correct] > 0).sum()),
            "vulnerable_untargeted": int((untargeted[correct] > 0).sum()),
            "median_flipping_pixels_targeted": median(any_target[correct]),
            "median_flipping_pixels_untargeted": median(untargeted[correct])}


def load_scan(run_dir) -> dict:
    """scan.npz of a run as NumPy arrays (colour indices widened back to int32)."""
    path = Path(run_dir) / "scan.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path}: run `jaxrobust scan --workdir {run_dir}` first")
    with np.load(path) as f:
        out = {k: f[k] for k in f.files if not k.startswith("_")}
    for key in ("max_colour", "min_true_colour"):
        out[key] = out[key].astype(np.int32)
    return out


def is_current(run_dir, config, colours: str | None = None, n_images: int | None = None) -> bool:
    """scan.npz and scan.json exist, were made with these settings and from the run's current
    best checkpoint."""
    from jaxrobust import checkpoint, provenance

    run_dir = Path(run_dir)
    info_path, npz_path = run_dir / "scan.json", run_dir / "scan.npz"
    if not (info_path.exists() and npz_path.exists()):
        return False
    info = json.loads(info_path.read_text())
    recorded = info.get("settings", {})
    expected = scan_settings(config, str(colours or config.scan.colours), images_to_scan(config, n_images),
                             recorded.get("evaluator", ""))
    if recorded != expected or recorded.get("evaluator") not in _evaluator_names(config.attack.evaluator):
        return False
    source = (info.get(provenance.PROVENANCE_KEY) or {}).get("source")
    best = checkpoint.read_meta(run_dir, "best")
    return source is None or source == provenance.checkpoint_source(run_dir, best)


def _evaluator_names(setting: str) -> tuple[str, ...]:
    return ("full", "incremental") if setting == "auto" else (str(setting),)


# --- DE vs exhaustive (the report's table) ---
def de_vs_exhaustive(attack: dict, scan: dict, targeted: bool) -> dict:
    """How the DE attack's results compare with the scan's ground truth on the same images.

    attack: attack.npz arrays; scan: scan.npz arrays (its images are the attack's first n).
    Over the images the attack attacked (correct in Y10) among the scanned ones: how many the
    scan shows vulnerable (a flipping pixel: towards some other class when `targeted`, else
    below the untargeted threshold), how many DE flipped, DE misses the scan flips, DE successes
    the scan's colour set cannot reproduce (DE's colours are continuous), how often DE's pixel
    lies in the scan's flipping set (towards DE's target when targeted), and the flipping-pixel
    counts.
    """
    n = len(scan["labels"])
    if len(attack["labels"]) < n or not np.array_equal(attack["labels"][:n], scan["labels"]) or (
            "test_index" in attack and "test_index" in scan
            and not np.array_equal(attack["test_index"][:n], scan["test_index"])):
        raise ValueError("scan.npz and attack.npz cover different images (rerun `jaxrobust scan`)")
    attacked = attack["attacked"][:n].astype(bool)
    success = attack["success"][:n].astype(bool) & attacked
    counts = scan["flipping_pixels_any"] if targeted else scan["flipping_pixels_untargeted"]
    vulnerable = (counts > 0) & attacked
    rows, cols = attack["pixel"][:n, 0].astype(int), attack["pixel"][:n, 1].astype(int)
    i = np.arange(n)
    if targeted:
        target = np.clip(attack["target"][:n], 0, None)
        in_set = scan["max_probability"][i, target, rows, cols] > float(scan["target_threshold"])
    else:
        in_set = scan["min_true_probability"][i, rows, cols] < float(scan["untargeted_threshold"])
    median = lambda x: float(np.median(x)) if x.size else float("nan")  # noqa: E731
    return {"scanned": int(n), "attacked": int(attacked.sum()), "vulnerable_scan": int(vulnerable.sum()),
            "de_successes": int(success.sum()), "both": int((vulnerable & success).sum()),
            "de_missed_scan_flips": int((vulnerable & ~success).sum()),
            "de_flipped_scan_does_not": int((success & ~vulnerable).sum()),
            "de_pixel_in_scan_set": int((in_set & success).sum()),
            "median_flipping_pixels": median(counts[attacked]), "mean_flipping_pixels":
            float(counts[attacked].mean()) if attacked.any() else float("nan"),
            "n_colours": int(scan["colours"].shape[1])}


def vulnerability_map(arrays: dict, i: int, threshold: float, targeted: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(vulnerability (H, W), flipping (H, W) bool) of scanned image i, for the figures.

    Targeted: the highest probability of another class over the colours, and the pixels where
    it passes `threshold` (attack.target_threshold). Untargeted: 1 - the lowest true-class
    probability, and the pixels where that probability falls below `threshold`
    (attack.untargeted_threshold).
    """
    label = int(arrays["labels"][i])
    if targeted:
        others = np.delete(arrays["max_probability"][i], label, axis=0)
        vulnerability = others.max(0)
        return vulnerability, vulnerability > threshold
    lowest = arrays["min_true_probability"][i]
    return 1.0 - lowest, lowest < threshold


def de_vs_exhaustive_markdown(rows: dict, colours: str) -> str:
    """The report's "DE vs exhaustive" section from {training name: de_vs_exhaustive(...)}."""
    lines = ["\n## DE vs exhaustive one-pixel scan\n\n",
             f"Every pixel x every colour of the set `{colours}` scored exactly (`jaxrobust scan`), over the "
             "attacked images (correct in Y10) among the scanned ones. A DE miss the scan flips is a search "
             "failure; a DE success the scan does not reproduce used a colour outside the set (DE's colours "
             "are continuous). The flipping-pixel count is a robustness measure free of DE's randomness.\n\n",
             "| Training | scanned (attacked) | vulnerable per scan | DE successes | DE missed, scan flips | "
             "DE flipped, scan does not | DE's pixel in the scan's flipping set | median (mean) flipping pixels |\n",
             "| --- | --- | --- | --- | --- | --- | --- | --- |\n"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['scanned']} ({r['attacked']}) | {r['vulnerable_scan']} | {r['de_successes']} | "
                     f"{r['de_missed_scan_flips']} | {r['de_flipped_scan_does_not']} | "
                     f"{r['de_pixel_in_scan_set']} of {r['de_successes']} | "
                     f"{r['median_flipping_pixels']:.0f} ({r['mean_flipping_pixels']:.1f}) |\n")
    return "".join(lines)


__all__ = ["BUILTIN_SETS", "ColourSetEvaluator", "colour_set", "de_vs_exhaustive", "de_vs_exhaustive_markdown",
           "images_to_scan", "is_current", "load_scan", "scan_run", "scan_settings", "vulnerability_map",
           "corner_colours", "grid_colours",
           "minmax_colours", "load_colour_file", "scan_images", "scan_with_evaluator"]
