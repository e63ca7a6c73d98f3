"""Inference-only ConvNet with eval-mode BatchNorm folded into the convolutions.

In eval mode BatchNorm is the per-channel affine map y = s (x - mean) + beta with
s = gamma / sqrt(var + eps); folding it into the preceding conv (W' = W s, b' = (b - mean) s +
beta) removes one pass over every feature map, which is what bounds the attack on a CPU. The
folded network computes the same function as `ConvNet.apply(..., train=False)` up to float
rounding.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrobust.models.convnet import CONVNET_BLOCKS, max_pool_2x2, phase_conv

BN_EPS = 1e-5  # models.common.batch_norm


def fold_convnet(variables) -> dict:
    """{"params", "batch_stats"} of a ConvNet -> {"conv": [(W, b), ...], "bottleneck": (W, b), "head": (W, b)}."""
    params, stats = variables["params"], variables["batch_stats"]
    convs = []
    for i in range(1, len(CONVNET_BLOCKS) + 1):
        bn, moments = params[f"bn{i}"], stats[f"bn{i}"]
        scale = bn["scale"] / jnp.sqrt(moments["var"] + BN_EPS)
        kernel = params[f"conv{i}"]["kernel"] * scale
        bias = (params[f"conv{i}"]["bias"] - moments["mean"]) * scale + bn["bias"]
        convs.append((kernel, bias))
    return {"conv": convs,
            "bottleneck": (params["bottleneck"]["kernel"], params["bottleneck"]["bias"]),
            "head": (params["head"]["fc"]["kernel"], params["head"]["fc"]["bias"])}


def conv_block(x: jax.Array, kernel: jax.Array, bias: jax.Array, padding: int) -> jax.Array:
    """conv (folded BN) -> ReLU -> 2x2 max-pool, NHWC."""
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), ((padding, padding), (padding, padding)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias
    return max_pool_2x2(jnp.maximum(y, 0.0))


def phase_block(x: jax.Array, kernel: jax.Array, bias: jax.Array, padding: int) -> jax.Array:
    """conv_block computed in phase layout (models/convnet.py): faster for 3 input channels."""
    return jnp.max(jnp.maximum(phase_conv(x, kernel, padding) + bias, 0.0), axis=3)


def convnet_latent(folded: dict, x: jax.Array) -> jax.Array:
    """(N, 100, 100, 3) -> (N, 256) latent of the folded ConvNet."""
    for i, ((kernel, bias), (_, _, padding)) in enumerate(zip(folded["conv"], CONVNET_BLOCKS)):
        x = (phase_block if i == 0 else conv_block)(x, kernel, bias, padding)
    w, b = folded["bottleneck"]
    return x.reshape(x.shape[0], -1) @ w + b


def convnet_logits(folded: dict, x: jax.Array) -> jax.Array:
    """(N, 100, 100, 3) -> (N, 3) logits of the folded ConvNet."""
    w, b = folded["head"]
    return convnet_latent(folded, x) @ w + b
