"""The paper's ConvNet (Table 1; networks.py `ConvNet`), NHWC.

    conv 5x5 3->8 pad 2, BN, ReLU, maxpool 2   -> (50, 50, 8)
    conv 3x3 8->16 pad 1, BN, ReLU, maxpool 2  -> (25, 25, 16)
    conv 3x3 16->32 pad 1, BN, ReLU, maxpool 2 -> (12, 12, 32)
    flatten 4608 -> Dense 256 (latent) -> Dense 3 (logits)

Trainable parameters: 608, 16, 1168, 32, 4640, 64, 1179904, 771 = 1,187,203 (the conv and BN
layers count weight + bias; Table 1 prints 1,186,432, omitting the last layer). The flatten
order is (H, W, C) here versus PyTorch's (C, H, W): a permutation of the bottleneck's rows.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust.models.common import (Head, LatentClassifier, batch_norm, bottleneck, torch_default_bias,
                                     torch_default_kernel)
from jaxrobust.models.conv import Conv, conv2d

# (features, kernel size, padding) per block: Table 1.
CONVNET_BLOCKS = ((8, 5, 2), (16, 3, 1), (32, 3, 1))


# --- The first block in phase layout ---
# A conv with 3 input channels runs at a sixth of the speed of the others on a CPU (XLA's conv
# wants channels). Since a 2x2 max-pool follows, compute the conv on 2x2 pixel blocks instead:
# space-to-depth gives (H/2, W/2, 12) inputs, and the 5x5 kernel becomes a 3x3 kernel over
# blocks with 4 x 8 outputs, one group of 8 channels per output phase (row, col parity). BN
# statistics over (blocks, phases) are the per-pixel statistics, and the pool is a max over
# the phase axis. Same function, 1.44x the FLOPs, ~4x faster.
def space_to_depth(x: jax.Array) -> jax.Array:
    """(N, H, W, C) -> (N, H/2, W/2, 4C), channels ordered (row parity, col parity, C)."""
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, h // 2, w // 2, 4 * c)


def _phase_taps(padding: int):
    """Block offsets P, and for each (P, input parity q, output parity a) the kernel tap or -1.

    For a "same" kernel of size 2 padding + 1 (the ConvNet's 5x5 pad 2 and 3x3 pad 1).
    """
    offsets = np.arange(math.floor(-padding / 2), math.floor((1 + padding) / 2) + 1)
    taps = np.full((len(offsets), 2, 2), -1)
    for i, block in enumerate(offsets):
        for q in range(2):
            for a in range(2):
                d = 2 * block + q - a  # pixel offset of this tap from the output pixel
                if -padding <= d <= padding:
                    taps[i, q, a] = d + padding
    return offsets, taps


def phase_kernel(kernel: jax.Array, padding: int) -> jax.Array:
    """(k, k, Cin, Cout) stride-1 kernel -> (K, K, 4 Cin, 4 Cout) kernel over 2x2 blocks."""
    k, _, c_in, c_out = kernel.shape
    offsets, taps = _phase_taps(padding)
    tr = taps[:, None, :, None, :, None]  # (Pr, 1, qr, 1, a, 1)
    tc = taps[None, :, None, :, None, :]  # (1, Pc, 1, qc, 1, b)
    valid = (tr >= 0) & (tc >= 0)
    gathered = kernel[np.clip(tr, 0, k - 1), np.clip(tc, 0, k - 1)]  # (Pr, Pc, qr, qc, a, b, Cin, Cout)
    gathered = jnp.where(valid[..., None, None], gathered, 0.0)
    n = len(offsets)
    return gathered.transpose(0, 1, 2, 3, 6, 4, 5, 7).reshape(n, n, 4 * c_in, 4 * c_out)


def phase_conv(x: jax.Array, kernel: jax.Array, padding: int) -> jax.Array:
    """conv(x, kernel, pad) as (N, H/2, W/2, 4, Cout): output pixel (2i + a, 2j + b) at [i, j, 2a + b]."""
    offsets, _ = _phase_taps(padding)
    pad = (int(-offsets[0]), int(offsets[-1]))
    y = conv2d(space_to_depth(x), phase_kernel(kernel, padding), (1, 1), (pad, pad))
    return y.reshape(y.shape[:3] + (4, kernel.shape[3]))


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 / stride-2 max-pool (floor for odd sizes, like PyTorch), NHWC, by reshape + max.

    Same values as a reduce_window pool; its gradient is a compare-and-select instead of XLA's
    select-and-scatter, which on a CPU was 10x slower than the convolutions around it.
    """
    n, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    return jnp.max(x.reshape(n, h // 2, 2, w // 2, 2, c), axis=(2, 4))


class PhaseConv(nn.Module):
    """nn.Conv's parameters (kernel (k, k, Cin, Cout), bias), computed in phase layout."""

    features: int
    kernel_size: int
    padding: int
    c_in: int

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", torch_default_kernel, (self.kernel_size, self.kernel_size, self.c_in, self.features))
        bias = self.param("bias", torch_default_bias(self.c_in * self.kernel_size ** 2), (self.features,))
        return phase_conv(x, kernel, self.padding) + bias


class ConvNet(LatentClassifier):
    """Three conv blocks, a 256-d bottleneck (the latent) and a linear head."""

    def setup(self):
        in_channels = (3,) + tuple(f for f, _, _ in CONVNET_BLOCKS[:-1])
        (f1, k1, p1), c1 = CONVNET_BLOCKS[0], in_channels[0]
        self.convs = [PhaseConv(f1, k1, p1, c1, name="conv1")] + [
            Conv(f, k, padding=p, name=f"conv{i + 2}")
            for i, ((f, k, p), c_in) in enumerate(zip(CONVNET_BLOCKS[1:], in_channels[1:]))]
        self.norms = [batch_norm(f"bn{i + 1}") for i in range(len(CONVNET_BLOCKS))]
        self.bottleneck = bottleneck(self.latent_dim)
        self.classifier = Head(self.num_classes, name="head")

    def features(self, x: jax.Array, train: bool = False, mask: jax.Array | None = None) -> jax.Array:
        """(N, 100, 100, 3) stretched images -> (N, 4608) flattened conv features."""
        if x.shape[1] % 2 or x.shape[2] % 2:
            raise ValueError(f"the ConvNet needs even image sizes, got {x.shape[1:3]}")
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = conv(x)  # block 1: (N, H/2, W/2, 4 phases, C); BN reduces over phases too
            x = norm(x, use_running_average=not train, mask=mask)
            x = jnp.max(nn.relu(x), axis=3) if i == 0 else max_pool_2x2(nn.relu(x))
        return x.reshape((x.shape[0], -1))

    def embed(self, x, train: bool = False, mask=None) -> jax.Array:
        """(N, 100, 100, 3) -> (N, latent_dim) latent."""
        return self.bottleneck(self.features(x, train, mask))


def count_parameters(params) -> int:
    return int(sum(jnp.size(p) for p in jax.tree_util.tree_leaves(params)))
