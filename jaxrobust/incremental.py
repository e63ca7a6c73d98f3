"""Exact incremental scoring of one-pixel candidates: recompute only what the pixel changes.

ConvNet. A one-pixel candidate at (r, c) changes a 5 x 5 window of the ConvNet's first conv output, at
most 3 x 3 cells of each pooled map, and 3 x 3 x 32 of the 4,608 bottleneck inputs. From the
clean image we keep every pooled activation once (`convnet_cache`); a candidate then

  1. cuts the 10 x 10 input patch behind a 3 x 3 window of pool1 (zero padding included by
     padding the cached image), sets the pixel, and runs conv1 (BatchNorm folded) + ReLU +
     max-pool on the patch alone -> the new 3 x 3 x 8 pool1 window;
  2. cuts the 8 x 8 patch of the clean pool1 map behind the pool2 window that can change,
     splices the new pool1 window into it, and runs conv2 + ReLU + pool -> 3 x 3 x 16;
  3. the same for conv3 -> the new 3 x 3 x 32 pool3 window;
  4. logits = logits_clean + (new - clean pool3) . (W_bottleneck W_head)[window]: the bottleneck
     and the head are both linear, so their product (4608 x 3, formed once per evaluator) maps
     the feature change to the logits, and only its 288 rows under the window are read.

The windows are fixed-size (3 pooled cells a side) with data-dependent, border-clipped origins,
so shapes stay static and every candidate of a chunk runs as one batched program. Each window
contains every cell the pixel can change (proved by the origin arithmetic in `_next_origin`),
and cells it recomputes but the pixel cannot change come out equal to the cache, so the result
equals a full forward pass of the perturbed image up to float rounding. About 0.46 MFLOP per
candidate instead of 25.9 (counted in scripts/bench_attack.py). Step 4 as a dense product of the
whole (mostly zero) 4,608-wide change with the 4608 x 256 bottleneck would cost 2.4 MFLOP per
candidate: more than the three convolutions together (docs/performance.md).

ResNet18. The receptive field grows past the feature maps within two stages, so the windows run
through the stem (7x7/2 conv on a 13 x 13 patch -> 4 x 4, 3x3/2 max-pool -> 3 x 3) and the first
stage (each 3x3 conv widens the window by 2: 5, 7, 9, 11 of 25), the 11 x 11 window is spliced
into the clean first-stage output, and stages 2-4 run in full: 24 % of the FLOPs saved
(`resnet_flops_saved`).

`IncrementalEvaluator` offers these windows through the evaluator interface of candidates.py,
and `make_evaluator` is the one place that resolves attack.evaluator ("full", "incremental",
"auto") to an evaluator.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrobust.candidates import (CandidateEvaluator, FullEvaluator, decode, default_chunk, join_static, model_logits,
                                  split_static)
from jaxrobust.models import ConvNet, ResNet18
from jaxrobust.models import folded as folded_lib
from jaxrobust.models.conv import xla_conv
from jaxrobust.models.convnet import CONVNET_BLOCKS, phase_kernel, space_to_depth
from jaxrobust.models.resnet import max_pool_3x3_stride2, stride2_conv

WINDOW = 3  # pooled cells per side of every recomputed window
CONV1_PATCH = 2 * WINDOW + 4  # 6 conv1 outputs + 5x5 kernel - 1
CONV_PATCH = 2 * WINDOW + 2  # 6 conv outputs + 3x3 kernel - 1


def supports(model) -> bool:
    """Whether the incremental evaluator can score this model exactly."""
    return isinstance(model, (ConvNet, ResNet18))


def check_supported(model, variables) -> None:
    """Refuses models it cannot score, and BatchNorm statistics it cannot fold."""
    if not supports(model):
        raise ValueError(f"incremental evaluation supports the ConvNet and ResNet18, not "
                         f"{type(model).__name__}; use attack.evaluator='full'")
    if "batch_stats" not in variables:
        raise ValueError("incremental evaluation needs eval-mode BatchNorm (running statistics in "
                         "variables['batch_stats']); train-mode BatchNorm depends on the whole batch")


def fold_convnet_head(variables) -> dict:
    """The folded ConvNet plus what the windows read: "feature_logits" and "conv1_phase".

    feature_logits (4608, classes) = W_bottleneck W_head: no nonlinearity sits between the
    bottleneck and the head, so a change of the flattened features changes the logits by
    change . W_bottleneck W_head (the product taken at full precision: it is formed once and
    read by every candidate). conv1_phase: the first kernel over 2 x 2 pixel blocks
    (models/convnet.py), as the full forward runs it, since XLA's conv with 3 input channels is
    slow on a CPU (1.6x faster on the 10 x 10 patches, measured).
    """
    folded = folded_lib.fold_convnet(variables)
    wb, _ = folded["bottleneck"]
    wh, _ = folded["head"]
    w1, _ = folded["conv"][0]
    return {**folded, "feature_logits": jnp.dot(wb, wh, precision=jax.lax.Precision.HIGHEST),
            "conv1_phase": phase_kernel(w1, CONVNET_BLOCKS[0][2])}


def convnet_cache(folded: dict, images: jax.Array) -> dict:
    """Clean activations and logits of (T, 100, 100, 3) images, padded for the patch cuts."""
    (w1, b1), (w2, b2), (w3, b3) = folded["conv"]
    a1 = folded_lib.conv_block(images, w1, b1, 2)  # (T, 50, 50, 8)
    a2 = folded_lib.conv_block(a1, w2, b2, 1)  # (T, 25, 25, 16)
    a3 = folded_lib.conv_block(a2, w3, b3, 1)  # (T, 12, 12, 32)
    wb, bb = folded["bottleneck"]
    wh, bh = folded["head"]
    pad = lambda x, p: jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))  # noqa: E731
    return {"image": pad(images, 2), "pool1": pad(a1, 1), "pool2": pad(a2, 1), "pool3": a3,
            "logits": (a3.reshape(a3.shape[0], -1) @ wb + bb) @ wh + bh}


def _next_origin(origin: jax.Array, size_next: int) -> jax.Array:
    """Origin of the next pooled window from this one's origin w (3x3 conv, pad 1, pool 2).

    Cells w..w+2 change conv outputs w-1..w+3 and so pooled cells floor((w-1)/2) ..
    floor((w+3)/2): exactly 3, clipped into the map. The 8-row input patch of that window,
    rows 2 o - 1 .. 2 o + 6, then contains w..w+2 (2 o is w - 2 or w - 1 when unclipped).
    """
    return jnp.clip(jnp.floor_divide(origin - 1, 2), 0, size_next - WINDOW)


def _splice(patch: jax.Array, window: jax.Array, row: jax.Array, col: jax.Array) -> jax.Array:
    """patch (S, S, C) with window (w, w, C) written at (row, col), by index arithmetic.

    Cells of the window that fall outside the patch are dropped (they are not needed there).
    """
    size, w = patch.shape[0], window.shape[0]
    i = jnp.arange(size)
    local_r, local_c = i - row, i - col
    inside = ((local_r >= 0) & (local_r < w))[:, None] & ((local_c >= 0) & (local_c < w))[None, :]
    moved = window[jnp.clip(local_r, 0, w - 1)][:, jnp.clip(local_c, 0, w - 1)]
    return jnp.where(inside[..., None], moved, patch)


def _block_on_patch(patch: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """conv (VALID: the patch carries its padding) + ReLU + 2x2 pool on one patch -> (3, 3, C)."""
    return folded_lib.conv_block(patch[None], kernel, bias, 0)[0]


def pool3_change(folded: dict, cache: dict, task: jax.Array, genes: jax.Array):
    """The change (3, 3, 32) of the pool3 window one candidate (5,) causes on task `task`, and
    the window's origin (row, col) in the (12, 12) pool3 grid."""
    (_, b1), (w2, b2), (w3, b3) = folded["conv"]
    height = cache["image"].shape[1] - 4
    width = cache["image"].shape[2] - 4
    row, col, rgb = decode(genes, height, width)
    task, zero = jnp.asarray(task, jnp.int32), jnp.int32(0)
    n_pool1 = cache["pool1"].shape[1] - 2
    n_pool2 = cache["pool2"].shape[1] - 2
    n_pool3 = cache["pool3"].shape[1]
    # 1. conv1: pixel r changes conv1 rows r-2..r+2, pooled rows floor((r-2)/2)..floor((r+2)/2).
    o1r = jnp.clip(jnp.floor_divide(row - 2, 2), 0, n_pool1 - WINDOW)
    o1c = jnp.clip(jnp.floor_divide(col - 2, 2), 0, n_pool1 - WINDOW)
    patch = jax.lax.dynamic_slice(cache["image"], (task, 2 * o1r, 2 * o1c, zero), (1, CONV1_PATCH, CONV1_PATCH, 3))[0]
    i = jnp.arange(CONV1_PATCH)
    hit = (i[:, None] == row + 2 - 2 * o1r) & (i[None, :] == col + 2 - 2 * o1c)
    # The patch starts on an even row and column of the image padded by 2, so its 2 x 2 blocks
    # are conv1's pooling blocks, and a VALID phase conv over its 5 x 5 blocks gives 3 x 3 cells.
    patch = space_to_depth(jnp.where(hit[..., None], rgb.astype(patch.dtype), patch)[None])
    new1 = folded_lib.phase_max_block(xla_conv(patch, folded["conv1_phase"], (1, 1), "VALID"), b1)[0]
    # 2. conv2 on the clean pool1 patch with the new window spliced in.
    o2r, o2c = _next_origin(o1r, n_pool2), _next_origin(o1c, n_pool2)
    patch = jax.lax.dynamic_slice(cache["pool1"], (task, 2 * o2r, 2 * o2c, zero), (1, CONV_PATCH, CONV_PATCH, w2.shape[2]))[0]
    new2 = _block_on_patch(_splice(patch, new1, o1r + 1 - 2 * o2r, o1c + 1 - 2 * o2c), w2, b2)
    # 3. conv3 likewise.
    o3r, o3c = _next_origin(o2r, n_pool3), _next_origin(o2c, n_pool3)
    patch = jax.lax.dynamic_slice(cache["pool2"], (task, 2 * o3r, 2 * o3c, zero), (1, CONV_PATCH, CONV_PATCH, w3.shape[2]))[0]
    new3 = _block_on_patch(_splice(patch, new2, o2r + 1 - 2 * o3r, o2c + 1 - 2 * o3c), w3, b3)
    # 4. what changed in the pool3 window (zero where the pixel cannot reach).
    old3 = jax.lax.dynamic_slice(cache["pool3"], (task, o3r, o3c, zero), (1, WINDOW, WINDOW, w3.shape[3]))[0]
    return new3 - old3, o3r, o3c


