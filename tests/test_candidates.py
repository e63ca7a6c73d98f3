"""Candidate encoding, chunked scoring, and the evaluators' shared interface."""
import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust import candidates

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
