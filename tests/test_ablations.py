"""Ablation switches: each changes exactly what it says, checked against a direct computation."""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrobust import attack, augment, losses, train
from jaxrobust.config import load_config
from jaxrobust.models import build_model

WEIGHTS = jnp.array([0.7, 1.2, 1.9])


def _batch(seed=0, n=6, size=16):
    rng = np.random.default_rng(seed)
    return {"image": rng.uniform(0, 1, (n, size, size, 3)).astype(np.float32),
            "label": rng.integers(0, 3, n).astype(np.int32), "mask": np.ones(n, np.float32),
            "target_image": rng.uniform(0, 1, (n, size, size, 3)).astype(np.float32) ** 2,
            "target_mask": np.ones(n, np.float32)}


@pytest.fixture(scope="module")
def sgd_state():
    """A small ConvNet (16 x 16 images) with SGD(lr=1): the parameter change is minus the gradient."""
    model = build_model("convnet")
    return train.create_state(model, optax.sgd(1.0), jax.random.key(0), (16, 16, 3))


def _step(state, spec, batch):
    new, _ = jax.jit(partial(train.train_step, spec=spec, class_weights=WEIGHTS,
                             dropout_key=jax.random.key(1)))(state, train.zero_sums(), batch)
    grads = jax.tree_util.tree_map(lambda a, b: a - b, state.params, new.params)
    return grads, new.batch_stats


def _close(a, b, **kw):
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, **kw), a, b)


def test_mixed_batch_forward_is_ce_on_y10_through_a_mixed_batchnorm_forward(sgd_state):
    batch = _batch()
    regular = train.StepSpec("none", 0.05, "biased", False)
    mixed = train.StepSpec("none", 0.05, "biased", False, mixed_batch_forward=True)
    g_mixed, bs_mixed = _step(sgd_state, mixed, batch)
    g_regular, bs_regular = _step(sgd_state, regular, batch)

    # independent computation: CE of the Y10 half of one train-mode forward over Y10 + Y1
    images = jnp.concatenate([batch["image"], batch["target_image"]])
    mask = jnp.ones(len(images))

    def loss(params):
        (_, logits), updates = sgd_state.apply_fn({"params": params, "batch_stats": sgd_state.batch_stats}, images,
                                                  train=True, mask=mask, mutable=["batch_stats"])
        n = len(batch["image"])
        return losses.weighted_cross_entropy(logits[:n], batch["label"], WEIGHTS, batch["mask"]), updates

    grads, updates = jax.grad(loss, has_aux=True)(sgd_state.params)
    _close(g_mixed, grads, rtol=1e-4, atol=1e-6)
    _close(bs_mixed, updates["batch_stats"], rtol=1e-5, atol=1e-7)
    # and it is DA's step with lambda = 0
    g_da0, bs_da0 = _step(sgd_state, train.StepSpec("mmd", 0.0, "biased", False), batch)
    _close(g_mixed, g_da0, rtol=1e-4, atol=1e-6)
    _close(bs_mixed, bs_da0, rtol=1e-6, atol=1e-7)
    # the switch changes the BatchNorm statistics (and so the gradients) of a regular step
    stats = lambda t: np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(t)])  # noqa: E731
    assert not np.allclose(stats(bs_mixed), stats(bs_regular))



@pytest.mark.parametrize("domain_adaptation", [False, True])
def test_augment_is_the_plain_step_on_the_drawn_symmetries(sgd_state, domain_adaptation):
    batch = _batch(seed=2)
    key = jax.random.key(7)
    da_loss = "mmd" if domain_adaptation else "none"
    plain = train.StepSpec(da_loss, 0.05, "biased", False)
    augmented = train.StepSpec(da_loss, 0.05, "biased", False, augment=True)

    def step(state, spec, b):
        new, _ = jax.jit(partial(train.train_step, spec=spec, class_weights=WEIGHTS, dropout_key=jax.random.key(1),
                                 augment_key=key))(state, train.zero_sums(), b)
        return new

    got = step(sgd_state, augmented, batch)
    # by hand: the plain step on the images transformed by the step's draw (key folded with the step)
    n = len(batch["image"])
    images = np.concatenate([batch["image"], batch["target_image"]]) if domain_adaptation else batch["image"]
    element = np.asarray(jax.random.randint(jax.random.fold_in(key, sgd_state.step), (len(images),), 0, 8))
    ours = np.asarray(augment.dihedral(jnp.asarray(images), jnp.asarray(element)))  # D4 itself: test_augment
    by_hand = dict(batch, image=ours[:n], target_image=ours[n:] if domain_adaptation else batch["target_image"])
    want = step(sgd_state, plain, by_hand)
    _close(got.params, want.params, rtol=1e-5, atol=1e-7)
    _close(got.batch_stats, want.batch_stats, rtol=1e-5, atol=1e-7)
    assert len(set(element.tolist())) > 1
    # and the switch changes the step: without it the images go in as they are
    unchanged = step(sgd_state, plain, batch)
    flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(t)])  # noqa: E731
    assert not np.allclose(flat(unchanged.params), flat(got.params))

