"""Orbax in one place: save and restore a run's training state and its loop metadata.

A run folder keeps two checkpoint series under `checkpoints/`: `latest` (every epoch, for
`--resume`) and `best` (by validation accuracy, for evaluation and attacks). Each holds one
step: the state pytree (StandardSave) beside a JSON record of the loop (epoch, early-stopping
counter, best accuracy, PRNG seed). Orbax writes to a temporary folder and renames it, so an
interrupted save leaves the previous checkpoint intact. Evaluate and attack restore through
`load_variables`, never through train.py.
"""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from jaxrobust import config as config_lib
from jaxrobust import parallel
from jaxrobust.models import build_model

SERIES = ("latest", "best")


def _manager(run_dir: Path, series: str) -> ocp.CheckpointManager:
    if series not in SERIES:
        raise ValueError(f"checkpoint series must be one of {SERIES}, got {series!r}")
    options = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False, create=True)
    # handlers named up front: item metadata and single items restore without a save first
    handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(Path(run_dir).resolve() / "checkpoints" / series, options=options,
                                 item_handlers=handlers)


def save(run_dir: Path, series: str, step: int, state, meta: dict) -> None:
    """Saves `state` (any pytree of arrays) and `meta` (JSON-able) as `step` of a series.

    A step at or after `step` already in the series (an epoch redone after a resume, when the
    run was killed between its `best` and `latest` saves) is replaced: orbax refuses to save
    an existing step.
    """
    with _manager(run_dir, series) as manager:
        for old in manager.all_steps():
            if old >= step:
                manager.delete(old)
        manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                   meta=ocp.args.JsonSave(meta)), force=True)
        manager.wait_until_finished()


def latest_step(run_dir: Path, series: str = "latest") -> int | None:
    """The step saved in a series, or None when there is none."""
    path = Path(run_dir) / "checkpoints" / series
    if not path.exists():
        return None
    with _manager(run_dir, series) as manager:
        return manager.latest_step()


def restore(run_dir: Path, series: str, abstract_state, step: int | None = None):
    """Restores (state, meta); `abstract_state` gives shapes, dtypes and shardings.

    Build it with `jax.eval_shape` of the state constructor: nothing is allocated twice, and
    the checkpoint restores onto whatever devices the abstract state names.
    """
    with _manager(run_dir, series) as manager:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{Path(run_dir) / 'checkpoints' / series}: no checkpoint to restore")
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return restored["state"], restored["meta"]


def abstract_like(tree):
    """Shape/dtype(/sharding) stand-ins for a pytree of arrays."""
    return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)


def load_variables(run_dir: Path, series: str = "best"):
    """The trained model of a run: (model, variables {"params", "batch_stats"}, config).

    Reads the run's config.json to rebuild the model, then restores the variables that the
    `best` (or `latest`) series holds under the key "variables".
    """
    run_dir = Path(run_dir)
    config = config_lib.read_run_config(run_dir)
    model = build_model(config.model.name, config.model.latent_dim, config.model.num_classes)
    meta = read_meta(run_dir, series)
    if meta is None:
        raise FileNotFoundError(f"{run_dir / 'checkpoints' / series}: no {series} checkpoint; did "
                                "training finish an epoch?")
    image_shape = tuple(meta.get("image_shape", (100, 100, 3)))
    # Restore onto this process's devices (replicated), whatever mesh the run was trained on:
    # without target shardings orbax refuses a checkpoint saved on another device count.
    sharding = parallel.replicated(parallel.make_mesh())
    if series == "best":
        shapes = jax.eval_shape(lambda: init_variables(model, jax.random.key(0), image_shape))
        state, _ = restore(run_dir, series, {"variables": _on(shapes, sharding)})
        return model, state["variables"], config
    with _manager(run_dir, series) as manager:  # latest: a train state
        step = manager.latest_step()
        layout = manager.item_metadata(step)["state"].tree  # the saved tree (incl. optimiser)
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_on(layout, sharding)), meta=ocp.args.JsonRestore()))
    return model, restored["state"]["variables"], config


def _on(tree, sharding):
    """Shape/dtype stand-ins of a tree of arrays (or array metadata), placed by `sharding`."""
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), tree)


def init_variables(model, key, image_shape=(100, 100, 3)):
    """Fresh {"params", "batch_stats"} for `model` on images of `image_shape`."""
    params_key, dropout_key = jax.random.split(key)
    return dict(model.init({"params": params_key, "dropout": dropout_key},
                           jnp.zeros((1,) + tuple(image_shape), jnp.float32), train=False))


def read_meta(run_dir: Path, series: str = "latest") -> dict | None:
    """The JSON loop record of a series without restoring arrays (None if absent)."""
    if not (Path(run_dir) / "checkpoints" / series).exists():
        return None
    with _manager(run_dir, series) as manager:
        step = manager.latest_step()
        if step is None:
            return None
        return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