def candidate_logits(folded: dict, cache: dict, tasks: jax.Array, genes: jax.Array) -> jax.Array:
    """Logits (B, classes) of candidates genes (B, 5) on the clean images of tasks (B,).

    Step 4: each candidate reads the 3 x 3 x 32 x classes rows of W_bottleneck W_head under its
    window (3.5 kB in float32), where a dense product with the whole bottleneck cost 2.4 MFLOP.
    """
    change, rows, cols = jax.vmap(lambda t, g: pool3_change(folded, cache, t, g))(tasks, genes)
    grid = cache["pool3"].shape[1:]
    weights = folded["feature_logits"].reshape(grid + (-1,))  # (12, 12, 32, classes), (H, W, C) order

    def window_weights(row, col):
        zero = jnp.zeros_like(row)
        return jax.lax.dynamic_slice(weights, (row, col, zero, zero), (WINDOW, WINDOW) + weights.shape[2:])

    return cache["logits"][tasks] + jnp.einsum("bijc,bijck->bk", change, jax.vmap(window_weights)(rows, cols))


class IncrementalEvaluator(CandidateEvaluator):
    """The candidates.CandidateEvaluator interface by recomputed windows (ConvNet, ResNet18).

    `chunk` 0 takes the measured default: the ConvNet's per-candidate state is a few small
    windows (400 candidates per chunk on a CPU, 16384 elsewhere); ResNet18's includes whole
    stage-2..4 feature maps, so it takes the full forward's (64, 4096).
    """

    name = "incremental"

    def __init__(self, model, variables, chunk: int = 0):
        check_supported(model, variables)
        self.resnet = isinstance(model, ResNet18)
        self.folded = (folded_lib.fold_resnet if self.resnet else fold_convnet_head)(variables)
        self.chunk = int(chunk) or (default_chunk(cpu=64, accelerator=4096) if self.resnet
                                    else default_chunk(cpu=400, accelerator=16384))

    def tree_flatten(self):
        """The folded weights are the leaves; the model kind, chunk and strides are static."""
        leaves, static = split_static(self.folded)
        return leaves, (self.resnet, self.chunk, static)

    @classmethod
    def tree_unflatten(cls, static, leaves):
        evaluator = object.__new__(cls)  # no check, no folding: the leaves are folded weights
        evaluator.resnet, evaluator.chunk, folded_static = static
        evaluator.folded = join_static(folded_static, leaves)
        return evaluator

    def prepare(self, images: jax.Array) -> dict:
        return (resnet_cache if self.resnet else convnet_cache)(self.folded, images)

    def logits(self, cache: dict, image: jax.Array, genes: jax.Array) -> jax.Array:
        return (resnet_candidate_logits if self.resnet else candidate_logits)(self.folded, cache, image, genes)


