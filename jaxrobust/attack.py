"""One-pixel attack by differential evolution, batched over images x population on the device.

The DE of the paper (onepixel_attack.py; Su et al. 2019): a candidate is genes (row, col, g, r,
i) in [0, 1]^5; it sets the pixel (clip(round(row H), 0, H-1), clip(round(col W), 0, W-1)) to
clip((g, r, i), 0, 1) in the stretched image. Population 400: coordinates U(0, 1), colours
clip(N(0.5, 0.5), 0, 1). DE/rand/1 with F = 0.5: child_i = x_a + F (x_b - x_c) with a, b, c
three distinct random members (any of the population, as the code draws them); genes that leave
[0, 1] are resampled U(0, 1); a child replaces its parent only if fitter. Fitness is the
softmax probability of the target class (targeted, maximised, success when > 0.5) or of the
true class (untargeted, minimised, success when < 0.05). Each image stops at success; the cap
is 80 generations. `generations` counts the DE generations run (0 when the initial population
already succeeds; the paper's "iterations" is generations + 1, at most the cap).

Where the paper evaluates its 400 candidates one forward pass at a time, here one jitted call
runs a block of generations for many attack tasks (image, target) at once: every candidate of
every active task is evaluated in chunks of a fixed size, and finished tasks drop out of the
chunk loop, so they stop costing compute; between blocks the host refills their slots with
queued tasks. Every task draws from its own stream, fold_in(attack key, task id), one key per
generation, so results do not depend on batch size, slot order, chunking or device count.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections import deque
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust import checkpoint, incremental, parallel, provenance
from jaxrobust.candidates import NUM_GENES, decode, perturb
from jaxrobust.data import store
from jaxrobust.predict import make_predict, probabilities
from jaxrobust.progress import progress_bar
from jaxrobust.rng import run_seed, stream_key


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """DE settings (paper defaults) and the batching of the attack."""

    population: int = 400
    differential_weight: float = 0.5
    max_generations: int = 80
    targeted: bool = True
    target_threshold: float = 0.5  # targeted success: p(target) > threshold
    untargeted_threshold: float = 0.05  # untargeted success: p(true) < threshold
    block_generations: int = 8  # generations per jitted call between refills
    tasks_per_call: int = 16  # attack tasks (image, target) resident on the device at once
    chunk_candidates: int = 0  # candidates per forward chunk; 0 = the evaluator's measured default
    only_correct: bool = True  # attack only images classified correctly in Y10 (False: all, as the code)
    colour_init: str = "normal"  # initial colours: "normal" (paper) or "image_range" (see init_population)

    @classmethod
    def from_config(cls, config) -> "AttackSpec":
        """The spec from the config's `attack` section: each field is the key of its name, cast to the
        field's type (a run folder's config is read with every key: config.read_run_config)."""
        a = config.attack
        return cls(**{f.name: type(f.default)(a[f.name]) for f in dataclasses.fields(cls)})

    def validate(self) -> None:
        if self.colour_init not in COLOUR_INITS:
            raise ValueError(f"attack.colour_init must be one of {COLOUR_INITS}, got {self.colour_init!r}")
        if self.population < 4:
            raise ValueError(f"attack.population must be >= 4 (DE/rand/1 needs three others), got {self.population}")
        if self.max_generations < 0 or self.block_generations < 1 or self.tasks_per_call < 1:
            raise ValueError("attack.max_generations >= 0, attack.block_generations >= 1 and "
                             "attack.tasks_per_call >= 1 are required")


# --- DE on one task (vmapped over tasks) ---
COLOUR_INITS = ("normal", "image_range")


def init_population(key: jax.Array, population: int, colour_init: str = "normal",
                    colour_range: jax.Array | None = None) -> jax.Array:
    """(P, 5) genes: coordinates U(0, 1); colours clip(N(0.5, 0.5), 0, 1) ("normal", the paper's
    onepixel_attack.py) or, for "image_range", U(lo, hi) per band with colour_range (2, 3) = the
    image's own per-band (min, max): no initial pixel is more extreme than the image itself, which
    separates "an out-of-range pixel" from real vulnerability. Mutation is unchanged (genes that
    leave [0, 1] are resampled U(0, 1)), so only the starting colours differ."""
    k_xy, k_rgb = jax.random.split(key)
    xy = jax.random.uniform(k_xy, (population, 2))
    if colour_init == "image_range":
        rgb = jax.random.uniform(k_rgb, (population, 3), minval=colour_range[0], maxval=colour_range[1])
    else:
        rgb = jnp.clip(0.5 + 0.5 * jax.random.normal(k_rgb, (population, 3)), 0.0, 1.0)
    return jnp.concatenate([xy, rgb], axis=1)


def colour_ranges(images: np.ndarray) -> np.ndarray:
    """(N, 2, 3) per-image, per-band (min, max) of stretched images (N, H, W, 3)."""
    images = np.asarray(images, np.float32)
    return np.stack([images.min(axis=(1, 2)), images.max(axis=(1, 2))], axis=1)


def attacked_images(probabilities: np.ndarray, labels: np.ndarray, only_correct: bool = True) -> np.ndarray:
    """(N,) bool: the images to attack. only_correct (ours, default): those classified correctly
    in Y10. Otherwise every image, as the published church_window() does; a misclassified image
    then needs no special case: its DE runs like any other, and when its initial population
    already meets the success criterion it counts as successful at generation 0."""
    if not only_correct:
        return np.ones(len(labels), bool)
    return np.argmax(probabilities, 1) == np.asarray(labels)


def distinct_triplets(key: jax.Array, population: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per member, three distinct indices into the population (uniform, no rejection loop)."""
    k_a, k_b, k_c = jax.random.split(key, 3)
    a = jax.random.randint(k_a, (population,), 0, population)
    b = jax.random.randint(k_b, (population,), 0, population - 1)
    b = b + (b >= a)  # skip a
    c = jax.random.randint(k_c, (population,), 0, population - 2)
    lo, hi = jnp.minimum(a, b), jnp.maximum(a, b)
    c = c + (c >= lo)
    c = c + (c >= hi)  # skip a and b, in increasing order
    return a, b, c


