"""The one-pixel DE attack: planted pixel, exactness, batching invariance, devices, errors."""
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrobust import attack, candidates

H = W = 100


# --- A planted model: flips to class 2 only when pixel (R0, C0) takes colour TARGET ---
R0, C0 = 37, 71
TARGET = np.array([0.9, 0.15, 0.8], np.float32)


def planted_logits(images):
    """Class 2 wins only for (nearly) the target colour at (R0, C0); smooth, so DE can climb.

    score = sum over pixels of a spatial bump (sigma 12 px) around (R0, C0) times a colour
    similarity (sigma 0.1); the clean 0.5-grey image scores ~1e-5. The class-2 logit is
    30 (score - 0.9749), so p(2) > 0.5 exactly when score > 0.998, which only (R0, C0) itself
    reaches (one pixel off caps the score at exp(-1/288) = 0.9965); below that p(2) still grows
    with the score, which gives the DE a slope to climb.
    """
    ys = jnp.arange(H)[:, None]
    xs = jnp.arange(W)[None, :]
    spatial = jnp.exp(-((ys - R0) ** 2 + (xs - C0) ** 2) / (2 * 12.0 ** 2))
    colour = jnp.exp(-jnp.sum((images - TARGET) ** 2, axis=-1) / (2 * 0.1 ** 2))
    score = jnp.sum(spatial * colour, axis=(1, 2))
    z = jnp.zeros_like(score)
    return jnp.stack([z, z, 30.0 * (score - 0.9749)], axis=-1)


def grey(n):
    return np.full((n, H, W, 3), 0.5, np.float32)


def spec(**kw):
    base = dict(population=400, max_generations=80, block_generations=5, tasks_per_call=4, chunk_candidates=400)
    base.update(kw)
    return attack.AttackSpec(**base)


def test_planted_pixel_is_found():
    ev = candidates.FullEvaluator(planted_logits, 400)
    res = attack.run_attack(ev, grey(2), np.array([2, 2]), np.array([0, 1]), jax.random.key(3), spec(),
                            targeted=True, progress=False)
    assert res.success.all()
    row, col, rgb = candidates.decode(jnp.asarray(res.genes), H, W)
    np.testing.assert_array_equal(np.asarray(row), [R0, R0])
    np.testing.assert_array_equal(np.asarray(col), [C0, C0])
    assert np.all(np.abs(np.asarray(rgb) - TARGET) < 0.01)
    assert np.all(res.fitness > 0.5)


def test_perturbed_image_differs_in_one_pixel_and_reproduces_probabilities():
    ev = candidates.FullEvaluator(planted_logits, 400)
    images = grey(1)
    res = attack.run_attack(ev, images, np.array([2]), np.array([5]), jax.random.key(1), spec(),
                            targeted=True, progress=False)
    perturbed = np.asarray(candidates.perturb(jnp.asarray(images), jnp.asarray(res.genes)))
    changed = np.argwhere(np.any(perturbed[0] != images[0], axis=-1))
    assert changed.shape == (1, 2)
    probs = np.asarray(jax.nn.softmax(planted_logits(jnp.asarray(perturbed)), axis=-1))
    np.testing.assert_allclose(probs[0, 2], res.fitness[0], rtol=1e-5)


def test_decode_rounds_and_clips_like_the_paper():
    genes = jnp.array([[0.0, 1.0, -0.2, 0.5, 1.4], [0.004, 0.996, 0.1, 0.2, 0.3], [0.995, 0.005, 0, 0, 0]])
    row, col, rgb = candidates.decode(genes, H, W)
    # round(g * 100) then clip to [0, 99]; round half to even as np.round
    np.testing.assert_array_equal(np.asarray(row), [0, 0, 99])
    np.testing.assert_array_equal(np.asarray(col), [99, 99, 0])
    np.testing.assert_allclose(np.asarray(rgb[0]), [0.0, 0.5, 1.0])


def test_distinct_triplets_are_distinct_and_cover_the_population():
    a, b, c = map(np.asarray, attack.distinct_triplets(jax.random.key(0), 400))
    assert np.all(a != b) and np.all(a != c) and np.all(b != c)
    pooled = np.concatenate([a, b, c])
    assert pooled.min() == 0 or pooled.min() < 5
    assert pooled.max() > 394
    counts = np.bincount(np.concatenate([np.asarray(x) for k in range(20)
                                         for x in attack.distinct_triplets(jax.random.key(k), 400)]), minlength=400)
    # 24,000 draws over 400 members: mean 60, Poisson sd ~7.7
    assert 25 < counts.min() and counts.max() < 100


def test_mutation_resamples_out_of_bounds_genes():
    genes = jax.random.uniform(jax.random.key(0), (400, 5))
    child = np.asarray(attack.mutate(jax.random.key(1), genes, 0.5))
    assert child.min() >= 0.0 and child.max() <= 1.0


