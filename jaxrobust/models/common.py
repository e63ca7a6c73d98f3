"""Initialisers and layers shared by the networks, matching PyTorch's defaults."""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

# PyTorch's default Conv2d/Linear weight init, kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
torch_default_kernel = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# torchvision's ResNet convs: kaiming_normal(mode="fan_out", nonlinearity="relu"), untruncated.
kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def torch_default_bias(fan_in: int):
    """PyTorch's default bias init U(+-1/sqrt(fan_in)), for a layer with `fan_in` inputs."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def batch_norm(name: str | None = None) -> nn.BatchNorm:
    """BatchNorm with PyTorch's constants: running average momentum 0.1 (flax 0.9), eps 1e-5."""
    return nn.BatchNorm(momentum=0.9, epsilon=1e-5, name=name)


def bn_mask(mask: jax.Array | None, x: jax.Array) -> jax.Array | None:
    """(N,) validity mask -> broadcastable to x, so padded rows never enter batch statistics."""
    if mask is None:
        return None
    return mask.reshape((-1,) + (1,) * (x.ndim - 1)).astype(bool)


class Head(nn.Module):
    """latent (N, 256) -> logits (N, classes); weights N(0, 0.01), bias 0 (networks.py)."""

    num_classes: int = 3

    @nn.compact
    def __call__(self, latent):
        return nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(0.01),
                        bias_init=nn.initializers.zeros, name="fc")(latent)


def bottleneck(latent_dim: int, name: str = "bottleneck") -> nn.Dense:
    """features -> latent; weights N(0, 0.005), bias 0 (networks.py)."""
    return nn.Dense(latent_dim, kernel_init=nn.initializers.normal(0.005),
                    bias_init=nn.initializers.zeros, name=name)
