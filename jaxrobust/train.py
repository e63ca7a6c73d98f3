"""Training: the train state, one jitted step, the epoch loop, early stopping and resume.

Regular training (`train.da_loss="none"`) minimises the class-weighted cross-entropy on Y10;
domain adaptation (DA) forwards [Y10 batch; Y1 batch] at once (BatchNorm sees both), takes the
cross-entropy on the Y10 half and adds lambda * a DA loss between the two halves' latents: the
paper's MMD (training.py `train_da`) or CORAL (`losses.DA_LOSSES`).

Speed by design: the normalised dataset lives on the device and each step gathers its batch
there by index from the epoch's permutation; the step is compiled once (the ragged last batch
is padded and masked) and donates the state; metrics are summed on the device and fetched once
per epoch. Data parallel over all devices through a 1-D mesh (jaxrobust.parallel).
"""
from __future__ import annotations

import dataclasses
import json
import math
import queue
import shutil
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from jaxrobust import augment, checkpoint, io, losses, parallel, provenance
from jaxrobust import config as config_lib
from jaxrobust.data import load_prepared
from jaxrobust.predict import make_predict
from jaxrobust.progress import progress_bar
from jaxrobust.models import MODELS, build_model, uses_dropout
from jaxrobust.rng import run_seed, stream_key


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainState(train_state.TrainState):
    """flax's TrainState (step, params, opt_state, apply_gradients) plus the BatchNorm statistics.

    As flax's examples/imagenet. A pytree (apply_fn and tx are static): donated whole to the
    step. Checkpoints hold `checkpoint_tree(state)`, the layout of the earlier hand-made state.
    """

    batch_stats: Any

    @property
    def variables(self) -> dict:
        """{"params", "batch_stats"}: what `model.apply` and the checkpoints' "variables" take."""
        return {"params": self.params, "batch_stats": self.batch_stats}


def checkpoint_tree(state: TrainState) -> dict:
    """{"step", "variables", "opt_state"}: the arrays of a state as the `latest` series stores them."""
    return {"step": state.step, "variables": state.variables, "opt_state": state.opt_state}


def from_checkpoint_tree(state: TrainState, tree: dict) -> TrainState:
    """`state` (for its model and optimiser) with the arrays of a restored `checkpoint_tree`."""
    return state.replace(step=tree["step"], params=tree["variables"]["params"],
                         batch_stats=tree["variables"]["batch_stats"], opt_state=tree["opt_state"])


def running_gradient_sum() -> optax.GradientTransformation:
    """Replaces each gradient by the sum of all gradients so far (state: that sum).

    The published training never calls `optimizer.zero_grad()`, so PyTorch's `.grad` keeps
    accumulating and Adam steps on the running sum of every past gradient (its weight decay is
    added to that sum inside `step`, hence this transformation comes first).
    """
    def init(params):
        return jax.tree_util.tree_map(jnp.zeros_like, params)

    def update(updates, state, params=None):
        del params
        total = jax.tree_util.tree_map(jnp.add, state, updates)
        return total, total

    return optax.GradientTransformation(init, update)


LR_SCHEDULES = ("constant", "warmup_cosine")
AUGMENT_MODES = ("none", "dihedral")


def learning_rate_schedule(peak: float, schedule: str = "constant", total_steps: int = 1,
                           warmup_steps: int = 0) -> float | optax.Schedule:
    """The step size per Adam step: `peak` throughout, or a linear warm-up then a cosine decay.

    "constant": the paper (training.py's fixed lr). "warmup_cosine": 0 -> peak linearly over
    `warmup_steps` (at most total_steps - 1), then cosine down to 0 at `total_steps`
    (Loshchilov & Hutter 2017, SGDR, without restarts; Goyal et al. 2017 for the warm-up). The decay makes the last epochs' weights
    move little, so the validation-selected epoch is less a matter of where an oscillation stood.
    """
    if schedule == "constant":
        return peak
    if schedule != "warmup_cosine":
        raise ValueError(f"train.lr_schedule={schedule!r} (choose one of {LR_SCHEDULES})")
    total_steps = max(total_steps, 1)
    warmup_steps = min(warmup_steps, total_steps - 1)  # a run no longer than its warm-up ends at the peak
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup_steps, total_steps, 0.0)