def mutate(key: jax.Array, genes: jax.Array, differential_weight: float) -> jax.Array:
    """DE/rand/1 children (P, 5) of a population, out-of-bounds genes resampled U(0, 1)."""
    k_idx, k_resample = jax.random.split(key)
    a, b, c = distinct_triplets(k_idx, genes.shape[0])
    child = genes[a] + differential_weight * (genes[b] - genes[c])
    out_of_bounds = (child < 0.0) | (child > 1.0)
    return jnp.where(out_of_bounds, jax.random.uniform(k_resample, child.shape), child)


def success(fitness: jax.Array, targeted: bool, spec: AttackSpec) -> jax.Array:
    """Per task: does the best member meet the paper's threshold? fitness (..., P) -> (...)."""
    if targeted:
        return jnp.max(fitness, axis=-1) > spec.target_threshold
    return jnp.min(fitness, axis=-1) < spec.untargeted_threshold


# --- Device state of the resident tasks ---
class DEState(NamedTuple):
    genes: jax.Array  # (T, P, 5)
    fitness: jax.Array  # (T, P) probability of the objective class
    done: jax.Array  # (T,) bool: success reached
    generations: jax.Array  # (T,) int32 generations run


class Slots(NamedTuple):
    """Per-slot task data: the cache, the PRNG key, the objective class, the cap, occupancy."""

    cache: object  # evaluator cache with leading T axis
    key: jax.Array  # (T,) typed keys
    objective: jax.Array  # (T,) int32: target class (targeted) or true class (untargeted)
    limit: jax.Array  # (T,) int32: generation cap (traced, so changing it does not recompile)
    valid: jax.Array  # (T,) bool: slot holds a task
    colour_range: jax.Array  # (T, 2, 3) per-band (min, max) of the slot's image (attack.colour_init)


