"""Tests of jaxrobust.losses against hand-worked values and float64 NumPy loops written
from the definitions (Ćiprijanović et al. 2022, section 3.2 and eq. 2; the published training.py): PyTorch's weighted
cross-entropy, class weights N / (M n_m), and the 19-kernel RBF MMD (biased with clamps,
unbiased), with masks, finite-difference gradients and float32 cancellation."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrobust import losses

WIDTHS = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1, 5, 10, 15, 20, 25, 30, 35, 100, 1e3, 1e4, 1e5, 1e6]


# ---- NumPy float64 references ---------------------------------------------------------

def ce_reference(logits, labels, weights):
    """PyTorch CrossEntropyLoss(weight=w), mean reduction, one row at a time."""
    num = den = 0.0
    for row, y in zip(np.asarray(logits, np.float64), labels):
        log_z = math.log(sum(math.exp(v) for v in row))
        num += weights[y] * (log_z - row[y])
        den += weights[y]
    return num / den


def kernel(a, b):
    d2 = sum((float(p) - float(q)) ** 2 for p, q in zip(a, b))
    return sum(math.exp(-d2 / (2.0 * s)) for s in WIDTHS)


def mean_kernel(x, y, skip_diagonal=False):
    values = [kernel(a, b) for i, a in enumerate(x) for j, b in enumerate(y)
              if not (skip_diagonal and i == j)]
    return sum(values) / len(values)


def mmd_reference(x, y, estimator="biased"):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    unbiased = estimator == "unbiased"
    value = mean_kernel(x, x, unbiased) + mean_kernel(y, y, unbiased) - 2 * mean_kernel(x, y)
    if not unbiased:
        value = max(max(value, 0.0), 1e-4)  # training.py: clamp(min=0), then clamp(min=1e-4)
    return value


def latents(seed, n, m, d=6, spread=3.0):
    """Source and target rows with distances from ~1e-3 to ~10, so every width matters."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, spread, (n, d))
    y = rng.normal(0.0, spread, (m, d))
    y[0] = x[0] + 1e-3 * rng.normal(size=d)  # near twins exercise the 1e-6..1e-4 widths
    y[1] = x[1] + 3e-2 * rng.normal(size=d)
    x[-1] = x[-2] + 1e-2 * rng.normal(size=d)
    return x, y


# ---- class weights ---------------------------------------------------------------------

def test_class_weights_by_hand():
    labels = np.array([0] * 5 + [1] * 3 + [2] * 2)  # N = 10, M = 3
    w = losses.class_weights(labels)
    np.testing.assert_allclose(w, [10 / 15, 10 / 9, 10 / 6], rtol=1e-7)
    assert w.dtype == np.float32
    assert float(np.sum(w * np.bincount(labels))) == pytest.approx(10 / 3 * 3)  # sum w n = N


def test_class_weights_need_every_class():
    with pytest.raises(ValueError, match="counts"):
        losses.class_weights(np.array([0, 0, 1]))


# ---- weighted cross-entropy ------------------------------------------------------------

def test_weighted_ce_hand_worked():
    # zero logits: every nll is log 3, whatever the weights
    loss = losses.weighted_cross_entropy(jnp.zeros((4, 3)), jnp.array([0, 1, 2, 2]),
                                         jnp.array([0.5, 2.0, 7.0]))
    assert float(loss) == pytest.approx(math.log(3), rel=1e-6)
    # two rows worked by hand
    logits = jnp.array([[math.log(2.0), 0.0, 0.0], [0.0, 0.0, math.log(6.0)]])
    # row 0, label 0: p = 2/4 -> nll ln 2; row 1, label 1: p = 1/8 -> nll ln 8
    loss = losses.weighted_cross_entropy(logits, jnp.array([0, 1]), jnp.array([1.0, 3.0, 5.0]))
    assert float(loss) == pytest.approx((1 * math.log(2) + 3 * math.log(8)) / 4, rel=1e-6)


