"""The dihedral augmentation against NumPy's rotations and flips."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrobust import augment


def _numpy_d4(image):
    """The 8 symmetries of a square image (H, H, C), written with np.rot90 and np.fliplr."""
    rotations = [np.rot90(image, k, axes=(0, 1)) for k in range(4)]
    return rotations + [np.flip(r, axis=1) for r in rotations]


def test_the_eight_elements_are_the_eight_symmetries_of_the_square():
    image = np.random.default_rng(0).normal(size=(5, 5, 3)).astype(np.float32)
    batch = jnp.asarray(np.repeat(image[None], 8, axis=0))
    ours = np.asarray(augment.dihedral(batch, jnp.arange(8)))
    expected = _numpy_d4(image)
    matches = [[int(np.array_equal(o, e)) for e in expected] for o in ours]
    assert np.array_equal(np.sum(matches, axis=0), np.ones(8)), matches  # a bijection onto D4
    assert np.array_equal(ours[0], image)  # element 0 is the identity


def test_random_dihedral_draws_each_symmetry_per_image_uniformly():
    n = 4000
    image = np.arange(9 * 2, dtype=np.float32).reshape(3, 3, 2)  # no symmetry of its own
    out = np.asarray(augment.random_dihedral(jnp.asarray(np.repeat(image[None], n, axis=0)), jax.random.key(3)))
    expected = _numpy_d4(image)
    which = np.array([[np.array_equal(o, e) for e in expected] for o in out])
    assert which.sum(axis=1).tolist() == [1] * n  # every row is exactly one symmetry of its input
    counts = which.sum(axis=0)
    sigma = np.sqrt(n * (1 / 8) * (7 / 8))
    assert np.all(np.abs(counts - n / 8) < 4 * sigma), counts  # binomial(n, 1/8) each


def test_rectangular_images_are_refused():
    with pytest.raises(ValueError, match="square images, got 4 x 5"):
        augment.dihedral(jnp.zeros((2, 4, 5, 3)), jnp.zeros(2, jnp.int32))