def _objective_fitness(probs: jax.Array, objective: jax.Array) -> jax.Array:
    return jnp.take_along_axis(probs, objective[:, None, None], axis=-1)[..., 0]


def _init_slots(spec: AttackSpec, targeted: bool, evaluator, state: DEState, slots: Slots,
                fresh: jax.Array) -> DEState:
    """Initial population and fitness for the `fresh` slots; others unchanged."""
    genes = jax.vmap(lambda k, r: init_population(jax.random.fold_in(k, 0), spec.population, spec.colour_init, r))(
        slots.key, slots.colour_range)
    fitness = _objective_fitness(evaluator.probabilities(slots.cache, genes, fresh), slots.objective)
    keep = ~fresh
    return DEState(
        genes=jnp.where(keep[:, None, None], state.genes, genes),
        fitness=jnp.where(keep[:, None], state.fitness, fitness),
        done=jnp.where(keep, state.done, success(fitness, targeted, spec)),
        generations=jnp.where(keep, state.generations, 0))


def _run_block(spec: AttackSpec, targeted: bool, evaluator, state: DEState, slots: Slots) -> DEState:
    """`spec.block_generations` DE generations for every active slot."""

    def generation(state: DEState, _):
        active = slots.valid & ~state.done & (state.generations < slots.limit)
        keys = jax.vmap(jax.random.fold_in)(slots.key, state.generations + 1)
        children = jax.vmap(mutate, in_axes=(0, 0, None))(keys, state.genes, spec.differential_weight)
        child_fitness = _objective_fitness(evaluator.probabilities(slots.cache, children, active), slots.objective)
        better = child_fitness > state.fitness if targeted else child_fitness < state.fitness
        replace = better & active[:, None]
        fitness = jnp.where(replace, child_fitness, state.fitness)
        new = DEState(genes=jnp.where(replace[..., None], children, state.genes), fitness=fitness,
                      done=state.done | (active & success(fitness, targeted, spec)),
                      generations=state.generations + active.astype(jnp.int32))
        return new, None

    state, _ = jax.lax.scan(generation, state, None, length=spec.block_generations)
    return state


class AttackResult(NamedTuple):
    """Per task (NumPy): success, generations run, best genes and best fitness."""

    success: np.ndarray  # (N,) bool
    generations: np.ndarray  # (N,) int32
    genes: np.ndarray  # (N, 5) float32
    fitness: np.ndarray  # (N,) float32


def run_attack_split(evaluator, images: np.ndarray, objective: np.ndarray, task_ids: np.ndarray,
                     key: jax.Array, spec: AttackSpec, targeted: bool, mesh=None,
                     progress: bool = True) -> AttackResult:
    """`run_attack` with the tasks split over the processes of a multi-process run.

    Each process runs every process_count()-th task (parallel.task_share) on its own devices
    (`mesh`: default parallel.local_mesh()), then all gather every result: each task keeps its
    own PRNG stream, so the results equal a single-process run's. One process: run_attack.
    """
    share = parallel.task_share(len(images))
    mesh = mesh or parallel.local_mesh()
    if len(share):
        local = run_attack(evaluator, images[share], np.asarray(objective)[share], np.asarray(task_ids)[share],
                           key, spec, targeted, mesh=mesh, progress=progress and parallel.is_main_process())
    else:  # fewer tasks than processes: this one has none, but joins the gather
        local = AttackResult(np.zeros(0, bool), np.zeros(0, np.int32), np.zeros((0, NUM_GENES), np.float32),
                             np.zeros(0, np.float32))
    return AttackResult(*parallel.gather_tasks(tuple(local), len(images)))


_COMPILED: dict = {}  # (spec, targeted, mesh) -> (init, block): shared by every evaluator


def mesh_key(mesh) -> tuple | None:
    """A hashable identity of a device mesh (None: no mesh) for the compiled-function caches."""
    return None if mesh is None else (mesh.axis_names, mesh.devices.shape, tuple(d.id for d in mesh.devices.flat))