def test_weighted_ce_matches_pytorch_semantics():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (9, 3))
    labels = rng.integers(0, 3, 9)
    weights = np.array([0.6, 1.1, 3.3])
    loss = losses.weighted_cross_entropy(jnp.asarray(logits, jnp.float32), jnp.asarray(labels),
                                         jnp.asarray(weights, jnp.float32))
    assert float(loss) == pytest.approx(ce_reference(logits, labels, weights), rel=1e-5)
    # not the plain mean of weighted nll (sum w nll / N)
    plain = ce_reference(logits, labels, np.ones(3))
    assert abs(float(loss) - plain) > 1e-3


def test_weighted_ce_mask_ignores_padding():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (8, 3)).astype(np.float32)
    labels = rng.integers(0, 3, 8)
    logits[5:] = [1e4, -1e4, 0.0]  # extreme padding rows
    weights = jnp.array([1.0, 2.0, 0.5])
    mask = jnp.array([1, 1, 1, 1, 1, 0, 0, 0], jnp.float32)
    loss = losses.weighted_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), weights, mask)
    assert float(loss) == pytest.approx(ce_reference(logits[:5], labels[:5], [1.0, 2.0, 0.5]), rel=1e-5)
    grad = jax.grad(lambda z: losses.weighted_cross_entropy(z, jnp.asarray(labels), weights, mask))(
        jnp.asarray(logits))
    assert not np.any(grad[5:]) and np.all(np.isfinite(grad))


def test_weighted_ce_gradient():
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        logits = rng.normal(0, 1, (5, 3))
        labels = np.array([0, 2, 1, 2, 0])
        weights = np.array([0.7, 1.3, 2.9])
        mask = np.array([1.0, 1.0, 0.0, 1.0, 1.0])
        def fn(z):
            return losses.weighted_cross_entropy(z, jnp.asarray(labels), jnp.asarray(weights),
                                                 jnp.asarray(mask))

        grad = np.asarray(jax.grad(fn)(jnp.asarray(logits)))
        # analytic: w_i m_i (softmax_i - onehot_i) / sum w m
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        wm = weights[labels] * mask
        analytic = wm[:, None] * (p - np.eye(3)[labels]) / wm.sum()
        np.testing.assert_allclose(grad, analytic, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(grad, finite_difference(fn, logits), rtol=1e-7, atol=1e-10)


def finite_difference(fn, x, h=1e-6):
    grad = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        step = np.zeros_like(x)
        step[idx] = h
        grad[idx] = (float(fn(jnp.asarray(x + step))) - float(fn(jnp.asarray(x - step)))) / (2 * h)
    return grad


# ---- MMD ------------------------------------------------------------------------------

def test_widths_are_the_papers():
    assert list(losses.MMD_WIDTHS) == WIDTHS and losses.MMD_FLOOR == 1e-4


def test_rbf_kernel_sum_by_hand():
    # d^2 = 0: every kernel is 1; d^2 = 2: exp(-1/s) summed
    assert float(losses.rbf_kernel_sum(jnp.zeros(()))) == pytest.approx(19.0)
    with jax.enable_x64(True):
        value = float(losses.rbf_kernel_sum(jnp.asarray(2.0, jnp.float64)))
    assert value == pytest.approx(sum(math.exp(-1.0 / s) for s in WIDTHS), rel=1e-14)


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_mmd_float64_matches_loops(estimator):
    x, y = latents(0, 7, 5)
    with jax.enable_x64(True):
        value = float(losses.mmd(jnp.asarray(x), jnp.asarray(y), estimator))
    expected = mmd_reference(x, y, estimator)
    assert value == pytest.approx(expected, rel=1e-10, abs=1e-12)
    assert abs(expected) > 1e-3  # away from the clamp: the comparison is of the estimator itself


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_mmd_float32_close_to_float64(estimator):
    x, y = latents(1, 8, 8)
    value = float(losses.mmd(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), estimator))
    x32, y32 = np.float32(x).astype(np.float64), np.float32(y).astype(np.float64)
    # float32 rounding scales with the kernel means (~19 per pair), not with their difference
    scale = mean_kernel(x32, x32) + mean_kernel(y32, y32) + 2 * mean_kernel(x32, y32)
    assert abs(value - mmd_reference(x32, y32, estimator)) < 1e-5 * scale
    assert abs(value - mmd_reference(x32, y32, estimator)) < 3e-5 * abs(value)


