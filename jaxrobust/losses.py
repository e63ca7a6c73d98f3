"""Losses: class-weighted cross-entropy and the domain-adaptation losses between latent batches,
the paper's multi-kernel RBF MMD and Deep CORAL (Sun & Saenko 2016).

Shapes: logits (N, C), integer labels (N,), latents (N, D); an optional (N,) mask marks the
valid rows of a padded batch (padding never changes a loss or its gradient).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Kernel widths s of k(a, b) = sum_s exp(-||a - b||^2 / (2 s)): training.py `mmd_distance`
# (the code divides by 2 s, not 2 s^2).
MMD_WIDTHS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0,
              100.0, 1e3, 1e4, 1e5, 1e6)
MMD_FLOOR = 1e-4  # training.py clamps the MMD to >= 0, then to >= 1e-4


def class_weights(labels: np.ndarray, num_classes: int = 3) -> np.ndarray:
    """w_m = N / (M n_m) over the training labels (the notebook's `weights`), float32 (M,)."""
    counts = np.bincount(np.asarray(labels), minlength=num_classes).astype(np.float64)
    if np.any(counts == 0):
        raise ValueError(f"every class needs training examples to weight it; counts are {counts.tolist()}")
    return (counts.sum() / (num_classes * counts)).astype(np.float32)


def weighted_cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array,
                           mask: jax.Array | None = None) -> jax.Array:
    """PyTorch `CrossEntropyLoss(weight=w)` with mean reduction: sum w_y nll / sum w_y.

    Args:
      logits: (N, C) unnormalised scores.
      labels: (N,) integer classes.
      weights: (C,) class weights.
      mask: optional (N,) 0/1 validity of each row.
    Returns:
      scalar loss (nats).
    """
    # at least float32 (bfloat16 logits are promoted), never lower than the input (float64 stays)
    # log_softmax then the label's entry, not optax.softmax_cross_entropy_with_integer_labels:
    # optax takes logsumexp(z) - z_y, this (z_y - max z) - log sum exp(z - max z), which differ
    # by an ulp per row, and Adam turns that into different weights (2 % after two epochs of
    # the tiny test config at lr 1e-3). Kept so that every earlier run reproduces bit for bit.
    log_probs = jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)
    nll = -jnp.take_along_axis(log_probs, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    w = weights[labels]
    if mask is not None:
        w = w * mask
    return jnp.sum(w * nll) / jnp.sum(w)


def pairwise_sq_distances(a: jax.Array, b: jax.Array) -> jax.Array:
    """||a_i - b_j||^2 from explicit differences: (N, D), (M, D) -> (N, M).

    The matrix-product shortcut |a|^2 + |b|^2 - 2 a.b loses the small distances to float32
    cancellation, and the 1e-6..1e-2 kernel widths amplify exactly those.
    """
    diff = a[:, None, :] - b[None, :, :]
    return jnp.sum(diff * diff, axis=-1)


@jax.custom_vjp
def self_sq_distances(x: jax.Array) -> jax.Array:
    """||x_i - x_j||^2 over all pairs of rows of one batch: (N, D) -> (N, N).

    Value and gradient both from explicit differences. The gradient is written out
    (2 sum_j (g_kj + g_jk)(x_k - x_j), one contraction over the (N, N, D) differences) because
    XLA:CPU's derivation of it was the costliest op of the DA train step (118 ms of MMD
    gradient at 2 x 128 latents; 11-14 ms written out).
    """
    return pairwise_sq_distances(x, x)


def _self_sq_distances_fwd(x):
    return pairwise_sq_distances(x, x), x


def _self_sq_distances_bwd(x, g):
    # differences, not the |x|^2 - 2 x.y expansion: near-twin rows carry the small kernel
    # widths' large weights, and only the differences keep their (x_k - x_j) exact
    weights = g + g.T
    return (2.0 * jnp.einsum("kj,kjd->kd", weights, x[:, None, :] - x[None, :, :],
                             precision=jax.lax.Precision.HIGHEST),)


self_sq_distances.defvjp(_self_sq_distances_fwd, _self_sq_distances_bwd)


def rbf_kernel_sum(sq_dist: jax.Array, widths=MMD_WIDTHS) -> jax.Array:
    """sum_s exp(-d^2 / (2 s)) over all widths at once: (...,) -> (...,)."""
    beta = 1.0 / (2.0 * jnp.asarray(widths, dtype=sq_dist.dtype))
    return jnp.sum(jnp.exp(-sq_dist[..., None] * beta), axis=-1)


def _mmd_weights(source_mask, target_mask, unbiased: bool) -> jax.Array:
    """(N+M, N+M) weights W so that MMD = sum W * K over the joint kernel matrix."""
    n_s, n_t = jnp.sum(source_mask), jnp.sum(target_mask)
    sign = jnp.concatenate([source_mask, -target_mask])
    if not unbiased:
        a = jnp.concatenate([source_mask / n_s, -target_mask / n_t])
        return a[:, None] * a[None, :]
    is_source = jnp.concatenate([jnp.ones_like(source_mask), jnp.zeros_like(target_mask)])
    same = is_source[:, None] == is_source[None, :]
    norm_same = jnp.where(is_source == 1, n_s * (n_s - 1), n_t * (n_t - 1))
    w_same = (sign[:, None] * sign[None, :]) / norm_same[:, None]
    w_cross = (sign[:, None] * sign[None, :]) / (n_s * n_t)
    w = jnp.where(same, w_same, w_cross)
    return w * (1.0 - jnp.eye(w.shape[0], dtype=w.dtype))  # i != j within a domain


def mmd(source: jax.Array, target: jax.Array, estimator: str = "biased", widths=MMD_WIDTHS,
        source_mask: jax.Array | None = None, target_mask: jax.Array | None = None) -> jax.Array:
    """Squared MMD between latent batches with the 19-kernel RBF sum, in one fused expression.

    "biased" (training.py): mean k(x,x) + mean k(y,y) - 2 mean k(x,y) over ALL pairs (diagonal
    included), clamped to >= 0 and then >= 1e-4. "unbiased" (paper eq. 2): the within-domain
    means skip i == j; no clamp, so it can be negative.

    Args:
      source: (N, D) latents of Y10 images; target: (M, D) latents of Y1 images.
      source_mask, target_mask: optional (N,), (M,) 0/1 validity of each row.
    Returns:
      scalar MMD^2.
    """
    if estimator not in ("biased", "unbiased"):
        raise ValueError(f"estimator must be 'biased' or 'unbiased', got {estimator!r}")
    dtype = source.dtype
    source_mask = jnp.ones(source.shape[0], dtype) if source_mask is None else source_mask.astype(dtype)
    target_mask = jnp.ones(target.shape[0], dtype) if target_mask is None else target_mask.astype(dtype)
    joint = jnp.concatenate([source, target], axis=0)
    kernel = rbf_kernel_sum(self_sq_distances(joint), widths)
    value = jnp.sum(_mmd_weights(source_mask, target_mask, estimator == "unbiased") * kernel)
    if estimator == "biased":
        value = jnp.maximum(value, MMD_FLOOR)  # = clamp(clamp(., min=0), min=1e-4)
    return value


def masked_covariance(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Unbiased covariance of the valid rows: (N, D), (N,) 0/1 -> (D, D).

    C = (X - 1 mu)^T diag(m) (X - 1 mu) / (n - 1) with n = sum m and mu the mean of the valid
    rows: Sun & Saenko (2016) eq. 2, written with the centred rows (their form subtracts
    (1^T X)^T (1^T X) / n, which cancels in float32 when the mean is large against the spread).
    """
    n = jnp.sum(mask)
    mean = jnp.sum(x * mask[:, None], axis=0) / n
    centred = (x - mean) * mask[:, None]
    return jnp.matmul(centred.T, centred, precision=jax.lax.Precision.HIGHEST) / (n - 1.0)


def coral(source: jax.Array, target: jax.Array, source_mask: jax.Array | None = None,
          target_mask: jax.Array | None = None) -> jax.Array:
    """Deep CORAL loss: ||C_S - C_T||_F^2 / (4 d^2) (Sun & Saenko 2016, "Deep CORAL: Correlation
    Alignment for Deep Domain Adaptation", ECCV 2016 workshops, arXiv:1607.01719, eq. 1).

    C_S, C_T are the unbiased (n - 1) covariances of the source and target latents (eq. 2).

    Args:
      source: (N, D) latents of Y10 images; target: (M, D) latents of Y1 images.
      source_mask, target_mask: optional (N,), (M,) 0/1 validity of each row; each side needs at
        least two valid rows.
    Returns:
      scalar loss (latent units^4).
    """
    dtype = source.dtype
    source_mask = jnp.ones(source.shape[0], dtype) if source_mask is None else source_mask.astype(dtype)
    target_mask = jnp.ones(target.shape[0], dtype) if target_mask is None else target_mask.astype(dtype)
    d = source.shape[1]
    diff = masked_covariance(source, source_mask) - masked_covariance(target, target_mask)
    return jnp.sum(diff * diff) / (4.0 * d * d)


# The domain-adaptation losses `train.da_loss` names; "none" is regular training.
DA_LOSSES = ("none", "mmd", "coral")


def da_loss(name: str, source: jax.Array, target: jax.Array, source_mask: jax.Array | None = None,
            target_mask: jax.Array | None = None, mmd_estimator: str = "biased") -> jax.Array:
    """The domain-adaptation loss `name` (DA_LOSSES) between source (N, D) and target (M, D)
    latents, with optional (N,), (M,) 0/1 row masks; 0 for "none". Scalar."""
    if name == "none":
        return jnp.zeros((), jnp.float32)
    if name == "mmd":
        return mmd(source, target, mmd_estimator, source_mask=source_mask, target_mask=target_mask)
    if name == "coral":
        return coral(source, target, source_mask, target_mask)
    raise ValueError(f"train.da_loss must be one of {DA_LOSSES}, got {name!r}")
