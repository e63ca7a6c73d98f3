"""jaxrobust.robustness: margins vs brute force, bisection vs a dense scan, Kaplan-Meier by hand."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrobust import robustness
from jaxrobust.models.common import Head


class TinyNet(nn.Module):
    """(N, 4, 4, 3) -> latent (N, 5) -> logits (N, 3); a nonlinear trunk and the real Head."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = jnp.tanh(nn.Dense(8, kernel_init=nn.initializers.normal(1.0))(x.reshape(x.shape[0], -1)))
        z = nn.Dense(5, kernel_init=nn.initializers.normal(1.0))(h)
        logits = Head(3, name="head")(z)
        return z, logits


def _tiny(seed=0):
    model = TinyNet()
    variables = model.init(jax.random.key(seed), jnp.zeros((1, 4, 4, 3)))
    # Head init is N(0, 0.01): scale it up so classes differ by O(1) logits.
    variables = jax.tree_util.tree_map(lambda a: a, variables)
    fc = variables["params"]["head"]["fc"]
    fc = {"kernel": fc["kernel"] * 100.0, "bias": jnp.array([0.3, -0.2, 0.1])}
    params = dict(variables["params"], head={"fc": fc})
    return model, {"params": params}


def test_head_affine_reproduces_the_model_logits():
    model, variables = _tiny()
    x = jax.random.uniform(jax.random.key(1), (6, 4, 4, 3))
    z, logits = model.apply(variables, x)
    kernel, bias = robustness.head_affine(variables)
    np.testing.assert_allclose(np.asarray(z, np.float64) @ kernel + bias, logits, rtol=1e-5, atol=1e-5)


def test_margin_matches_brute_force_walk_along_the_normal():
    rng = np.random.default_rng(0)
    kernel, bias = rng.normal(size=(6, 4)), rng.normal(size=4)
    z = rng.normal(size=(12, 6)) * 2.0
    labels = np.argmax(z @ kernel + bias, 1)  # correctly classified latents
    pairwise = robustness.pairwise_margins(z, labels, kernel, bias)
    exact = robustness.margin(z, labels, kernel, bias)
    step = 1e-3
    for i in range(len(z)):
        t = labels[i]
        for k in range(4):
            if k == t:
                assert np.isnan(pairwise[i, k])
                continue
            normal = kernel[:, k] - kernel[:, t]
            normal /= np.linalg.norm(normal)
            # walk until logit k reaches logit t (the pairwise boundary)
            s = np.arange(0, pairwise[i, k] + 0.1, step)
            path = z[i][None] + s[:, None] * normal[None]
            logits = path @ kernel + bias
            crossed = np.flatnonzero(logits[:, k] >= logits[:, t])[0]
            assert abs(s[crossed] - pairwise[i, k]) <= step
        # the nearest boundary's normal: the argmax changes exactly at the margin
        k = int(np.nanargmin(pairwise[i]))
        normal = kernel[:, k] - kernel[:, t]
        normal /= np.linalg.norm(normal)
        s = np.arange(0, exact[i] + 0.1, step)
        moved = np.argmax((z[i][None] + s[:, None] * normal[None]) @ kernel + bias, 1)
        assert abs(s[np.flatnonzero(moved != t)[0]] - exact[i]) <= step
        # no direction changes the argmax sooner (exact distance to the union of half-spaces)
        dirs = rng.normal(size=(200, 6))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        inside = z[i][None, None] + np.linspace(0, exact[i] * 0.999, 50)[None, :, None] * dirs[:, None]
        assert np.all(np.argmax(inside @ kernel + bias, -1) == t)


def test_margin_is_negative_when_misclassified():
    kernel, bias = np.eye(2), np.zeros(2)
    m = robustness.margin(np.array([[0.0, 1.0]]), np.array([0]), kernel, bias)
    np.testing.assert_allclose(m, [-1.0 / np.sqrt(2.0)])


@pytest.mark.parametrize("targeted", [True, False])
def test_bisection_matches_dense_scan(targeted):
    model, variables = _tiny()
    rng = np.random.default_rng(3)
    checked = 0
    for trial in range(40):
        image = rng.uniform(0.2, 0.8, size=(1, 4, 4, 3)).astype(np.float32)
        row, col = rng.integers(0, 4, size=2)
        end = rng.choice([0.0, 1.0], size=3).astype(np.float32)
        start = image[0, row, col]
        grid = np.linspace(0.0, 1.0, 20001, dtype=np.float32)
        scan = np.repeat(image, len(grid), 0)
        scan[:, row, col] = start[None] + grid[:, None] * (end - start)[None]
        z_scan, logits = model.apply(variables, jnp.asarray(scan))
        probs = np.asarray(jax.nn.softmax(logits, -1), np.float64)
        label = int(np.argmax(probs[0]))
        objective = int(np.argmax(probs[-1])) if targeted else label
        if targeted and objective == label:
            continue
        p = probs[:, objective]
        if targeted:
            threshold = 0.5 * (p[0] + p[-1])
            flipped = p > threshold
        else:
            threshold = 0.5 * (p[0] + p[-1])
            flipped = p < threshold
        if flipped[0] or not flipped[-1] or abs(p[-1] - p[0]) < 0.02:
            continue
        first = grid[np.flatnonzero(flipped)[0]]
        pixel = np.array([[row, col, *end]], np.float32)
        out = robustness.minimal_flip(model, variables, image, pixel, np.array([objective]), targeted,
                                      float(threshold), iterations=20, batch=4)
        assert out["valid"][0]
        # one crossing on these segments: bisection finds it to within the scan's step
        if np.sum(np.diff(flipped.astype(int)) != 0) == 1:
            assert abs(out["amplitude"][0] - first) <= 1e-4
        assert out["lower"][0] <= out["amplitude"][0] <= out["lower"][0] + 2.0 ** -20 + 1e-7
        # dE: latent at the returned amplitude vs the clean latent, recomputed independently
        at = image.copy()
        at[0, row, col] = start + np.float32(out["amplitude"][0]) * (end - start)
        z_at, _ = model.apply(variables, jnp.asarray(at))
        np.testing.assert_allclose(out["dE"][0], np.linalg.norm(np.asarray(z_at[0]) - np.asarray(z_scan[0])),
                                   rtol=1e-4, atol=1e-5)
        checked += 1
        if checked == 3:
            break
    assert checked >= 2


