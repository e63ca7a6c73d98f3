"""Sound bounds on the ConvNet's logit margins when one pixel takes any colour of a box.

A one-pixel change at (r, c) reaches the logits only through the windows that the incremental
evaluator (incremental.py) isolates: a 10 x 10 input patch -> a 3 x 3 x 8 pool1 window -> 3 x 3 x
16 of pool2 -> 3 x 3 x 32 of pool3 -> the folded linear head. With the colour v in a box
[lo, hi] (3 free variables), this module bounds every margin

    m_k(v) = z_true(v) - z_k(v),   k != true,

from below over the whole box, in float64, by propagating through those windows only:

  * conv1 (BatchNorm folded): exactly affine in v, since only the pixel's 5 x 5 taps see it;
  * ReLU + 2 x 2 max-pool (`relu_pool_bounds`): each cell carries a lower and an upper *linear*
    function of v (DeepPoly / CROWN-style relaxations, Singh et al. 2019, Zhang et al. 2018,
    written forward since there are only 3 input variables). The upper bound of
    relu(max_i x_i) <= relu(max_i U_i(v)) is convex in v, so a linear function that dominates it
    at the box's 8 corners dominates it on the whole box; its slope is the chord slope of the
    input with the largest upper bound. The lower bound is alpha L_j(v) (alpha in {0, 1}) for the
    input j with the largest lower bound, which never exceeds relu(max_i x_i);
  * conv2, conv3: linear bounds pass through a convolution with the kernel split into its
    positive and negative parts;
  * the head: the folded bottleneck x head map (4608 x classes) under the pool3 window.

`interval` mode replaces the linear functions by constants (interval bound propagation, Gowal
et al. 2018): a quarter of the arithmetic, looser bounds (docs/certify.md compares them).

Float32 rounding. The model the user runs evaluates in float32, which differs from exact
arithmetic. `rounding_allowance` bounds that difference for every colour of a box by standard
forward error analysis (Higham 2002, "Accuracy and Stability of Numerical Algorithms", ch. 3):
a dot product of n terms computed in any order with unit roundoff u = 2^-24 is within
gamma_n sum |w_i x_i| of the exact value, gamma_n = n u / (1 - n u); BatchNorm's subtract,
multiply, reciprocal square root and add are covered by counting 10 more terms; ReLU and
max-pool are exact in floating point and 1-Lipschitz. The per-neuron error bounds are pushed
through the windows with |W|, and through the unfolded bottleneck and head, with magnitudes
from interval bounds over the box. A box is certified only when every margin's lower bound
exceeds twice that allowance (the factor 2 also covers the float64 rounding of the bound
computation itself, 2^29 times finer). It assumes products in full float32 precision (XLA on
a CPU; on GPUs set jax_default_matmul_precision="highest", TF32 products are not covered).
"""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust.incremental import (CONV1_PATCH, CONV_PATCH, WINDOW, _next_origin, _splice, candidate_logits,
                                   fold_convnet_head)
from jaxrobust.models import folded as folded_lib
from jaxrobust.models.conv import xla_conv
from jaxrobust.models.convnet import CONVNET_BLOCKS, max_pool_2x2

UNIT_ROUNDOFF = 2.0 ** -24  # float32 (IEEE 754 binary32, round to nearest)
EXTRA_TERMS = 10  # BatchNorm's elementwise operations, counted as terms of the dot product
SAFETY = 2.0  # the allowance is doubled: unmodelled slack (e.g. a reciprocal square root's few ulps)
# gamma_n is linear in u to first order and superlinear beyond: the float32 allowance times
# (2^-53 / 2^-24) bounds the same analysis for float64, the precision of the bounds themselves.
FLOAT64_PER_FLOAT32 = 2.0 ** -29
BOUND_MODES = ("linear", "interval")
# The 8 corners of a box as a selection mask: corner m takes hi where CORNER_MASK[m] is true.
CORNER_MASK = np.array(list(itertools.product((False, True), repeat=3)))


def gamma(n: int, u: float = UNIT_ROUNDOFF) -> float:
    """gamma_n = n u / (1 - n u): the relative error bound of an n-term float dot product."""
    return n * u / (1.0 - n * u)


def box_corners(lo: jax.Array, hi: jax.Array) -> jax.Array:
    """(8, 3) corners of the box [lo, hi] (3,)."""
    return jnp.where(jnp.asarray(CORNER_MASK), hi[None, :], lo[None, :])


