"""Incremental one-pixel scoring equals full forward passes, and the attack does not change."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrobust import attack, candidates, incremental
from jaxrobust.models import build_model
from jaxrobust.models import folded as folded_lib

H = W = 100


def numpy_variables(model, seed: int) -> tuple[dict, np.random.Generator]:
    """Random variables of `model` (on H x W x 3 images) drawn with NumPy: kernels N(0, 1/fan_in)
    (LeCun's scale, flax's default), biases 0, BatchNorm scale 1, statistics (0, 1).

    Only the shapes come from flax (eval_shape): compiling model.init, or running it eagerly op by
    op, took ~10 s per model. Returns the variables and the generator for further draws.
    """
    shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                                               jnp.zeros((1, H, W, 3))))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        if name == "kernel":
            return rng.normal(0.0, 1.0 / np.sqrt(np.prod(leaf.shape[:-1])), leaf.shape)
        return np.ones(leaf.shape) if name in ("scale", "var") else np.zeros(leaf.shape)

    return jax.tree_util.tree_map_with_path(draw, dict(shapes)), rng


def as_dtype(variables, dtype):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), variables)


def convnet_with_statistics(seed=0, dtype=jnp.float32):
    """A ConvNet with random weights and non-trivial BatchNorm running statistics."""
    model = build_model("convnet")
    variables, rng = numpy_variables(model, seed)
    for stats in variables["batch_stats"].values():
        stats["mean"] = 0.3 * rng.normal(size=stats["mean"].shape)
        stats["var"] = rng.uniform(0.2, 3.0, stats["var"].shape)
    for name in ("bn1", "bn2", "bn3"):
        shape = variables["params"][name]["scale"].shape
        variables["params"][name] = {"scale": rng.uniform(0.5, 1.5, shape), "bias": 0.2 * rng.normal(size=shape)}
    for layer in variables["params"].values():  # non-zero biases
        if "bias" in layer and "kernel" in layer:
            layer["bias"] = 0.1 * rng.normal(size=layer["bias"].shape)
    return model, as_dtype(variables, dtype)


def candidate_genes(n, seed=0):
    """Random genes plus every corner, edge midpoint and near-edge rounding case."""
    rng = np.random.default_rng(seed)
    genes = rng.uniform(size=(n, 5))
    special = [(0, 0), (0, 1), (1, 0), (1, 1), (0, 0.5), (0.5, 0), (1, 0.5), (0.5, 1), (0.005, 0.005),
               (0.015, 0.025), (0.975, 0.985), (0.955, 0.965), (0.03, 0.97), (0.235, 0.765), (0.96, 0.04),
               (0.485, 0.495)]
    genes[: len(special), :2] = special
    return genes


def logits_on_images(evaluator, images, genes):
    """Logits (N, classes) of candidate genes[i] (N, 5) on images[i] (N, H, W, 3)."""
    return evaluator.logits(evaluator.prepare(images), jnp.arange(len(genes)), genes)


def jitted(fn, *args):
    """fn(*args) as one compiled program (eager, these models compile hundreds of small ones)."""
    return jax.jit(fn)(*args)


@pytest.fixture(scope="module")
def convnet():
    return convnet_with_statistics()


def test_folding_batchnorm_keeps_the_function(convnet):
    model, variables = convnet
    x = jax.random.uniform(jax.random.key(3), (4, H, W, 3), minval=0.4, maxval=0.9)
    full = model.apply(variables, x, train=False)[1]
    folded = folded_lib.convnet_logits(folded_lib.fold_convnet(variables), x)
    np.testing.assert_allclose(np.asarray(folded), np.asarray(full), rtol=1e-5, atol=1e-5)


def test_incremental_logits_equal_full_forward_float32(convnet):
    model, variables = convnet
    n = 200
    images = jax.random.uniform(jax.random.key(4), (n, H, W, 3), minval=0.45, maxval=0.9)
    genes = jnp.asarray(candidate_genes(n), jnp.float32)
    evaluator = incremental.IncrementalEvaluator(model, variables, 100)
    inc = np.asarray(jax.jit(functools.partial(logits_on_images, evaluator))(images, genes))
    full = np.asarray(model.apply(variables, candidates.perturb(images, genes), train=False)[1])
    scale = np.abs(full).max()
    assert np.abs(inc - full).max() / scale < 1e-5


def test_incremental_logits_equal_full_forward_float64():
    with jax.enable_x64(True):
        model, variables = convnet_with_statistics(1, jnp.float64)
        n = 64
        images = jax.random.uniform(jax.random.key(5), (n, H, W, 3), jnp.float64, minval=0.45, maxval=0.9)
        genes = jnp.asarray(candidate_genes(n, 1), jnp.float64)
        evaluator = incremental.IncrementalEvaluator(model, variables, 64)
        inc = np.asarray(jitted(functools.partial(logits_on_images, evaluator), images, genes))
        folded = folded_lib.fold_convnet(variables)
        full = np.asarray(jitted(lambda x, g: folded_lib.convnet_logits(folded, candidates.perturb(x, g)), images, genes))
        assert inc.dtype == np.float64
        assert np.abs(inc - full).max() / np.abs(full).max() < 1e-10


def test_unchanged_pixel_gives_the_clean_logits(convnet):
    model, variables = convnet
    images = jax.random.uniform(jax.random.key(6), (3, H, W, 3), minval=0.45, maxval=0.9)
    rows, cols = np.array([0, 50, 99]), np.array([99, 13, 0])
    pixel = np.asarray(images)[np.arange(3), rows, cols]
    genes = jnp.asarray(np.concatenate([rows[:, None] / 100, cols[:, None] / 100, pixel], 1), jnp.float32)
    evaluator = incremental.IncrementalEvaluator(model, variables, 10)
    clean = np.asarray(model.apply(variables, images, train=False)[1])
    np.testing.assert_allclose(np.asarray(logits_on_images(evaluator, images, genes)), clean, rtol=1e-5, atol=1e-6)


def test_attack_with_incremental_equals_full_evaluator(convnet):
    model, variables = convnet
    images = np.asarray(jax.random.uniform(jax.random.key(8), (4, H, W, 3), minval=0.45, maxval=0.9))
    probs = np.asarray(jax.nn.softmax(model.apply(variables, jnp.asarray(images), train=False)[1]))
    labels = probs.argmax(1)
    targets = (labels + 1) % 3
    # a threshold between the targets' starting and reachable probabilities: some succeed
    threshold = float(np.median(probs[np.arange(4), targets])) + 0.002
    spec = attack.AttackSpec(population=60, max_generations=8, block_generations=4, tasks_per_call=4,
                             chunk_candidates=120, target_threshold=threshold)
    runs = {}
    for name in ("full", "incremental"):
        evaluator = incremental.make_evaluator(name, model, variables, spec.chunk_candidates)
        assert evaluator.name == name
        runs[name] = attack.run_attack(evaluator, images, targets, np.arange(4), jax.random.key(9), spec,
                                       targeted=True, progress=False)
    full, inc = runs["full"], runs["incremental"]
    np.testing.assert_array_equal(inc.success, full.success)
    np.testing.assert_array_equal(inc.generations, full.generations)
    np.testing.assert_allclose(inc.genes, full.genes, rtol=1e-6)
    np.testing.assert_allclose(inc.fitness, full.fitness, rtol=1e-4)


def resnet_with_statistics(seed=0, dtype=jnp.float32):
    """The test-size ResNet (one block per stage) with non-trivial BatchNorm running statistics."""
    model = build_model("_resnet_tiny")
    variables, rng = numpy_variables(model, seed)

    def perturb_stat(path, a):
        if path[-1].key == "mean":
            return 0.01 * rng.normal(size=a.shape)
        return rng.uniform(0.3, 1.5, a.shape)

    variables["batch_stats"] = jax.tree_util.tree_map_with_path(perturb_stat, variables["batch_stats"])
    return model, as_dtype(variables, dtype)


@pytest.mark.parametrize("x64", [False, True])
def test_resnet_incremental_logits_equal_full_forward(x64):
    """Windows through the stem and the first stage, then the rest in full: the same logits."""
    dtype = jnp.float64 if x64 else jnp.float32
    with jax.enable_x64(x64):
        model, variables = resnet_with_statistics(0, dtype)
        n = 24
        images = jax.random.uniform(jax.random.key(4), (n, H, W, 3), dtype, minval=0.45, maxval=0.9)
        genes = jnp.asarray(candidate_genes(n, 2), dtype)
        evaluator = incremental.IncrementalEvaluator(model, variables, n)
        inc = np.asarray(jitted(functools.partial(logits_on_images, evaluator), images, genes))
        resnet_logits = jax.jit(functools.partial(folded_lib.resnet_logits, evaluator.folded))
        full = np.asarray(resnet_logits(candidates.perturb(images, genes)))
        clean = np.asarray(resnet_logits(images))
        assert np.abs(full - clean).max() > 100 * np.abs(inc - full).max()  # the pixel matters more than the error
        assert np.abs(inc - full).max() / np.abs(full).max() < (1e-10 if x64 else 1e-5)
        reference = np.asarray(jitted(lambda x: model.apply(variables, x, train=False)[1],
                                      candidates.perturb(images, genes)))
        np.testing.assert_allclose(full, reference, rtol=1e-4, atol=1e-7)  # folding keeps the function


def test_resnet_flops_saved_is_about_a_quarter():
    assert 0.2 < incremental.resnet_flops_saved() < 0.3


def test_auto_picks_incremental_for_supported_models(convnet):
    model, variables = convnet
    assert incremental.make_evaluator("auto", model, variables, 10).name == "incremental"
    resnet, res_vars = resnet_with_statistics()
    assert incremental.make_evaluator("auto", resnet, res_vars, 10).name == "incremental"
    assert incremental.make_evaluator("full", resnet, res_vars, 10).name == "full"


def test_bad_use_is_refused(convnet):
    import flax.linen as nn

    model, variables = convnet

    class Other(nn.Module):
        num_classes: int = 3

        @nn.compact
        def __call__(self, x, train=False):
            return x, nn.Dense(3)(x.reshape(len(x), -1))

    with pytest.raises(ValueError, match="supports the ConvNet and ResNet18"):
        incremental.IncrementalEvaluator(Other(), {}, 10)
    with pytest.raises(ValueError, match="eval-mode BatchNorm"):
        incremental.IncrementalEvaluator(model, {"params": variables["params"]}, 10)
    with pytest.raises(ValueError, match="supports the ConvNet and ResNet18"):
        incremental.make_evaluator("incremental", Other(), {}, 10)
    assert incremental.make_evaluator("auto", Other(), {}, 10).name == "full"
    with pytest.raises(ValueError, match="attack.evaluator"):
        incremental.make_evaluator("fast", model, variables, 10)