def test_bisection_flags_a_segment_without_a_crossing():
    model, variables = _tiny()
    image = np.full((2, 4, 4, 3), 0.5, np.float32)
    pixel = np.array([[0, 0, 0.5, 0.5, 0.5], [1, 1, 0.5, 0.5, 0.5]], np.float32)  # no change at all
    out = robustness.minimal_flip(model, variables, image, pixel, np.array([0, 1]), True, 0.999, batch=4)
    assert not out["valid"].any() and np.isnan(out["amplitude"]).all()


def test_kaplan_meier_hand_worked_example():
    # times 1, 2, 2+, 2, 3, 4+, 5 ... hand-worked:
    #   t=1: n=6, d=1 -> S = 5/6
    #   t=2: n=5 (2, 2+, 3, 4+, 5), d=1 -> S = 5/6 * 4/5 = 2/3
    #   t=3: n=3, d=1 -> S = 2/3 * 2/3 = 4/9   (first S <= 0.5: median 3)
    #   t=5: n=1, d=1 -> S = 0
    # Greenwood at 3: S^2 (1/(6*5) + 1/(5*4) + 1/(3*2)) = 16/81 * 1/4 = 4/81
    times = np.array([1, 2, 2, 3, 4, 5], float)
    observed = np.array([1, 1, 0, 1, 0, 1], bool)
    curve = robustness.kaplan_meier(times, observed)
    np.testing.assert_allclose(curve["time"], [1, 2, 3, 5])
    np.testing.assert_allclose(curve["at_risk"], [6, 5, 3, 1])
    np.testing.assert_allclose(curve["survival"], [5 / 6, 2 / 3, 4 / 9, 0.0])
    np.testing.assert_allclose(curve["variance"][2], 4 / 81)
    med = robustness.km_median(times, observed)
    assert med["median"] == 3.0 and med["n"] == 6 and med["events"] == 4
    # lower band S - 1.96 se: t=1: 5/6 - 1.96 sqrt(25/36/30) = 0.535; t=2: 2/3 - 1.96 sqrt(4/9/12) = 0.29
    # upper band: t=3: 4/9 + 1.96 * 2/9 = 0.88; t=5: 0 -> interval [2, 5]
    assert med["ci"] == (2.0, 5.0)


def test_km_median_without_censoring_is_the_lower_sample_median():
    x = np.array([4.0, 1.0, 3.0, 2.0])
    assert robustness.km_median(x, np.ones(4, bool))["median"] == 2.0  # S(2) = 0.5
    assert robustness.km_median(np.array([1.0, 5, 5, 5]), np.array([1, 0, 0, 0], bool))["median"] == np.inf


def test_summarize_censors_failures_at_their_margin():
    attack = dict(attacked=np.array([1, 1, 1, 0], bool), success=np.array([1, 0, 1, 0], bool),
                  generations=np.array([3, 80, 10, 0]))
    measures = dict(margin=np.array([0.5, 2.0, 1.0, 9.0]), margin_target=np.array([0.6, np.nan, 1.2, np.nan]),
                    flip_amplitude=np.array([0.3, np.nan, 0.7, np.nan]), flip_dE=np.array([0.8, np.nan, 1.5, np.nan]),
                    flip_valid=np.array([1, 0, 1, 0], bool), dE_1p=np.array([3.0, 0.1, 4.0, 0.0]))
    s = robustness.summarize(measures, attack)
    # distance: events 0.8, 1.5; censored 2.0 -> S(0.8) = 2/3, S(1.5) = 1/3: median 1.5
    assert s["km_latent_distance_to_flip"]["median"] == 1.5
    # generations: events 3, 10, censored 80 -> median 10
    assert s["km_generations_to_flip"]["median"] == 10.0
    assert s["margin_median_attacked"] == 1.0 and s["flip_amplitude_median"] == 0.5
    assert s["attacked"] == 3 and s["successful"] == 2
    md = robustness.render_markdown({"Reg": s, "DA": s})
    assert "| Reg | DA |" in md and "1.5" in md
