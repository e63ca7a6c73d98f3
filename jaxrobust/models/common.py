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


class BatchNorm(nn.Module):
    """BatchNorm over the last axis with PyTorch's constants and an optional (N,) row mask.

    Train mode normalises with the batch statistics of the valid rows (mask 1) and updates the
    running averages, momentum 0.1 in PyTorch's convention (flax's 0.9), eps 1e-5; eval mode
    uses the running averages. Parameters and statistics carry flax.linen.BatchNorm's names
    (scale, bias; mean, var). The masked moments are taken from per-row sums, so a mask costs a
    reduction over N x C numbers instead of an extra pass over the whole activation (flax's
    masked BatchNorm was 5x slower than its plain one on a CPU).
    """

    momentum: float = 0.9
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, use_running_average: bool, mask: jax.Array | None = None) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        stat_dtype = jnp.promote_types(x.dtype, jnp.float32)
        running_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), stat_dtype))
        running_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), stat_dtype))
        if use_running_average:
            mean, var = running_mean.value, running_var.value
        else:
            mean, var = batch_moments(x, mask)
            if not self.is_initializing():
                running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * mean
                running_var.value = self.momentum * running_var.value + (1 - self.momentum) * var
        factor = scale * jax.lax.rsqrt(var + self.epsilon)
        return ((x - mean) * factor + bias).astype(x.dtype)


def batch_moments(x: jax.Array, mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Per-channel mean and (biased) variance over all axes but the last, valid rows only."""
    rows = x.reshape(x.shape[0], -1, x.shape[-1]).astype(jnp.promote_types(x.dtype, jnp.float32))
    row_sum = jnp.sum(rows, axis=1)  # (N, C)
    row_sq = jnp.sum(rows * rows, axis=1)
    weight = jnp.ones((x.shape[0],), rows.dtype) if mask is None else mask.astype(rows.dtype)
    count = jnp.sum(weight) * rows.shape[1]
    mean = weight @ row_sum / count
    var = jnp.maximum(weight @ row_sq / count - mean * mean, 0.0)
    return mean, var


def batch_norm(name: str | None = None) -> BatchNorm:
    """BatchNorm with PyTorch's constants: running average momentum 0.1 (flax 0.9), eps 1e-5."""
    return BatchNorm(name=name)


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


class LatentClassifier(nn.Module):
    """The paper's networks: images -> latent (`embed`) -> logits (`head`), both returned.

    Subclasses define `setup` (with `self.classifier`, a Head) and `embed(x, train, mask)`.
    """

    latent_dim: int = 256
    num_classes: int = 3

    def embed(self, x: jax.Array, train: bool = False, mask: jax.Array | None = None) -> jax.Array:
        raise NotImplementedError

    def head(self, latent: jax.Array) -> jax.Array:
        """(N, latent_dim) -> (N, classes) logits; usable alone (church-window grids)."""
        return self.classifier(latent)

    def __call__(self, x: jax.Array, train: bool = False, mask: jax.Array | None = None):
        """(N, H, W, 3) stretched images -> (latent (N, latent_dim), logits (N, classes))."""
        latent = self.embed(x, train, mask)
        return latent, self.head(latent)