def box_min(a: jax.Array, b: jax.Array, lo: jax.Array, hi: jax.Array) -> jax.Array:
    """Exact minimum over the box of the affine a . v + b: a (..., 3), b (...)."""
    return b + jnp.sum(jnp.minimum(a * lo, a * hi), axis=-1)


def box_max(a: jax.Array, b: jax.Array, lo: jax.Array, hi: jax.Array) -> jax.Array:
    return b + jnp.sum(jnp.maximum(a * lo, a * hi), axis=-1)


# --- The network in float64 ---
def certificate_weights(variables) -> dict:
    """Folded float64 ConvNet for the bounds, plus what the rounding allowance reads.

    From eval-mode variables {"params", "batch_stats"} (float32): incremental.fold_convnet_head
    of their float64 copy ("conv", "bottleneck", "head", "feature_logits", "conv1_phase"), and
    "conv_terms": per conv layer the number of terms of one output's computation and
    |s| (|b| + |mean|) + |beta| (the magnitudes BatchNorm's arithmetic rounds, s its scale).
    """
    v64 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), variables)
    weights = fold_convnet_head(v64)
    params, stats = v64["params"], v64["batch_stats"]
    terms = []
    for i in range(1, len(CONVNET_BLOCKS) + 1):
        bn, moments, conv = params[f"bn{i}"], stats[f"bn{i}"], params[f"conv{i}"]
        scale = jnp.abs(bn["scale"] / jnp.sqrt(moments["var"] + folded_lib.BN_EPS))
        kernel = conv["kernel"]
        n = int(np.prod(kernel.shape[:3])) + 1 + EXTRA_TERMS
        terms.append((n, scale * (jnp.abs(conv["bias"]) + jnp.abs(moments["mean"])) + jnp.abs(bn["bias"])))
    weights["conv_terms"] = terms
    return weights


def _conv_same(x, kernel, padding):
    return xla_conv(x, kernel, (1, 1), ((padding, padding), (padding, padding)))


def clean_cache(weights: dict, image: jax.Array) -> dict:
    """Clean activations and logits of one (H, W, 3) image, padded for the patch cuts, with a
    leading axis of 1 (the layout incremental.candidate_logits reads)."""
    x = image[None]
    acts = []
    for (kernel, bias), (_, _, pad) in zip(weights["conv"], CONVNET_BLOCKS):
        x = max_pool_2x2(jnp.maximum(_conv_same(x, kernel, pad) + bias, 0.0))
        acts.append(x)
    wb, bb = weights["bottleneck"]
    wh, bh = weights["head"]
    pad = lambda a, p: jnp.pad(a, ((0, 0), (p, p), (p, p), (0, 0)))  # noqa: E731
    return {"image": pad(image[None], 2), "pool1": pad(acts[0], 1), "pool2": pad(acts[1], 1), "pool3": acts[2],
            "logits": (acts[2].reshape(1, -1) @ wb + bb) @ wh + bh}


def _window_origins(row, col, cache):
    """Origins of the pool1, pool2 and pool3 windows of pixel (row, col) (incremental.py)."""
    n1 = cache["pool1"].shape[1] - 2
    n2 = cache["pool2"].shape[1] - 2
    n3 = cache["pool3"].shape[1]
    o1 = (jnp.clip(jnp.floor_divide(row - 2, 2), 0, n1 - WINDOW), jnp.clip(jnp.floor_divide(col - 2, 2), 0, n1 - WINDOW))
    o2 = (_next_origin(o1[0], n2), _next_origin(o1[1], n2))
    o3 = (_next_origin(o2[0], n3), _next_origin(o2[1], n3))
    return o1, o2, o3


def _cut(padded, row, col, size):
    zero = jnp.int32(0)
    return jax.lax.dynamic_slice(padded, (zero, row, col, zero), (1, size, size, padded.shape[3]))[0]


