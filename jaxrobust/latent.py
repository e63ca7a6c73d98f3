"""Latent-space robustness measures: distances, JS distance, church windows, isomaps.

All inputs are latents of the 256-d bottleneck (N, D) as NumPy or JAX arrays; outputs are NumPy.
Ćiprijanović et al. 2022 (DeepAdversaries), section 4.1: dE = Euclidean distance between the latent of a Y10 image and that of its perturbed
version (Y1 twin or successful one-pixel image); the Jensen-Shannon distance compares the dE
histograms of regular and DA training; a church window classifies, with the head alone, the
plane through the Y10 latent spanned by the 1P and Y1 directions.
"""
from __future__ import annotations

import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial import distance as scipy_distance
from sklearn.manifold import Isomap

JS_BASE = 2.0  # log base of the JS divergence: the distance then lies in [0, 1]


def euclidean_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise ||a_i - b_i||_2: (N, D), (N, D) -> (N,) float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"latent arrays must match, got {a.shape} and {b.shape}")
    return np.sqrt(np.sum((a - b) ** 2, axis=-1))


def bootstrap_ci(values: np.ndarray, statistic: Callable = np.mean, resamples: int = 1000,
                 level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of `statistic` over `values`.

    Not scipy.stats.bootstrap(method="percentile"): with the same generator it draws the same
    resamples, but its percentile interpolation differs from np.percentile in the last bit
    (checked with scipy 1.17: e.g. n = 37, mean, upper bound 6.555564426537722 here against
    ...723), and it refuses a single value (n = 1), which a run with one flipped image has.
    """
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, values.size, size=(resamples, values.size))
    stats = statistic(values[draws], axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(stats, [tail, 100.0 - tail])
    return float(lo), float(hi)


def distance_summary(d: np.ndarray, resamples: int = 1000, seed: int = 0) -> dict:
    """Median, mean, standard error (std / sqrt(n), as the paper's dist_metric) and 95 % CIs."""
    d = np.asarray(d, np.float64)
    n = int(d.size)
    if n == 0:
        return dict(n=0, median=float("nan"), mean=float("nan"), std_error=float("nan"),
                    mean_ci=(float("nan"),) * 2, median_ci=(float("nan"),) * 2)
    return dict(n=n, median=float(np.median(d)), mean=float(np.mean(d)),
                std_error=float(np.std(d) / np.sqrt(n)),
                mean_ci=bootstrap_ci(d, np.mean, resamples, seed=seed),
                median_ci=bootstrap_ci(d, np.median, resamples, seed=seed))


def common_bins(a: np.ndarray, b: np.ndarray, bins: int = 20) -> np.ndarray:
    """Bin edges spanning both samples."""
    lo = min(np.min(a), np.min(b))
    hi = max(np.max(a), np.max(b))
    if hi <= lo:
        hi = lo + 1.0
    return np.linspace(lo, hi, bins + 1)


def js_distance(a: np.ndarray, b: np.ndarray, bins: int = 20, base: float = JS_BASE) -> float:
    """Jensen-Shannon distance between the histograms of two samples on common bins.

    Both histograms are normalised to sum to 1 (Ćiprijanović et al. 2022, section 5.3); scipy's `jensenshannon` returns
    the square root of the JS divergence, here in base 2, so 0 <= JS <= 1.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size == 0 or b.size == 0:
        return float("nan")
    edges = common_bins(a, b, bins)
    p = np.histogram(a, edges)[0].astype(np.float64)
    q = np.histogram(b, edges)[0].astype(np.float64)
    return float(scipy_distance.jensenshannon(p / p.sum(), q / q.sum(), base=base))


# --- Church windows ---
def window_axis(extent: float = 1.1, step: float = 0.01) -> np.ndarray:
    """-extent..extent in `step`s (221 points by default), with 0 and 1 exactly on the grid."""
    n = int(round(2 * extent / step)) + 1
    return np.round(np.linspace(-extent, extent, n), 10)


def church_window(head_fn: Callable, latent_y10, latent_1p, latent_y1, extent: float = 1.1,
                  step: float = 0.01) -> np.ndarray:
    """Classes of the head on the plane origin + u (1P - origin) + v (Y1 - origin).

    Args:
      head_fn: latents (M, D) -> logits (M, classes); the head alone, no trunk rerun.
      latent_y10, latent_1p, latent_y1: (D,) latents of one triplet.
    Returns:
      (len(axis), len(axis)) int array, rows = v (Y1 direction), columns = u (1P direction);
      the origin is at the centre and the 1P and Y1 latents at (u, v) = (1, 0) and (0, 1).
    """
    axis = jnp.asarray(window_axis(extent, step), jnp.float32)
    origin = jnp.asarray(latent_y10, jnp.float32)
    d_1p = jnp.asarray(latent_1p, jnp.float32) - origin
    d_y1 = jnp.asarray(latent_y1, jnp.float32) - origin
    grid = origin + axis[None, :, None] * d_1p + axis[:, None, None] * d_y1  # (v, u, D)
    logits = _head_on_grid(head_fn, grid.reshape(-1, grid.shape[-1]))
    return np.asarray(jnp.argmax(logits, axis=-1)).reshape(len(axis), len(axis))


def _head_on_grid(head_fn, latents):
    return jax.jit(jax.vmap(lambda z: head_fn(z[None])[0]))(latents)


# --- Isomaps ---
def isomap(latents: np.ndarray, n_components: int = 2, n_neighbors: int = 5) -> np.ndarray:
    """scikit-learn Isomap embedding (N, n_components) of latents (N, D)."""
    latents = np.asarray(latents, np.float64)
    n_neighbors = min(n_neighbors, len(latents) - 1)
    with warnings.catch_warnings():
        # Well-separated classes give a disconnected neighbour graph; scikit-learn completes it
        # and says so once per component (with a SciPy sparse-efficiency note): expected here.
        warnings.simplefilter("ignore", UserWarning)
        warnings.filterwarnings("ignore", message=".*sparsity structure.*")
        return Isomap(n_components=n_components, n_neighbors=n_neighbors).fit_transform(latents)