def test_biased_and_unbiased_differ_by_the_diagonal():
    # biased = unbiased-style sums + the diagonal: mean k(x,x) includes k(x_i, x_i) = 19
    x, y = latents(2, 4, 3)
    with jax.enable_x64(True):
        b = float(losses.mmd(jnp.asarray(x), jnp.asarray(y), "biased"))
        u = float(losses.mmd(jnp.asarray(x), jnp.asarray(y), "unbiased"))
    n, m = 4, 3
    kxx = mean_kernel(x, x, True) * n * (n - 1)
    kyy = mean_kernel(y, y, True) * m * (m - 1)
    kxy = mean_kernel(x, y)
    assert b == pytest.approx((kxx + 19 * n) / n**2 + (kyy + 19 * m) / m**2 - 2 * kxy, rel=1e-10)
    assert u == pytest.approx(kxx / (n * (n - 1)) + kyy / (m * (m - 1)) - 2 * kxy, rel=1e-10)


def test_biased_mmd_clamps():
    x, _ = latents(3, 5, 5)
    same = float(losses.mmd(jnp.asarray(x, jnp.float32), jnp.asarray(x, jnp.float32)))
    assert same == pytest.approx(1e-4, rel=1e-6)  # exactly 0 before the clamps
    with jax.enable_x64(True):
        # unbiased on identical sets is negative and not clamped
        u = float(losses.mmd(jnp.asarray(x), jnp.asarray(x), "unbiased"))
    assert u < 0 and u == pytest.approx(mmd_reference(x, x, "unbiased"), rel=1e-10)
    # a tiny positive value is lifted to the floor too: the same set shifted by 1e-5
    y = x.copy()
    y[:, 0] += 1e-5
    raw = mean_kernel(x, x) + mean_kernel(y, y) - 2 * mean_kernel(x, y)
    assert 1e-6 < raw < 1e-4
    with jax.enable_x64(True):
        assert float(losses.mmd(jnp.asarray(x), jnp.asarray(y))) == 1e-4


def test_unknown_estimator():
    with pytest.raises(ValueError, match="estimator"):
        losses.mmd(jnp.zeros((2, 3)), jnp.zeros((2, 3)), "linear")


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_mmd_masks_drop_padding_rows(estimator):
    x, y = latents(4, 5, 4)
    pad_x = np.concatenate([x, np.full((3, 6), 40.0)])  # padding far from everything
    pad_y = np.concatenate([y, x[:2] + 1e-4])  # and padding near the source rows
    mask_x = np.array([1.0] * 5 + [0.0] * 3)
    mask_y = np.array([1.0] * 4 + [0.0] * 2)
    with jax.enable_x64(True):
        value = float(losses.mmd(jnp.asarray(pad_x), jnp.asarray(pad_y), estimator,
                                 source_mask=jnp.asarray(mask_x), target_mask=jnp.asarray(mask_y)))
        unmasked = float(losses.mmd(jnp.asarray(pad_x), jnp.asarray(pad_y), estimator))
    assert value == pytest.approx(mmd_reference(x, y, estimator), rel=1e-10)
    assert abs(unmasked - value) > 1e-3


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_mmd_gradient_finite_differences(estimator):
    x, y = latents(5, 4, 3, d=3)
    mask_y = np.array([1.0, 1.0, 0.0])
    with jax.enable_x64(True):
        def fn(a):
            return losses.mmd(a, jnp.asarray(y), estimator, target_mask=jnp.asarray(mask_y))

        grad = np.asarray(jax.grad(fn)(jnp.asarray(x)))
        numeric = finite_difference(fn, x, h=1e-7)
        assert abs(float(fn(jnp.asarray(x)))) > 1e-3  # away from the clamp
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)
    assert np.abs(grad).max() > 1e-3


