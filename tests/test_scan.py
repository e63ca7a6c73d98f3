"""The exhaustive one-pixel scan: maps equal brute force, counts, a planted pixel, DE bounded by the
scan, resume after an interruption, sharding, and clear errors."""
import json
import os
import subprocess
import sys
import textwrap
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrobust import attack, candidates, checkpoint, scan
from jaxrobust import config as config_lib
from jaxrobust.models import build_model

S = 12  # side of the tiny model's images


# --- Models ---
def tiny_logits(seed: int = 0):
    """A small nonlinear conv net on S x S images (full evaluator): a pixel moves its logits."""
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    kernel = 0.5 * jax.random.normal(k1, (3, 3, 3, 4))
    dense = 0.1 * jax.random.normal(k2, (S * S * 4, 3))
    bias = jax.random.normal(k3, (3,))

    def logits(x):
        h = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.tanh(h).reshape(len(x), -1) @ dense + bias

    return logits


def convnet_with_statistics(seed: int = 0):
    """The ConvNet with random weights, non-trivial BatchNorm statistics and a sharp head."""
    model = build_model("convnet")
    variables = checkpoint.init_variables(model, jax.random.key(seed))
    keys = iter(jax.random.split(jax.random.key(seed + 1), 64))
    stats = {name: {"mean": 0.3 * jax.random.normal(next(keys), s["mean"].shape),
                    "var": jax.random.uniform(next(keys), s["var"].shape, minval=0.2, maxval=3.0)}
             for name, s in variables["batch_stats"].items()}
    params = dict(variables["params"])
    params["head"] = jax.tree_util.tree_map(lambda a: 400.0 * a, params["head"])  # a pixel moves p by ~1e-2
    return model, {"params": params, "batch_stats": stats}


def softmax64(logits):
    z = np.asarray(logits, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def brute_force(logits_fn, image, colours, pixels):
    """Probabilities (P, K, C) of every (pixel, colour), each a full forward of the image with the
    pixel set in NumPy (no gene encoding, no evaluator)."""
    k = len(colours)
    batch = np.repeat(image[None], len(pixels) * k, axis=0)
    rows, cols = np.repeat(pixels[:, 0], k), np.repeat(pixels[:, 1], k)
    batch[np.arange(len(batch)), rows, cols] = np.tile(colours, (len(pixels), 1))
    return softmax64(jax.jit(logits_fn)(jnp.asarray(batch))).reshape(len(pixels), k, -1)


def all_pixels(h, w):
    return np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), -1).reshape(-1, 2)


# --- Maps and counts against brute force (tiny model, full evaluator, every pixel) ---
@pytest.fixture(scope="module")
def tiny_case():
    logits_fn = tiny_logits()
    images = np.asarray(jax.random.uniform(jax.random.key(1), (3, S, S, 3)), np.float32)
    labels = np.array([0, 1, 2], np.int32)
    colours = scan.colour_set("grid:3", images)  # 27 colours, (3, 27, 3)
    reference = np.stack([brute_force(logits_fn, images[i], colours[i], all_pixels(S, S)) for i in range(3)])
    ref_max = reference.max(2).reshape(3, S, S, 3).transpose(0, 3, 1, 2)  # (N, C, H, W)
    p_true = reference[np.arange(3), :, :, labels]  # (N, HW, K)
    ref_min = p_true.min(2).reshape(3, S, S)
    others = np.where(np.arange(3)[None, :, None, None] == labels[:, None, None, None], 0.0, ref_max)
    # thresholds inside the range of the maps, so that the counts are neither 0 nor everything
    spec = attack.AttackSpec(target_threshold=float(np.quantile(others.max(1), 0.7)),
                             untargeted_threshold=float(np.quantile(ref_min, 0.3)))
    evaluator = candidates.FullEvaluator(logits_fn, chunk=16)  # 3 colours per block: 9 blocks
    out = scan.scan_with_evaluator(evaluator, images, labels, colours, spec, images_per_call=2)
    return dict(images=images, labels=labels, colours=colours, reference=reference, ref_max=ref_max,
                ref_min=ref_min, spec=spec, out=out, logits_fn=logits_fn)


