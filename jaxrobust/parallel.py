"""Device mesh and sharding helpers: data parallelism with jax.jit + NamedSharding.

One mesh axis, "data", over every device (of every process after `initialize_distributed()`).
Parameters and datasets are replicated; batches (training) and image sets (attack) are split
along their leading axis. Tests fake 4 devices on a CPU with
XLA_FLAGS=--xla_force_host_platform_device_count=4.

Several processes (hosts): training runs one program over the global mesh (each process feeds
its own devices' rows of every batch); the attack splits its tasks over the processes, each
running them on its own devices (`local_mesh`), and gathers the results. Files and logs come
from process 0 (`is_main_process`). docs/distributed.md says how to launch.
"""
from __future__ import annotations

import itertools
import os

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


# --- Several processes ---
# JAX itself reads JAX_COORDINATOR_ADDRESS and JAX_LOCAL_DEVICE_IDS; the other two are read
# here (JAX takes them only as arguments or from a detected cluster: SLURM, Open MPI, ...).
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
# Seconds without a heartbeat before the coordinator declares a process dead and every other
# process stops with an error (JAX's default: 100). Tests set a few seconds.
ENV_HEARTBEAT_TIMEOUT = "JAXROBUST_HEARTBEAT_TIMEOUT_S"
ENV_INIT_TIMEOUT = "JAXROBUST_INIT_TIMEOUT_S"  # seconds to wait for all processes (JAX: 300)
# Seconds the processes wait for each other at exit (JAX: 300). Process 0 finishes last (it
# writes the figures), so this must exceed its extra work; a process that ends on an error
# makes the others wait this long in their next collective before they stop too.
ENV_SHUTDOWN_TIMEOUT = "JAXROBUST_SHUTDOWN_TIMEOUT_S"


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be an integer") from None


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, local_device_ids=None,
                           heartbeat_timeout_s: int | None = None,
                           initialization_timeout_s: int | None = None,
                           shutdown_timeout_s: int | None = None) -> None:
    """Joins this process to a multi-process JAX run (`jax.distributed.initialize`).

    Arguments left None come from the environment: JAX_COORDINATOR_ADDRESS (host:port of
    process 0), JAX_NUM_PROCESSES, JAX_PROCESS_ID, JAX_LOCAL_DEVICE_IDS (comma separated),
    JAXROBUST_HEARTBEAT_TIMEOUT_S, JAXROBUST_INIT_TIMEOUT_S and JAXROBUST_SHUTDOWN_TIMEOUT_S;
    what is still unset JAX detects on a managed cluster (SLURM, Open MPI, Kubernetes). Must
    run before anything touches a device. CPU devices talk through gloo (XLA:CPU's cross-process collectives).
    """
    num_processes = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    heartbeat = heartbeat_timeout_s if heartbeat_timeout_s is not None else _env_int(ENV_HEARTBEAT_TIMEOUT)
    init_timeout = initialization_timeout_s if initialization_timeout_s is not None else _env_int(ENV_INIT_TIMEOUT)
    shutdown = shutdown_timeout_s if shutdown_timeout_s is not None else _env_int(ENV_SHUTDOWN_TIMEOUT)
    # without gloo, XLA:CPU has no cross-process collectives ("none" in older jaxlibs)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    options = {}
    if heartbeat is not None:
        options["heartbeat_timeout_seconds"] = heartbeat
    if shutdown is not None:
        options["shutdown_timeout_seconds"] = shutdown
    if init_timeout is not None:
        options["initialization_timeout"] = init_timeout
    try:
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id, local_device_ids=local_device_ids, **options)
    except ValueError as err:
        raise ValueError(f"--distributed: {err} Set JAX_COORDINATOR_ADDRESS=host:port of process 0, "
                         f"{ENV_NUM_PROCESSES} and {ENV_PROCESS_ID} (docs/distributed.md), or run under "
                         "a cluster manager JAX detects (SLURM, Open MPI)") from None


def is_main_process() -> bool:
    """True on process 0: the one that writes files, logs and shows progress."""
    return jax.process_index() == 0


def local_mesh() -> Mesh:
    """A 1-D mesh over this process's devices (all devices in a single-process run)."""
    return make_mesh(jax.local_devices())


