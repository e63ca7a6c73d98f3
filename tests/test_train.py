"""Tests of jaxrobust.train on tiny synthetic data (tests/_synthetic.py): the optimiser against
a NumPy transcription of PyTorch Adam, early stopping (training.py's graded counter), batch
padding, one compilation per run, end-to-end runs and their files, determinism, resume
after SIGKILL, divergence, config errors, host streaming and data parallelism."""
import functools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrobust import checkpoint, config as config_lib, losses, predict, train
from jaxrobust.models import build_model

import _synthetic as syn

TESTS = Path(__file__).resolve().parent


# ---- optimiser ------------------------------------------------------------------------

def torch_adam(p, grad_fn, steps, lr, b1, b2, eps, weight_decay):
    """torch.optim.Adam(amsgrad=False) transcribed: coupled L2, bias-corrected moments."""
    m, v, out = np.zeros_like(p), np.zeros_like(p), []
    for t in range(1, steps + 1):
        g = grad_fn(p) + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        step_size = lr / (1 - b1**t)
        denom = np.sqrt(v) / math.sqrt(1 - b2**t) + eps
        p = p - step_size * m / denom
        out.append(p.copy())
    return out


A = np.array([0.5, 2.0, 10.0, 1e-3])
C = np.array([1.0, -2.0, 0.3, 4.0])


def quadratic_grad(p):  # f = 0.5 sum a (p - c)^2
    return A * (p - C)


@pytest.mark.parametrize("lr, eps, wd", [(1e-5, 1e-8, 1e-3), (0.1, 1e-8, 1e-4), (0.1, 0.5, 0.3)])
def test_optimizer_is_pytorch_adam(lr, eps, wd):
    p0 = np.array([0.0, 1.0, -1.0, 2.0])
    expected = torch_adam(p0, quadratic_grad, 5, lr, 0.7, 0.8, eps, wd)
    with jax.enable_x64(True):
        tx = train.make_optimizer(lr, 0.7, 0.8, eps, wd)
        p = jnp.asarray(p0)
        state = tx.init(p)
        for step in range(5):
            updates, state = tx.update(jnp.asarray(quadratic_grad(np.asarray(p))), state, p)
            p = optax.apply_updates(p, updates)
            np.testing.assert_allclose(np.asarray(p), expected[step], rtol=1e-12, atol=1e-15)


def test_optimizer_is_not_adamw():
    # decoupled decay (AdamW: p -= lr wd p beside the Adam step) gives other numbers
    p0 = np.array([0.0, 1.0, -1.0, 2.0])
    tx = train.make_optimizer(0.1, 0.7, 0.8, 1e-8, 0.3)
    p, state = jnp.asarray(p0, jnp.float32), None
    state = tx.init(p)
    for _ in range(3):
        updates, state = tx.update(jnp.asarray(quadratic_grad(np.asarray(p)), jnp.float32), state, p)
        p = optax.apply_updates(p, updates)
    adamw = optax.adamw(0.1, 0.7, 0.8, 1e-8, weight_decay=0.3)
    q = jnp.asarray(p0, jnp.float32)
    state = adamw.init(q)
    for _ in range(3):
        updates, state = adamw.update(jnp.asarray(quadratic_grad(np.asarray(q)), jnp.float32), state, q)
        q = optax.apply_updates(q, updates)
    assert np.abs(np.asarray(p) - np.asarray(q)).max() > 1e-2


def test_optimizer_from_config_picks_the_decay():
    p = {"w": jnp.ones(3)}
    zero = {"w": jnp.zeros(3)}
    for da, decay in ((False, 1e-3), (True, 1e-4)):
        config = syn.tiny_config(da_loss="mmd" if da else "none")
        tx = train.optimizer_from_config(config)
        updates, _ = tx.update(zero, tx.init(p), p)
        # first step with g = decay * p: m_hat = g, v_hat = g^2 -> update = -lr g / (|g| + eps)
        g = decay
        np.testing.assert_allclose(updates["w"], -1e-3 * g / (g + 1e-8), rtol=1e-6)