EVALUATORS = ("full", "incremental", "auto")


def resolve_evaluator(name: str, model) -> str:
    """attack.evaluator -> "full" or "incremental"; "auto" is incremental where `supports(model)`."""
    if name not in EVALUATORS:
        raise ValueError(f"attack.evaluator must be one of {EVALUATORS}, got {name!r}")
    if name == "auto":
        return "incremental" if supports(model) else "full"
    return name


def make_evaluator(name: str, model, variables, chunk: int = 0) -> CandidateEvaluator:
    """The evaluator `name` ("full", "incremental" or "auto") of a trained model.

    "incremental" refuses models and variables it cannot score exactly; `chunk` 0 takes the
    evaluator's measured default.
    """
    if resolve_evaluator(name, model) == "incremental":
        return IncrementalEvaluator(model, variables, chunk)
    logits_fn, params = model_logits(model, variables)
    return FullEvaluator(logits_fn, chunk, params)


# --- ResNet18: windows through the stem and the first stage ---
def _first_stage(folded: dict) -> list[dict]:
    """The leading blocks with stride 1 and an identity shortcut (ResNet18: layer1_0, layer1_1)."""
    blocks = []
    for block in folded["blocks"]:
        if block["stride"] != 1 or block["down"] is not None:
            break
        blocks.append(block)
    return blocks