def make_optimizer(learning_rate: float | optax.Schedule, b1: float, b2: float, eps: float,
                   weight_decay: float, accumulate_gradients: bool = False) -> optax.GradientTransformation:
    """PyTorch `Adam(weight_decay=wd)`: L2 added to the gradient before Adam (not AdamW).

    learning_rate: a number, or a schedule of the step count (`learning_rate_schedule`).
    accumulate_gradients: Adam sees the running sum of all gradients (the published code's
    never-zeroed gradients, `running_gradient_sum`); an option for reproducing the paper only.
    """
    step = (optax.scale_by_schedule(lambda count: -learning_rate(count)) if callable(learning_rate)
            else optax.scale(-learning_rate))
    adam = [optax.add_decayed_weights(weight_decay), optax.scale_by_adam(b1=b1, b2=b2, eps=eps), step]
    return optax.chain(*([running_gradient_sum()] if accumulate_gradients else []), *adam)


def optimizer_from_config(config, steps_per_epoch: int = 1) -> optax.GradientTransformation:
    """The run's optimiser; `steps_per_epoch` (ceil(n_train / batch)) places a schedule's epochs."""
    t = config.train
    decay = t.weight_decay if t.da_loss == "none" else t.weight_decay_da
    lr = learning_rate_schedule(t.learning_rate, t.lr_schedule, t.epochs * steps_per_epoch,
                                int(t.warmup_epochs) * steps_per_epoch)
    return make_optimizer(lr, t.b1, t.b2, t.eps, decay, bool(t.accumulate_gradients))


def da_weight(train_config) -> float:
    """lambda of the run's DA loss: train.mmd_weight or train.coral_weight; 0 without DA."""
    return {"none": 0.0, "mmd": float(train_config.mmd_weight),
            "coral": float(train_config.coral_weight)}[train_config.da_loss]


def create_state(model, tx, key, image_shape) -> TrainState:
    """Fresh variables (checkpoint.init_variables) and optimiser state, step 0 (int32)."""
    variables = checkpoint.init_variables(model, key, image_shape)
    return TrainState(step=jnp.zeros((), jnp.int32), apply_fn=model.apply, params=variables["params"],
                      tx=tx, opt_state=tx.init(variables["params"]), batch_stats=variables["batch_stats"])


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """The static part of a train step (hashable, so jit specialises on it once)."""

    da_loss: str  # losses.DA_LOSSES: "none" (regular), "mmd" or "coral"
    da_weight: float  # lambda of the DA loss
    mmd_estimator: str
    dropout: bool
    # Ablation (train.mixed_batch_forward): the Y1 batch joins the forward pass (BatchNorm
    # statistics over Y10 + Y1, as with DA) while the loss stays CE on Y10, without MMD.
    mixed_batch_forward: bool = False
    # train.augment = "dihedral": every training image (Y10 and Y1) under a random symmetry of the
    # square each step (jaxrobust.augment), drawn from augment_key folded with the step number.
    augment: bool = False

    def __post_init__(self):
        if self.da_loss not in losses.DA_LOSSES:
            raise ValueError(f"train.da_loss must be one of {losses.DA_LOSSES}, got {self.da_loss!r}")

    @property
    def forwards_y1(self) -> bool:
        """Whether a step takes a Y1 batch and runs it through the model with the Y10 batch."""
        return self.da_loss != "none" or self.mixed_batch_forward


# Per-step sums; "da_loss" is the DA loss whichever it is (metrics.jsonl: train_da_loss).
METRIC_KEYS = ("loss", "ce", "da_loss", "correct", "count")


def zero_sums() -> dict:
    return {k: jnp.zeros((), jnp.float32) for k in METRIC_KEYS}