def place_evaluator(evaluator, mesh):
    """The evaluator's weights replicated over a mesh of several local devices (shard_map's
    replicated argument); unchanged on one device, where jit places them itself."""
    if mesh is None or parallel.num_shards(mesh) == 1 or mesh.is_multi_process:
        return evaluator
    return jax.device_put(evaluator, parallel.replicated(mesh))


def _compile(spec: AttackSpec, targeted: bool, mesh):
    """Jitted init(evaluator, state, slots, fresh) and block(evaluator, state, slots).

    The evaluator is an argument (a pytree: its weights are leaves, its configuration static),
    so the functions are cached on the settings alone: evaluators of the same shapes and
    configuration (the regular and the DA model) share one compiled program per slot count.
    On a mesh of several devices they run under shard_map: each device advances its own slots,
    the evaluator replicated.
    """
    spec = dataclasses.replace(spec, max_generations=0)  # the cap is traced (Slots.limit)
    key = (spec, targeted, mesh_key(mesh))
    if key in _COMPILED:
        return _COMPILED[key]
    init = functools.partial(_init_slots, spec, targeted)
    block = functools.partial(_run_block, spec, targeted)
    if mesh is not None and parallel.num_shards(mesh) > 1:
        rows, whole = jax.sharding.PartitionSpec(parallel.DATA_AXIS), jax.sharding.PartitionSpec()
        init = jax.shard_map(init, mesh=mesh, in_specs=(whole, rows, rows, rows), out_specs=rows, check_vma=False)
        block = jax.shard_map(block, mesh=mesh, in_specs=(whole, rows, rows), out_specs=rows, check_vma=False)
    _COMPILED[key] = (jax.jit(init, donate_argnums=(1,)), jax.jit(block, donate_argnums=(1,)))
    return _COMPILED[key]


def run_attack(evaluator, images: np.ndarray, objective: np.ndarray, task_ids: np.ndarray, key: jax.Array,
               spec: AttackSpec, targeted: bool, mesh=None, progress: bool = True) -> AttackResult:
    """Runs one DE per task: image `images[i]` towards (or away from) class `objective[i]`.

    Args:
      evaluator: a candidates.CandidateEvaluator, e.g. candidates.FullEvaluator(logits_fn, chunk)
        or incremental.make_evaluator(name, model, variables).
      images: (N, H, W, C) stretched clean images (host or device).
      objective: (N,) target class (targeted) or true class (untargeted).
      task_ids: (N,) integers naming each task's PRNG stream: fold_in(key, task_id).
      key: the attack key (typed).
      targeted: maximise p(objective) (> target_threshold) or minimise it (< untargeted_threshold).
      mesh: optional device mesh; tasks are split over its devices.
    Returns:
      AttackResult with one row per task, in input order.
    """
    spec.validate()
    n = len(images)
    if n == 0:
        raise ValueError("no images to attack (empty set)")
    shards = parallel.num_shards(mesh) if mesh is not None else 1
    slots_n = parallel.round_up(min(spec.tasks_per_call, parallel.round_up(n, shards)), shards)
    init_fn, block_fn = _compile(spec, targeted, mesh)
    evaluator = place_evaluator(evaluator, mesh)
    images = np.asarray(images, dtype=np.float32)
    slot_images = np.zeros((slots_n,) + images.shape[1:], np.float32)
    slot_keys = np.array(jax.random.key_data(jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.zeros(slots_n, jnp.int32))))
    task_keys = np.asarray(jax.random.key_data(jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.asarray(task_ids, jnp.uint32))))
    slot_objective = np.zeros(slots_n, np.int32)
    task_ranges, slot_ranges = colour_ranges(images), np.zeros((slots_n, 2, 3), np.float32)
    slot_task = np.full(slots_n, -1)
    state = DEState(jnp.zeros((slots_n, spec.population, NUM_GENES)), jnp.zeros((slots_n, spec.population)),
                    jnp.zeros(slots_n, bool), jnp.zeros(slots_n, jnp.int32))
    queue = deque(range(n))
    result = AttackResult(np.zeros(n, bool), np.zeros(n, np.int32), np.zeros((n, NUM_GENES), np.float32),
                          np.zeros(n, np.float32))
    bar = progress_bar(total=n, desc="attack", unit="task", disable=not progress)
    impl = jax.random.key_impl(key)
    slots = None
    while queue or (slot_task >= 0).any():
        fresh = np.zeros(slots_n, bool)
        for slot in np.flatnonzero(slot_task < 0):
            if not queue:
                break
            task = queue.popleft()
            slot_task[slot], fresh[slot] = task, True
            slot_images[slot], slot_objective[slot], slot_keys[slot] = images[task], objective[task], task_keys[task]
            slot_ranges[slot] = task_ranges[task]
        if fresh.any() or slots is None:  # new tasks: new caches (the clean activations), keys, targets
            slots = Slots(evaluator.prepare(jnp.asarray(slot_images)),
                          jax.random.wrap_key_data(jnp.asarray(slot_keys), impl=impl),
                          jnp.asarray(slot_objective), jnp.full(slots_n, spec.max_generations, jnp.int32),
                          jnp.asarray(slot_task >= 0), jnp.asarray(slot_ranges))
            state = init_fn(evaluator, state, slots, jnp.asarray(fresh))
        elif not np.array_equal(np.asarray(slots.valid), slot_task >= 0):  # finished slots, none refilled
            slots = slots._replace(valid=jnp.asarray(slot_task >= 0))
        state = block_fn(evaluator, state, slots)
        done, generations = jax.device_get((state.done, state.generations))
        finished = (slot_task >= 0) & (done | (generations >= spec.max_generations))
        if finished.any():
            genes, fitness = jax.device_get((state.genes, state.fitness))
            for slot in np.flatnonzero(finished):
                member = int(np.argmax(fitness[slot]) if targeted else np.argmin(fitness[slot]))
                task = slot_task[slot]
                result.success[task] = bool(done[slot])
                result.generations[task] = generations[slot]
                result.genes[task] = genes[slot, member]
                result.fitness[task] = fitness[slot, member]
                slot_task[slot] = -1
            bar.update(int(finished.sum()))
    bar.close()
    return result