def test_warmup_cosine_schedule_against_its_formula():
    peak, total, warmup = 2e-4, 40, 8
    lr = train.learning_rate_schedule(peak, "warmup_cosine", total, warmup)
    for k in range(total + 1):  # independent: the formula written out
        expected = peak * k / warmup if k < warmup else \
            0.5 * peak * (1 + math.cos(math.pi * (k - warmup) / (total - warmup)))
        np.testing.assert_allclose(float(lr(k)), expected, rtol=1e-5, atol=1e-12)
    assert train.learning_rate_schedule(peak, "constant", total, warmup) == peak
    with pytest.raises(ValueError, match="train.lr_schedule='cosine'"):
        train.learning_rate_schedule(peak, "cosine", total, warmup)
    # a warm-up as long as the run (quick's 2 epochs with train.epochs=2) reaches the peak at the last step
    short = train.learning_rate_schedule(peak, "warmup_cosine", 6, 6)
    np.testing.assert_allclose([float(short(k)) for k in range(6)], [peak * k / 5 for k in range(6)], rtol=1e-5)


def test_schedule_scales_each_adam_step_by_that_steps_rate():
    # step k of the scheduled optimiser is the constant-rate Adam step times lr(k) / peak
    p0 = jnp.asarray([0.0, 1.0, -1.0, 2.0])
    peak, total, warmup = 0.1, 6, 2
    scheduled = train.make_optimizer(train.learning_rate_schedule(peak, "warmup_cosine", total, warmup),
                                     0.7, 0.8, 1e-8, 1e-3)
    constant = train.make_optimizer(peak, 0.7, 0.8, 1e-8, 1e-3)
    s_sched, s_const = scheduled.init(p0), constant.init(p0)
    for k in range(total):
        g = jnp.asarray(quadratic_grad(np.asarray(p0)) * (k + 1), jnp.float32)  # one point, growing gradients
        u_sched, s_sched = scheduled.update(g, s_sched, p0)
        u_const, s_const = constant.update(g, s_const, p0)
        expected = float(train.learning_rate_schedule(peak, "warmup_cosine", total, warmup)(k)) / peak
        np.testing.assert_allclose(np.asarray(u_sched), expected * np.asarray(u_const), rtol=1e-5, atol=1e-9)


def test_optimizer_from_config_places_the_schedule_in_epochs():
    config = config_lib.load_config("quick", ["train.lr_schedule=warmup_cosine", "train.warmup_epochs=2",
                                   "train.epochs=10", "train.learning_rate=0.5", "train.weight_decay=0.0"])
    tx = train.optimizer_from_config(config, steps_per_epoch=3)
    p = {"w": jnp.ones(1)}
    state = tx.init(p)
    rates = []
    for _ in range(30):  # Adam's first steps on a constant gradient are -lr exactly (m_hat = g, v_hat = g^2)
        updates, state = tx.update({"w": jnp.ones(1)}, state, p)
        rates.append(-float(updates["w"][0]))
    assert rates[0] == 0.0 and abs(rates[3] - 0.25) < 1e-6  # warm-up: 6 steps to the peak
    assert abs(rates[6] - 0.5) < 1e-6 and rates[-1] < 0.01 * 0.5  # the peak at epoch 2, ~0 at the end


def test_check_config_names_a_bad_schedule():
    config = config_lib.load_config("quick", ["train.lr_schedule=cosine", "train.epochs=25"])
    with pytest.raises(ValueError, match="train.lr_schedule"):
        train.check_config(config)
    # a negative warm-up is a count out of range, refused as the override is read
    with pytest.raises(config_lib.ConfigError, match="train.warmup_epochs"):
        config_lib.load_config("quick", ["train.warmup_epochs=-1", "train.epochs=25"])

# ---- early stopping ----------------------------------------------------------------------

def test_graded_counter_hand_worked():
    # training.py: new best -> best only; excess >= .4: +1, [.3, .4): +.5, [.2, .3): +.25,
    # [.1, .2): +.1, < .1: +0; stop when counter > patience (binary fractions: exact)
    stopper = train.EarlyStopping("graded", patience=2)
    steps = [(1.0, 0.0, False),     # first value: the best
             (1.5, 1.0, False),     # +.5 above -> +1
             (1.375, 1.5, False),   # +.375 -> +.5
             (1.25, 1.75, False),   # +.25 -> +.25
             (1.125, 1.85, False),  # +.125 -> +.1
             (1.0625, 1.85, False),  # +.0625 -> +0
             (1.0, 1.85, False),    # equal to the best: not a new best, +0
             (0.5, 1.85, False),    # new best: the counter is NOT reset
             (0.75, 2.1, True)]     # +.25 -> 2.1 > 2: stop
    for value, counter, stop in steps:
        assert stopper.update(value) is stop
        assert stopper.counter == pytest.approx(counter, abs=1e-12)
    assert stopper.best == 0.5


