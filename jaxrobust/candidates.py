"""One-pixel candidates and their scoring: genes, perturbed images, class probabilities.

A candidate changes one pixel of one clean image. It is written as genes (row, col, g, r, i)
in [0, 1]^5 (the paper's DE encoding, onepixel_attack.py): pixel
(clip(round(row H), 0, H-1), clip(round(col W), 0, W-1)) takes the colour clip((g, r, i), 0, 1)
of the stretched image. `encode` writes an exact pixel and colour as genes, `decode` reads them.

Evaluators score candidates against a set of clean images. Every evaluator has

  name                               "full" or "incremental"
  chunk                              candidates per compiled forward chunk
  prepare(images (T, H, W, 3))       -> cache: a pytree of per-image arrays, leading axis T
  logits(cache, image (B,) int32, genes (B, 5))
                                     -> (B, classes) logits of candidate b on image image[b]
  score(cache, image, genes)         -> (B, classes) float32 softmax probabilities
  probabilities(cache, genes (T, P, 5), active (T,) bool)
                                     -> (T, P, classes): P candidates per image, inactive
                                        images skipped (zeros), `chunk` candidates at a time

`logits` and `score` are pure and jit-able; B is any batch of (image index, pixel, colour)
candidates, so an exhaustive scan jits `score` over fixed-size batches of
`encode(row, col, rgb)`, and the DE attack (attack.py) calls `probabilities` on its
populations. `FullEvaluator` runs the whole model on each perturbed image; the incremental
evaluator (incremental.py) recomputes only the windows a pixel can change and gives the same
probabilities up to float rounding.

Every evaluator is a pytree: its weights are the leaves, its configuration (chunk, model kind,
the logits function, Python scalars such as strides) the static part. The attack and the scan
pass it as an argument to their jitted functions, so the weights are arguments of the compiled
program, not constants baked into it: two evaluators of the same shapes and settings (the
regular and the DA model) share one compiled program. A subclass that does not define
`tree_flatten` is opaque: no leaves, the instance itself the static part (its arrays compile as
constants, one program per instance, as a closure's would).
"""
from __future__ import annotations

import dataclasses
from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp

from jaxrobust import parallel
from jaxrobust.models import ConvNet
from jaxrobust.models import folded as folded_lib

NUM_GENES = 5  # (row, col, g, r, i)
UNROLL_MAX_CHUNKS = 32  # above this many chunks per call, loop instead of unrolling


def encode(row: jax.Array, col: jax.Array, rgb: jax.Array, height: int, width: int) -> jax.Array:
    """(row (...,), col (...,), rgb (..., 3)) -> genes (..., 5) that `decode` maps back exactly.

    Coordinates become (row + 0.25) / H: round((row + 0.25) H / H) = row for any float32
    rounding of the quotient, where row / H could round to row - 1 + 0.5.
    """
    rows = (jnp.asarray(row, jnp.float32) + 0.25) / height
    cols = (jnp.asarray(col, jnp.float32) + 0.25) / width
    return jnp.concatenate([rows[..., None], cols[..., None], jnp.asarray(rgb, jnp.float32)], axis=-1)


def decode(genes: jax.Array, height: int, width: int):
    """genes (..., 5) -> (row (...,) int32, col (...,) int32, rgb (..., 3) in [0, 1])."""
    row = jnp.clip(jnp.round(genes[..., 0] * height), 0, height - 1).astype(jnp.int32)
    col = jnp.clip(jnp.round(genes[..., 1] * width), 0, width - 1).astype(jnp.int32)
    return row, col, jnp.clip(genes[..., 2:5], 0.0, 1.0)


def perturb(images: jax.Array, genes: jax.Array) -> jax.Array:
    """Sets one pixel per image: images (B, H, W, C), genes (B, 5) -> (B, H, W, C).

    A dense select against a one-hot spatial mask rather than a scatter: it fuses into the
    consumer and vectorises under vmap.
    """
    _, h, w, _ = images.shape
    row, col, rgb = decode(genes, h, w)
    hit = (jnp.arange(h)[None, :, None] == row[:, None, None]) & (jnp.arange(w)[None, None, :] == col[:, None, None])
    return jnp.where(hit[..., None], rgb[:, None, None, :], images)


def default_chunk(cpu: int, accelerator: int) -> int:
    """The measured chunk default of an evaluator on the current backend."""
    return cpu if jax.default_backend() == "cpu" else accelerator


