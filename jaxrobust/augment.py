"""Label-preserving training augmentation: the symmetries of the square pixel grid.

A galaxy's morphology class does not depend on its orientation on the sky, and Gini and M20 (the
labels' statistics, Lotz et al. 2004) are invariant under rotations and reflections; on a square
pixel grid the 90-degree rotations and the flips (the dihedral group D4, 8 elements) map pixels
to pixels exactly, so no interpolation changes the noise. The paper applies four of these
(horizontal and vertical flip, 90 and 180 degree rotation) once, to the mergers of its dataset
(Ćiprijanović et al. 2022, section 2.1); `random_dihedral` draws one of all eight for every image of
every training step (train.augment = "dihedral").
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

DIHEDRAL_ORDER = 8  # |D4|: transpose or not x flip rows or not x flip columns


def dihedral(images: jax.Array, element: jax.Array) -> jax.Array:
    """images (B, H, H, C) mapped row by row by D4 elements `element` (B,) int in [0, 8).

    Bit 2 transposes (swaps the two pixel axes), bit 0 reverses the rows, bit 1 the columns:
    the 8 combinations are the 8 distinct symmetries of a square (4 rotations, 4 reflections).
    """
    if images.shape[1] != images.shape[2]:
        raise ValueError(f"dihedral augmentation needs square images, got {images.shape[1]} x {images.shape[2]}")
    bit = lambda b: ((element >> b) & 1).astype(bool)[:, None, None, None]  # noqa: E731
    x = jnp.where(bit(2), jnp.swapaxes(images, 1, 2), images)
    x = jnp.where(bit(0), x[:, ::-1], x)
    return jnp.where(bit(1), x[:, :, ::-1], x)


def random_dihedral(images: jax.Array, key: jax.Array) -> jax.Array:
    """Each image of (B, H, H, C) under its own uniformly drawn symmetry of the square."""
    return dihedral(images, jax.random.randint(key, (images.shape[0],), 0, DIHEDRAL_ORDER))