def test_graded_counter_band_edges_are_inclusive():
    increments = {0.4: 1.0, 0.3: 0.5, 0.2: 0.25, 0.1: 0.1, 0.09: 0.0}
    for excess, inc in increments.items():
        stopper = train.EarlyStopping("graded", patience=10)
        stopper.update(0.0)
        stopper.update(excess)
        assert stopper.counter == pytest.approx(inc)


def test_graded_counter_stops_only_above_patience():
    stopper = train.EarlyStopping("graded", patience=1)
    assert [stopper.update(v) for v in (0.0, 1.0, 0.0, 0.05)] == [False, False, False, False]
    assert stopper.counter == 1.0  # equal to patience: not yet
    assert stopper.update(0.1) is True


def test_patience_mode():
    stopper = train.EarlyStopping("patience", patience=3)
    values = [1.0, 0.9, 0.95, 0.95, 0.8, 0.85, 0.85, 0.85]
    assert [stopper.update(v) for v in values] == [False] * 7 + [True]
    assert stopper.best == 0.8 and stopper.counter == 3


def test_none_mode_never_stops():
    stopper = train.EarlyStopping("none", patience=0)
    assert not any(stopper.update(v) for v in (1.0, 5.0, 50.0))


def test_unknown_early_stopping_mode_fails_at_once():
    with pytest.raises(ValueError, match="train.early_stopping"):
        train.EarlyStopping("sometimes")


# ---- batches -----------------------------------------------------------------------------

def test_epoch_rows_cover_every_row_once_then_pad():
    key = jax.random.key(0)
    rows = np.asarray(train.epoch_rows(key, 0, 20, 8))
    assert rows.shape == (3, 8) and rows.dtype == np.int32
    assert sorted(rows.ravel()[:20]) == list(range(20))
    assert np.all(rows.ravel()[20:] == 0)
    again = np.asarray(train.epoch_rows(key, 0, 20, 8))
    other = np.asarray(train.epoch_rows(key, 1, 20, 8))
    assert np.array_equal(rows, again) and not np.array_equal(rows, other)


def test_step_mask():
    assert np.asarray(train.step_mask(2, 8, 20)).tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert np.asarray(train.step_mask(1, 8, 20)).tolist() == [1] * 8


def _weighted_ce_float64(logits, labels, weights) -> float:
    """NumPy reference of PyTorch's CrossEntropyLoss(weight=w): sum w_y nll / sum w_y, float64."""
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    w = np.asarray(weights, np.float64)[labels]
    return float(-(w * log_probs[np.arange(len(labels)), labels]).sum() / w.sum())


@functools.lru_cache(maxsize=None)
def _sgd_setup():
    model, tx = build_model("convnet"), optax.sgd(1.0)
    state = jax.jit(lambda key: train.create_state(model, tx, key, (100, 100, 3)))(jax.random.key(0))
    return model, tx, state


def _sgd_step(domain_adaptation, batch):
    """One train_step with SGD(lr=1): returns (gradients, new batch stats, metric sums)."""
    state = _sgd_setup()[2]
    spec = train.StepSpec("mmd" if domain_adaptation else "none", 0.05, "biased", False)
    step = jax.jit(partial(train.train_step, spec=spec, class_weights=jnp.array([0.7, 1.2, 1.9]),
                           dropout_key=jax.random.key(1)))
    new, sums = step(state, train.zero_sums(), batch)
    grads = jax.tree_util.tree_map(lambda a, b: a - b, state.variables["params"], new.variables["params"])
    return grads, new.variables["batch_stats"], jax.device_get(sums)


