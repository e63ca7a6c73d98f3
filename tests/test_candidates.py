"""Candidate encoding, chunked scoring, and the evaluators' shared interface."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust import attack, candidates, incremental, parallel, scan
from jaxrobust.models import build_model

H, W = 100, 60


def test_encode_is_exactly_inverted_by_decode_on_every_pixel():
    rows, cols = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    rgb = np.random.default_rng(0).uniform(size=rows.shape + (3,)).astype(np.float32)
    genes = candidates.encode(rows, cols, rgb, H, W)
    assert genes.shape == rows.shape + (5,) and float(genes.min()) >= 0 and float(genes.max()) <= 1
    row, col, colour = candidates.decode(genes, H, W)
    np.testing.assert_array_equal(np.asarray(row), rows)
    np.testing.assert_array_equal(np.asarray(col), cols)
    np.testing.assert_array_equal(np.asarray(colour), rgb)


def test_score_is_the_softmax_of_the_perturbed_image():
    """FullEvaluator.score on (image index, pixel, colour) batches against NumPy by hand."""
    rng = np.random.default_rng(1)
    images = rng.uniform(size=(3, H, W, 3)).astype(np.float32)
    weights = rng.normal(size=(H * W * 3, 4)).astype(np.float32) / 100

    def logits_fn(x):
        return x.reshape(len(x), -1) @ weights

    ev = candidates.FullEvaluator(logits_fn, chunk=8)
    image = np.array([2, 0, 2, 1, 0])
    row, col = np.array([0, 99, 50, 7, 7]), np.array([59, 0, 30, 7, 8])
    rgb = rng.uniform(size=(5, 3)).astype(np.float32)
    probs = np.asarray(jax.jit(ev.score)(ev.prepare(jnp.asarray(images)), jnp.asarray(image),
                                         candidates.encode(row, col, rgb, H, W)))
    perturbed = images[image].astype(np.float64)
    perturbed[np.arange(5), row, col] = rgb
    logits = perturbed.reshape(5, -1) @ weights.astype(np.float64)
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-6)


def test_chunked_scores_skip_inactive_tasks():
    calls = []

    def score(task, genes):
        calls.append(1)
        return jnp.ones((genes.shape[0], 3)) * (task[:, None] + 1)

    genes = jnp.zeros((4, 10, 5))
    active = jnp.array([False, True, False, True])
    probs = np.asarray(jax.jit(lambda g, a: candidates.chunked_scores(score, g, a, 7))(genes, active))
    np.testing.assert_array_equal(probs[0], 0)
    np.testing.assert_array_equal(probs[2], 0)
    np.testing.assert_array_equal(probs[1], 2)
    np.testing.assert_array_equal(probs[3], 4)


def linear_logits(params, x):
    """A tiny model: (B, H, W, 3) -> (B, 3) logits, weights params {"w", "b"}."""
    return (x.reshape(len(x), -1) - 0.5) @ params["w"] + params["b"]


def test_evaluators_of_the_same_shapes_share_one_compiled_attack_and_scan():
    """Two weight sets, one compile each of the attack's and the scan's jitted functions; every
    result equals that of a fresh evaluator whose weights are baked into its own program."""
    rng = np.random.default_rng(2)
    images = rng.uniform(0.3, 0.7, size=(3, 4, 4, 3)).astype(np.float32)
    weight_sets = [{"w": jnp.asarray(rng.normal(size=(4 * 4 * 3, 3)), jnp.float32),
                    "b": jnp.asarray(rng.normal(size=3), jnp.float32)} for _ in range(2)]
    spec = attack.AttackSpec(population=8, max_generations=4, block_generations=1, tasks_per_call=2,
                             chunk_candidates=16, target_threshold=0.9)
    objective = np.array([0, 1, 2])
    init_fn, block_fn = attack._compile(spec, True, None)
    scan_fn = scan._compiled_scan(spec.target_threshold, spec.untargeted_threshold, parallel.make_mesh())
    sizes = lambda: (init_fn._cache_size(), block_fn._cache_size(), scan_fn._cache_size())  # noqa: E731
    before = sizes()

    def run(evaluator):
        res = attack.run_attack(evaluator, images, objective, np.arange(3), jax.random.key(3), spec, True,
                                progress=False)
        return tuple(res) + tuple(scan.scan_with_evaluator(evaluator, images, objective, scan.corner_colours(),
                                                           spec).values())

    shared = [run(candidates.FullEvaluator(linear_logits, 16, params)) for params in weight_sets]
    assert sizes() == tuple(n + 1 for n in before)
    assert not np.array_equal(shared[0][3], shared[1][3])  # the weights matter: different fitness
    for params, result in zip(weight_sets, shared):
        baked = run(candidates.FullEvaluator(functools.partial(linear_logits, params), 16))
        for got, expected in zip(result, baked):
            np.testing.assert_array_equal(got, expected)


def test_model_evaluators_differ_only_in_their_leaves():
    """make_evaluator's evaluators of two weight sets of one architecture: equal static parts
    (what the jitted functions are cached on, strides included), every leaf an array."""
    for arch in ("convnet", "resnet18"):
        model = build_model(arch)
        shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
        weights = [jax.tree_util.tree_map(lambda s: jnp.asarray(rng.uniform(0.5, 1.5, s.shape), s.dtype), shapes)
                   for rng in (np.random.default_rng(0), np.random.default_rng(1))]  # no init: random weights
        for name in ("full", "incremental"):
            evaluators = [incremental.make_evaluator(name, model, v, 16) for v in weights]
            (leaves0, static0), (leaves1, static1) = (jax.tree_util.tree_flatten(e) for e in evaluators)
            assert static0 == static1 and len(leaves0) == len(leaves1) > 0
            assert all(isinstance(x, jax.Array) for x in leaves0 + leaves1)
            assert any(not np.array_equal(a, b) for a, b in zip(leaves0, leaves1))
            rebuilt = jax.tree_util.tree_unflatten(static1, leaves1)
            assert (rebuilt.name, rebuilt.chunk) == (name, 16)
            assert all(a is b for a, b in zip(jax.tree_util.tree_leaves(rebuilt), leaves1))