def _conv1_affine(weights, cache, row, col, o1):
    """conv1 outputs (6, 6, 8) of the patch as exact affine functions of the colour: (A (6, 6, 8, 3), y0)."""
    kernel, bias = weights["conv"][0]
    patch = _cut(cache["image"], 2 * o1[0], 2 * o1[1], CONV1_PATCH)
    pr, pc = row + 2 - 2 * o1[0], col + 2 - 2 * o1[1]
    i = jnp.arange(CONV1_PATCH)
    hit = (i[:, None] == pr) & (i[None, :] == pc)
    patch0 = jnp.where(hit[..., None], 0.0, patch)
    y0 = xla_conv(patch0[None], kernel, (1, 1), "VALID")[0] + bias  # (6, 6, 8)
    k = kernel.shape[0]
    out = jnp.arange(CONV1_PATCH - k + 1)
    dr, dc = pr - out, pc - out  # tap of the pixel in the kernel of output (i, j)
    taps = kernel[jnp.clip(dr, 0, k - 1)][:, jnp.clip(dc, 0, k - 1)]  # (6, 6, 3, 8)
    valid = ((dr >= 0) & (dr < k))[:, None] & ((dc >= 0) & (dc < k))[None, :]
    coeff = jnp.where(valid[..., None, None], taps, 0.0).transpose(0, 1, 3, 2)  # (6, 6, 8, 3)
    return coeff, y0, patch, hit


def relu_pool_bounds(la, lb, ua, ub, lo, hi):
    """Linear bounds of relu(2x2 max-pool(x)) from linear bounds of x over the box [lo, hi].

    la, ua (2h, 2w, C, 3) and lb, ub (2h, 2w, C): L(v) = la . v + lb <= x(v) <= U(v).
    Returns (la, lb, ua, ub) of the (h, w, C) pooled cells. Sound for every v in the box:
    the upper function dominates relu(max_i U_i) at the 8 corners, hence everywhere (convexity);
    the lower is alpha L_j with alpha in {0, 1}.
    """
    h, w, c = lb.shape[0] // 2, lb.shape[1] // 2, lb.shape[2]

    def blocks(a, extra=()):  # (2h, 2w, C, ...) -> (h, w, C, 4, ...)
        a = a.reshape((h, 2, w, 2, c) + extra).transpose((0, 2, 4, 1, 3) + tuple(range(5, 5 + len(extra))))
        return a.reshape((h, w, c, 4) + extra)

    la, ua = blocks(la, (3,)), blocks(ua, (3,))
    lb, ub = blocks(lb), blocks(ub)
    corners = box_corners(lo, hi)  # (8, 3)
    u_at = jnp.einsum("hwcik,mk->hwcim", ua, corners) + ub[..., None]  # (h, w, C, 4, 8)
    l_at = jnp.einsum("hwcik,mk->hwcim", la, corners) + lb[..., None]
    u_hi, u_lo = u_at.max(-1), u_at.min(-1)  # range of each U_i over the box (4 inputs)
    l_hi, l_lo = l_at.max(-1), l_at.min(-1)
    j = jnp.argmax(l_lo, axis=-1)  # the input with the largest lower bound
    def take(a, idx):  # a[..., idx, ...] along the inputs axis (3), for (h, w, C) indices
        idx = idx.reshape(idx.shape + (1,) * (a.ndim - 3))
        return jnp.take_along_axis(a, idx, axis=3)[:, :, :, 0]

    l_lo_j, l_hi_j = take(l_lo, j), take(l_hi, j)
    others = jnp.where(jnp.arange(4) == j[..., None], -jnp.inf, u_hi).max(-1)
    dominant = l_lo_j >= others  # max_i x_i = x_j over the whole box
    active = jnp.where(dominant[..., None], jnp.arange(4) == j[..., None], True)  # (h, w, C, 4)
    target = jnp.maximum(jnp.where(active[..., None], u_at, -jnp.inf).max(3), 0.0)  # (h, w, C, 8)
    k = jnp.where(dominant, j, jnp.argmax(jnp.where(active, u_hi, -jnp.inf), axis=-1))
    uk_hi, uk_lo = take(u_hi, k), take(u_lo, k)
    slope = jnp.where(uk_hi <= 0, 0.0, jnp.where(uk_lo >= 0, 1.0, uk_hi / jnp.where(uk_hi > uk_lo, uk_hi - uk_lo, 1.0)))
    ua_k, ub_k = take(ua, k), take(ub, k)
    uk_at = take(u_at, k)  # (h, w, C, 8)
    shift = jnp.max(target - slope[..., None] * uk_at, axis=-1)
    new_ua, new_ub = slope[..., None] * ua_k, slope * ub_k + shift
    alpha = jnp.where(l_lo_j >= 0, 1.0, jnp.where(l_hi_j <= 0, 0.0, (l_hi_j >= -l_lo_j).astype(lb.dtype)))
    new_la, new_lb = alpha[..., None] * take(la, j), alpha * take(lb, j)
    return new_la, new_lb, new_ua, new_ub