def train_step(state: TrainState, sums: dict, batch: dict, *, spec: StepSpec, class_weights: jax.Array,
               dropout_key: jax.Array, mesh=None, augment_key: jax.Array | None = None):
    """One optimiser step; returns (new state, metric sums + this step's contribution).

    batch: image (B, H, W, 3), label (B,), mask (B,) and, for DA, target_image (B, H, W, 3)
    and target_mask (B,). Masked rows change neither the loss nor the BatchNorm statistics.
    """
    images, mask = batch["image"], batch["mask"]
    if spec.forwards_y1:
        images = jnp.concatenate([images, batch["target_image"]], axis=0)
        mask = jnp.concatenate([mask, batch["target_mask"]], axis=0)
    if spec.augment:
        images = augment.random_dihedral(images, jax.random.fold_in(augment_key, state.step))
    if mesh is not None:
        images = parallel.constrain_rows(images, mesh)
    n_source = batch["image"].shape[0]
    rngs = {"dropout": jax.random.fold_in(dropout_key, state.step)} if spec.dropout else {}

    def loss_fn(params):
        (latent, logits), updates = state.apply_fn({"params": params, "batch_stats": state.batch_stats}, images,
                                                   train=True, mask=mask, rngs=rngs, mutable=["batch_stats"])
        ce = losses.weighted_cross_entropy(logits[:n_source], batch["label"], class_weights, batch["mask"])
        da = jnp.zeros((), jnp.float32)
        if spec.da_loss != "none":
            da = losses.da_loss(spec.da_loss, latent[:n_source], latent[n_source:], batch["mask"],
                                batch["target_mask"], spec.mmd_estimator)
        loss = ce + spec.da_weight * da
        return loss, (updates["batch_stats"], loss, ce, da, logits[:n_source])

    grads, (batch_stats, loss, ce, da, logits) = jax.grad(loss_fn, has_aux=True)(state.params)
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    valid = jnp.sum(batch["mask"])
    correct = jnp.sum((jnp.argmax(logits, -1) == batch["label"]) * batch["mask"])
    new_sums = {"loss": sums["loss"] + loss * valid, "ce": sums["ce"] + ce * valid,
                "da_loss": sums["da_loss"] + da * valid, "correct": sums["correct"] + correct,
                "count": sums["count"] + valid}
    return new_state, new_sums


# --- Batches: gathered on the device, or streamed from the host ---
def epoch_rows(key: jax.Array, epoch: int, n: int, batch_size: int) -> jax.Array:
    """(steps, batch_size) int32 row indices of one epoch: a permutation padded with row 0."""
    steps = math.ceil(n / batch_size)
    perm = jax.random.permutation(jax.random.fold_in(key, epoch), n).astype(jnp.int32)
    return jnp.pad(perm, (0, steps * batch_size - n)).reshape(steps, batch_size)


def step_mask(step, batch_size: int, n: int, xp=jnp):
    """1.0 for the real rows of step `step`, 0.0 for the padding of the last batch: (batch_size,).

    xp: jnp inside the jitted device step, np when the host assembles the batch.
    """
    return ((step * batch_size + xp.arange(batch_size)) < n).astype(xp.float32)


def make_device_step(spec: StepSpec, class_weights, dropout_key, mesh, n_train: int, batch_size: int,
                     augment_key=None):
    """jit(state, sums, data, rows, target_rows, step) -> (state, sums), gathering on device."""

    def device_step(state, sums, data, rows, target_rows, step):
        idx = jax.lax.dynamic_index_in_dim(rows, step, keepdims=False)
        mask = step_mask(step, batch_size, n_train)
        batch = {"image": data["y10"][idx], "label": data["labels"][idx], "mask": mask}
        if spec.forwards_y1:
            batch["target_image"] = data["y1"][jax.lax.dynamic_index_in_dim(target_rows, step, keepdims=False)]
            batch["target_mask"] = mask
        return train_step(state, sums, batch, spec=spec, class_weights=class_weights,
                          dropout_key=dropout_key, mesh=mesh, augment_key=augment_key)

    return jax.jit(device_step, donate_argnums=(0, 1), compiler_options=parallel.step_compiler_options())