@pytest.mark.parametrize("domain_adaptation", [False, True])
def test_padded_batch_equals_valid_rows(domain_adaptation):
    data = syn.tiny_data()
    x10, x1, y = data.images["Y10", "train"], data.images["Y1", "train"], data.labels["train"]
    idx = np.array([3, 7, 1, 12, 5, 3, 3, 3])  # 5 valid rows, padded with repeats (like epoch_rows)
    mask = np.array([1.0] * 5 + [0.0] * 3, np.float32)
    padded = {"image": x10[idx], "label": y[idx], "mask": mask}
    valid = {"image": x10[idx[:5]], "label": y[idx[:5]], "mask": np.ones(5, np.float32)}
    if domain_adaptation:
        tidx = np.array([9, 0, 4, 18, 2, 0, 0, 0])
        padded.update(target_image=x1[tidx], target_mask=mask)
        valid.update(target_image=x1[tidx[:5]], target_mask=np.ones(5, np.float32))
    g_pad, bs_pad, sums_pad = _sgd_step(domain_adaptation, padded)
    g_val, bs_val, sums_val = _sgd_step(domain_adaptation, valid)
    for key in ("loss", "ce", "da_loss", "correct", "count"):
        assert float(sums_pad[key]) == pytest.approx(float(sums_val[key]), rel=2e-5, abs=1e-7)
    assert float(sums_pad["count"]) == 5
    if domain_adaptation:
        assert float(sums_pad["da_loss"]) > 5 * 1e-4  # above the clamp: the masks matter
    leaves_pad, leaves_val = jax.tree_util.tree_leaves(g_pad), jax.tree_util.tree_leaves(g_val)
    # conv biases before BatchNorm have zero gradient in exact arithmetic: compare on the
    # scale of the largest gradient, where float32 noise is ~1e-7
    scale = max(float(np.abs(b).max()) for b in leaves_val)
    for a, b in zip(leaves_pad, leaves_val):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5 * scale)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                           bs_pad, bs_val)


# ---- end-to-end --------------------------------------------------------------------------

def _finite_history(workdir, epochs):
    history = train.read_metrics(workdir)
    assert [row["epoch"] for row in history] == list(range(epochs))
    for row in history:
        for key in syn.METRIC_KEYS:
            assert math.isfinite(row[key]), (key, row)
    return history


def _check_run_files(workdir, config):
    assert json.loads((workdir / "config.json").read_text()) == json.loads(config_lib.to_json(config))
    assert checkpoint.latest_step(workdir, "latest") == config.train.epochs - 1
    assert checkpoint.latest_step(workdir, "best") is not None
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == config.train.epochs


def test_regular_run_writes_its_files():
    workdir, summary, _ = syn.reference_run()
    config = syn.tiny_config()
    _check_run_files(workdir, config)
    history = _finite_history(workdir, 3)
    for row in history:
        assert row["train_da_loss"] == 0.0 and row["train_loss"] == row["train_ce"]
        assert 0 <= row["train_acc"] <= 1 and row["val_acc_y10"] in {k / 12 for k in range(13)}
    assert history[-1]["train_loss"] < history[0]["train_loss"]  # it learns
    assert summary["epochs_run"] == 3 and summary["placement"] == "device"
    best = max(range(3), key=lambda e: (history[e]["val_acc_y10"], -e))
    assert summary["best_epoch"] == best
    meta = checkpoint.read_meta(workdir, "best")
    assert meta["epoch"] == best


def test_step_is_traced_once_per_run():
    # 20 rows in batches of 8: the last batch is ragged, yet one trace serves all 3 epochs
    _, _, traces = syn.reference_run()
    assert traces == 1


def test_da_run_adds_the_weighted_mmd(tmp_path):
    config = syn.tiny_config(da_loss="mmd", epochs=2)
    summary = train.train_and_evaluate(config, tmp_path, data=syn.tiny_data(), progress=False)
    _check_run_files(tmp_path, config)
    for row in _finite_history(tmp_path, 2):
        assert row["train_da_loss"] >= 1e-4  # the clamp floor
        assert row["train_loss"] == pytest.approx(row["train_ce"] + 0.05 * row["train_da_loss"], rel=1e-5)
    assert summary["epochs_run"] == 2