def test_maps_equal_brute_force_full_forwards(tiny_case):
    c = tiny_case
    out, reference = c["out"], c["reference"]
    np.testing.assert_allclose(out["max_probability"], c["ref_max"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(out["min_true_probability"], c["ref_min"], rtol=0, atol=1e-5)
    # the colour reaching the max, wherever the best two colours are not within float rounding
    ordered = np.sort(reference, axis=2)
    clear = (ordered[:, :, -1] - ordered[:, :, -2]).reshape(3, S, S, 3).transpose(0, 3, 1, 2) > 1e-4
    expected = reference.argmax(2).reshape(3, S, S, 3).transpose(0, 3, 1, 2)
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(out["max_colour"][clear], expected[clear])
    # the best pixel and colour of each class reproduce its probability by a direct forward
    for i in range(3):
        for cls in range(3):
            r, col = out["best_pixel"][i, cls]
            assert out["best_probability"][i, cls] == pytest.approx(c["ref_max"][i, cls].max(), abs=1e-5)
            direct = brute_force(c["logits_fn"], c["images"][i], out["best_colour"][i, cls][None], np.array([[r, col]]))
            assert direct[0, 0, cls] == pytest.approx(out["best_probability"][i, cls], abs=1e-5)
    clean = softmax64(c["logits_fn"](jnp.asarray(c["images"])))
    np.testing.assert_allclose(out["clean_probability"], clean, atol=1e-5)


def test_flipping_pixel_counts_equal_a_numpy_recount(tiny_case):
    out, spec, labels = tiny_case["out"], tiny_case["spec"], tiny_case["labels"]
    maps = out["max_probability"]
    for i, label in enumerate(labels):
        flips = maps[i] > spec.target_threshold  # (C, H, W)
        for cls in range(3):
            expected = -1 if cls == label else int(flips[cls].sum())
            assert out["flipping_pixels_targeted"][i, cls] == expected
        others = np.delete(flips, label, axis=0)
        assert out["flipping_pixels_any"][i] == int(others.any(0).sum())
        assert out["flipping_pixels_untargeted"][i] == int((out["min_true_probability"][i] < spec.untargeted_threshold).sum())
    assert 0 < out["flipping_pixels_any"].sum() < 3 * S * S  # the thresholds make the count informative
    assert 0 < out["flipping_pixels_untargeted"].sum() < 3 * S * S


def test_per_image_colour_sets_minmax(tiny_case):
    """minmax: each image its own 8 colours; 3 per block leaves a padded last block."""
    images, labels, logits_fn = tiny_case["images"], tiny_case["labels"], tiny_case["logits_fn"]
    colours = scan.colour_set("minmax", images)
    assert colours.shape == (3, 8, 3)
    np.testing.assert_allclose(colours[1, 0], images[1].min(axis=(0, 1)))
    np.testing.assert_allclose(colours[1, 7], images[1].max(axis=(0, 1)))
    out = scan.scan_with_evaluator(candidates.FullEvaluator(logits_fn, chunk=16), images, labels, colours)
    for i in range(3):
        reference = brute_force(logits_fn, images[i], colours[i], all_pixels(S, S))
        np.testing.assert_allclose(out["max_probability"][i], reference.max(1).reshape(S, S, 3).transpose(2, 0, 1),
                                   atol=1e-5)
        assert out["max_colour"][i].max() < 8  # padding repeats never win


def test_colour_sets():
    corners = scan.corner_colours()
    assert corners.shape == (8, 3) and set(map(tuple, corners)) == set(
        (a, b, c) for a in (0.0, 1.0) for b in (0.0, 1.0) for c in (0.0, 1.0))
    np.testing.assert_array_equal(scan.grid_colours(2), corners)
    grid = scan.grid_colours(4)
    assert grid.shape == (64, 3) and len(np.unique(grid, axis=0)) == 64
    np.testing.assert_allclose(np.unique(grid), [0, 1 / 3, 2 / 3, 1], atol=1e-7)


# --- The incremental ConvNet evaluator against flax full forwards at random pixels ---
def test_incremental_convnet_maps_equal_full_forwards_at_random_pixels():
    model, variables = convnet_with_statistics()
    image = np.asarray(jax.random.uniform(jax.random.key(2), (1, 100, 100, 3), minval=0.3, maxval=0.9), np.float32)
    label = np.array([1], np.int32)
    colours = scan.corner_colours()[[0, 7]]  # black and white: 20,000 candidates, one chunk per colour
    spec = attack.AttackSpec(chunk_candidates=10000)
    out = scan.scan_images(model, variables, image, label, colours, spec, evaluator="incremental",
                           colours_per_call=1)
    rng = np.random.default_rng(0)
    pixels = np.concatenate([[[0, 0], [99, 99], [0, 99], [57, 1]], rng.integers(0, 100, (8, 2))])
    reference = brute_force(lambda x: model.apply(variables, x, train=False)[1], image[0], colours, pixels)
    got_max = out["max_probability"][0][:, pixels[:, 0], pixels[:, 1]].T  # (P, C)
    assert np.ptp(reference[:, :, 0]) > 3e-3  # the pixel moves p by 300x the tolerance: a meaningful check
    np.testing.assert_allclose(got_max, reference.max(1), rtol=0, atol=1e-5)
    got_min = out["min_true_probability"][0][pixels[:, 0], pixels[:, 1]]
    np.testing.assert_allclose(got_min, reference[:, :, 1].min(1), rtol=0, atol=1e-5)


# --- A planted vulnerable pixel (20 x 20 images) ---
P = 20
R0, C0 = 7, 13
TARGET = np.array([0.9, 0.15, 0.8], np.float32)


def planted_logits(images):
    """Class 2 wins only for (nearly) TARGET at (R0, C0) (as tests/test_attack.py, on P x P images):
    p(2) > 0.5 needs score > 0.9749 + log(2)/30 = 0.998; one pixel off caps it at exp(-1/18)."""
    ys, xs = jnp.arange(P)[:, None], jnp.arange(P)[None, :]
    spatial = jnp.exp(-((ys - R0) ** 2 + (xs - C0) ** 2) / (2 * 3.0 ** 2))
    colour = jnp.exp(-jnp.sum((images - TARGET) ** 2, axis=-1) / (2 * 0.1 ** 2))
    score = jnp.sum(spatial * colour, axis=(1, 2))
    z = jnp.zeros_like(score)
    return jnp.stack([z, z, 30.0 * (score - 0.9749)], axis=-1)


def grey(n=1):
    return np.full((n, P, P, 3), 0.5, np.float32)


def test_the_scan_finds_a_planted_vulnerable_pixel(tmp_path):
    colour_file = tmp_path / "colours.txt"
    np.savetxt(colour_file, np.concatenate([scan.corner_colours(), TARGET[None]]))
    colours = scan.colour_set(str(colour_file), grey())
    np.testing.assert_allclose(colours[0, 8], TARGET, atol=1e-7)
    out = scan.scan_with_evaluator(candidates.FullEvaluator(planted_logits, chunk=100), grey(), np.array([0]), colours)
    np.testing.assert_array_equal(out["flipping_pixels_targeted"][0], [-1, 0, 1])
    assert out["flipping_pixels_any"][0] == 1 and out["flipping_pixels_untargeted"][0] == 0
    np.testing.assert_array_equal(out["best_pixel"][0, 2], [R0, C0])
    np.testing.assert_allclose(out["best_colour"][0, 2], TARGET, atol=1e-7)
    assert out["max_colour"][0, 2, R0, C0] == 8
    flipping = np.argwhere(out["max_probability"][0, 2] > 0.5)
    np.testing.assert_array_equal(flipping, [[R0, C0]])


def test_an_image_invulnerable_under_a_set_is_never_flipped_by_de_restricted_to_it():
    """Corners: no flipping pixel for the planted model. DE restricted to the corners
    (scan.ColourSetEvaluator) then fails and never beats the scan's max; restricted to the corners
    plus TARGET, the set under which the scan finds a flip, the same DE succeeds."""
    corners = scan.corner_colours()
    full = candidates.FullEvaluator(planted_logits, chunk=100)
    out = scan.scan_with_evaluator(full, grey(), np.array([0]), corners)
    assert out["flipping_pixels_any"][0] == 0 and out["max_probability"][0, 2].max() < 0.5
    spec = attack.AttackSpec(population=100, max_generations=40, block_generations=10, tasks_per_call=1,
                             chunk_candidates=100)
    restricted = scan.ColourSetEvaluator(full, corners)
    res = attack.run_attack(restricted, grey(), np.array([2]), np.array([0]), jax.random.key(0), spec,
                            targeted=True, progress=False)
    assert not res.success[0] and res.generations[0] == 40
    assert res.fitness[0] <= out["best_probability"][0, 2] + 1e-6
    row, col, rgb = candidates.decode(restricted.restrict(jnp.asarray(res.genes)), P, P)
    assert any(np.allclose(np.asarray(rgb[0]), c) for c in corners)
    assert res.fitness[0] <= out["max_probability"][0, 2, int(row[0]), int(col[0])] + 1e-6  # its colour is one scanned
    # the control: with TARGET in the set the scan flips one pixel, and the restricted DE finds it
    with_target = np.concatenate([corners, TARGET[None]])
    res = attack.run_attack(scan.ColourSetEvaluator(full, with_target), grey(), np.array([2]), np.array([0]),
                            jax.random.key(0), spec, targeted=True, progress=False)
    assert res.success[0]


# --- DE vs exhaustive: a hand-made case ---
def test_de_vs_exhaustive_counts_by_hand():
    n, c = 4, 3
    maps = np.zeros((n, c, 2, 2), np.float32)
    maps[0, 2, 1, 1] = 0.9  # image 0: one pixel flips towards class 2
    maps[2, 1, 0, 0] = maps[2, 1, 0, 1] = 0.8  # image 2: two pixels towards class 1
    scan_arrays = {"labels": np.array([0, 0, 0, 1]), "test_index": np.arange(n), "max_probability": maps,
                   "min_true_probability": np.ones((n, 2, 2), np.float32), "colours": np.zeros((n, 8, 3)),
                   "flipping_pixels_any": np.array([1, 0, 2, 0]), "flipping_pixels_untargeted": np.zeros(n, int),
                   "target_threshold": np.float32(0.5), "untargeted_threshold": np.float32(0.05)}
    attack_arrays = {"labels": np.array([0, 0, 0, 1, 2]), "test_index": np.arange(5),
                     "attacked": np.array([True, True, True, False, True]),
                     "success": np.array([False, True, True, False, True]),  # image 1: DE beat the set
                     "target": np.array([-1, 2, 1, -1, 1]),
                     "pixel": np.array([[0, 0, .5, .5, .5], [1, 1, .1, .2, .3], [0, 1, 1, 0, 0],
                                        [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]], np.float32)}
    r = scan.de_vs_exhaustive(attack_arrays, scan_arrays, targeted=True)
    assert r == {"scanned": 4, "attacked": 3, "vulnerable_scan": 2, "de_successes": 2, "both": 1,
                 "de_missed_scan_flips": 1, "de_flipped_scan_does_not": 1, "de_pixel_in_scan_set": 1,
                 "median_flipping_pixels": 1.0, "mean_flipping_pixels": 1.0, "n_colours": 8}
    text = scan.de_vs_exhaustive_markdown({"Reg": r}, "corners")
    assert "| Reg | 4 (3) | 2 | 2 | 1 | 1 | 1 of 2 | 1 (1.0) |" in text
    with pytest.raises(ValueError, match="different images"):
        scan.de_vs_exhaustive(dict(attack_arrays, labels=np.array([1, 0, 0, 1, 2])), scan_arrays, True)


# --- A run folder: resume after an interruption, currency, errors ---
@pytest.fixture(scope="module")
def run_parts(tmp_path_factory):
    """A run folder with a random ConvNet (no training), a 3-image attack subsample (2 scanned) and
    a 2-colour file."""
    root = tmp_path_factory.mktemp("scan_run")
    config = config_lib.load_config("quick", ["attack.n_images=3", "scan.n_images=2", "attack.chunk_candidates=10000"])
    model, variables = convnet_with_statistics(3)
    images = np.asarray(jax.random.uniform(jax.random.key(4), (3, 100, 100, 3), minval=0.3, maxval=0.9), np.float32)
    data = types.SimpleNamespace(subsample={"Y10": images, "Y1": images, "labels": np.array([0, 1, 2]),
                                            "test_index": np.array([5, 7, 9])})
    colour_file = root / "two.npy"
    np.save(colour_file, np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], np.float32))

    def make_run(name):
        run = root / name
        run.mkdir()
        (run / "config.json").write_text(config_lib.to_json(config))
        checkpoint.save(run, "best", 0, {"variables": variables}, {"epoch": 0, "image_shape": [100, 100, 3]})
        return run

    return types.SimpleNamespace(root=root, config=config, data=data, colours=str(colour_file), make_run=make_run)


