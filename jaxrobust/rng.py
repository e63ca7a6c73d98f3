"""Named PRNG streams: one config seed, one key per purpose, so draws never collide.

    key = stream_key(config.seed, "shuffle")     # then fold_in(key, epoch), fold_in(key, step)

Training and attack streams take `run_seed(config)` (config.run_seed, default: config.seed) so
that several runs can share one dataset (drawn with config.seed).

Typed keys (`jax.random.key`) throughout.
"""
from __future__ import annotations

import jax

STREAMS = {"init": 0, "shuffle": 1, "shuffle_target": 2, "dropout": 3, "attack": 4, "analysis": 5, "augment": 6}


def run_seed(config) -> int:
    """The seed of a run's training and attack streams: `run_seed`, or `seed` when it is -1 (a
    run folder saved before the key existed reads it as -1: config.read_run_config). The data
    draw always uses `seed`."""
    value = int(config["run_seed"])
    return int(config["seed"]) if value < 0 else value


def stream_key(seed: int, name: str) -> jax.Array:
    """The key of stream `name` for a run seeded with `seed`."""
    if name not in STREAMS:
        raise ValueError(f"unknown PRNG stream {name!r}; known: {sorted(STREAMS)}")
    return jax.random.fold_in(jax.random.key(seed), STREAMS[name])
