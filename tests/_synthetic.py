"""Tiny in-memory datasets and configs for the training and evaluation tests (no GalSim).

Images are 100 x 100 x 3 noise around a class-dependent brightness (spiral 0.45, elliptical
0.6, merger 0.75), so a ConvNet learns something in two or three epochs. Y1 is the same
galaxy with three times the noise. Imported by the tests and by their subprocesses.
"""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path

import jax
import numpy as np

from jaxrobust.config import base_config
from jaxrobust.data.preprocess import PreparedData

_TMP = []


@atexit.register
def _cleanup():
    for path in _TMP:
        shutil.rmtree(path, ignore_errors=True)


def _enable_compilation_cache():
    """A session-wide persistent XLA cache: the tests train the same tiny programs many
    times (and in subprocesses), and compiling them dominates their run time."""
    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    path = tempfile.mkdtemp(prefix="jaxrobust_xla_cache_")
    _TMP.append(path)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    try:  # if something compiled before this import, let the cache be checked again
        from jax._src import compilation_cache

        compilation_cache.reset_cache()
    except (ImportError, AttributeError):
        pass
    return path


CACHE_DIR = _enable_compilation_cache()
# The same folder for everything the session starts: subprocesses and notebook kernels read the
# JAX variables, and the CLI (cli.enable_compilation_cache, run by every `main([...])` in-process
# or in a subprocess) reads JAXROBUST_COMPILATION_CACHE instead of pointing JAX at ~/.cache.
os.environ.update({"JAX_COMPILATION_CACHE_DIR": CACHE_DIR, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.2",
                   "JAXROBUST_COMPILATION_CACHE": CACHE_DIR})


def subprocess_env(**extra) -> dict:
    """Environment for a test's Python subprocess: this session's compilation cache."""
    return dict(os.environ, **extra)

# Train: 20 images (batch 8 -> steps of 8, 8, 4: a ragged last batch); valid, test: 12 each.
SPLIT_SIZES = {"train": 20, "valid": 12, "test": 12}
BRIGHTNESS = np.array([0.45, 0.6, 0.75])


def tiny_data(seed: int = 0, sizes=SPLIT_SIZES, shape=(100, 100, 3)) -> PreparedData:
    """A PreparedData with every class in every split, NHWC float32."""
    rng = np.random.default_rng(seed)
    images, labels = {}, {}
    for split, n in sizes.items():
        y = np.arange(n) % 3
        rng.shuffle(y)
        clean = BRIGHTNESS[y][:, None, None, None] + np.zeros((n,) + shape)
        noise = rng.normal(0.0, 0.05, (n,) + shape)
        images["Y10", split] = (clean + noise).astype(np.float32)
        images["Y1", split] = (clean + 3.0 * noise).astype(np.float32)
        labels[split] = y.astype(np.int32)
    return PreparedData(images, labels, None, {}, source=None, kind="synthetic")


def tiny_config(**train):
    """The paper's config, shrunk: ConvNet, 3 epochs, batch 8, lr 1e-3, device placement."""
    config = base_config()
    config.train.epochs = 3
    config.train.batch_size = 8
    config.train.eval_batch_size = 8
    config.train.learning_rate = 1e-3
    config.train.data_placement = "device"
    for key, value in train.items():
        assert key in config.train, key  # an unlocked ConfigDict would add a misspelt key silently
        config.train[key] = value
    return config


METRIC_KEYS = ("train_loss", "train_ce", "train_da_loss", "train_acc", "val_loss", "val_acc_y10",
               "val_acc_y1")


def metric_rows(history):
    """The numeric training metrics of metrics.jsonl rows (no timings)."""
    return [{k: row[k] for k in ("epoch",) + METRIC_KEYS} for row in history]


@functools.lru_cache(maxsize=None)
def reference_run():
    """One regular 3-epoch ConvNet run, shared by test_train and test_evaluate in a process.

    Returns (workdir, summary, traces): traces counts how often train_step was traced.
    """
    from jaxrobust import train

    workdir = Path(tempfile.mkdtemp(prefix="jaxrobust_ref_"))
    _TMP.append(workdir)
    traces = []
    original = train.train_step

    def counting_step(*args, **kwargs):
        traces.append(1)  # Python runs only while jit traces
        return original(*args, **kwargs)

    train.train_step = counting_step
    try:
        summary = train.train_and_evaluate(tiny_config(), workdir, data=tiny_data(), progress=False)
    finally:
        train.train_step = original
    return workdir, summary, len(traces)


def parallel_step_losses(devices, domain_adaptation: bool, steps: int = 3) -> list[dict]:
    """Per-step metric sums of the first `steps` device steps on a mesh over `devices`.

    Shared by the data-parallel test (4 fake CPU devices, in a subprocess) and its
    one-device reference (in the test process), so both run exactly this code.
    """
    import jax
    import jax.numpy as jnp

    from jaxrobust import losses, parallel, train
    from jaxrobust.models import build_model
    from jaxrobust.rng import stream_key

    # The paper's learning rate: Adam moves every weight by ~lr whatever its gradient's size, so
    # with lr 1e-3 float32 noise in near-zero gradients (summation order differs across devices)
    # becomes a 1e-4 loss difference by step 3; at 1e-5 the steps agree to ~1e-7.
    config = tiny_config(da_loss="mmd" if domain_adaptation else "none", learning_rate=1e-5)
    t = config.train
    data = tiny_data()
    mesh = parallel.make_mesh(devices)
    model = build_model("convnet")
    tx = train.optimizer_from_config(config)
    spec = train.StepSpec(t.da_loss, train.da_weight(t), t.mmd_estimator, False)
    labels = data.labels["train"]
    weights = jnp.asarray(losses.class_weights(labels))
    repl = parallel.replicated(mesh)
    state = jax.jit(lambda key: train.create_state(model, tx, key, data.image_shape),
                    out_shardings=repl)(stream_key(config.seed, "init"))
    arrays = {"y10": data.images["Y10", "train"], "y1": data.images["Y1", "train"], "labels": labels}
    device_data = jax.device_put(arrays, repl)
    n = len(labels)
    step_fn = train.make_device_step(spec, weights, stream_key(0, "dropout"), mesh, n,
                                     t.batch_size)
    rows = train.epoch_rows(stream_key(config.seed, "shuffle"), 0, n, t.batch_size)
    target_rows = train.epoch_rows(stream_key(config.seed, "shuffle_target"), 0, n, t.batch_size)
    sums = jax.device_put(train.zero_sums(), repl)
    out, previous = [], {k: 0.0 for k in train.METRIC_KEYS}
    for step in range(steps):
        state, sums = step_fn(state, sums, device_data, rows, target_rows, np.int32(step))
        now = {k: float(v) for k, v in jax.device_get(sums).items()}
        out.append({k: now[k] - previous[k] for k in now})
        previous = now
    return out
