"""Model registry: configs name a model, `build_model` returns the Flax module.

Every model maps (N, H, W, 3) stretched images to `(latent, logits)` with
`model.apply(variables, x, train=False)`, and its head maps latents to logits alone:
`model.apply(variables, latent, method=model.head)`.
"""
from __future__ import annotations

from functools import partial

import flax.linen as nn

from jaxrobust.models.convnet import ConvNet, count_parameters
from jaxrobust.models.resnet import ResNet18

MODELS = {
    "convnet": ConvNet,
    "resnet18": ResNet18,
    # Test-only: one block per stage, so CPU tests of the ResNet code paths stay fast.
    "_resnet_tiny": partial(ResNet18, stage_blocks=(1, 1, 1, 1)),
}


def build_model(name: str, latent_dim: int = 256, num_classes: int = 3) -> nn.Module:
    """The Flax module called `name` ("convnet" or "resnet18")."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(k for k in MODELS if not k.startswith('_'))}")
    return MODELS[name](latent_dim=latent_dim, num_classes=num_classes)


def uses_dropout(name: str) -> bool:
    """Whether training the model needs a "dropout" PRNG stream."""
    return name != "convnet"


__all__ = ["ConvNet", "ResNet18", "MODELS", "build_model", "count_parameters", "uses_dropout"]