def test_cli_trains_with_coral(tmp_path, capsys):
    """`jaxrobust train --da-loss coral`, one epoch on a tiny Zenodo-layout folder (32 x 32)."""
    import _zenodo_tiny as tiny
    from jaxrobust.cli import main

    tiny.write_dataset(tmp_path / "data")
    args = ["train", "--data", str(tmp_path / "data"), "--workdir", str(tmp_path / "run"), "--da-loss", "coral",
            *tiny.TRAIN_ARGS, "train.epochs=1"]
    assert main(args) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["da_loss"] == "coral"
    (row,) = train.read_metrics(tmp_path / "run")
    assert "train_mmd" not in row and "mmd" not in json.dumps(row)
    assert row["train_da_loss"] > 0 and math.isfinite(row["train_loss"])
    weight = config_lib.base_config().train.coral_weight
    assert row["train_loss"] == pytest.approx(row["train_ce"] + weight * row["train_da_loss"], rel=1e-5)
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:  # --da is --da-loss mmd: both at once is an argparse error
        main(args[:-1] + ["--da"])
    assert refused.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_read_metrics_reads_an_old_run_under_the_current_keys(tmp_path):
    old = {"epoch": 0, "train_loss": 0.7, "train_ce": 0.65, "train_mmd": 1.0, "train_acc": 0.5}
    (tmp_path / "metrics.jsonl").write_text(json.dumps(old) + "\n")
    (row,) = train.read_metrics(tmp_path)
    assert row == {"epoch": 0, "train_loss": 0.7, "train_ce": 0.65, "train_da_loss": 1.0, "train_acc": 0.5}


def test_same_seed_same_numbers(tmp_path):
    ref, _, _ = syn.reference_run()
    train.train_and_evaluate(syn.tiny_config(), tmp_path / "a", data=syn.tiny_data(), progress=False)
    assert syn.metric_rows(train.read_metrics(tmp_path / "a")) == syn.metric_rows(train.read_metrics(ref))
    _, a, _ = checkpoint.load_variables(tmp_path / "a", "latest")
    _, b, _ = checkpoint.load_variables(ref, "latest")
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def test_host_streaming_equals_device_placement(tmp_path, monkeypatch):
    ref, _, _ = syn.reference_run()
    traces, original = [], train.train_step

    def counting_step(*args, **kwargs):
        traces.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(train, "train_step", counting_step)
    config = syn.tiny_config(data_placement="host")
    summary = train.train_and_evaluate(config, tmp_path, data=syn.tiny_data(), progress=False)
    assert summary["placement"] == "host" and len(traces) == 1  # padded host batches: one trace
    for got, want in zip(train.read_metrics(tmp_path), train.read_metrics(ref), strict=True):
        for key in syn.METRIC_KEYS:
            assert got[key] == pytest.approx(want[key], rel=1e-6, abs=1e-7), key


RUN_UNTIL_KILLED = """
import sys, time
sys.path.insert(0, {tests!r})
import _synthetic as syn
from jaxrobust import train

def log(message):
    print(message, flush=True)
    if message.startswith("epoch   1:"):
        time.sleep(600)  # wait here, after epoch 1's checkpoint, for SIGKILL

train.train_and_evaluate(syn.tiny_config(), {workdir!r}, data=syn.tiny_data(), progress=True, log=log)
print("finished", flush=True)
"""


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    workdir = tmp_path / "run"
    code = RUN_UNTIL_KILLED.format(tests=str(TESTS), workdir=str(workdir))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=syn.subprocess_env())
    watchdog = threading.Timer(240, proc.kill)  # never hang the suite on a stuck child
    watchdog.start()
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if re.match(r"epoch\s+1:", line):
                break
        assert seen and re.match(r"epoch\s+1:", seen[-1]), f"no epoch finished: {seen}"
        assert proc.poll() is None, f"training ended before the kill: {seen}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert len(train.read_metrics(workdir)) == 1 and checkpoint.latest_step(workdir) == 0

    summary = train.train_and_evaluate(syn.tiny_config(), workdir, data=syn.tiny_data(), resume=True,
                                       progress=False, log=lambda message: None)
    ref, ref_summary, _ = syn.reference_run()
    got, want = train.read_metrics(workdir), train.read_metrics(ref)
    assert len(got) == len(want) == 3
    for row, ref_row in zip(got, want):
        for key in syn.METRIC_KEYS:
            assert row[key] == pytest.approx(ref_row[key], rel=1e-6, abs=1e-7), key
    assert summary["best_epoch"] == ref_summary["best_epoch"]
    _, trained, _ = checkpoint.load_variables(workdir, "latest")
    _, ref_trained, _ = checkpoint.load_variables(ref, "latest")
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                           trained, ref_trained)