def test_accumulate_gradients_feeds_adam_the_running_sum():
    kw = dict(learning_rate=1e-3, b1=0.7, b2=0.8, eps=1e-8, weight_decay=1e-3)
    accumulate = train.make_optimizer(**kw, accumulate_gradients=True)
    plain = train.make_optimizer(**kw)
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32), "b": jnp.zeros(4)}
    grads = [jax.tree_util.tree_map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
             for _ in range(3)]
    s_acc, s_ref = accumulate.init(params), plain.init(params)
    p_acc = p_ref = params
    running = jax.tree_util.tree_map(jnp.zeros_like, params)
    for g in grads:
        running = jax.tree_util.tree_map(jnp.add, running, g)
        u_acc, s_acc = accumulate.update(g, s_acc, p_acc)
        u_ref, s_ref = plain.update(running, s_ref, p_ref)  # independent: sum by hand, plain Adam
        _close(u_acc, u_ref, rtol=1e-6, atol=1e-9)
        p_acc, p_ref = optax.apply_updates(p_acc, u_acc), optax.apply_updates(p_ref, u_ref)
    # without the switch the second step differs (it sees g2, not g1 + g2)
    s = plain.init(params)
    u1, s = plain.update(grads[0], s, params)
    u2, _ = plain.update(grads[1], s, optax.apply_updates(params, u1))
    s = accumulate.init(params)
    a1, s = accumulate.update(grads[0], s, params)
    a2, _ = accumulate.update(grads[1], s, optax.apply_updates(params, a1))
    _close(u1, a1, rtol=1e-6)
    assert not np.allclose(u2["w"], a2["w"])


def test_optimizer_from_config_reads_accumulate_gradients():
    config = load_config("quick", ["train.accumulate_gradients=True"])
    tx = train.optimizer_from_config(config)
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    _, state = tx.update({"w": jnp.ones(3)}, state, params)
    assert np.allclose(jax.tree_util.tree_leaves(state)[0], 1.0)  # the running sum comes first
    assert load_config("quick").train.accumulate_gradients is False


def test_colour_init_normal_is_the_paper_draw_and_image_range_stays_in_the_band_ranges():
    key = jax.random.key(5)
    normal = np.asarray(attack.init_population(key, 2000))
    k_xy, k_rgb = jax.random.split(key)  # independent: the paper's draw written out
    np.testing.assert_array_equal(normal[:, :2], np.asarray(jax.random.uniform(k_xy, (2000, 2))))
    np.testing.assert_array_equal(normal[:, 2:],
                                  np.clip(0.5 + 0.5 * np.asarray(jax.random.normal(k_rgb, (2000, 3))), 0, 1))
    lo, hi = np.array([0.1, 0.4, 0.45]), np.array([0.3, 0.9, 0.5])
    ranged = np.asarray(attack.init_population(key, 2000, "image_range", jnp.asarray(np.stack([lo, hi]))))
    np.testing.assert_array_equal(ranged[:, :2], normal[:, :2])  # coordinates unchanged
    assert np.all(ranged[:, 2:] >= lo) and np.all(ranged[:, 2:] <= hi)
    np.testing.assert_allclose(ranged[:, 2:].mean(0), (lo + hi) / 2, atol=0.02 * (hi - lo).max() + 1e-3)


def test_colour_ranges_are_per_image_per_band():
    images = np.random.default_rng(0).uniform(size=(3, 5, 5, 3)).astype(np.float32)
    ranges = attack.colour_ranges(images)
    np.testing.assert_array_equal(ranges[:, 0], images.min(axis=(1, 2)))
    np.testing.assert_array_equal(ranges[:, 1], images.max(axis=(1, 2)))


def test_only_correct_selects_the_attacked_images():
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4]])
    labels = np.array([0, 0, 2])
    np.testing.assert_array_equal(attack.attacked_images(probs, labels, only_correct=True), [True, False, True])
    np.testing.assert_array_equal(attack.attacked_images(probs, labels, only_correct=False), [True, True, True])
    spec = attack.AttackSpec.from_config(load_config("quick", ["attack.only_correct=False",
                                                               "attack.colour_init='image_range'"]))
    assert spec.only_correct is False and spec.colour_init == "image_range"
    with pytest.raises(ValueError, match="attack.colour_init"):
        attack.AttackSpec(colour_init="uniform").validate()