def test_mmd_gradient_target_side():
    x, y = latents(6, 3, 4, d=3)
    with jax.enable_x64(True):
        fn = lambda b: losses.mmd(jnp.asarray(x), b)  # noqa: E731
        grad = np.asarray(jax.grad(fn)(jnp.asarray(y)))
        np.testing.assert_allclose(grad, finite_difference(fn, y, h=1e-7), rtol=1e-5, atol=1e-8)


def test_clamped_mmd_has_zero_gradient():
    x, _ = latents(7, 3, 3, d=3)
    grad = jax.grad(lambda a: losses.mmd(a, jnp.asarray(x, jnp.float32)))(jnp.asarray(x, jnp.float32))
    assert not np.any(grad)


# ---- float32: exact differences versus the matrix-product shortcut -------------------

def test_pairwise_distances_survive_large_norms():
    # rows near 512 in every coordinate, 2^-10 apart: exactly representable in float32
    d = 4
    a = 512.0 + np.arange(3 * d, dtype=np.float32).reshape(3, d)
    b = a + np.float32(2.0**-10)
    got = np.asarray(losses.pairwise_sq_distances(jnp.asarray(a), jnp.asarray(b)))
    exact = ((a.astype(np.float64)[:, None] - b.astype(np.float64)[None]) ** 2).sum(-1)
    np.testing.assert_allclose(np.diag(got), d * 2.0**-20, rtol=1e-6)
    np.testing.assert_allclose(got, exact, rtol=1e-6)
    # the |a|^2 + |b|^2 - 2 a.b shortcut loses these distances entirely in float32
    a32, b32 = jnp.asarray(a), jnp.asarray(b)
    naive = np.asarray(jnp.sum(a32**2, 1)[:, None] + jnp.sum(b32**2, 1)[None] - 2 * a32 @ b32.T)
    assert np.all(np.abs(np.diag(naive) - d * 2.0**-20) >= 0.5 * d * 2.0**-20)
    # and the small-width kernels see the difference: exp(-4 2^-20 / 2e-6) = 0.15
    k = np.asarray(losses.rbf_kernel_sum(jnp.asarray(np.diag(got)), (1e-6,)))
    np.testing.assert_allclose(k, math.exp(-d * 2.0**-20 / 2e-6), rtol=1e-5)


def test_pairwise_distances_against_numpy():
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(5, 7)), rng.normal(size=(4, 7))
    with jax.enable_x64(True):
        got = np.asarray(losses.pairwise_sq_distances(jnp.asarray(a), jnp.asarray(b)))
    expected = np.array([[np.sum((p - q) ** 2) for q in b] for p in a])
    np.testing.assert_allclose(got, expected, rtol=1e-13)


def _explicit_self_distances(x):
    """Autodiff's reference: the plain pairwise differences (tested against NumPy above)."""
    return losses.pairwise_sq_distances(x, x)


def test_self_distance_gradient_equals_autodiff_of_differences_float64():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(9, 6))
    weights = rng.normal(size=(9, 9))  # an arbitrary, asymmetric cotangent
    with jax.enable_x64(True):
        def loss(fn, a):
            return jnp.sum(jnp.asarray(weights) * jnp.sin(fn(a)))

        ours = jax.grad(lambda a: loss(losses.self_sq_distances, a))(jnp.asarray(x))
        reference = jax.grad(lambda a: loss(_explicit_self_distances, a))(jnp.asarray(x))
        np.testing.assert_allclose(np.asarray(losses.self_sq_distances(jnp.asarray(x))),
                                   np.asarray(_explicit_self_distances(jnp.asarray(x))), rtol=1e-14)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(reference), rtol=1e-12, atol=1e-12)