# --- The paper's protocol ---
def check_stamps(images: np.ndarray, labels: np.ndarray, purpose: str = "attack") -> None:
    """Clear errors for image and label shapes and empty sets (the attack's and the scan's inputs)."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3) stretched NHWC stamps, got shape {images.shape}")
    if len(images) == 0:
        raise ValueError(f"no images to {purpose} (empty set)")
    if labels.shape != (len(images),):
        raise ValueError(f"labels must be ({len(images)},) class indices, got shape {labels.shape}")


def check_inputs(images: np.ndarray, labels: np.ndarray, num_classes: int, targets=None) -> None:
    """Clear errors for shapes, label range, empty sets and targets equal to the true class."""
    check_stamps(images, labels)
    images, labels = np.asarray(images), np.asarray(labels)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], got range [{labels.min()}, {labels.max()}]")
    if targets is not None:
        targets = np.asarray(targets)
        if targets.shape != labels.shape:
            raise ValueError(f"targets must be ({len(labels)},), got shape {targets.shape}")
        if targets.min() < 0 or targets.max() >= num_classes:
            raise ValueError(f"targets must lie in [0, {num_classes - 1}]")
        same = np.flatnonzero(targets == labels)
        if same.size:
            raise ValueError(f"target equals the true class for image {int(same[0])} "
                             f"({same.size} images): a targeted attack needs another class")


def attack_protocol(model, variables, images_y10: np.ndarray, images_y1: np.ndarray, labels: np.ndarray,
                    key: jax.Array, spec: AttackSpec, evaluator: str = "auto", mesh=None,
                    progress: bool = True, log=print) -> dict:
    """The paper's protocol on a set of test images (DeepAdversaries church_window.py).

    Every image the model classifies correctly in Y10 is attacked; targeted: towards each other
    class in increasing class order until one succeeds (the first success is kept);
    untargeted: once, away from its class. Returns per-image NumPy arrays: attacked, success,
    target (-1 if none), generations (of the kept attack; total over targets when all fail),
    genes, pixel (row, col, g, r, i), probabilities before/after, the perturbed image, the
    latents of the Y10 image, its perturbation (1P) and its Y1 twin, and per-target details.
    """
    num_classes = model.num_classes
    check_inputs(images_y10, labels, num_classes)
    if images_y1.shape != images_y10.shape:
        raise ValueError(f"Y1 images {images_y1.shape} must match Y10 images {images_y10.shape}")
    mesh = mesh or parallel.local_mesh()  # several processes: each attacks its share on its devices
    variables = parallel.localize(variables)
    if not parallel.is_main_process():
        progress, log = False, lambda *_: None
    predict = _latents_and_probs(model, variables)
    latent_y10, probs_before = predict(images_y10)
    latent_y1, probs_y1 = predict(images_y1)
    attacked = attacked_images(probs_before, labels, spec.only_correct)
    n = len(labels)
    out = dict(attacked=attacked, success=np.zeros(n, bool), target=np.full(n, -1, np.int32),
               generations=np.zeros(n, np.int32), genes=np.zeros((n, NUM_GENES), np.float32),
               generations_per_target=np.full((n, num_classes), -1, np.int32),
               success_per_target=np.zeros((n, num_classes), bool))
    engine = incremental.make_evaluator(evaluator, model, variables, spec.chunk_candidates)
    log(f"attacking {int(attacked.sum())} of {n} images "
        f"({'correctly classified in Y10' if spec.only_correct else 'all, attack.only_correct=False'}) with the "
        f"{engine.name} evaluator, population {spec.population}, up to {spec.max_generations} generations")
    if spec.targeted:
        pending, spent = attacked.copy(), np.zeros(n, np.int32)
        for rank in range(num_classes - 1):
            # the rank-th class other than the true one, in increasing class order
            targets = np.array([[c for c in range(num_classes) if c != y][rank] for y in labels], np.int32)
            todo = np.flatnonzero(pending)
            if todo.size == 0:
                break
            res = run_attack_split(engine, images_y10[todo], targets[todo], todo * num_classes + targets[todo],
                                   key, spec, targeted=True, mesh=mesh, progress=progress)
            out["generations_per_target"][todo, targets[todo]] = res.generations
            out["success_per_target"][todo, targets[todo]] = res.success
            spent[todo] += res.generations
            keep = res.success | (rank == 0)  # failures keep their first target's best attempt
            out["genes"][todo[keep]] = res.genes[keep]
            won = todo[res.success]
            out["success"][won], out["target"][won] = True, targets[won]
            out["generations"][won] = res.generations[res.success]
            pending[won] = False
        out["generations"][pending] = spent[pending]
    else:
        todo = np.flatnonzero(attacked)
        res = run_attack_split(engine, images_y10[todo], labels[todo].astype(np.int32),
                               todo * num_classes + labels[todo], key, spec, targeted=False, mesh=mesh,
                               progress=progress)
        out["success"][todo], out["generations"][todo], out["genes"][todo] = res.success, res.generations, res.genes
    perturbed = np.asarray(perturb(jnp.asarray(images_y10), jnp.asarray(out["genes"])))
    perturbed = np.where(out["attacked"][:, None, None, None], perturbed, images_y10)
    latent_1p, probs_after = predict(perturbed)
    row, col, rgb = decode(jnp.asarray(out["genes"]), images_y10.shape[1], images_y10.shape[2])
    out.update(pixel=np.concatenate([np.stack([row, col], 1), rgb], 1).astype(np.float32),
               probabilities_before=probs_before, probabilities_after=probs_after, probabilities_y1=probs_y1,
               perturbed=perturbed.astype(np.float32), latent_y10=latent_y10, latent_1p=latent_1p,
               latent_y1=latent_y1, labels=np.asarray(labels, np.int32))
    log(f"one-pixel attack succeeded on {int(out['success'].sum())} of {int(attacked.sum())} attacked images")
    return out


def _latents_and_probs(model, variables, batch: int = 64):
    """images -> (latents, float32 probabilities), `batch` images per compiled call."""
    predict = make_predict(model, batch)

    def run(images):
        latent, logits = predict(variables, images)
        return latent, probabilities(logits).astype(np.float32)

    return run


def attack_run(run_dir, data, config=None, progress: bool = True, log=print) -> dict:
    """The paper protocol on a run's best model over the dataset's attack subsample.

    Uses the first `attack.n_images` images of the seeded test subsample (regular_images_150.npy
    etc.; drawn from the test split when the dataset has none), or with attack.n_images = 0 every
    test image. Writes attack.npz (per image)
    and attack.json (settings, counts, timing). `config` overrides the run's attack settings.
    """
    run_dir = Path(run_dir)
    provenance.check_writable(run_dir, "--workdir")  # before the attack, not after it
    model, variables, run_config = checkpoint.load_variables(run_dir)
    config = config or run_config
    spec = AttackSpec.from_config(config)
    y10, y1, labels, index = attack_images(data, int(config.attack.n_images), int(config.seed))
    start = time.perf_counter()
    out = attack_protocol(model, variables, y10, y1, labels, stream_key(run_seed(config), "attack"), spec,
                          config.attack.evaluator, progress=progress, log=log)
    seconds = time.perf_counter() - start
    out["test_index"] = index
    main = parallel.is_main_process()  # every process holds every result; process 0 writes them
    evaluations = int(((out["generations_per_target"] >= 0) * (out["generations_per_target"].clip(0) + 1)).sum()
                      * spec.population) if spec.targeted else int((out["generations"] + 1)[out["attacked"]].sum() * spec.population)
    info = {"attack_config": config.attack.to_dict(), "seed": int(config.seed), "images": int(len(labels)),
            "attacked": int(out["attacked"].sum()), "successful": int(out["success"].sum()),
            "seconds": round(seconds, 2), "candidate_evaluations": evaluations,
            "candidates_per_second": round(evaluations / seconds, 1)}
    if main:  # one unit: both files carry one id and the checkpoint they came from (provenance.py)
        source = provenance.checkpoint_source(run_dir, checkpoint.read_meta(run_dir, "best"))
        provenance.write_unit(run_dir, "attack", source, npz={"attack.npz": out}, json_files={"attack.json": info},
                              inputs={"data": provenance.data_digest(getattr(data, "source", None))})
        log(f"{run_dir}: {info['successful']}/{info['attacked']} flipped in {seconds:.1f} s "
            f"({info['candidates_per_second']:.0f} candidates/s)")
    return info


def attack_images(data, n_images: int, seed: int):
    """(Y10, Y1, labels, test index) of the attack subsample: the dataset's 150 files if present
    (their first n), else a seeded random draw of n test images; n_images = 0: every test image,
    in test-split order (attack.n_images = 0)."""
    if n_images <= 0:
        n_test = len(data.labels["test"])
        return (data.images["Y10", "test"], data.images["Y1", "test"], np.asarray(data.labels["test"]),
                np.arange(n_test))
    if data.subsample is not None:
        sub = data.subsample
        n = min(n_images, len(sub["labels"]))
        index = sub.get("test_index")
        index = np.arange(n) if index is None else np.asarray(index)[:n]
        return sub["Y10"][:n], sub["Y1"][:n], np.asarray(sub["labels"][:n]), index
    n_test = len(data.labels["test"])
    index = store.derive_subsample_index(n_test, n_images, seed)
    return (data.images["Y10", "test"][index], data.images["Y1", "test"][index],
            np.asarray(data.labels["test"][index]), index)


def recorded_n_images(run_dir) -> int | None:
    """The attack.n_images a run's attack.npz was made with (its attack.json), or None when the
    run has no attack.json: what a later stage passes to `attack_images` to get the same images."""
    path = Path(run_dir) / "attack.json"
    if not path.exists():
        return None
    value = json.loads(path.read_text()).get("attack_config", {}).get("n_images")
    return None if value is None else int(value)
