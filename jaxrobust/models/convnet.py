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

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrobust.models.common import (Head, batch_norm, bn_mask, bottleneck, torch_default_bias,
                                     torch_default_kernel)

# (features, kernel size, padding) per block: Table 1.
CONVNET_BLOCKS = ((8, 5, 2), (16, 3, 1), (32, 3, 1))


class ConvNet(nn.Module):
    """Three conv blocks, a 256-d bottleneck (the latent) and a linear head."""

    latent_dim: int = 256
    num_classes: int = 3

    def setup(self):
        in_channels = (3,) + tuple(f for f, _, _ in CONVNET_BLOCKS[:-1])
        self.convs = [
            nn.Conv(f, (k, k), padding=((p, p), (p, p)), kernel_init=torch_default_kernel,
                    bias_init=torch_default_bias(c_in * k * k), name=f"conv{i + 1}")
            for i, ((f, k, p), c_in) in enumerate(zip(CONVNET_BLOCKS, in_channels))]
        self.norms = [batch_norm(f"bn{i + 1}") for i in range(len(CONVNET_BLOCKS))]
        self.bottleneck = bottleneck(self.latent_dim)
        self.classifier = Head(self.num_classes, name="head")

    def features(self, x: jax.Array, train: bool = False, mask: jax.Array | None = None) -> jax.Array:
        """(N, 100, 100, 3) stretched images -> (N, 4608) flattened conv features."""
        for conv, norm in zip(self.convs, self.norms):
            x = conv(x)
            x = norm(x, use_running_average=not train, mask=bn_mask(mask, x))
            x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
        return x.reshape((x.shape[0], -1))

    def embed(self, x, train: bool = False, mask=None) -> jax.Array:
        """(N, 100, 100, 3) -> (N, latent_dim) latent."""
        return self.bottleneck(self.features(x, train, mask))

    def head(self, latent: jax.Array) -> jax.Array:
        """(N, latent_dim) -> (N, classes) logits; usable alone (church-window grids)."""
        return self.classifier(latent)

    def __call__(self, x, train: bool = False, mask=None):
        latent = self.embed(x, train, mask)
        return latent, self.head(latent)


def count_parameters(params) -> int:
    return int(sum(jnp.size(p) for p in jax.tree_util.tree_leaves(params)))
