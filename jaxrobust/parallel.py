"""Device mesh and sharding helpers: data parallelism with jax.jit + NamedSharding.

One mesh axis, "data", over every device (of every host after `jax.distributed.initialize()`).
Parameters and datasets are replicated; batches (training) and image sets (attack) are split
along their leading axis. Tests fake 4 devices on a CPU with
XLA_FLAGS=--xla_force_host_platform_device_count=4.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh over `devices` (default: all devices)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def _single(mesh: Mesh):
    # On one device a NamedSharding only costs: jit then partitions and picks other layouts
    # (the ConvNet train step ran 40 % slower on a CPU), so use the plain device sharding.
    return SingleDeviceSharding(mesh.devices.flat[0]) if mesh.devices.size == 1 else None


def replicated(mesh: Mesh):
    """Every device holds the whole array (parameters, optimiser state, the dataset)."""
    return _single(mesh) or NamedSharding(mesh, PartitionSpec())


def sharded_rows(mesh: Mesh):
    """The leading axis is split across devices (a batch, a set of images)."""
    return _single(mesh) or NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def num_shards(mesh: Mesh) -> int:
    return int(mesh.devices.size)


def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of `multiple` that is >= n."""
    return -(-n // multiple) * multiple


def check_divisible(batch_size: int, mesh: Mesh, what: str = "train.batch_size") -> None:
    shards = num_shards(mesh)
    if batch_size % shards:
        raise ValueError(f"{what}={batch_size} must be a multiple of the {shards} devices in the mesh")


def constrain_rows(x, mesh: Mesh | None):
    """Inside jit: ask XLA to keep `x` split along its leading axis.

    A no-op on one device: there the constraint only costs (it made the ConvNet train step
    40 % slower on a CPU by changing XLA's layout choices).
    """
    if mesh is None or num_shards(mesh) == 1:
        return x
    return jax.lax.with_sharding_constraint(x, sharded_rows(mesh))


def step_compiler_options() -> dict:
    """XLA options for the big jitted steps (training): on a CPU, the memory-optimised schedule.

    XLA:CPU's default, concurrency-optimised schedule runs independent ops side by side, which
    on a 2-core machine keeps more buffers alive and slowed the ResNet18 train step 1.3-1.4x
    (scripts/bench_train.py); elsewhere the backend's own choice stands.
    """
    if jax.default_backend() != "cpu":
        return {}
    return {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}


def maybe_initialize_distributed() -> None:
    """Calls `jax.distributed.initialize()` for multi-host runs (env vars set by the launcher)."""
    jax.distributed.initialize()
