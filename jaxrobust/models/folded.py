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

from jaxrobust.models.conv import xla_conv
from jaxrobust.models.convnet import CONVNET_BLOCKS, max_pool_2x2, phase_conv
from jaxrobust.models.resnet import max_pool_3x3_stride2, stride2_conv

BN_EPS = 1e-5  # models.common.batch_norm


def fold_batchnorm(kernel: jax.Array, bn: dict, moments: dict, conv_bias: jax.Array | None = None):
    """(kernel * s, (conv_bias - mean) s + beta) with s = gamma / sqrt(var + eps): conv then BN as one conv.

    kernel (k, k, Cin, Cout); bn {"scale", "bias"} (Cout,); moments {"mean", "var"} (Cout,).
    """
    scale = bn["scale"] / jnp.sqrt(moments["var"] + BN_EPS)
    if conv_bias is None:  # bias-free conv (ResNet): beta - mean s
        return kernel * scale, bn["bias"] - moments["mean"] * scale
    return kernel * scale, (conv_bias - moments["mean"]) * scale + bn["bias"]


def fold_convnet(variables) -> dict:
    """{"params", "batch_stats"} of a ConvNet -> {"conv": [(W, b), ...], "bottleneck": (W, b), "head": (W, b)}."""
    params, stats = variables["params"], variables["batch_stats"]
    convs = [fold_batchnorm(params[f"conv{i}"]["kernel"], params[f"bn{i}"], stats[f"bn{i}"],
                            params[f"conv{i}"]["bias"]) for i in range(1, len(CONVNET_BLOCKS) + 1)]
    return {"conv": convs,
            "bottleneck": (params["bottleneck"]["kernel"], params["bottleneck"]["bias"]),
            "head": (params["head"]["fc"]["kernel"], params["head"]["fc"]["bias"])}


def conv_block(x: jax.Array, kernel: jax.Array, bias: jax.Array, padding: int) -> jax.Array:
    """conv (folded BN) -> ReLU -> 2x2 max-pool, NHWC."""
    y = xla_conv(x, kernel, (1, 1), ((padding, padding), (padding, padding))) + bias
    return max_pool_2x2(jnp.maximum(y, 0.0))


def phase_block(x: jax.Array, kernel: jax.Array, bias: jax.Array, padding: int) -> jax.Array:
    """conv_block computed in phase layout (models/convnet.py): faster for 3 input channels."""
    return jnp.max(jnp.maximum(phase_conv(x, kernel, padding) + bias, 0.0), axis=3)


def phase_max_block(y: jax.Array, bias: jax.Array) -> jax.Array:
    """(N, h, w, 4 C) phase-conv output -> bias, ReLU and the 2x2 max-pool (max over the phases)."""
    y = y.reshape(y.shape[:3] + (4, bias.shape[0])) + bias
    return jnp.max(jnp.maximum(y, 0.0), axis=3)


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


# --- ResNet18 ---


def fold_resnet(variables) -> dict:
    """{"params", "batch_stats"} of a ResNet18 -> folded convs (W, b) per layer, dense layers.

    {"stem": (W, b), "blocks": [{"conv1", "conv2", "down" (or None), "stride"}], "bottleneck",
    "head"}; block i of `blocks` is layer{i // 2 + 1}_{i % 2}.
    """
    params, stats = variables["params"], variables["batch_stats"]
    trunk, trunk_stats = params["trunk"], stats["trunk"]
    blocks = []
    for name in sorted(k for k in trunk if k.startswith("layer")):
        p, s = trunk[name], trunk_stats[name]
        down = fold_batchnorm(p["downsample_conv"]["kernel"], p["downsample_bn"], s["downsample_bn"]) if "downsample_conv" in p else None
        stride = 2 if (down is not None and not name.startswith("layer1")) else 1
        blocks.append({"conv1": fold_batchnorm(p["conv1"]["kernel"], p["bn1"], s["bn1"]),
                       "conv2": fold_batchnorm(p["conv2"]["kernel"], p["bn2"], s["bn2"]), "down": down, "stride": stride})
    return {"stem": fold_batchnorm(trunk["conv1"]["kernel"], trunk["bn1"], trunk_stats["bn1"]), "blocks": blocks,
            "bottleneck": (params["bottleneck"]["kernel"], params["bottleneck"]["bias"]),
            "head": (params["head"]["fc"]["kernel"], params["head"]["fc"]["bias"])}


def conv_same(x, kernel, bias, stride: int = 1):
    """PyTorch-padded conv + bias, NHWC."""
    pad = (kernel.shape[0] - 1) // 2
    return xla_conv(x, kernel, (stride, stride), ((pad, pad), (pad, pad))) + bias


def basic_block(x, block: dict):
    """One folded BasicBlock: relu(conv2(relu(conv1(x))) + shortcut(x))."""
    y = jnp.maximum(conv_same(x, *block["conv1"], stride=block["stride"]), 0.0)
    y = conv_same(y, *block["conv2"])
    shortcut = x if block["down"] is None else conv_same(x, *block["down"], stride=block["stride"])
    return jnp.maximum(y + shortcut, 0.0)


def resnet_stem(folded: dict, x):
    """Folded stem: 7x7/2 conv (on 2x2 blocks) + ReLU + 3x3/2 max-pool: (N, 100, 100, 3) -> (N, 25, 25, 64)."""
    kernel, bias = folded["stem"]
    return max_pool_3x3_stride2(jnp.maximum(stride2_conv(x, kernel, 3) + bias, 0.0))


def resnet_blocks_pool_bottleneck(folded: dict, x, first_block: int = 0):
    """Blocks `first_block`.. of the folded trunk, global pool, bottleneck, head -> (latent, logits)."""
    for block in folded["blocks"][first_block:]:
        x = basic_block(x, block)
    wb, bb = folded["bottleneck"]
    latent = jnp.mean(x, axis=(1, 2)) @ wb + bb
    wh, bh = folded["head"]
    return latent, latent @ wh + bh


def resnet_logits(folded: dict, x):
    """(N, 100, 100, 3) -> (N, 3) logits of the folded ResNet18 (eval mode: no dropout)."""
    return resnet_blocks_pool_bottleneck(folded, resnet_stem(folded, x))[1]
