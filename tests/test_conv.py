"""Tests of jaxrobust.models.conv: the convolution and its kernel gradient by patches, against a
float64 NumPy loop over kernel taps and against XLA's own gradient, for the strides, paddings
and kernel sizes the networks use."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrobust.models import conv as conv_module
from jaxrobust.models.conv import Conv, conv2d, conv_patches, kernel_gradient

# (kernel, stride, padding) of every conv in the ConvNet and ResNet18, plus an asymmetric pad
CASES = [(3, 1, ((1, 1), (1, 1))), (5, 1, ((2, 2), (2, 2))), (3, 2, ((1, 1), (1, 1))),
         (1, 2, ((0, 0), (0, 0))), (4, 1, ((1, 2), (1, 2)))]


def numpy_conv(x, kernel, stride, padding):
    """Direct float64 cross-correlation: a sum over kernel taps of shifted, strided slices."""
    kh, kw, _, c_out = kernel.shape
    xp = np.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    ho, wo = (xp.shape[1] - kh) // stride + 1, (xp.shape[2] - kw) // stride + 1
    out = np.zeros(x.shape[:1] + (ho, wo, c_out))
    for i in range(kh):
        for j in range(kw):
            window = xp[:, i:i + (ho - 1) * stride + 1:stride, j:j + (wo - 1) * stride + 1:stride]
            out += window @ kernel[i, j]
    return out


def numpy_kernel_grad(x, dy, kernel_shape, stride, padding):
    """dL/dK for L = sum(conv(x, K) * dy), tap by tap in float64."""
    kh, kw = kernel_shape[:2]
    xp = np.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    ho, wo = dy.shape[1:3]
    grad = np.zeros(kernel_shape)
    for i in range(kh):
        for j in range(kw):
            window = xp[:, i:i + (ho - 1) * stride + 1:stride, j:j + (wo - 1) * stride + 1:stride]
            grad[i, j] = np.einsum("nhwc,nhwo->co", window, dy)
    return grad


@pytest.mark.parametrize("k,stride,padding", CASES)
def test_conv_and_both_gradients_match_numpy(k, stride, padding):
    rng = np.random.default_rng(k * 10 + stride)
    x = rng.normal(size=(3, 12, 10, 5)).astype(np.float32)
    kernel = rng.normal(size=(k, k, 5, 7)).astype(np.float32)
    expected = numpy_conv(x.astype(np.float64), kernel.astype(np.float64), stride, padding)
    dy = rng.normal(size=expected.shape).astype(np.float32)
    for mode in ("patches", "xla"):
        y, pullback = jax.vjp(lambda a, b: conv2d(a, b, (stride, stride), padding, mode), x, kernel)
        np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-4, atol=1e-4)
        dx, dkernel = pullback(jnp.asarray(dy))
        np.testing.assert_allclose(np.asarray(dkernel), numpy_kernel_grad(x.astype(np.float64), dy.astype(np.float64),
                                                                           kernel.shape, stride, padding),
                                   rtol=1e-4, atol=1e-3)
        # the input gradient by the adjoint identity <conv(x), dy> = <x, dx>: linear in x
        np.testing.assert_allclose(float(np.sum(dx * x)), float(np.sum(expected * dy)), rtol=1e-4)


def test_patches_gradient_equals_xla_gradient_in_float64():
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        x = jnp.asarray(rng.normal(size=(2, 9, 9, 4)))
        kernel = jnp.asarray(rng.normal(size=(3, 3, 4, 6)))

        def loss(mode, a, b):
            return jnp.sum(jnp.sin(conv2d(a, b, (2, 2), ((1, 1), (1, 1)), mode)))

        patches = jax.grad(lambda a, b: loss("patches", a, b), argnums=(0, 1))(x, kernel)
        xla = jax.grad(lambda a, b: loss("xla", a, b), argnums=(0, 1))(x, kernel)
        for p, q in zip(patches, xla):
            assert p.dtype == jnp.float64
            np.testing.assert_allclose(np.asarray(p), np.asarray(q), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n,stride", [(6, 1), (5, 1), (6, 2)])
def test_kernel_gradient_summed_over_image_chunks_matches_numpy(monkeypatch, n, stride):
    rng = np.random.default_rng(n + stride)
    x = rng.normal(size=(n, 9, 8, 4)).astype(np.float32)
    padding = ((1, 1), (1, 1))
    ho, wo = (9 + 2 - 3) // stride + 1, (8 + 2 - 3) // stride + 1
    dy = rng.normal(size=(n, ho, wo, 5)).astype(np.float32)
    # patches of two images per chunk: 3 chunks of 2 for n = 6, 5 chunks of 1 for n = 5 (prime)
    monkeypatch.setattr(conv_module, "PATCH_CHUNK_FLOATS", 2 * ho * wo * 9 * 4)
    assert conv_module._chunk_images(n, ho * wo * 9 * 4) == (2 if n % 2 == 0 else 1)
    grad = kernel_gradient(jnp.asarray(x), jnp.asarray(dy), (3, 3), (stride, stride), padding)
    expected = numpy_kernel_grad(x.astype(np.float64), dy.astype(np.float64), (3, 3, 4, 5), stride, padding)
    np.testing.assert_allclose(np.asarray(grad).reshape(3, 3, 4, 5), expected, rtol=1e-5, atol=1e-4)


def test_chunk_images_is_the_largest_divisor_that_fits():
    budget = conv_module.PATCH_CHUNK_FLOATS
    assert conv_module._chunk_images(128, 2500 * 108) == 2  # ConvNet conv1: 3.9 images fit
    assert conv_module._chunk_images(128, 625 * 144) == 8  # 11.6 fit; 8 is the largest divisor below
    assert conv_module._chunk_images(6, 10) == 6  # everything fits: one product, no scan
    assert conv_module._chunk_images(7, budget // 3) == 1  # 3 fit, but 7 is prime
    assert conv_module._chunk_images(12, budget * 4) == 1  # not even one image fits


def test_patches_hold_each_receptive_field_in_kernel_order():
    x = jnp.arange(2 * 4 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 4, 3)
    patches = conv_patches(x, (3, 3), (1, 1), ((1, 1), (1, 1)))
    assert patches.shape == (2, 4, 4, 27)
    # output pixel (1, 2) of image 1: taps (i, j) read input pixel (1 + i - 1, 2 + j - 1)
    field = np.asarray(patches[1, 1, 2]).reshape(3, 3, 3)
    np.testing.assert_array_equal(field, np.asarray(x[1, 0:3, 1:4]))
    corner = np.asarray(patches[0, 0, 0]).reshape(3, 3, 3)
    assert np.all(corner[0] == 0) and np.all(corner[:, 0] == 0)  # the zero padding


def test_conv_module_has_flax_conv_parameters_and_outputs():
    import flax.linen as nn

    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    ours = Conv(4, 3, strides=2, padding=1)
    variables = ours.init(jax.random.key(1), x)
    assert jax.tree_util.tree_map(jnp.shape, variables["params"]) == {"kernel": (3, 3, 3, 4), "bias": (4,)}
    flax_conv = nn.Conv(4, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    np.testing.assert_allclose(np.asarray(ours.apply(variables, x)), np.asarray(flax_conv.apply(variables, x)),
                               rtol=1e-5, atol=1e-5)


def test_unknown_weight_grad_mode_is_refused():
    with pytest.raises(ValueError, match="weight_grad"):
        conv2d(jnp.zeros((1, 4, 4, 1)), jnp.zeros((3, 3, 1, 1)), weight_grad="fast")