def _arrays(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files if not k.startswith("_")}


def test_an_interrupted_scan_resumes_to_the_same_scan_npz(run_parts):
    rp = run_parts
    interrupted, straight = rp.make_run("interrupted"), rp.make_run("straight")
    log = []
    assert scan.scan_run(interrupted, rp.data, rp.config, colours=rp.colours, progress=False, log=log.append,
                         stop_after=1) is None  # killed after one image
    assert not (interrupted / "scan.npz").exists()
    assert sorted(p.name for p in (interrupted / scan.PARTS_DIR).glob("image_*.npz")) == ["image_00000.npz"]
    info = scan.scan_run(interrupted, rp.data, rp.config, colours=rp.colours, progress=False, log=log.append)
    assert any("resuming the scan, 1 of 2 images done earlier" in line for line in log)
    assert any("scanning 1 images" in line for line in log)
    assert not (interrupted / scan.PARTS_DIR).exists()
    scan.scan_run(straight, rp.data, rp.config, colours=rp.colours, progress=False, log=log.append)
    resumed, reference = _arrays(interrupted / "scan.npz"), _arrays(straight / "scan.npz")
    assert resumed.keys() == reference.keys()
    for key in reference:
        np.testing.assert_array_equal(resumed[key], reference[key], err_msg=key)
    np.testing.assert_array_equal(reference["test_index"], [5, 7])
    assert info["images"] == 2 and info["settings"]["colours"] == rp.colours
    assert json.loads((interrupted / "scan.json").read_text())["candidate_evaluations"] == 2 * 100 * 100 * 2
    loaded = scan.load_scan(straight)
    assert loaded["max_colour"].dtype == np.int32 and loaded["max_colour"].max() <= 1
    # currency: the same settings are current, another colour set or image count is not
    assert scan.is_current(straight, rp.config, colours=rp.colours)
    assert not scan.is_current(straight, rp.config, colours="corners")
    assert not scan.is_current(straight, rp.config, colours=rp.colours, n_images=1)