def _pad(x, p):
    return jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))


def resnet_cache(folded: dict, images: jax.Array) -> dict:
    """Clean activations of the stem and the first stage, padded for the patch cuts."""
    kernel, bias = folded["stem"]
    stem = jnp.maximum(stride2_conv(images, kernel, 3) + bias, 0.0)  # (T, 50, 50, 64), >= 0
    x = max_pool_3x3_stride2(stem)  # (T, 25, 25, 64)
    cache = {"image": _pad(images, 3), "stem": _pad(stem, 1), "stage_in": [], "inner": []}
    for block in _first_stage(folded):
        inner = jnp.maximum(folded_lib.conv_same(x, *block["conv1"]), 0.0)
        cache["stage_in"].append(_pad(x, 1))
        cache["inner"].append(_pad(inner, 1))
        x = folded_lib.basic_block(x, block)
    cache["stage_out"] = x
    return cache


def _cut(padded: jax.Array, task, row, col, size: int) -> jax.Array:
    zero = jnp.int32(0)
    return jax.lax.dynamic_slice(padded, (task, row, col, zero), (1, size, size, padded.shape[3]))[0]


def _valid_conv(patch, kernel, bias, stride: int = 1):
    """conv + bias on one (S, S, C) patch that carries its own padding."""
    return xla_conv(patch[None], kernel, (stride, stride), "VALID")[0] + bias


def _grow(origin, size: int, n: int):
    """Origin of the window of a 3x3 stride-1 conv's output: one cell wider on each side."""
    return jnp.clip(origin - 1, 0, n - size)