def _interval(la, lb, ua, ub, lo, hi):
    """Linear bounds -> constant ones (interval mode): (0, min L) and (0, max U)."""
    zero = jnp.zeros_like(la)
    return zero, box_min(la, lb, lo, hi), zero, box_max(ua, ub, lo, hi)


def _conv_linear(la, lb, ua, ub, kernel, bias):
    """Linear bounds through a VALID conv: (S, S, C, 3) / (S, S, C) -> (S-2, S-2, Cout, ...).

    The lower bound takes W+ on L and W- on U; the upper the reverse: one conv of 8 planes
    (3 slopes + the constant, of L and of U) against the stacked kernel [W+; W-].
    """
    low = jnp.concatenate([la, lb[..., None]], -1)  # (S, S, C, 4)
    up = jnp.concatenate([ua, ub[..., None]], -1)
    planes_low = jnp.concatenate([low, up], axis=2)  # (S, S, 2C, 4): pairs with [W+; W-]
    planes_up = jnp.concatenate([up, low], axis=2)
    x = jnp.concatenate([planes_low, planes_up], axis=-1).transpose(3, 0, 1, 2)  # (8, S, S, 2C)
    stacked = jnp.concatenate([jnp.maximum(kernel, 0.0), jnp.minimum(kernel, 0.0)], axis=2)
    y = xla_conv(x, stacked, (1, 1), "VALID").transpose(1, 2, 3, 0)  # (S-2, S-2, Cout, 8)
    return y[..., 0:3], y[..., 3] + bias, y[..., 4:7], y[..., 7] + bias


def _splice_bounds(patch, la, lb, ua, ub, row, col):
    """A clean (S, S, C) patch as linear bounds (zero slopes) with a window's bounds spliced in."""
    s, c = patch.shape[0], patch.shape[2]
    clean = jnp.concatenate([jnp.zeros(patch.shape + (3,), patch.dtype), patch[..., None]], -1).reshape(s, s, 4 * c)
    win = lambda a, b: jnp.concatenate([a, b[..., None]], -1).reshape(b.shape[:2] + (4 * c,))  # noqa: E731
    low = _splice(clean, win(la, lb), row, col).reshape(s, s, c, 4)
    up = _splice(clean, win(ua, ub), row, col).reshape(s, s, c, 4)
    return low[..., :3], low[..., 3], up[..., :3], up[..., 3]


def pool3_bounds(weights, cache, row, col, lo, hi, mode: str = "linear"):
    """Linear bounds (la, lb, ua, ub) of the 3 x 3 x 32 pool3 window of pixel (row, col) over the
    colour box [lo, hi], and the window's origin (row, col) in the pool3 grid."""
    row, col = jnp.asarray(row, jnp.int32), jnp.asarray(col, jnp.int32)
    o1, o2, o3 = _window_origins(row, col, cache)
    coeff, y0, _, _ = _conv1_affine(weights, cache, row, col, o1)
    bounds = (coeff, y0, coeff, y0)
    if mode == "interval":
        bounds = _interval(*bounds, lo, hi)
    bounds = relu_pool_bounds(*bounds, lo, hi)
    for layer, (src, prev, here) in enumerate((("pool1", o1, o2), ("pool2", o2, o3)), start=1):
        kernel, bias = weights["conv"][layer]
        patch = _cut(cache[src], 2 * here[0], 2 * here[1], CONV_PATCH)
        spliced = _splice_bounds(patch, *bounds, prev[0] + 1 - 2 * here[0], prev[1] + 1 - 2 * here[1])
        bounds = _conv_linear(*spliced, kernel, bias)
        if mode == "interval":
            bounds = _interval(*bounds, lo, hi)
        bounds = relu_pool_bounds(*bounds, lo, hi)
    return bounds, o3