def make_host_step(spec: StepSpec, class_weights, dropout_key, mesh, augment_key=None):
    """jit(state, sums, batch) -> (state, sums) for batches streamed from host memory."""
    step = partial(train_step, spec=spec, class_weights=class_weights, dropout_key=dropout_key, mesh=mesh,
                   augment_key=augment_key)
    return jax.jit(step, donate_argnums=(0, 1), compiler_options=parallel.step_compiler_options())


def host_batches(arrays: dict, rows: np.ndarray, target_rows: np.ndarray | None, n: int,
                 spec: StepSpec, sharding, prefetch: int = 2):
    """Yields device batches gathered on the host, `prefetch` steps ahead in a thread.

    Same rows and masks as the device path, so both give the same losses.
    """
    batch_size = rows.shape[1]
    here = parallel.local_row_slice(sharding, batch_size)  # this process's rows of each batch

    def make(step):
        idx = rows[step][here]
        mask = step_mask(step, batch_size, n, np)[here]
        batch = {"image": arrays["y10"][idx], "label": arrays["labels"][idx], "mask": mask}
        if spec.forwards_y1:
            batch["target_image"] = arrays["y1"][target_rows[step][here]]
            batch["target_mask"] = mask
        return parallel.put_rows(batch, sharding, batch_size)

    q: queue.Queue = queue.Queue(maxsize=prefetch)

    def producer():
        try:
            for step in range(len(rows)):
                q.put(make(step))
        except BaseException as err:  # surface loader errors in the training thread
            q.put(err)

    threading.Thread(target=producer, daemon=True).start()
    for _ in range(len(rows)):
        item = q.get()
        if isinstance(item, BaseException):
            raise item
        yield item


def choose_placement(nbytes: int, requested: str = "auto", log=print) -> str:
    """"device" when the training arrays fit in 60 % of device memory, else "host" streaming."""
    if requested in ("device", "host"):
        return requested
    if requested != "auto":
        raise ValueError(f"train.data_placement must be auto, device or host, got {requested!r}")
    stats = jax.local_devices()[0].memory_stats() or {}
    limit = stats.get("bytes_limit")
    if limit is None:  # CPU: device memory is host memory, already holding the arrays
        return "device"
    placement = "device" if nbytes <= 0.6 * limit else "host"
    log(f"training data {nbytes / 2**30:.2f} GiB, device memory {limit / 2**30:.1f} GiB: "
        f"{'on the device' if placement == 'device' else 'streamed from host (prefetch 2)'}")
    return placement


# --- Early stopping ---
EARLY_STOPPING_MODES = ("graded", "patience", "none")


@dataclasses.dataclass
class EarlyStopping:
    """Stops on a rising validation loss.

    "graded" is training.py's EarlyStopping: a new best resets nothing but the best; a loss
    0.1-0.2 above the best adds 0.1 to the counter, 0.2-0.3 adds 0.25, 0.3-0.4 adds 0.5,
    >= 0.4 adds 1; stop when counter > patience. "patience": stop after `patience` epochs
    without a new best. "none": never stop early.
    """

    mode: str = "graded"
    patience: int = 10
    best: float | None = None
    counter: float = 0.0

    def __post_init__(self):
        if self.mode not in EARLY_STOPPING_MODES:
            raise ValueError(f"train.early_stopping must be one of {EARLY_STOPPING_MODES}, got {self.mode!r}")

    def update(self, val_loss: float) -> bool:
        if self.mode == "none":
            return False
        if self.best is None or val_loss < self.best:
            self.best = val_loss
            if self.mode == "patience":
                self.counter = 0.0
            return False
        if self.mode == "patience":
            self.counter += 1
            return self.counter >= self.patience
        excess = val_loss - self.best
        self.counter += 1.0 if excess >= 0.4 else 0.5 if excess >= 0.3 else 0.25 if excess >= 0.2 else 0.1 if excess >= 0.1 else 0.0
        return self.counter > self.patience


# --- The loop ---
def _metrics_path(workdir: Path) -> Path:
    return Path(workdir) / "metrics.jsonl"


# Old metrics.jsonl keys -> the current ones (a run folder trained when the only DA loss was MMD).
RENAMED_METRICS = {"train_mmd": "train_da_loss"}