def resnet_stage_output(folded: dict, cache: dict, task, genes) -> jax.Array:
    """The first-stage output (25, 25, 64) of the perturbed image, from windows."""
    task = jnp.asarray(task, jnp.int32)
    height = cache["image"].shape[1] - 6
    row, col, rgb = decode(genes, height, cache["image"].shape[2] - 6)
    n_stem = cache["stem"].shape[1] - 2
    n_map = cache["stage_out"].shape[1]
    # stem: pixel r changes conv rows ceil((r-3)/2) .. floor((r+3)/2): a 4-row window
    a_r = jnp.clip(-jnp.floor_divide(3 - row, 2), 0, n_stem - 4)
    a_c = jnp.clip(-jnp.floor_divide(3 - col, 2), 0, n_stem - 4)
    patch = _cut(cache["image"], task, 2 * a_r, 2 * a_c, 13)
    i = jnp.arange(13)
    hit = (i[:, None] == row + 3 - 2 * a_r) & (i[None, :] == col + 3 - 2 * a_c)
    patch = jnp.where(hit[..., None], rgb.astype(patch.dtype), patch)
    window = jnp.maximum(_valid_conv(patch, *folded["stem"], stride=2), 0.0)  # (4, 4, 64)
    # max-pool: stem rows a..a+3 change pooled rows ceil((a-1)/2) .. floor((a+4)/2): 3 rows
    b_r = jnp.clip(-jnp.floor_divide(1 - a_r, 2), 0, n_map - 3)
    b_c = jnp.clip(-jnp.floor_divide(1 - a_c, 2), 0, n_map - 3)
    patch = _splice(_cut(cache["stem"], task, 2 * b_r, 2 * b_c, 7), window, a_r + 1 - 2 * b_r, a_c + 1 - 2 * b_c)
    window = jax.lax.reduce_window(patch, -jnp.inf, jax.lax.max, (3, 3, 1), (2, 2, 1), "VALID")  # (3, 3, 64)
    origin_r, origin_c, size = b_r, b_c, 3
    for k, block in enumerate(_first_stage(folded)):
        stage_in, inner = cache["stage_in"][k], cache["inner"][k]
        # conv1 on the input with the new window: one cell wider
        r1, c1, s1 = _grow(origin_r, size + 2, n_map), _grow(origin_c, size + 2, n_map), size + 2
        patch = _splice(_cut(stage_in, task, r1, c1, s1 + 2), window, origin_r + 1 - r1, origin_c + 1 - c1)
        new_inner = jnp.maximum(_valid_conv(patch, *block["conv1"]), 0.0)
        # conv2 on conv1's map with its new window, plus the identity shortcut
        r2, c2, s2 = _grow(r1, s1 + 2, n_map), _grow(c1, s1 + 2, n_map), s1 + 2
        patch = _splice(_cut(inner, task, r2, c2, s2 + 2), new_inner, r1 + 1 - r2, c1 + 1 - c2)
        shortcut = _splice(_cut(stage_in, task, r2 + 1, c2 + 1, s2), window, origin_r - r2, origin_c - c2)
        window = jnp.maximum(_valid_conv(patch, *block["conv2"]) + shortcut, 0.0)
        origin_r, origin_c, size = r2, c2, s2
    return _splice(cache["stage_out"][task], window, origin_r, origin_c)


def resnet_candidate_logits(folded: dict, cache: dict, tasks: jax.Array, genes: jax.Array) -> jax.Array:
    """Logits (B, classes): windows through the first stage, then stages 2-4 in full."""
    maps = jax.vmap(lambda t, g: resnet_stage_output(folded, cache, t, g))(tasks, genes)
    return folded_lib.resnet_blocks_pool_bottleneck(folded, maps, first_block=len(_first_stage(folded)))[1]


def resnet_flops_saved(image_size: int = 100) -> float:
    """Fraction of a ResNet18 forward's FLOPs the windows avoid, counted from the layer shapes."""
    conv = lambda out, c_out, k, c_in: 2 * out * out * c_out * k * k * c_in  # noqa: E731
    n = image_size // 4
    stem_and_stage1 = conv(image_size // 2, 64, 7, 3) + 4 * conv(n, 64, 3, 64)
    windows = conv(4, 64, 7, 3) + sum(conv(s, 64, 3, 64) for s in (5, 7, 9, 11))
    rest, size, c_in = 0, n, 64
    for c_out in (128, 256, 512):
        size = -(-size // 2)
        rest += conv(size, c_out, 3, c_in) + 3 * conv(size, c_out, 3, c_out) + conv(size, c_out, 1, c_in)
        c_in = c_out
    total = stem_and_stage1 + rest + 2 * 512 * 256 + 2 * 256 * 3
    return (stem_and_stage1 - windows) / total


__all__ = ["EVALUATORS", "IncrementalEvaluator", "candidate_logits", "check_supported", "convnet_cache",
           "fold_convnet_head", "make_evaluator", "pool3_change", "resnet_cache", "resnet_candidate_logits", "resnet_flops_saved",
           "resolve_evaluator", "supports"]
