"""2-D convolution (NHWC, HWIO) whose kernel gradient is one matrix product on a CPU.

XLA:CPU computes a convolution's kernel gradient as a convolution with a window the size of the
image, at 10-17 GFLOP/s on this project's 2-core CPU (its matrix products reach ~150): in the
ConvNet train step these were 270 of 480 ms, in ResNet18's over 4 of 9 s. The same gradient is

    dK[i, j, c, o] = sum_{n, y, x} patch[n, y, x, (i, j, c)] * dY[n, y, x, o]
                   = patches(X)^T @ dY          ((N Ho Wo, kh kw C)^T x (N Ho Wo, O)),

so `conv2d` keeps XLA's convolution for the output and the input gradient and takes the kernel
gradient by that product, summed over chunks of a few images whose patches stay in the cache
(`kernel_gradient`). On GPUs and TPUs (cuDNN and the TPU compiler handle all three well)
it is the plain convolution. Same function, same gradients up to float32 summation order.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import flax.linen as nn

from jaxrobust.models.common import torch_default_bias, torch_default_kernel

_NHWC = ("NHWC", "HWIO", "NHWC")
WEIGHT_GRAD_MODES = ("auto", "patches", "xla")


def xla_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding) -> jax.Array:
    """XLA's NHWC x HWIO convolution: the one call of `lax.conv_general_dilated` in the package.

    padding: ((top, bottom), (left, right)) or "VALID". Training layers go through `conv2d`
    (which picks the kernel gradient); inference code (folded.py, incremental.py) calls this.
    """
    return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_NHWC)


def conv_patches(x: jax.Array, kernel_hw: tuple[int, int], strides: tuple[int, int], padding) -> jax.Array:
    """(N, H, W, C) -> (N, Ho, Wo, kh kw C): each output pixel's receptive field, taps (i, j, c).

    The tap order is an HWIO kernel's, so `patches @ kernel.reshape(-1, O)` is the convolution.
    """
    xp = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    return _padded_patches(xp, kernel_hw, strides)


def _padded_patches(xp: jax.Array, kernel_hw: tuple[int, int], strides: tuple[int, int]) -> jax.Array:
    (kh, kw), (sh, sw) = kernel_hw, strides
    n, hp, wp, c = xp.shape
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    taps = [jax.lax.slice(xp, (0, i, j, 0), (n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c), (1, sh, sw, 1))
            for i in range(kh) for j in range(kw)]
    if len(taps) == 1:
        return taps[0]
    # the same array as jnp.concatenate(taps, -1); scripts/bench_train_parts.py times both
    return jnp.stack(taps, axis=3).reshape(n, ho, wo, kh * kw * c)


# Images per kernel-gradient chunk: patches of about this many floats (4 MiB) stay in the
# cache between being written and being read by the product; a whole batch's patches (138 MB
# for the ConvNet's first layer, 276 MB in a DA step) went through main memory (~6 GB/s here)
# twice. ConvNet train step, whole batch -> chunks, A/B in fresh processes: 365 -> 418 images/s
# regular, 330 -> 405 DA (means of 6).
PATCH_CHUNK_FLOATS = 1 << 20


def _chunk_images(n: int, floats_per_image: int) -> int:
    """The largest divisor of n whose patches fit PATCH_CHUNK_FLOATS (at least 1)."""
    fits = max(1, PATCH_CHUNK_FLOATS // max(1, floats_per_image))
    return max(d for d in range(1, min(n, fits) + 1) if n % d == 0)


def kernel_gradient(x: jax.Array, dy: jax.Array, kernel_hw: tuple[int, int], strides: tuple[int, int],
                    padding) -> jax.Array:
    """dK = patches(x)^T @ dY, (N, H, W, C), (N, Ho, Wo, O) -> (kh kw C, O) float32.

    Summed over chunks of images (a scan) so that each chunk's patches are read while cached.
    """
    (kh, kw), n, c_out = kernel_hw, x.shape[0], dy.shape[-1]
    xp = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    acc_type = jnp.promote_types(x.dtype, jnp.float32)

    def product(xc, dyc):
        patches = _padded_patches(xc, kernel_hw, strides)
        return jax.lax.dot_general(patches.reshape(-1, patches.shape[-1]), dyc.reshape(-1, c_out),
                                   (((0,), (0,)), ((), ())), preferred_element_type=acc_type)

    chunk = _chunk_images(n, dy.shape[1] * dy.shape[2] * kh * kw * x.shape[-1])
    if chunk == n:
        return product(xp, dy)

    def step(total, chunk_pair):
        return total + product(*chunk_pair), None

    chunks = (xp.reshape((n // chunk, chunk) + xp.shape[1:]), dy.reshape((n // chunk, chunk) + dy.shape[1:]))
    total, _ = jax.lax.scan(step, jnp.zeros((kh * kw * x.shape[-1], c_out), acc_type), chunks)
    return total


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_patch_grad(x, kernel, strides, padding):
    return xla_conv(x, kernel, strides, padding)


def _conv_patch_grad_fwd(x, kernel, strides, padding):
    return xla_conv(x, kernel, strides, padding), (x, kernel)


def _conv_patch_grad_bwd(strides, padding, residuals, dy):
    x, kernel = residuals
    kh, kw, c_in, c_out = kernel.shape
    # XLA drops this when nothing needs it (the first layer's input is data)
    _, input_pullback = jax.vjp(lambda x_: xla_conv(x_, kernel, strides, padding), x)
    (dx,) = input_pullback(dy)
    dkernel = kernel_gradient(x, dy, (kh, kw), strides, padding)
    return dx, dkernel.reshape(kernel.shape).astype(kernel.dtype)


_conv_patch_grad.defvjp(_conv_patch_grad_fwd, _conv_patch_grad_bwd)


def _use_patches(weight_grad: str) -> bool:
    if weight_grad not in WEIGHT_GRAD_MODES:
        raise ValueError(f"weight_grad must be one of {WEIGHT_GRAD_MODES}, got {weight_grad!r}")
    return weight_grad == "patches" or (weight_grad == "auto" and jax.default_backend() == "cpu")


def conv2d(x: jax.Array, kernel: jax.Array, strides=(1, 1), padding=((0, 0), (0, 0)),
           weight_grad: str = "auto") -> jax.Array:
    """NHWC convolution, cross-correlation like PyTorch's Conv2d, no dilation or groups.

    Args:
      x: (N, H, W, Cin) images or feature maps.
      kernel: (kh, kw, Cin, Cout).
      strides: (sh, sw).
      padding: ((top, bottom), (left, right)) zero padding in pixels.
      weight_grad: "patches" (kernel gradient as one matrix product), "xla" (XLA's own), or
        "auto": patches on a CPU backend, xla elsewhere.
    Returns:
      (N, Ho, Wo, Cout).
    """
    strides = tuple(int(s) for s in strides)
    padding = tuple(tuple(int(p) for p in pair) for pair in padding)
    kernel = kernel.astype(x.dtype)
    if _use_patches(weight_grad):
        return _conv_patch_grad(x, kernel, strides, padding)
    return xla_conv(x, kernel, strides, padding)


class Conv(nn.Module):
    """nn.Conv's parameters and defaults for this project (kernel (k, k, Cin, Cout), bias) via `conv2d`.

    Symmetric PyTorch padding `padding` (not XLA's "SAME"); bias optional. The parameter names
    match flax.linen.Conv, so checkpoints and the folded/incremental evaluators read them as before.
    """

    features: int
    kernel_size: int
    strides: int = 1
    padding: int = 0
    use_bias: bool = True
    kernel_init: object = torch_default_kernel

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, c_in = self.kernel_size, x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (k, k, c_in, self.features))
        y = conv2d(x, kernel, (self.strides, self.strides), ((self.padding, self.padding),) * 2)
        if self.use_bias:
            y = y + self.param("bias", torch_default_bias(c_in * k * k), (self.features,))
        return y