def test_mmd_gradient_float32_with_a_near_twin_matches_float64():
    # a source and a target latent 1e-3 apart: the small kernel widths give that pair a large
    # weight; the written-out gradient must agree with float64 as closely as autodiff through
    # the explicit differences does (the |x|^2 - 2 x.y expansion missed by 0.3 % of the scale)
    source, target = latents(12, 128, 128, d=256)
    target[0] = source[0] + 1e-3
    with jax.enable_x64(True):
        exact = np.asarray(jax.grad(losses.mmd)(jnp.asarray(source), jnp.asarray(target)))
    s32, t32 = jnp.asarray(source, jnp.float32), jnp.asarray(target, jnp.float32)
    ours = np.asarray(jax.grad(losses.mmd)(s32, t32))

    def explicit_mmd(a, b):
        joint = jnp.concatenate([a, b])
        kernel = losses.rbf_kernel_sum(_explicit_self_distances(joint))
        n = a.shape[0]
        w = jnp.concatenate([jnp.full(n, 1.0 / n), jnp.full(b.shape[0], -1.0 / b.shape[0])])
        return jnp.maximum(jnp.sum(w[:, None] * w[None, :] * kernel), losses.MMD_FLOOR)

    explicit = np.asarray(jax.grad(explicit_mmd)(s32, t32))
    scale = np.abs(exact).max()
    assert scale > 0
    assert np.abs(ours - exact).max() <= 2 * np.abs(explicit - exact).max()
    assert np.abs(ours - exact).max() <= 1e-3 * scale


# ---- CORAL (Sun & Saenko 2016, "Deep CORAL", arXiv:1607.01719) -------------------------

def coral_reference(source, target):
    """Eq. 1-2 in float64 as printed: C = (D^T D - (1^T D)^T (1^T D) / n) / (n - 1) for each domain,
    loss = ||C_S - C_T||_F^2 / (4 d^2)."""
    def covariance(data):
        data = np.asarray(data, np.float64)
        n = data.shape[0]
        ones = np.ones((1, n))
        return (data.T @ data - (ones @ data).T @ (ones @ data) / n) / (n - 1)

    d = np.asarray(source).shape[1]
    return float(np.sum((covariance(source) - covariance(target)) ** 2) / (4 * d * d))


