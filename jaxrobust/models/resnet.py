"""ResNet18 with the paper's bottleneck and head (networks.py `ResNetFc`), NHWC.

torchvision's ImageNet ResNet18 trunk, trained from scratch:
    conv 7x7/2 pad 3 (64), BN, ReLU, maxpool 3x3/2 pad 1
    4 stages x 2 BasicBlocks: 64, 128/2, 256/2, 512/2
    Dropout(0.5) on the last feature map, global average pool -> 512
    Dense 512 -> 256 (latent), Dense 256 -> 3 (logits)
11,308,611 trainable parameters (trunk 11,176,512; bottleneck 131,328; head 771).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust.models.common import Head, LatentClassifier, batch_norm, bottleneck, kaiming_fan_out
from jaxrobust.models.conv import Conv, conv2d
from jaxrobust.models.convnet import space_to_depth

STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))  # (channels, first stride) per stage


def conv(features: int, kernel: int, stride: int = 1, name: str | None = None) -> Conv:
    pad = (kernel - 1) // 2  # PyTorch's symmetric padding, not XLA "SAME"
    return Conv(features, kernel, stride, pad, use_bias=False, kernel_init=kaiming_fan_out, name=name)


# --- The stem, shaped for a CPU ---
# The 7x7 stride-2 conv sees 3 channels, which XLA's CPU convolution handles at a fraction of
# its speed; on 2x2 pixel blocks (space-to-depth, 12 channels) the same conv is a 4x4 stride-1
# conv. The 3x3 stride-2 max-pool is a max of 9 strided slices, whose gradient is a select
# instead of XLA's slow select-and-scatter. Same functions as nn.Conv and nn.max_pool.
def _stride2_taps(kernel_size: int, padding: int):
    """Block offsets, and per (offset, input parity) the kernel tap (or -1) of a stride-2 conv."""
    first = math.ceil((-padding - 1) / 2)
    last = math.floor((kernel_size - 1 - padding) / 2)
    offsets = np.arange(first, last + 1)
    taps = np.array([[2 * b + q + padding if 0 <= 2 * b + q + padding < kernel_size else -1 for q in range(2)]
                     for b in offsets])
    return offsets, taps


def stride2_conv(x: jax.Array, kernel: jax.Array, padding: int) -> jax.Array:
    """conv(x, kernel, stride 2, pad) for even H, W, computed on 2x2 blocks at stride 1."""
    k, _, c_in, c_out = kernel.shape
    offsets, taps = _stride2_taps(k, padding)
    tr, tc = taps[:, None, :, None], taps[None, :, None, :]  # (Pr, 1, qr, 1), (1, Pc, 1, qc)
    gathered = kernel[np.clip(tr, 0, k - 1), np.clip(tc, 0, k - 1)]  # (Pr, Pc, qr, qc, Cin, Cout)
    block_kernel = jnp.where(((tr >= 0) & (tc >= 0))[..., None, None], gathered, 0.0)
    block_kernel = block_kernel.reshape(len(offsets), len(offsets), 4 * c_in, c_out).astype(x.dtype)
    pad = (int(-offsets[0]), int(offsets[-1]))
    return conv2d(space_to_depth(x), block_kernel, (1, 1), (pad, pad))


class Stride2Conv(nn.Module):
    """nn.Conv(features, (k, k), strides 2, PyTorch padding, no bias) via `stride2_conv`."""

    features: int
    kernel_size: int

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", kaiming_fan_out, (self.kernel_size, self.kernel_size, x.shape[-1], self.features))
        padding = (self.kernel_size - 1) // 2
        if x.shape[1] % 2 or x.shape[2] % 2:  # odd sizes: the plain strided conv
            return conv2d(x, kernel, (2, 2), ((padding, padding),) * 2)
        return stride2_conv(x, kernel, padding)


def max_pool_3x3_stride2(x: jax.Array) -> jax.Array:
    """nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1))) as a max of 9 slices."""
    n, h, w, c = x.shape
    out_h, out_w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    slices = [padded[:, dy:dy + 2 * out_h - 1:2, dx:dx + 2 * out_w - 1:2] for dy in range(3) for dx in range(3)]
    out = slices[0]
    for s in slices[1:]:
        out = jnp.maximum(out, s)
    return out


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; a strided 1x1 conv + BN on the shortcut when shapes change."""

    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x, train: bool, mask=None):
        y = conv(self.features, 3, self.stride, "conv1")(x)
        y = nn.relu(batch_norm("bn1")(y, use_running_average=not train, mask=mask))
        y = conv(self.features, 3, 1, "conv2")(y)
        y = batch_norm("bn2")(y, use_running_average=not train, mask=mask)
        if self.stride != 1 or x.shape[-1] != self.features:
            x = conv(self.features, 1, self.stride, "downsample_conv")(x)
            x = batch_norm("downsample_bn")(x, use_running_average=not train, mask=mask)
        return nn.relu(x + y)


class ResNetTrunk(nn.Module):
    """Stem + 4 stages + dropout + global average pool: (N, H, W, 3) -> (N, 512)."""

    stage_blocks: tuple[int, ...] = (2, 2, 2, 2)
    dropout_rate: float = 0.5

    @nn.compact
    def __call__(self, x, train: bool = False, mask=None):
        x = Stride2Conv(64, 7, name="conv1")(x)
        x = nn.relu(batch_norm("bn1")(x, use_running_average=not train, mask=mask))
        x = max_pool_3x3_stride2(x)
        for stage, ((features, stride), blocks) in enumerate(zip(STAGES, self.stage_blocks)):
            for block in range(blocks):
                x = BasicBlock(features, stride if block == 0 else 1,
                               name=f"layer{stage + 1}_{block}")(x, train, mask)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return jnp.mean(x, axis=(1, 2))


class ResNet18(LatentClassifier):
    """ResNet18 trunk, a 256-d bottleneck (the latent) and a linear head."""

    stage_blocks: tuple[int, ...] = (2, 2, 2, 2)

    def setup(self):
        self.trunk = ResNetTrunk(self.stage_blocks)
        self.bottleneck = bottleneck(self.latent_dim)
        self.classifier = Head(self.num_classes, name="head")

    def embed(self, x, train: bool = False, mask=None) -> jax.Array:
        """(N, H, W, 3) -> (N, latent_dim) latent. Training needs a "dropout" rng."""
        return self.bottleneck(self.trunk(x, train, mask))