class _Interrupt(Exception):
    pass


def test_resume_continues_the_learning_rate_schedule(tmp_path):
    # the schedule's step count lives in the checkpointed optimiser state: a resumed run takes
    # the same steps as an uninterrupted one (a restarted count would warm up again)
    config = syn.tiny_config(lr_schedule="warmup_cosine", warmup_epochs=1)
    quiet = lambda message: None  # noqa: E731
    whole = train.train_and_evaluate(config, tmp_path / "whole", data=syn.tiny_data(), progress=False, log=quiet)

    def stop_after_epoch_1(message):
        if message.startswith("epoch   1:"):
            raise _Interrupt
    with pytest.raises(_Interrupt):
        train.train_and_evaluate(config, tmp_path / "cut", data=syn.tiny_data(), progress=True,
                                 log=stop_after_epoch_1)
    assert len(train.read_metrics(tmp_path / "cut")) == 1
    resumed = train.train_and_evaluate(config, tmp_path / "cut", data=syn.tiny_data(), resume=True,
                                       progress=False, log=quiet)
    got, want = train.read_metrics(tmp_path / "cut"), train.read_metrics(tmp_path / "whole")
    assert len(got) == len(want) == 3
    for row, ref_row in zip(got, want):
        for key in syn.METRIC_KEYS:
            assert row[key] == pytest.approx(ref_row[key], rel=1e-6, abs=1e-7), key
    assert resumed["best_epoch"] == whole["best_epoch"]
    # and the schedule did change training: the constant-rate run differs
    ref_rows = train.read_metrics(syn.reference_run()[0])
    assert any(abs(a["train_loss"] - b["train_loss"]) > 1e-4 for a, b in zip(got, ref_rows))

def test_resume_refuses_a_different_config(tmp_path):
    ref, _, _ = syn.reference_run()
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.json").write_text((ref / "config.json").read_text())
    with pytest.raises(ValueError, match="different data, model or training settings"):
        train.train_and_evaluate(syn.tiny_config(learning_rate=0.5), workdir, data=syn.tiny_data(),
                                 resume=True, progress=False)


def test_resume_accepts_other_attack_settings():
    """The attack and analysis sections do not change a trained model: resuming may differ there."""
    from jaxrobust.config import training_settings

    a = {"train": {"epochs": 3}, "attack": {"population": 400}, "analysis": {"bootstrap": 10}, "seed": 0}
    b = {"train": {"epochs": 3}, "attack": {"population": 40}, "analysis": {"bootstrap": 99}, "seed": 0}
    assert training_settings(a) == training_settings(b)
    assert training_settings(a) != training_settings(dict(b, seed=1))


def test_a_fresh_run_in_a_used_folder_starts_over(tmp_path):
    ref, _, _ = syn.reference_run()
    workdir = tmp_path / "run"
    shutil.copytree(ref, workdir)  # metrics and checkpoints of 3 epochs
    train.train_and_evaluate(syn.tiny_config(epochs=1), workdir, data=syn.tiny_data(), progress=False)
    assert syn.metric_rows(train.read_metrics(workdir)) == syn.metric_rows(train.read_metrics(ref))[:1]
    assert checkpoint.latest_step(workdir) == 0 and checkpoint.latest_step(workdir, "best") == 0


def test_saving_an_existing_or_earlier_step_replaces_it(tmp_path):
    # a resumed run redoes the epoch whose `best` was saved just before a kill
    for step, value in ((3, 1.0), (3, 2.0), (1, 5.0)):
        checkpoint.save(tmp_path, "best", step, {"x": jnp.full(2, value)}, {"epoch": step})
        assert checkpoint.latest_step(tmp_path, "best") == step
        restored, meta = checkpoint.restore(tmp_path, "best", {"x": jax.ShapeDtypeStruct((2,), jnp.float32)})
        assert meta == {"epoch": step} and np.all(np.asarray(restored["x"]) == value)