def localize(tree):
    """A replicated pytree of global arrays as arrays on `local_mesh()` (no copy).

    Lets a process run its own computations (validation, the attack) on the global model.
    Identity in a single-process run.
    """
    if jax.process_count() == 1:
        return tree
    sharding = replicated(local_mesh())

    def one(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return x
        if not x.is_fully_replicated:
            raise ValueError(f"localize needs replicated arrays, got one sharded as {x.sharding}")
        shards = sorted(x.addressable_shards, key=lambda s: s.device.id)
        if isinstance(sharding, SingleDeviceSharding):
            return shards[0].data
        return jax.make_array_from_single_device_arrays(x.shape, sharding, [s.data for s in shards])

    return jax.tree_util.tree_map(one, tree)


def local_row_slice(sharding, n: int) -> slice:
    """The rows [start, stop) of an (n, ...) array split by `sharding` that this process holds.

    Rows are split over the mesh's devices in order and a process's devices are contiguous in
    `make_mesh`, so its rows are one block (everything in a single-process run).
    """
    if jax.process_count() == 1:
        return slice(0, n)
    blocks = [index[0] for index in sharding.addressable_devices_indices_map((n,)).values()]
    starts = sorted(b.start or 0 for b in blocks)
    stops = sorted(n if b.stop is None else b.stop for b in blocks)
    if any(stop != start for stop, start in zip(stops[:-1], starts[1:])):
        raise ValueError(f"this process's devices do not hold one block of rows in {sharding}")
    return slice(starts[0], stops[-1])


def put_rows(local_tree, sharding, n: int):
    """Global (n, ...) arrays split by `sharding` from this process's rows `local_row_slice`.

    Every process passes only its own block: no process holds the whole batch.
    """
    if jax.process_count() == 1:
        return jax.device_put(local_tree, sharding)
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x), (n,) + np.shape(x)[1:]),
        local_tree)


def task_share(n: int) -> np.ndarray:
    """The task indices this process runs: every process_count()-th, from process_index().

    Interleaved rather than in blocks so that neighbouring (often similar-cost) tasks spread
    over the processes.
    """
    return np.arange(jax.process_index(), n, jax.process_count())


def gather_tasks(local_tree, n: int):
    """Reassembles per-task NumPy arrays computed on `task_share(n)` by every process.

    local_tree: arrays whose leading axis lists this process's tasks in task_share order.
    Returns the same tree with (n, ...) arrays in task order, identical on every process.
    """
    count = jax.process_count()
    if count == 1:
        return local_tree
    width = -(-n // count)  # every process sends the same shape: pad its share to ceil(n / count)

    def pad(x):
        x = np.asarray(x)
        return np.concatenate([x, np.zeros((width - len(x),) + x.shape[1:], x.dtype)])

    from jax.experimental import multihost_utils  # only multi-process runs need it

    stacked = multihost_utils.process_allgather(jax.tree_util.tree_map(pad, local_tree))  # (count, width, ...)

    def unpad(x):
        x = np.asarray(x)
        out = np.zeros((n,) + x.shape[2:], x.dtype)
        for process in range(count):
            rows = np.arange(process, n, count)
            out[rows] = x[process, :len(rows)]
        return out

    return jax.tree_util.tree_map(unpad, stacked)


def put_replicated(tree, sharding):
    """Host values (the same on every process) as arrays replicated by `sharding`.

    `jax.device_put` onto devices of several processes first checks that every process passed
    the same values, by gathering them over the processes (the whole dataset, for the training
    arrays) in a collective; here each process places its own copy, with no check.
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree_util.tree_map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


_BARRIERS = itertools.count()  # barrier names are used once
BARRIER_TIMEOUT_S = 3600  # compiling a big step on a busy host can take many minutes


def barrier(name: str, timeout_s: int = BARRIER_TIMEOUT_S) -> None:
    """Waits until every process gets here (the coordination service; no device collective)."""
    if jax.process_count() == 1:
        return
    from jax._src import distributed  # the client of jax.distributed.initialize (no public handle)

    distributed.global_state.client.wait_at_barrier(name, timeout_s * 1000)


def compiled_together(jitted, name: str):
    """`jitted` compiled on its first call, and then started by every process at once.

    Processes compile at different speeds, and XLA:CPU's gloo collectives give a process only
    30 s to join a collective its peers have entered ("Gloo context initialization failed:
    DEADLINE_EXCEEDED: GetKeyValue() timed out"); so in a multi-process run each process
    compiles ahead of time, waits at a barrier, then runs. One process: `jitted` itself.
    """
    if jax.process_count() == 1:
        return jitted
    compiled = {}
    name = f"compiled:{name}:{next(_BARRIERS)}"  # every process creates these in the same order

    def run(*args):
        if "fn" not in compiled:
            compiled["fn"] = jitted.lower(*args).compile()
            barrier(name)
        return compiled["fn"](*args)

    return run