def coral_gradient_reference(source, target):
    """Eq. 4-5: dL/dD_S = (D_S - 1 (1^T D_S) / n_S)(C_S - C_T) / (d^2 (n_S - 1)); the target's with
    the opposite sign and its own n_T (C_S - C_T is symmetric, so the paper's transposes drop)."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    d = source.shape[1]
    diff = np.cov(source, rowvar=False) - np.cov(target, rowvar=False)
    centred = lambda data: data - data.mean(axis=0)  # noqa: E731
    return (centred(source) @ diff / (d * d * (len(source) - 1)),
            -centred(target) @ diff / (d * d * (len(target) - 1)))


def test_coral_float64_matches_the_papers_formula():
    x, y = latents(20, 9, 7, d=5)
    y = 0.5 * y + 1.0  # different covariances, a shifted mean (which CORAL ignores)
    with jax.enable_x64(True):
        value = float(losses.coral(jnp.asarray(x), jnp.asarray(y)))
        shifted = float(losses.coral(jnp.asarray(x), jnp.asarray(y + 3.0)))
    want = coral_reference(x, y)
    assert want > 1e-2
    assert value == pytest.approx(want, rel=1e-12)
    assert shifted == pytest.approx(want, rel=1e-12)


def test_coral_is_zero_for_the_same_covariance_and_by_hand_in_one_dimension():
    # d = 1: C_S = var(1, 2, 3) = 1, C_T = var(0, 4) = 8: (1 - 8)^2 / 4 = 12.25
    with jax.enable_x64(True):
        value = float(losses.coral(jnp.array([[1.0], [2.0], [3.0]]), jnp.array([[0.0], [4.0]])))
        x, _ = latents(21, 6, 6, d=4)
        same = float(losses.coral(jnp.asarray(x), jnp.asarray(-x + 5.0)))  # the covariance of -x is x's
    assert value == pytest.approx(12.25, rel=1e-14)
    assert abs(same) < 1e-20


def test_coral_gradient_matches_the_papers_and_finite_differences():
    x, y = latents(22, 6, 5, d=4)
    y = 0.7 * y
    want_x, want_y = coral_gradient_reference(x, y)
    with jax.enable_x64(True):
        grad_x, grad_y = (np.asarray(g) for g in jax.grad(losses.coral, argnums=(0, 1))(jnp.asarray(x), jnp.asarray(y)))
        numeric_x = finite_difference(lambda a: losses.coral(a, jnp.asarray(y)), x, h=1e-6)
        numeric_y = finite_difference(lambda b: losses.coral(jnp.asarray(x), b), y, h=1e-6)
    assert np.abs(want_x).max() > 1e-3 and np.abs(want_y).max() > 1e-3
    np.testing.assert_allclose(grad_x, want_x, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(grad_y, want_y, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(grad_x, numeric_x, rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(grad_y, numeric_y, rtol=1e-6, atol=1e-10)


def test_coral_masks_drop_padding_rows():
    x, y = latents(23, 5, 4, d=3)
    pad_x = np.concatenate([x, np.full((3, 3), 50.0)])  # padding far from the data
    pad_y = np.concatenate([y, np.full((2, 3), -50.0)])
    mask_x, mask_y = np.r_[np.ones(5), np.zeros(3)], np.r_[np.ones(4), np.zeros(2)]
    with jax.enable_x64(True):
        def fn(a, b):
            return losses.coral(a, b, jnp.asarray(mask_x), jnp.asarray(mask_y))

        value = float(fn(jnp.asarray(pad_x), jnp.asarray(pad_y)))
        grad_x, grad_y = jax.grad(fn, argnums=(0, 1))(jnp.asarray(pad_x), jnp.asarray(pad_y))
        unmasked = float(losses.coral(jnp.asarray(pad_x), jnp.asarray(pad_y)))
    want_x, want_y = coral_gradient_reference(x, y)
    assert value == pytest.approx(coral_reference(x, y), rel=1e-12)
    assert abs(unmasked - value) > 1.0
    np.testing.assert_allclose(np.asarray(grad_x)[:5], want_x, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(np.asarray(grad_y)[:4], want_y, rtol=1e-10, atol=1e-14)
    assert not np.any(np.asarray(grad_x)[5:]) and not np.any(np.asarray(grad_y)[4:])


def test_coral_float32_with_a_large_mean_matches_float64():
    # latents far from the origin against their spread: the printed form D^T D - (1^T D)^T (1^T D) / n
    # cancels in float32; the centred rows do not
    rng = np.random.default_rng(24)
    x = 1000.0 + rng.normal(0.0, 1.0, (32, 16))
    y = 1000.0 + rng.normal(0.0, 1.5, (32, 16))
    want = coral_reference(x, y)
    ours = float(losses.coral(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)))
    assert ours == pytest.approx(want, rel=1e-4)  # the printed form in float32: 19 % off


def test_da_loss_dispatches_by_name():
    x, y = latents(25, 6, 5, d=4)
    with jax.enable_x64(True):
        a, b = jnp.asarray(x), jnp.asarray(y)
        assert float(losses.da_loss("none", a, b)) == 0.0
        assert float(losses.da_loss("coral", a, b)) == pytest.approx(coral_reference(x, y), rel=1e-12)
        assert float(losses.da_loss("mmd", a, b, mmd_estimator="unbiased")) == \
            pytest.approx(mmd_reference(x, y, "unbiased"), rel=1e-10)
    with pytest.raises(ValueError, match="train.da_loss"):
        losses.da_loss("wasserstein", a, b)
    assert losses.DA_LOSSES == ("none", "mmd", "coral")