def test_a_partial_scan_with_other_settings_is_discarded(run_parts):
    rp = run_parts
    run = rp.make_run("changed")
    scan.scan_run(run, rp.data, rp.config, colours=rp.colours, progress=False, log=lambda *_: None, stop_after=1)
    log = []
    scan.scan_run(run, rp.data, rp.config, colours=rp.colours, n_images=1, progress=False, log=log.append,
                  stop_after=0)
    assert any("other settings" in line for line in log)
    assert not list((run / scan.PARTS_DIR).glob("image_*.npz"))


def test_bad_inputs_are_one_sentence_errors(tmp_path, run_parts, capsys):
    images = grey(2)
    with pytest.raises(ValueError, match="unknown colour set 'rainbow'.*corners, minmax, grid:K"):
        scan.colour_set("rainbow", images)
    with pytest.raises(ValueError, match="grid:K needs an integer K >= 2"):
        scan.colour_set("grid:1", images)
    with pytest.raises(ValueError, match="grid:K needs an integer K >= 2"):
        scan.colour_set("grid:many", images)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="N x 3 array"):
        scan.colour_set(str(bad), images)
    np.save(bad, np.full((4, 3), 1.5))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        scan.colour_set(str(bad), images)
    with pytest.raises(ValueError, match="colours must be"):
        scan.scan_with_evaluator(candidates.FullEvaluator(planted_logits), images, np.zeros(2, int), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="scan.n_images"):
        scan.images_to_scan(run_parts.config, 0)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="not a training run folder"):
        scan.scan_run(empty, run_parts.data, run_parts.config, progress=False)
    no_model = tmp_path / "no_model"
    no_model.mkdir()
    (no_model / "config.json").write_text(config_lib.to_json(run_parts.config))
    with pytest.raises(FileNotFoundError, match="no best checkpoint"):
        scan.scan_run(no_model, run_parts.data, run_parts.config, progress=False)
    from jaxrobust.cli import main

    assert main(["scan", "--workdir", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "not a training run folder" in err and "\n" not in err
    with pytest.raises(config_lib.ConfigError, match="attack.\\*, scan.\\* and seed overrides only"):
        config_lib.run_overrides(run_parts.config, ["train.epochs=2"], ("attack", "scan"), "scan")


# --- Sharded over devices: the same maps ---
def test_sharded_scan_equals_one_device():
    code = textwrap.dedent("""
        import numpy as np, jax
        from jaxrobust import candidates, parallel, scan
        from test_scan import planted_logits, grey, TARGET
        colours = np.concatenate([scan.corner_colours(), TARGET[None]])
        images = np.concatenate([grey(3), np.full((1, 20, 20, 3), 0.3, np.float32)])
        labels = np.array([0, 1, 0, 2])
        ev = candidates.FullEvaluator(planted_logits, chunk=100)
        two = scan.scan_with_evaluator(ev, images, labels, colours, mesh=parallel.make_mesh())
        one = scan.scan_with_evaluator(ev, images, labels, colours, mesh=parallel.make_mesh(jax.devices()[:1]))
        assert len(jax.devices()) == 2
        for key in one:
            np.testing.assert_array_equal(two[key], one[key], err_msg=key)
        print("OK")
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


def test_vulnerability_map_and_figures(tmp_path):
    from jaxrobust import plots

    rng = np.random.default_rng(0)
    arrays = {"labels": np.array([1]), "max_probability": rng.uniform(0, 0.7, (1, 3, 10, 10)),
              "min_true_probability": rng.uniform(0, 0.2, (1, 10, 10))}
    vulnerability, flipping = scan.vulnerability_map(arrays, 0, 0.5)
    np.testing.assert_array_equal(vulnerability, np.maximum(arrays["max_probability"][0, 0], arrays["max_probability"][0, 2]))
    np.testing.assert_array_equal(flipping, vulnerability > 0.5)
    vulnerability, flipping = scan.vulnerability_map(arrays, 0, 0.05, targeted=False)
    np.testing.assert_array_equal(flipping, arrays["min_true_probability"][0] < 0.05)
    assert plots.scan_vulnerability(tmp_path / "v.png", rng.uniform(size=(10, 10, 3)), vulnerability, flipping,
                                    "t", (2, 3)).stat().st_size > 0
    panels = {"towards spiral": {"regular": np.array([0, 3, 50]), "da": np.array([1, 2])}}
    assert plots.scan_flip_counts(tmp_path / "c.png", panels, 100).stat().st_size > 0


def test_compilation_cache_switch(tmp_path, monkeypatch):
    """CLI runs use JAX's persistent compilation cache in a documented folder; =0 turns it off."""
    from jaxrobust import cli

    monkeypatch.setenv(cli.COMPILATION_CACHE_ENV, "0")
    assert cli.enable_compilation_cache() is None
    code = ("from jaxrobust import cli; import jax; folder = cli.enable_compilation_cache(); "
            "print(folder, jax.config.jax_compilation_cache_dir)")
    for setting, expected in ((str(tmp_path / "xla"), tmp_path / "xla"), ("", tmp_path / "home" / "jaxrobust" / "jax")):
        env = dict(os.environ, JAXROBUST_COMPILATION_CACHE=setting, XDG_CACHE_HOME=str(tmp_path / "home"))
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.split() == [str(expected), str(expected)]
