"""ResNet18 with the paper's bottleneck and head (networks.py `ResNetFc`), NHWC.

torchvision's ImageNet ResNet18 trunk, trained from scratch:
    conv 7x7/2 pad 3 (64), BN, ReLU, maxpool 3x3/2 pad 1
    4 stages x 2 BasicBlocks: 64, 128/2, 256/2, 512/2
    Dropout(0.5) on the last feature map, global average pool -> 512
    Dense 512 -> 256 (latent), Dense 256 -> 3 (logits)
11,308,611 trainable parameters (trunk 11,176,512; bottleneck 131,328; head 771).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrobust.models.common import Head, batch_norm, bn_mask, bottleneck, kaiming_fan_out

STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))  # (channels, first stride) per stage


def conv(features: int, kernel: int, stride: int = 1, name: str | None = None) -> nn.Conv:
    pad = (kernel - 1) // 2  # PyTorch's symmetric padding, not XLA "SAME"
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                   use_bias=False, kernel_init=kaiming_fan_out, name=name)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; a strided 1x1 conv + BN on the shortcut when shapes change."""

    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x, train: bool, mask=None):
        m = bn_mask(mask, x)
        y = conv(self.features, 3, self.stride, "conv1")(x)
        y = nn.relu(batch_norm("bn1")(y, use_running_average=not train, mask=m))
        y = conv(self.features, 3, 1, "conv2")(y)
        y = batch_norm("bn2")(y, use_running_average=not train, mask=m)
        if self.stride != 1 or x.shape[-1] != self.features:
            x = conv(self.features, 1, self.stride, "downsample_conv")(x)
            x = batch_norm("downsample_bn")(x, use_running_average=not train, mask=m)
        return nn.relu(x + y)


class ResNetTrunk(nn.Module):
    """Stem + 4 stages + dropout + global average pool: (N, H, W, 3) -> (N, 512)."""

    stage_blocks: tuple[int, ...] = (2, 2, 2, 2)
    dropout_rate: float = 0.5

    @nn.compact
    def __call__(self, x, train: bool = False, mask=None):
        x = conv(64, 7, 2, "conv1")(x)
        x = nn.relu(batch_norm("bn1")(x, use_running_average=not train, mask=bn_mask(mask, x)))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage, ((features, stride), blocks) in enumerate(zip(STAGES, self.stage_blocks)):
            for block in range(blocks):
                x = BasicBlock(features, stride if block == 0 else 1,
                               name=f"layer{stage + 1}_{block}")(x, train, mask)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return jnp.mean(x, axis=(1, 2))


class ResNet18(nn.Module):
    """ResNet18 trunk, a 256-d bottleneck (the latent) and a linear head."""

    latent_dim: int = 256
    num_classes: int = 3
    stage_blocks: tuple[int, ...] = (2, 2, 2, 2)

    def setup(self):
        self.trunk = ResNetTrunk(self.stage_blocks)
        self.bottleneck = bottleneck(self.latent_dim)
        self.classifier = Head(self.num_classes, name="head")

    def embed(self, x, train: bool = False, mask=None) -> jax.Array:
        """(N, H, W, 3) -> (N, latent_dim) latent. Training needs a "dropout" rng."""
        return self.bottleneck(self.trunk(x, train, mask))

    def head(self, latent: jax.Array) -> jax.Array:
        """(N, latent_dim) -> (N, classes) logits; usable alone (church-window grids)."""
        return self.classifier(latent)

    def __call__(self, x, train: bool = False, mask=None):
        latent = self.embed(x, train, mask)
        return latent, self.head(latent)