def margin_bounds(weights, cache, row, col, label, lo, hi, mode: str = "linear"):
    """Lower bounds (classes,) of m_k(v) = z_label - z_k over the box, +inf at k = label, and
    per class the slopes (classes, 3) of the linear lower bound (which side to split)."""
    (la, lb, ua, ub), (r3, c3) = pool3_bounds(weights, cache, row, col, lo, hi, mode)
    grid = cache["pool3"].shape[1:]
    f = weights["feature_logits"].reshape(grid + (-1,))  # (12, 12, 32, classes)
    zero = jnp.int32(0)
    f_win = jax.lax.dynamic_slice(f, (r3, c3, zero, zero), (WINDOW, WINDOW) + f.shape[2:])
    clean = jax.lax.dynamic_slice(cache["pool3"][0], (r3, c3, zero), (WINDOW, WINDOW, grid[2]))
    g = f_win[..., label][..., None] - f_win  # (3, 3, 32, classes): d m_k / d pool3
    gp, gn = jnp.maximum(g, 0.0), jnp.minimum(g, 0.0)
    slope = jnp.einsum("hwck,hwcv->kv", gp, la) + jnp.einsum("hwck,hwcv->kv", gn, ua)
    logits = cache["logits"][0]
    const = (logits[label] - logits) + jnp.einsum("hwck,hwc->k", gp, lb - clean) + jnp.einsum("hwck,hwc->k", gn, ub - clean)
    lower = box_min(slope, const, lo, hi)
    is_label = jnp.arange(logits.shape[0]) == label
    return jnp.where(is_label, jnp.inf, lower), slope


def point_margins(weights, cache, row, col, label, colours):
    """Exact (float64) margins (P, classes) z_label - z_k at colours (P, 3) of pixel (row, col)."""
    height, width = cache["image"].shape[1] - 4, cache["image"].shape[2] - 4
    p = colours.shape[0]
    genes = jnp.concatenate([jnp.broadcast_to(jnp.stack([(row + 0.25) / height, (col + 0.25) / width]), (p, 2)),
                             colours], axis=-1)
    logits = candidate_logits(weights, cache, jnp.zeros(p, jnp.int32), genes)
    return logits[:, label][:, None] - logits


# --- The float32 rounding allowance ---
def rounding_allowance(weights, image, label):
    """(classes,) worst-case bound on |float32 margin - exact margin| of one image under any
    single-pixel change to any colour of [0, 1]^3, doubled (`SAFETY`), 0 at k = label.

    One interval pass over the whole image with *every* pixel free in [min(x, 0), max(x, 1)]
    (a superset of every one-pixel change, so one pass covers all pixels and boxes), carrying
    per neuron the magnitude bound M and the float32 error bound E:
    E_out = |W| E_in + gamma_n (|W| M_in + |s| (|b| + |mean|) + |beta|) through each conv and
    BatchNorm, then the unfolded bottleneck (4608 + 1 terms) and head (latent_dim + 1 terms).
    Coarse (every pixel free at once), cheap, and the certificate only needs it scaled to float64
    (`FLOAT64_PER_FLOAT32`), where it is negligible next to any margin that matters.
    """
    image = image[None]
    lo, hi = jnp.minimum(image, 0.0), jnp.maximum(image, 1.0)
    err = jnp.zeros_like(image)
    for (kernel, bias), (n, bias_mag), (_, _, pad) in zip(weights["conv"], weights["conv_terms"], CONVNET_BLOCKS):
        centre, radius = (lo + hi) / 2.0, (hi - lo) / 2.0
        y_c = _conv_same(centre, kernel, pad) + bias
        y_r = _conv_same(radius, jnp.abs(kernel), pad)
        magnitude = jnp.maximum(jnp.abs(lo), jnp.abs(hi))
        e = _conv_same(err, jnp.abs(kernel), pad) + gamma(n) * (_conv_same(magnitude, jnp.abs(kernel), pad) + bias_mag)
        lo, hi = max_pool_2x2(jnp.maximum(y_c - y_r, 0.0)), max_pool_2x2(jnp.maximum(y_c + y_r, 0.0))
        err = max_pool_2x2(e)
    wb, bb = weights["bottleneck"]
    wh, bh = weights["head"]
    latent_mag = (hi.reshape(1, -1) @ jnp.abs(wb))[0] + jnp.abs(bb)
    latent_err = (err.reshape(1, -1) @ jnp.abs(wb))[0] + gamma(wb.shape[0] + 1) * latent_mag
    logit_err = latent_err @ jnp.abs(wh) + gamma(wh.shape[0] + 1) * (latent_mag @ jnp.abs(wh) + jnp.abs(bh))
    allowance = SAFETY * (logit_err[label] + logit_err)
    return jnp.where(jnp.arange(logit_err.shape[0]) == label, 0.0, allowance)


__all__ = ["BOUND_MODES", "UNIT_ROUNDOFF", "box_corners", "box_max", "box_min", "certificate_weights", "clean_cache",
           "gamma", "margin_bounds", "point_margins", "pool3_bounds", "relu_pool_bounds", "rounding_allowance"]
