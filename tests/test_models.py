"""Tests of jaxrobust.models: parameter counts of paper Table 1 and ResNet18, output shapes,
the head applied alone, initialisation (networks.py and PyTorch defaults), evaluation-mode
determinism and the BatchNorm validity mask."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrobust.checkpoint import init_variables
from jaxrobust.models import MODELS, build_model, count_parameters

SHAPE = (100, 100, 3)


def _size(tree) -> int:
    return sum(math.prod(a.shape) for a in jax.tree_util.tree_leaves(tree))


@functools.lru_cache(maxsize=None)
def _jitted_init(name):
    model = build_model(name)
    return model, jax.jit(lambda key: init_variables(model, key, SHAPE))


def _init(name, seed=0):
    model, init = _jitted_init(name)
    return model, init(jax.random.key(seed))


@pytest.fixture(scope="module")
def convnet():
    return _init("convnet")


@pytest.fixture(scope="module")
def resnet_tiny():
    return _init("_resnet_tiny")


def _eval(model, variables, x):
    """(latent, logits) in evaluation mode, compiled as one program."""
    return jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)


def _images(n, seed=1):
    return jax.random.uniform(jax.random.key(seed), (n,) + SHAPE, minval=0.4, maxval=0.9)


# ---- parameter counts ----------------------------------------------------------

def test_convnet_parameters_per_layer_match_table_1(convnet):
    _, variables = convnet
    params = variables["params"]
    layers = ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "bottleneck", "head"]
    assert sorted(params) == sorted(layers)
    counts = [_size(params[name]) for name in layers]
    assert counts == [608, 16, 1168, 32, 4640, 64, 1179904, 771]
    assert count_parameters(params) == 1_187_203
    assert 1_187_203 - 771 == 1_186_432  # Table 1's printed total omits the head


def test_convnet_counts_by_hand():
    # conv: k*k*c_in*c_out + c_out; BN: scale + bias; dense: in*out + out
    assert 5 * 5 * 3 * 8 + 8 == 608
    assert 3 * 3 * 8 * 16 + 16 == 1168
    assert 3 * 3 * 16 * 32 + 32 == 4640
    assert (100 // 2 // 2 // 2) ** 2 * 32 == 4608
    assert 4608 * 256 + 256 == 1179904 and 256 * 3 + 3 == 771


def test_resnet18_parameters():
    model = build_model("resnet18")
    shapes = jax.eval_shape(lambda: init_variables(model, jax.random.key(0), SHAPE))
    params = shapes["params"]
    assert _size(params) == 11_308_611
    assert _size(params["trunk"]) == 11_176_512
    assert _size(params["bottleneck"]) == 512 * 256 + 256 == 131_328
    assert _size(params["head"]) == 771
    # BatchNorm running statistics are not trainable parameters
    assert set(shapes) == {"params", "batch_stats"}


def test_resnet18_trunk_count_by_hand():
    def conv(k, c_in, c_out):
        return k * k * c_in * c_out

    def bn(c):
        return 2 * c

    total = conv(7, 3, 64) + bn(64)
    c_in = 64
    for c, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            total += conv(3, c_in, c) + bn(c) + conv(3, c, c) + bn(c)
            if block == 0 and (stride != 1 or c_in != c):
                total += conv(1, c_in, c) + bn(c)
            c_in = c
    assert total == 11_176_512


def test_unknown_model_name_is_rejected():
    with pytest.raises(ValueError, match="resnet50"):
        build_model("resnet50")


# ---- shapes and the head ---------------------------------------------------------

@pytest.mark.parametrize("name", ["convnet", "resnet18"])
def test_output_shapes(name):
    model = build_model(name)
    variables = jax.eval_shape(lambda: init_variables(model, jax.random.key(0), SHAPE))
    x = jax.ShapeDtypeStruct((5,) + SHAPE, jnp.float32)
    latent, logits = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    assert latent.shape == (5, 256) and logits.shape == (5, 3)
    assert latent.dtype == logits.dtype == jnp.float32


@pytest.mark.parametrize("fixture", ["convnet", "resnet_tiny"])
def test_head_alone_reproduces_logits(fixture, request):
    model, variables = request.getfixturevalue(fixture)
    latent, logits = _eval(model, variables, _images(3))
    again = jax.jit(lambda v, z: model.apply(v, z, method=model.head))(variables, latent)
    np.testing.assert_allclose(again, logits, rtol=1e-6, atol=1e-7)
    # and it is the affine map of the head's parameters
    head = variables["params"]["head"]["fc"]
    expected = np.asarray(latent, np.float64) @ np.asarray(head["kernel"], np.float64) + head["bias"]
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)


# ---- initialisation --------------------------------------------------------------

@pytest.mark.parametrize("fixture", ["convnet", "resnet_tiny"])
def test_bottleneck_and_head_init(fixture, request):
    _, variables = request.getfixturevalue(fixture)
    params = variables["params"]
    bottleneck = np.asarray(params["bottleneck"]["kernel"], np.float64)
    head = np.asarray(params["head"]["fc"]["kernel"], np.float64)
    # std estimate of n normal samples has relative error ~ 1/sqrt(2n)
    assert bottleneck.std() == pytest.approx(0.005, rel=6 / math.sqrt(2 * bottleneck.size))
    assert abs(bottleneck.mean()) < 6 * 0.005 / math.sqrt(bottleneck.size)
    assert head.std() == pytest.approx(0.01, rel=6 / math.sqrt(2 * head.size))
    assert not np.any(params["bottleneck"]["bias"]) and not np.any(params["head"]["fc"]["bias"])


def test_convnet_conv_init_follows_pytorch_default(convnet):
    params = convnet[1]["params"]
    for name, (k, c_in) in {"conv1": (5, 3), "conv2": (3, 8), "conv3": (3, 16)}.items():
        bound = 1.0 / math.sqrt(k * k * c_in)  # kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in))
        kernel = np.asarray(params[name]["kernel"], np.float64)
        bias = np.asarray(params[name]["bias"], np.float64)
        assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
        assert np.abs(kernel).max() > 0.95 * bound  # hundreds of samples reach the edge
        assert kernel.std() == pytest.approx(bound / math.sqrt(3), rel=0.15)
        assert np.any(bias != 0)
    for name in ("bn1", "bn2", "bn3"):
        assert np.all(params[name]["scale"] == 1) and not np.any(params[name]["bias"])


def test_resnet_conv_init_is_kaiming_fan_out(resnet_tiny):
    trunk = resnet_tiny[1]["params"]["trunk"]
    stem = np.asarray(trunk["conv1"]["kernel"], np.float64)
    assert stem.shape == (7, 7, 3, 64) and "bias" not in trunk["conv1"]
    assert stem.std() == pytest.approx(math.sqrt(2.0 / (7 * 7 * 64)), rel=0.05)
    conv = np.asarray(trunk["layer2_0"]["conv1"]["kernel"], np.float64)
    assert conv.std() == pytest.approx(math.sqrt(2.0 / (3 * 3 * 128)), rel=0.05)
    assert np.all(trunk["bn1"]["scale"] == 1) and not np.any(trunk["bn1"]["bias"])


def test_init_depends_on_key_only():
    (_, a), (_, b), (_, c) = _init("convnet", 3), _init("convnet", 3), _init("convnet", 4)
    k = lambda v: np.asarray(v["params"]["conv1"]["kernel"])  # noqa: E731
    assert np.array_equal(k(a), k(b)) and not np.array_equal(k(a), k(c))


# ---- evaluation mode --------------------------------------------------------------

@pytest.mark.parametrize("fixture", ["convnet", "resnet_tiny"])
def test_eval_mode_is_deterministic_and_row_independent(fixture, request):
    model, variables = request.getfixturevalue(fixture)
    x = _images(4)
    latent, logits = _eval(model, variables, x)
    latent2, logits2 = _eval(model, variables, x)
    assert np.array_equal(latent, latent2) and np.array_equal(logits, logits2)
    other = x.at[1:].set(_images(3, seed=7))  # same row 0, different companions
    latent3, logits3 = _eval(model, variables, other)
    np.testing.assert_allclose(latent3[0], latent[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(logits3[0], logits[0], rtol=1e-6, atol=1e-7)
    assert not np.allclose(latent3[1], latent[1])


# ---- the BatchNorm mask -------------------------------------------------------------

MASK = jnp.array([1.0, 1.0, 1.0, 1.0, 0.0, 0.0])


def _train_apply(model, variables, x, mask=None):
    def apply(v, x, mask):
        rngs = {"dropout": jax.random.key(5)}
        return model.apply(v, x, train=True, mask=mask, rngs=rngs, mutable=["batch_stats"])

    return jax.jit(apply)(variables, x, mask)


@pytest.mark.parametrize("fixture", ["convnet", "resnet_tiny"])
def test_padded_rows_do_not_touch_statistics_or_valid_rows(fixture, request):
    model, variables = request.getfixturevalue(fixture)
    x = _images(6)
    (latent, logits), stats = _train_apply(model, variables, x, MASK)
    junk = x.at[4:].set(50.0)  # wildly different padding
    (latent_j, logits_j), stats_j = _train_apply(model, variables, junk, MASK)
    np.testing.assert_array_equal(logits_j[:4], logits[:4])
    np.testing.assert_array_equal(latent_j[:4], latent[:4])
    jax.tree_util.tree_map(np.testing.assert_array_equal, stats_j, stats)
    # without the mask the padding does change them (the test can fail)
    (_, logits_u), _ = _train_apply(model, variables, junk)
    assert not np.allclose(logits_u[:4], logits[:4], atol=1e-4)


def test_masked_batch_equals_the_valid_rows_alone(convnet):
    model, variables = convnet
    x = _images(6)
    (latent, logits), stats = _train_apply(model, variables, x, MASK)
    (latent4, logits4), stats4 = _train_apply(model, variables, x[:4])
    np.testing.assert_allclose(logits[:4], logits4, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(latent[:4], latent4, rtol=1e-4, atol=1e-6)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                           stats, stats4)


def test_batch_statistics_against_numpy(convnet):
    model, variables = convnet
    x = _images(6)
    _, stats = _train_apply(model, variables, x, MASK)
    conv1 = jax.jit(lambda v, x: model.apply(v, x, method=lambda m, x: m.convs[0](x)))(variables, x)
    valid = np.asarray(conv1, np.float64)[:4]  # (4, 50, 50, 4 phases, 8): every conv1 pixel once
    assert valid.shape == (4, 50, 50, 4, 8)
    pixels = valid.reshape(-1, 8)
    mean = pixels.mean(axis=0)
    var = pixels.var(axis=0)  # flax uses the biased variance
    bn1 = stats["batch_stats"]["bn1"]
    # running = 0.9 running + 0.1 batch, starting from mean 0 and var 1 (PyTorch momentum 0.1)
    np.testing.assert_allclose(bn1["mean"], 0.1 * mean, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(bn1["var"], 0.9 + 0.1 * var, rtol=1e-5)


def test_registry_names():
    assert {"convnet", "resnet18", "_resnet_tiny"} <= set(MODELS)


def test_phase_conv_equals_a_plain_convolution():
    """The first block's phase layout computes the same conv outputs, rearranged."""
    from jaxrobust.models import convnet as convnet_lib

    x = jax.random.uniform(jax.random.key(0), (2, 100, 100, 3))
    for k, pad in ((3, 1), (5, 2), (7, 3)):
        w = jax.random.normal(jax.random.key(k), (k, k, 3, 4))
        plain = jax.lax.conv_general_dilated(x, w, (1, 1), ((pad, pad), (pad, pad)),
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
        phases = np.asarray(plain).reshape(2, 50, 2, 50, 2, 4).transpose(0, 1, 3, 2, 4, 5).reshape(2, 50, 50, 4, 4)
        np.testing.assert_allclose(np.asarray(convnet_lib.phase_conv(x, w, pad)), phases, atol=2e-5)
