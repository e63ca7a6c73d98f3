"""Latent-space measures against direct NumPy / SciPy / scikit-learn computations."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial import distance as scipy_distance
from sklearn.manifold import Isomap

from jaxrobust import latent
from jaxrobust.models import build_model


def test_euclidean_distances_match_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 256)), rng.normal(size=(7, 256))
    expected = [np.sqrt(((a[i] - b[i]) ** 2).sum()) for i in range(7)]
    np.testing.assert_allclose(latent.euclidean_distances(a, b), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="must match"):
        latent.euclidean_distances(a, b[:3])


def test_distance_summary_matches_the_papers_definition():
    d = np.array([1.0, 2.0, 4.0, 7.0])
    s = latent.distance_summary(d, resamples=500)
    assert s["n"] == 4 and s["median"] == 3.0 and s["mean"] == 3.5
    # dist_metric: np.std (ddof 0) / sqrt(n)
    assert s["std_error"] == pytest.approx(np.std(d) / 2.0)
    lo, hi = s["mean_ci"]
    assert d.min() <= lo <= 3.5 <= hi <= d.max()


def test_bootstrap_interval_covers_the_mean_of_a_large_sample():
    d = np.random.default_rng(1).normal(10.0, 2.0, size=2000)
    lo, hi = latent.bootstrap_ci(d, resamples=2000)
    half_width = 1.96 * 2.0 / np.sqrt(2000)  # normal-theory 95 % half width: 0.088
    assert lo < d.mean() < hi
    assert hi - lo == pytest.approx(2 * half_width, rel=0.15)


def test_js_distance_identical_and_disjoint():
    a = np.random.default_rng(2).uniform(0, 1, 500)
    assert latent.js_distance(a, a.copy()) == pytest.approx(0.0, abs=1e-12)
    # disjoint supports on common bins: JS divergence = 1 bit, so the distance is 1 (base 2)
    assert latent.js_distance(np.full(50, 1.0), np.full(80, 9.0), bins=10) == pytest.approx(1.0, abs=1e-12)
    # and in base e it would be sqrt(ln 2)
    assert latent.js_distance(np.full(50, 1.0), np.full(80, 9.0), bins=10, base=np.e) == pytest.approx(
        np.sqrt(np.log(2)), abs=1e-12)


def test_js_distance_equals_scipy_on_common_bins():
    rng = np.random.default_rng(3)
    a, b = rng.normal(5, 1, 300), rng.normal(6, 1.5, 200)
    edges = np.linspace(min(a.min(), b.min()), max(a.max(), b.max()), 21)
    p, q = np.histogram(a, edges)[0], np.histogram(b, edges)[0]
    expected = scipy_distance.jensenshannon(p / p.sum(), q / q.sum(), base=2)
    assert latent.js_distance(a, b, bins=20) == pytest.approx(expected, rel=1e-12)
    # by hand: sqrt of the mean KL to the mixture, in bits
    pn, qn = p / p.sum(), q / q.sum()
    m = (pn + qn) / 2
    kl = lambda x, y: np.sum(np.where(x > 0, x * np.log2(np.where(x > 0, x, 1) / y), 0))  # noqa: E731
    assert latent.js_distance(a, b, bins=20) == pytest.approx(np.sqrt((kl(pn, m) + kl(qn, m)) / 2), rel=1e-10)


def test_window_axis_has_exact_zero_and_one():
    axis = latent.window_axis()
    assert len(axis) == 221
    assert axis[110] == 0.0 and axis[210] == 1.0 and axis[0] == -1.1


def test_church_window_matches_the_full_network_at_the_triplet_points():
    model = build_model("convnet")
    variables = model.init(jax.random.key(0), jnp.zeros((1, 100, 100, 3)))
    images = jax.random.uniform(jax.random.key(1), (3, 100, 100, 3), minval=0.4, maxval=0.9)
    latents, logits = model.apply(variables, images)
    classes_full = np.asarray(jnp.argmax(logits, -1))
    y10, p1, y1 = latents  # three images standing in for a Y10 / 1P / Y1 triplet
    head = lambda z: model.apply(variables, z, method=model.head)  # noqa: E731
    grid = latent.church_window(head, y10, p1, y1)
    axis = latent.window_axis()
    origin, one = int(np.flatnonzero(axis == 0)[0]), int(np.flatnonzero(axis == 1)[0])
    assert grid.shape == (221, 221)
    assert grid[origin, origin] == classes_full[0]  # Y10 at the origin
    assert grid[origin, one] == classes_full[1]  # 1P at (u, v) = (1, 0): row v = 0, column u = 1
    assert grid[one, origin] == classes_full[2]  # Y1 at (0, 1)
    # every grid point equals the head applied to the latent it stands for
    u, v = axis[37], axis[190]
    z = np.asarray(y10) + u * (np.asarray(p1) - np.asarray(y10)) + v * (np.asarray(y1) - np.asarray(y10))
    assert grid[190, 37] == int(np.argmax(np.asarray(head(jnp.asarray(z[None], jnp.float32)))[0]))


def test_isomap_equals_scikit_learn():
    x = np.random.default_rng(4).normal(size=(60, 16))
    for dims in (2, 3):
        ours = latent.isomap(x, dims, n_neighbors=6)
        ref = Isomap(n_components=dims, n_neighbors=6).fit_transform(x)
        np.testing.assert_allclose(np.abs(ours), np.abs(ref), rtol=1e-6, atol=1e-8)  # up to axis signs