def chunked_scores(score_chunk: Callable, genes: jax.Array, active: jax.Array, chunk: int) -> jax.Array:
    """Probabilities of every candidate of the active tasks, `chunk` candidates at a time.

    `score_chunk(task (chunk,), genes (chunk, 5)) -> probabilities (chunk, classes)`. Tasks
    are ordered active-first, so only the first ceil(active x P / chunk) chunks hold work:
    finished tasks cost nothing and one compiled program serves any number of active tasks.
    Up to UNROLL_MAX_CHUNKS chunks are unrolled, each behind a `lax.cond` that skips empty
    ones (XLA:CPU runs gather-heavy code 2-3x slower inside a while loop); more chunks use a
    loop with a data-dependent trip count. Inactive tasks get zeros.
    """
    tasks, population = genes.shape[:2]
    order = jnp.argsort(~active, stable=True)  # active tasks first
    total = parallel.round_up(tasks * population, chunk)
    pad = total - tasks * population
    flat_genes = jnp.pad(genes[order].reshape(-1, NUM_GENES), ((0, pad), (0, 0)))
    flat_task = jnp.pad(jnp.repeat(order, population), (0, pad))
    n_work = jnp.sum(active) * population
    n_chunks = total // chunk

    def run(start):
        probs = score_chunk(jax.lax.dynamic_slice_in_dim(flat_task, start, chunk),
                            jax.lax.dynamic_slice_in_dim(flat_genes, start, chunk))
        return probs.astype(jnp.float32)

    n_classes = jax.eval_shape(run, 0).shape[-1]
    if n_chunks <= UNROLL_MAX_CHUNKS:
        empty = jnp.zeros((chunk, n_classes), jnp.float32)
        out = jnp.concatenate([jax.lax.cond(i * chunk < n_work, run, lambda _: empty, i * chunk)
                               for i in range(n_chunks)])
    else:
        def body(i, out):
            return jax.lax.dynamic_update_slice_in_dim(out, run(i * chunk), i * chunk, axis=0)

        out = jax.lax.fori_loop(0, (n_work + chunk - 1) // chunk, body, jnp.zeros((total, n_classes), jnp.float32))
    per_task = out[:tasks * population].reshape(tasks, population, n_classes)
    per_task = jnp.zeros_like(per_task).at[order].set(per_task)
    return jnp.where(active[:, None, None], per_task, 0.0)  # the last chunk may spill into inactive ones


class CandidateEvaluator:
    """The shared half of every evaluator: probabilities from `logits`, chunked over tasks.

    Subclasses set `name` and `chunk` and define `prepare` and `logits` (module docstring);
    each is registered as a pytree through `tree_flatten` / `tree_unflatten`.
    """

    name = ""
    chunk = 0

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        jax.tree_util.register_pytree_node_class(cls)

    def tree_flatten(self):
        """(array leaves, static part). Default: opaque, the instance itself is the static part."""
        return (), self

    @classmethod
    def tree_unflatten(cls, static, leaves):
        return static

    def prepare(self, images: jax.Array):
        raise NotImplementedError

    def logits(self, cache, image: jax.Array, genes: jax.Array) -> jax.Array:
        raise NotImplementedError

    def score(self, cache, image: jax.Array, genes: jax.Array) -> jax.Array:
        """(B,) image indices into the cache, genes (B, 5) -> (B, classes) float32 probabilities."""
        return jax.nn.softmax(self.logits(cache, image, genes).astype(jnp.float32), axis=-1)

    def probabilities(self, cache, genes: jax.Array, active: jax.Array) -> jax.Array:
        """cache of T images, genes (T, P, 5), active (T,) -> (T, P, classes) float32."""
        return chunked_scores(partial(self.score, cache), genes, active, self.chunk)


class FullEvaluator(CandidateEvaluator):
    """Scores candidates by a full forward pass of the perturbed images.

    `logits_fn` maps (B, H, W, C) stretched images to (B, classes) logits (the model in eval
    mode); with `params`, it is `logits_fn(params, images)` and `params` (any pytree of
    arrays) are the evaluator's leaves, so evaluators that differ only in `params` share
    compiled programs (`model_logits` gives both for a trained model). The cache is the clean
    images. `chunk` 0 takes the measured default: on a CPU the forward runs fastest when a
    chunk's feature maps stay in cache (~64 images); an accelerator fills with larger chunks.
    """

    name = "full"

    def __init__(self, logits_fn: Callable, chunk: int = 0, params=None):
        self.logits_fn = logits_fn
        self.params = params
        self.chunk = int(chunk) or default_chunk(cpu=64, accelerator=4096)

    def tree_flatten(self):
        leaves, static = split_static(self.params)
        return leaves, (self.logits_fn, self.chunk, static)

    @classmethod
    def tree_unflatten(cls, static, leaves):
        logits_fn, chunk, params_static = static
        return cls(logits_fn, chunk, join_static(params_static, leaves))

    def prepare(self, images: jax.Array) -> jax.Array:
        return images

    def logits(self, cache: jax.Array, image: jax.Array, genes: jax.Array) -> jax.Array:
        images = perturb(cache[image], genes)
        return self.logits_fn(images) if self.params is None else self.logits_fn(self.params, images)


def split_static(tree) -> tuple[list, tuple]:
    """A pytree -> (its array leaves, the static rest): the structure and its Python scalars
    (a stride, a flag), which must stay out of the traced arguments. Hashable static part."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    static = tuple(leaf if _is_static(leaf) else None for leaf in leaves)  # None: never a leaf
    return [leaf for leaf in leaves if not _is_static(leaf)], (treedef, static)


def join_static(static: tuple, leaves) -> object:
    """The inverse of `split_static`."""
    treedef, slots = static
    leaves = iter(leaves)
    return treedef.unflatten([next(leaves) if slot is None else slot for slot in slots])


def _is_static(leaf) -> bool:
    return isinstance(leaf, (bool, int, float, str))


@dataclasses.dataclass(frozen=True)
class EvalApply:
    """(variables, images (B, H, W, C)) -> (B, classes) logits of `model` in eval mode.

    Equal (and equally hashed) for equal flax modules, so two models of one architecture
    share the evaluator's compiled programs."""

    model: object

    def __call__(self, variables, images: jax.Array) -> jax.Array:
        return self.model.apply(variables, images, train=False)[1]


def model_logits(model, variables) -> tuple[Callable, object]:
    """(logits_fn(params, images), params) of a trained model in eval mode, for FullEvaluator.

    The ConvNet runs with BatchNorm folded into its convolutions (models/folded.py): same
    function, one pass less over each feature map; `logits_fn` depends only on the model's
    architecture, `params` holds every weight.
    """
    if isinstance(model, ConvNet):
        return folded_lib.convnet_logits, folded_lib.fold_convnet(variables)
    return EvalApply(model), variables


def logits_function(model, variables) -> Callable:
    """(B, H, W, C) -> (B, classes) logits of a trained model in eval mode (`model_logits` bound)."""
    logits_fn, params = model_logits(model, variables)
    return partial(logits_fn, params)