# --- The batched attack equals a straightforward per-image reference ---
def reference_attack(logits_fn, image, objective, key, s: attack.AttackSpec, targeted: bool):
    """One image, one task, a plain Python loop over generations (the paper's structure)."""
    def fitness(genes):
        imgs = candidates.perturb(jnp.repeat(image[None], len(genes), 0), genes)
        return np.array(jax.nn.softmax(logits_fn(imgs), axis=-1))[:, objective]

    def met(f):
        return f.max() > s.target_threshold if targeted else f.min() < s.untargeted_threshold

    genes = np.array(attack.init_population(jax.random.fold_in(key, 0), s.population))
    fit = fitness(jnp.asarray(genes))
    generations = 0
    while not met(fit) and generations < s.max_generations:
        children = np.asarray(attack.mutate(jax.random.fold_in(key, generations + 1), jnp.asarray(genes),
                                            s.differential_weight))
        child_fit = fitness(jnp.asarray(children))
        better = child_fit > fit if targeted else child_fit < fit
        genes[better], fit[better] = children[better], child_fit[better]
        generations += 1
    best = int(np.argmax(fit) if targeted else np.argmin(fit))
    return bool(met(fit)), generations, genes[best]


def small_logits(images):
    """A fixed random linear 'network' on 4x4-pooled images: cheap, smooth, 3 classes."""
    w = jax.random.normal(jax.random.key(42), (25 * 25 * 3, 3)) * 2.0
    pooled = images.reshape(images.shape[0], 25, 4, 25, 4, 3).mean(axis=(2, 4))
    return (pooled.reshape(images.shape[0], -1) - 0.5) @ w


@pytest.mark.parametrize("targeted", [True, False])
def test_batched_attack_equals_per_image_reference(targeted):
    rng = np.random.default_rng(0)
    images = rng.uniform(0.3, 0.7, size=(5, H, W, 3)).astype(np.float32)
    labels = np.asarray(jnp.argmax(small_logits(jnp.asarray(images)), -1))
    objective = (labels + 1) % 3 if targeted else labels
    s = spec(population=60, max_generations=12, block_generations=3, tasks_per_call=2, chunk_candidates=50,
             target_threshold=0.3, untargeted_threshold=0.5)
    key = jax.random.key(7)
    task_ids = np.arange(5) * 3 + objective
    res = attack.run_attack(candidates.FullEvaluator(small_logits, s.chunk_candidates), images, objective, task_ids,
                            key, s, targeted=targeted, progress=False)
    for i in range(5):
        ok, gens, genes = reference_attack(small_logits, jnp.asarray(images[i]), int(objective[i]),
                                           jax.random.fold_in(key, int(task_ids[i])), s, targeted)
        assert res.success[i] == ok
        assert res.generations[i] == gens
        np.testing.assert_allclose(res.genes[i], genes, rtol=1e-6)
    assert 0 < res.success.sum() < 5  # the test exercises both outcomes


def test_results_do_not_depend_on_batching_or_chunking():
    rng = np.random.default_rng(1)
    images = rng.uniform(0.3, 0.7, size=(6, H, W, 3)).astype(np.float32)
    labels = np.asarray(jnp.argmax(small_logits(jnp.asarray(images)), -1))
    objective = (labels + 2) % 3
    runs = []
    for tasks, chunk, block in ((1, 60, 1), (4, 130, 4), (6, 360, 7)):
        s = spec(population=60, max_generations=10, block_generations=block, tasks_per_call=tasks,
                 chunk_candidates=chunk, target_threshold=0.9)
        runs.append(attack.run_attack(candidates.FullEvaluator(small_logits, chunk), images, objective, np.arange(6),
                                      jax.random.key(2), s, targeted=True, progress=False))
    for other in runs[1:]:
        np.testing.assert_array_equal(other.success, runs[0].success)
        np.testing.assert_array_equal(other.generations, runs[0].generations)
        np.testing.assert_allclose(other.genes, runs[0].genes, rtol=1e-6)


def test_same_seed_same_results_and_different_seed_differs():
    images = np.random.default_rng(2).uniform(0.3, 0.7, size=(3, H, W, 3)).astype(np.float32)
    s = spec(population=40, max_generations=5, target_threshold=0.99)
    ev = candidates.FullEvaluator(small_logits, 40)
    run = lambda k: attack.run_attack(ev, images, np.array([0, 1, 2]), np.arange(3), jax.random.key(k), s,  # noqa: E731
                                      targeted=True, progress=False)
    a, b, c = run(0), run(0), run(1)
    np.testing.assert_array_equal(a.genes, b.genes)
    assert not np.array_equal(a.genes, c.genes)