def test_nan_in_data_raises_and_keeps_the_last_good_checkpoint(tmp_path):
    data = syn.tiny_data()

    def poison(message):  # after epoch 1, the host arrays (streamed each step) turn NaN
        if message.startswith("epoch   1:"):
            data.images["Y10", "train"][:] = np.nan

    config = syn.tiny_config(data_placement="host")
    with pytest.raises(train.TrainingDiverged, match=r"nan in epoch 2.*after epoch 1") as err:
        train.train_and_evaluate(config, tmp_path, data=data, progress=True, log=poison)
    assert "learning_rate" in str(err.value)
    assert checkpoint.latest_step(tmp_path) == 0 and checkpoint.latest_step(tmp_path, "best") == 0
    assert len(train.read_metrics(tmp_path)) == 1
    _, variables, _ = checkpoint.load_variables(tmp_path, "latest")
    assert all(np.all(np.isfinite(v)) for v in jax.tree_util.tree_leaves(variables))


def test_exploding_learning_rate_raises_in_the_first_epoch(tmp_path):
    config = syn.tiny_config(learning_rate=1e30, epochs=1)
    with pytest.raises(train.TrainingDiverged, match="no checkpoint"):
        train.train_and_evaluate(config, tmp_path, data=syn.tiny_data(), progress=False)
    assert checkpoint.latest_step(tmp_path) is None and train.read_metrics(tmp_path) == []


@pytest.mark.parametrize("key, value", [("train.data_placement", "gpu"),
                                        ("train.early_stopping", "sometimes"),
                                        ("train.mmd_estimator", "linear"),
                                        ("train.da_loss", "wasserstein"),
                                        ("model.name", "resnet50"),
                                        ("train.batch_size", 0),
                                        ("train.learning_rate", float("nan"))])
def test_config_error_names_the_bad_key(tmp_path, key, value):
    config = syn.tiny_config()
    section, leaf = key.split(".")
    config[section][leaf] = value
    with pytest.raises(ValueError, match=re.escape(key)):
        train.train_and_evaluate(config, tmp_path, data=syn.tiny_data(), progress=False)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_unknown_override_names_the_key():
    with pytest.raises(config_lib.ConfigError, match=r"train\.learning_rat'.*learning_rate"):
        config_lib.apply_overrides(syn.tiny_config(), ["train.learning_rat=0.1"])


# ---- data parallel -------------------------------------------------------------------------

FOUR_DEVICES = """
import json, sys
sys.path.insert(0, {tests!r})
import jax
assert jax.device_count() == 4, jax.devices()
import _synthetic as syn
from jaxrobust import train
steps = syn.parallel_step_losses(jax.devices(), True)
train.train_and_evaluate(syn.tiny_config(epochs=1), {workdir!r}, data=syn.tiny_data(), progress=False)
print(json.dumps(steps))
"""


def test_four_devices_give_the_one_device_losses(tmp_path):
    env = syn.subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    code = FOUR_DEVICES.format(tests=str(TESTS), workdir=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    four = json.loads(result.stdout.strip().splitlines()[-1])
    # three DA steps (BatchNorm over both halves, CE, MMD) step by step
    one = syn.parallel_step_losses(jax.devices()[:1], True)
    assert len(four) == len(one) == 3
    for got, want in zip(four, one):
        assert got["count"] == want["count"] and got["correct"] == want["correct"]
        for key in ("loss", "ce", "da_loss"):
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), key
    assert one[-1]["count"] == 4  # the ragged last batch is in the comparison
    assert one[0]["da_loss"] > 8 * 1e-4  # above the clamp
    # a whole regular epoch on 4 devices: the 1-device numbers of the reference run. That run
    # uses lr 1e-3, where Adam turns float32 summation-order noise in near-zero gradients into
    # ~lr-sized steps (see parallel_step_losses), so after the epoch agreement is ~1e-5, not 1e-7.
    ref, _, _ = syn.reference_run()
    got, want = train.read_metrics(tmp_path)[0], train.read_metrics(ref)[0]
    for key in syn.METRIC_KEYS:
        assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key
    # and its checkpoints restore on this 1-device process (another topology)
    data = syn.tiny_data()
    weights = losses.class_weights(data.labels["train"])
    for series in ("best", "latest"):
        model, variables, _ = checkpoint.load_variables(tmp_path, series)
        _, logits = predict.make_predict(model, 8)(variables, data.images["Y10", "valid"])
        val_loss = _weighted_ce_float64(logits, data.labels["valid"], weights)
        assert val_loss == pytest.approx(got["val_loss"], rel=1e-5)
