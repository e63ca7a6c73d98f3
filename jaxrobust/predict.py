"""Inference with a trained model: latents, logits and class probabilities, batch by batch.

`make_predict` runs a model in evaluation mode over any number of images with one compiled
batch shape; `probabilities` turns its logits into the softmax probabilities that evaluation
(predictions.npz) and the attack (probabilities before/after) report. Both sit below train,
evaluate and attack, so inference never depends on the trainer.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust import parallel


def make_predict(model, batch_size: int, mesh=None):
    """predict(variables, images (N, H, W, 3)) -> (latents (N, D), logits (N, C)) as NumPy.

    Compiles once per batch size: the last batch is padded. Works from host or device arrays.
    On a mesh the batch is rounded up to a multiple of the device count and split over it.
    """
    @jax.jit
    def forward(variables, images):
        if mesh is not None:
            images = parallel.constrain_rows(images, mesh)
        return model.apply(variables, images, train=False)

    pad_to = batch_size if mesh is None else parallel.round_up(batch_size, parallel.num_shards(mesh))

    def predict(variables, images):
        n = len(images)
        outputs = []
        for start in range(0, n, pad_to):
            chunk = images[start:start + pad_to]
            if len(chunk) < pad_to:
                pad = jnp.zeros((pad_to - len(chunk),) + tuple(chunk.shape[1:]), jnp.float32)
                chunk = jnp.concatenate([jnp.asarray(chunk), pad])
            outputs.append(forward(variables, chunk))
        latents = np.concatenate([np.asarray(o[0]) for o in outputs])[:n]
        logits = np.concatenate([np.asarray(o[1]) for o in outputs])[:n]
        return latents, logits

    return predict


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis in float64 (N, C) -> (N, C): rows sum to 1 to ~1e-16.

    Taken on the host in float64 so that probabilities near the attack's thresholds (0.5,
    0.05) and the argmax of near-ties do not depend on float32 rounding.
    """
    shifted = np.asarray(logits, np.float64)
    shifted = shifted - shifted.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)