def test_finished_tasks_keep_their_state_and_count_no_generations():
    # threshold 0 (targeted): every initial population already succeeds -> 0 generations
    images = grey(3)
    s = spec(population=20, max_generations=10, target_threshold=0.0)
    res = attack.run_attack(candidates.FullEvaluator(small_logits, 20), images, np.array([0, 1, 2]), np.arange(3),
                            jax.random.key(0), s, targeted=True, progress=False)
    assert res.success.all()
    np.testing.assert_array_equal(res.generations, 0)
    s = spec(population=20, max_generations=7, target_threshold=1.1)  # never succeeds: runs to the cap
    res = attack.run_attack(candidates.FullEvaluator(small_logits, 20), images, np.array([0, 1, 2]), np.arange(3),
                            jax.random.key(0), s, targeted=True, progress=False)
    assert not res.success.any()
    np.testing.assert_array_equal(res.generations, 7)


# --- Bad input ---
def test_bad_inputs_get_clear_errors():
    images, labels = grey(2), np.array([0, 1])
    with pytest.raises(ValueError, match="NHWC"):
        attack.check_inputs(np.zeros((2, 3, H, W)), labels, 3)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        attack.check_inputs(images, np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="empty"):
        attack.check_inputs(grey(0), np.zeros(0, int), 3)
    with pytest.raises(ValueError, match="target equals the true class for image 1"):
        attack.check_inputs(images, labels, 3, targets=np.array([2, 1]))
    with pytest.raises(ValueError, match="empty"):
        attack.run_attack(candidates.FullEvaluator(small_logits, 10), grey(0), np.zeros(0, int), np.zeros(0, int),
                          jax.random.key(0), spec(), targeted=True, progress=False)
    with pytest.raises(ValueError, match="population"):
        spec(population=3).validate()


# --- Devices ---
DEVICE_SCRIPT = textwrap.dedent("""
    import os, sys, json
    import numpy as np, jax, jax.numpy as jnp
    sys.path.insert(0, {tests!r})
    from test_attack import small_logits, spec, H, W
    from jaxrobust import attack, candidates, parallel
    images = np.random.default_rng(3).uniform(0.3, 0.7, size=(6, H, W, 3)).astype(np.float32)
    s = spec(population=40, max_generations=6, block_generations=2, tasks_per_call=4, chunk_candidates=40,
             target_threshold=0.9)
    res = attack.run_attack(candidates.FullEvaluator(small_logits, 40), images, np.array([0, 1, 2, 0, 1, 2]),
                            np.arange(6), jax.random.key(5), s, targeted=True, mesh=parallel.make_mesh(),
                            progress=False)
    print(json.dumps(dict(devices=jax.device_count(), success=res.success.tolist(),
                          generations=res.generations.tolist(), genes=res.genes.tolist())))
""")


def _run_devices(n):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}", JAX_PLATFORMS="cpu")
    code = DEVICE_SCRIPT.format(tests=os.path.dirname(__file__))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    import json
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_four_fake_devices_give_the_same_results_as_one():
    one, four = _run_devices(1), _run_devices(4)
    assert one["devices"] == 1 and four["devices"] == 4
    assert one["success"] == four["success"]
    assert one["generations"] == four["generations"]
    np.testing.assert_allclose(four["genes"], one["genes"], rtol=1e-6)


# --- Config ---
def test_attack_spec_reads_every_field_from_the_key_of_its_name():
    from jaxrobust import config as config_lib

    config = config_lib.base_config()
    config_lib.apply_overrides(config, [
        "attack.population=12", "attack.differential_weight=0.8", "attack.max_generations=3", "attack.targeted=False",
        "attack.target_threshold=0.6", "attack.untargeted_threshold=0.1", "attack.block_generations=2",
        "attack.tasks_per_call=4", "attack.chunk_candidates=64", "attack.only_correct=False",
        "attack.colour_init=image_range"])
    assert attack.AttackSpec.from_config(config) == attack.AttackSpec(12, 0.8, 3, False, 0.6, 0.1, 2, 4, 64, False,
                                                                      "image_range")


def test_tasks_per_call_key_and_its_old_name(tmp_path):
    from jaxrobust import config as config_lib

    config = config_lib.base_config()
    config_lib.apply_overrides(config, ["attack.tasks_per_call=3"])
    assert attack.AttackSpec.from_config(config).tasks_per_call == 3
    with pytest.raises(config_lib.ConfigError, match="renamed to 'attack.tasks_per_call'"):
        config_lib.apply_overrides(config, ["attack.images_per_call=2"])
    # a run folder's config.json from before the rename still gives its setting
    old = config_lib.base_config().to_dict()
    old["attack"]["images_per_call"] = old["attack"].pop("tasks_per_call") - 11
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert attack.AttackSpec.from_config(config_lib.read_run_config(tmp_path)).tasks_per_call == 5