def read_metrics(workdir: Path, log=None) -> list[dict]:
    """The rows of metrics.jsonl, old keys under their current names (RENAMED_METRICS). A torn
    last line (a kill mid-write) is dropped, with a note to `log` when given: its epoch has no
    checkpoint, so a resume redoes it."""
    path = _metrics_path(workdir)
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
            rows.append({RENAMED_METRICS.get(key, key): value for key, value in row.items()})
        except json.JSONDecodeError as err:
            if i < len(lines) - 1:
                raise ValueError(f"{path}: line {i + 1} is not valid JSON ({err}); the run folder is "
                                 "damaged: retrain with `jaxrobust train ... --overwrite`") from err
            if log is not None:
                log(f"{path}: dropped its torn last line (an interrupted write)")
    return rows


def _append_metrics(workdir: Path, record: dict) -> None:
    with open(_metrics_path(workdir), "a") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()


def _truncate_metrics(workdir: Path, last_epoch: int, log=print) -> None:
    kept = [r for r in read_metrics(workdir, log) if r["epoch"] <= last_epoch]
    io.atomic_write_bytes(_metrics_path(workdir), "".join(json.dumps(r) + "\n" for r in kept).encode())


def _write_config(workdir: Path, config, resume: bool) -> None:
    path = Path(workdir) / "config.json"
    text = config_lib.to_json(config)
    if resume and path.exists() and config_lib.training_settings(config_lib.read_run_config(workdir)) != \
            config_lib.training_settings(config):
        raise ValueError(f"{path}: --resume with different data, model or training settings than the "
                         "interrupted run; start a new workdir or resume with the same config and overrides")
    io.atomic_write_bytes(path, text.encode())


def check_config(config) -> None:
    """Fails before any work on a training setting that would only break later (or never)."""
    t = config.train
    problems = []
    if config.model.name not in MODELS:
        problems.append(f"model.name={config.model.name!r} (choose one of "
                        f"{sorted(k for k in MODELS if not k.startswith('_'))})")
    if t.early_stopping not in EARLY_STOPPING_MODES:
        problems.append(f"train.early_stopping={t.early_stopping!r} (choose one of {EARLY_STOPPING_MODES})")
    if t.da_loss not in losses.DA_LOSSES:
        problems.append(f"train.da_loss={t.da_loss!r} (choose one of {losses.DA_LOSSES})")
    if t.mmd_estimator not in ("biased", "unbiased"):
        problems.append(f"train.mmd_estimator={t.mmd_estimator!r} (choose 'biased' or 'unbiased')")
    if t.augment not in AUGMENT_MODES:
        problems.append(f"train.augment={t.augment!r} (choose one of {AUGMENT_MODES})")
    if t.lr_schedule not in LR_SCHEDULES:
        problems.append(f"train.lr_schedule={t.lr_schedule!r} (choose one of {LR_SCHEDULES})")
    warmup = t.warmup_epochs
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        problems.append(f"train.warmup_epochs={warmup!r} (an integer >= 0)")
    if t.data_placement not in ("auto", "device", "host"):
        problems.append(f"train.data_placement={t.data_placement!r} (choose auto, device or host)")
    for key in ("epochs", "batch_size", "eval_batch_size"):
        if not isinstance(t[key], int) or isinstance(t[key], bool) or t[key] < 1:
            problems.append(f"train.{key}={t[key]!r} (a positive integer)")
    for key in ("learning_rate", "b1", "b2", "eps", "weight_decay", "weight_decay_da", "mmd_weight", "coral_weight"):
        if not (isinstance(t[key], (int, float)) and math.isfinite(t[key]) and t[key] >= 0):
            problems.append(f"train.{key}={t[key]!r} (a finite number >= 0)")
    if problems:
        raise ValueError("bad training config: " + "; ".join(problems))


_weighted_cross_entropy = jax.jit(losses.weighted_cross_entropy)  # the training loss, on validation logits


def validation_scores(predict, variables, data, weights) -> dict:
    """Validation loss (weighted CE on Y10) and accuracy on Y10 and Y1."""
    labels = data.labels["valid"]
    _, logits10 = predict(variables, data.images["Y10", "valid"])
    _, logits1 = predict(variables, data.images["Y1", "valid"])
    val_loss = _weighted_cross_entropy(jnp.asarray(logits10), jnp.asarray(labels), jnp.asarray(weights))
    return {"val_loss": float(val_loss),
            "val_acc_y10": float(np.mean(np.argmax(logits10, 1) == labels)),
            "val_acc_y1": float(np.mean(np.argmax(logits1, 1) == labels))}


def train_and_evaluate(config, workdir, data=None, resume: bool = False, progress: bool = True,
                       log=print) -> dict:
    """Trains `config.model` on prepared data into `workdir`; returns the final summary.

    Writes config.json, metrics.jsonl (one line per epoch) and checkpoints/{latest,best}
    (report.write_run_figures draws the training curves from metrics.jsonl). With `resume`, restarts after the last completed epoch and
    ends with the same numbers as an uninterrupted run.
    """
    check_config(config)
    main = parallel.is_main_process()  # files, logs and progress come from process 0 only
    if not main:
        progress, log = False, lambda *_: None
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    t = config.train
    data = data if data is not None else load_prepared(config.data.source, config)
    if main:
        provenance.start_run(workdir, data, resume=resume, log=log)  # the data's fingerprint, a run id
        _write_config(workdir, config, resume)
    model = build_model(config.model.name, config.model.latent_dim, config.model.num_classes)
    mesh = parallel.make_mesh()
    parallel.check_divisible(t.batch_size, mesh)
    labels = data.labels["train"]
    weights = losses.class_weights(labels, config.model.num_classes)
    tx = optimizer_from_config(config, math.ceil(len(labels) / t.batch_size))
    spec = StepSpec(t.da_loss, da_weight(t), t.mmd_estimator, uses_dropout(config.model.name),
                    bool(t.mixed_batch_forward), t.augment == "dihedral")
    repl = parallel.replicated(mesh)
    init = jax.jit(lambda key: create_state(model, tx, key, data.image_shape), out_shardings=repl)
    state = init(stream_key(run_seed(config), "init"))
    stopper = EarlyStopping(t.early_stopping, int(t.patience))
    meta = {"epoch": -1, "best_acc": -1.0, "best_epoch": -1, "stopped": False}
    if resume and checkpoint.latest_step(workdir) is not None:
        tree, meta = checkpoint.restore(workdir, "latest", checkpoint.abstract_like(checkpoint_tree(state)))
        state = from_checkpoint_tree(state, tree)
        stopper = EarlyStopping(t.early_stopping, int(t.patience), meta["stopper_best"], meta["stopper_counter"])
        if main:
            _truncate_metrics(workdir, meta["epoch"], log)
        log(f"resuming {workdir} after epoch {meta['epoch'] + 1}")
    elif main:  # a fresh run: no metrics or checkpoints of an earlier run in this folder
        if resume:
            log(f"{workdir}: no checkpoint to resume from (stopped before its first epoch ended): starting over")
        _metrics_path(workdir).unlink(missing_ok=True)
        shutil.rmtree(workdir / "checkpoints", ignore_errors=True)

    n = len(labels)
    steps = math.ceil(n / t.batch_size)
    placement = choose_placement(data.nbytes(("train",)) * (2 if spec.forwards_y1 else 1),
                                 config.train.data_placement, log)
    class_w = jnp.asarray(weights)
    seed = run_seed(config)  # config.seed unless run_seed is set (several runs on one dataset)
    shuffle_key, target_key = stream_key(seed, "shuffle"), stream_key(seed, "shuffle_target")
    dropout_key, augment_key = stream_key(seed, "dropout"), stream_key(seed, "augment")
    host_arrays = {"y10": data.images["Y10", "train"], "y1": data.images["Y1", "train"], "labels": labels}
    if placement == "device":
        device_data = parallel.put_replicated({k: v for k, v in host_arrays.items()
                                               if k != "y1" or spec.forwards_y1}, repl)
        step_fn = make_device_step(spec, class_w, dropout_key, mesh, n, t.batch_size, augment_key)
    else:
        step_fn = make_host_step(spec, class_w, dropout_key, mesh, augment_key)
    step_fn = parallel.compiled_together(step_fn, "train_step")  # several processes: start together
    # every process validates on its own devices: no cross-process traffic, the same numbers
    predict = make_predict(model, t.eval_batch_size, parallel.local_mesh())
    summary, last = {}, {}
    for epoch in range(meta["epoch"] + 1, t.epochs):
        if meta["stopped"]:
            break
        start = time.perf_counter()
        rows = epoch_rows(shuffle_key, epoch, n, t.batch_size)
        target_rows = epoch_rows(target_key, epoch, n, t.batch_size) if spec.forwards_y1 else rows
        sums = parallel.put_replicated(zero_sums(), repl)
        bar = progress_bar(total=steps, desc=f"epoch {epoch + 1}/{t.epochs}", disable=not progress, leave=False)
        # the previous epoch's numbers: reading this epoch's would sync with the device every step
        bar.set_postfix(last, refresh=False)
        if placement == "device":
            for step in range(steps):
                state, sums = step_fn(state, sums, device_data, rows, target_rows, np.int32(step))
                bar.update(1)
        else:
            batches = host_batches(host_arrays, np.asarray(rows), np.asarray(target_rows), n, spec,
                                   parallel.sharded_rows(mesh))
            for batch in batches:
                state, sums = step_fn(state, sums, batch)
                bar.update(1)
        sums = jax.device_get(sums)  # the one host sync of the epoch
        bar.close()
        record = {"epoch": epoch, "train_loss": float(sums["loss"] / sums["count"]),
                  "train_ce": float(sums["ce"] / sums["count"]),
                  "train_da_loss": float(sums["da_loss"] / sums["count"]),
                  "train_acc": float(sums["correct"] / sums["count"])}
        if not all(math.isfinite(v) for v in record.values()):
            good = meta["epoch"] + 1
            kept = (f"The last good checkpoint (after epoch {good}) is kept in {workdir / 'checkpoints'}"
                    if good > 0 else "No epoch finished, so there is no checkpoint")
            raise TrainingDiverged(
                f"loss became {record['train_loss']} in epoch {epoch + 1}; stopped. {kept}; lower "
                "train.learning_rate or check the data for extreme values")
        record.update(validation_scores(predict, parallel.localize(state.variables), data, weights))
        record["seconds"] = round(time.perf_counter() - start, 3)
        record["images_per_second"] = round(n * (2 if spec.forwards_y1 else 1) / record["seconds"], 1)
        if main:
            _append_metrics(workdir, record)
        last = {"loss": f"{record['train_loss']:.3f}", "acc": f"{record['train_acc']:.3f}",
                "val_acc": f"{record['val_acc_y10']:.3f}"}
        stop = stopper.update(record["val_loss"])
        if record["val_acc_y10"] > meta["best_acc"]:
            meta.update(best_acc=record["val_acc_y10"], best_epoch=epoch)
            checkpoint.save(workdir, "best", epoch, {"variables": state.variables},
                            {"epoch": epoch, "val_acc_y10": record["val_acc_y10"],
                             "image_shape": list(data.image_shape)})
        meta.update(epoch=epoch, stopped=bool(stop), stopper_best=stopper.best,
                    stopper_counter=stopper.counter, image_shape=list(data.image_shape))
        checkpoint.save(workdir, "latest", epoch, checkpoint_tree(state), meta)
        if progress:
            log(f"epoch {epoch + 1:3d}: loss {record['train_loss']:.4f} (DA loss {record['train_da_loss']:.4g}) "
                f"acc {record['train_acc']:.3f} | val loss {record['val_loss']:.4f} "
                f"acc Y10 {record['val_acc_y10']:.3f} Y1 {record['val_acc_y1']:.3f} | {record['seconds']:.1f}s")
        if stop:
            log(f"early stopping after epoch {epoch + 1} ({t.early_stopping}, patience {t.patience})")
    history = read_metrics(workdir)
    if history:
        summary = dict(history[-1], best_epoch=meta["best_epoch"], best_val_acc_y10=meta["best_acc"],
                       epochs_run=len(history), placement=placement)
    return summary
