"""One-pixel certificates: bounds that hold, a search that finds what is there, a radius that is right.

Soundness is tried against computations that do not share the bound code: exact float64 point
margins (incremental windows, themselves tested against full forwards) on dense grids and random
colours, and full float32 forward passes of the flax model. Completeness and the radius use a
planted ConvNet whose flipping colours are known in closed form.
"""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrobust import bounds, certify, checkpoint
from jaxrobust import config as config_lib
from jaxrobust.candidates import model_logits
from jaxrobust.models import build_model
from test_incremental import convnet_with_statistics

H = W = 100  # the real ConvNet's shapes, for the bounds
S = 48  # the planted model's images: 48 -> 24 -> 12 -> 6 pooled cells a side, 2,304 pixels
BLOCK = (2, 3)  # the pool3 cell the planted model reads: pixels rows 16-23, columns 24-31
SMALL = certify.CertifySettings(max_boxes=64, batch=256, radius_tolerance=1.0 / 512)


def planted_convnet(centre=0.3125, half_width=0.0625, weight=8.0, bias=0.5):
    """A ConvNet whose class-1 logit is weight x tri(v_g) at the pixels of pool3 cell BLOCK, where
    tri(v) = relu(v - c + w) - 2 relu(v - c) + relu(v - c - w) is a bump of height w at v = c
    (c = centre, w = half_width) and v_g the pixel's first colour channel; z_0 = bias, z_2 = -1.

    On images whose channel 0 stays below c - w, a pixel of the block flips the image (label 0)
    exactly when weight tri(v_g) > bias: v_g in the open interval c +- (w - bias / weight); every
    other pixel, at any colour, leaves the logits unchanged. BatchNorm is the identity.
    """
    model = build_model("convnet")
    shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                                               jnp.zeros((1, S, S, 3))))
    variables = jax.tree_util.tree_map(lambda leaf: np.zeros(leaf.shape, np.float32), dict(shapes))
    for name in ("bn1", "bn2", "bn3"):
        variables["params"][name]["scale"][:] = 1.0
        variables["batch_stats"][name]["var"][:] = 1.0 - 1e-5  # 1 / sqrt(var + eps) = 1
    p = variables["params"]
    p["conv1"]["kernel"][2, 2, 0, :3] = 1.0
    p["conv1"]["bias"][:3] = [-(centre - half_width), -centre, -(centre + half_width)]
    p["conv2"]["kernel"][1, 1, :3, 0] = [1.0, -2.0, 1.0]
    p["conv3"]["kernel"][1, 1, 0, 0] = 1.0
    p["bottleneck"]["kernel"][(BLOCK[0] * (S // 8) + BLOCK[1]) * 32, 0] = 1.0
    p["head"]["fc"]["kernel"][0, 1] = weight
    p["head"]["fc"]["bias"][:] = [bias, 0.0, -1.0]
    return model, jax.tree_util.tree_map(jnp.asarray, variables)


def dark_image(seed=0):
    """(S, S, 3) colours in [0, 0.2]: below the planted bump, so the clean image is class 0."""
    return np.random.default_rng(seed).uniform(0.0, 0.2, (S, S, 3)).astype(np.float32)


def in_block(rows, cols):
    r0, c0 = BLOCK
    return (rows // 8 == r0) & (cols // 8 == c0)


def full_forward_flips(model, variables, image, pixels, colours, label):
    logits_fn, params = model_logits(model, variables)
    batch = np.repeat(image[None], len(pixels), axis=0)
    batch[np.arange(len(pixels)), pixels[:, 0], pixels[:, 1]] = colours
    return np.asarray(jax.jit(logits_fn)(params, jnp.asarray(batch))).argmax(-1) != label


# --- The bounds ---
@pytest.fixture(scope="module")
def random_case():
    model, variables = convnet_with_statistics(seed=1)
    image = np.random.default_rng(0).uniform(0.3, 0.7, (H, W, 3)).astype(np.float32)
    with jax.enable_x64(True):
        weights = bounds.certificate_weights(variables)
        cache = jax.jit(bounds.clean_cache)(weights, jnp.asarray(image, jnp.float64))
    label = int(np.argmax(cache["logits"][0]))
    return types.SimpleNamespace(model=model, variables=variables, image=image, weights=weights, cache=cache,
                                 label=label)


@pytest.mark.parametrize("mode", bounds.BOUND_MODES)
def test_margin_bounds_hold_on_dense_grids_and_random_colours(random_case, mode):
    c = random_case
    rng = np.random.default_rng(2)
    grid = np.stack(np.meshgrid(*[np.linspace(0, 1, 7)] * 3, indexing="ij"), -1).reshape(-1, 3)
    pixels = [(0, 0), (99, 99), (1, 50), (50, 50), (37, 2)]  # corners, edges, odd and even rows
    boxes = [(np.zeros(3), np.ones(3)), (np.full(3, 0.4), np.full(3, 0.45)), (np.full(3, 0.5), np.full(3, 0.5))]
    boxes.append(tuple(np.sort(rng.uniform(0, 1, (2, 3)), axis=0)))
    with jax.enable_x64(True):
        lower_fn = jax.jit(lambda r, col, lo, hi: bounds.margin_bounds(c.weights, c.cache, r, col, c.label, lo, hi,
                                                                       mode)[0])
        points_fn = jax.jit(lambda r, col, pts: bounds.point_margins(c.weights, c.cache, r, col, c.label, pts))
        for row, col in pixels:
            for lo, hi in boxes:
                colours = np.concatenate([lo + grid * (hi - lo), rng.uniform(lo, hi, (300, 3)),
                                          np.asarray(bounds.box_corners(jnp.asarray(lo), jnp.asarray(hi)))])
                lower = np.asarray(lower_fn(row, col, jnp.asarray(lo), jnp.asarray(hi)))
                margins = np.asarray(points_fn(row, col, jnp.asarray(colours)))
                others = np.arange(3) != c.label
                assert np.all(margins[:, others] >= lower[others] - 1e-12), (row, col, lo, hi)
                if np.all(hi - lo < 1e-12):  # a point: the bound is the exact margin
                    np.testing.assert_allclose(lower[others], margins[0, others], atol=1e-9)


def test_point_margins_equal_the_flax_model_in_float64(random_case):
    c = random_case
    rng = np.random.default_rng(3)
    pixels, colours = rng.integers(0, H, (6, 2)), rng.uniform(0, 1, (6, 3))
    with jax.enable_x64(True):
        v64 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), c.variables)
        logits_fn, params = model_logits(c.model, v64)
        batch = np.repeat(c.image[None].astype(np.float64), 6, axis=0)
        batch[np.arange(6), pixels[:, 0], pixels[:, 1]] = colours
        logits = np.asarray(jax.jit(logits_fn)(params, jnp.asarray(batch)))
        one = jax.jit(jax.vmap(lambda r, col, v: bounds.point_margins(c.weights, c.cache, r, col, c.label, v[None])[0]))
        margins = np.asarray(one(jnp.asarray(pixels[:, 0]), jnp.asarray(pixels[:, 1]), jnp.asarray(colours)))
        np.testing.assert_allclose(margins, logits[:, [c.label]] - logits, atol=1e-10)


def test_rounding_allowance_covers_float32_forward_passes(random_case):
    """The allowance bounds |float32 margin - exact margin| measured at random one-pixel changes."""
    c = random_case
    rng = np.random.default_rng(4)
    pixels, colours = rng.integers(0, H, (64, 2)), rng.uniform(0, 1, (64, 3)).astype(np.float32)
    logits_fn, params = model_logits(c.model, c.variables)
    batch = np.repeat(c.image[None], 64, axis=0)
    batch[np.arange(64), pixels[:, 0], pixels[:, 1]] = colours
    z32 = np.asarray(jax.jit(logits_fn)(params, jnp.asarray(batch)), np.float64)
    with jax.enable_x64(True):
        allowance = np.asarray(bounds.rounding_allowance(c.weights, jnp.asarray(c.image, jnp.float64), c.label))
        one = jax.jit(jax.vmap(lambda r, col, v: bounds.point_margins(c.weights, c.cache, r, col, c.label, v[None])[0]))
        exact = np.asarray(one(jnp.asarray(pixels[:, 0]), jnp.asarray(pixels[:, 1]),
                               jnp.asarray(colours, jnp.float64)))
    measured = np.abs((z32[:, [c.label]] - z32) - exact).max(0)
    others = np.arange(3) != c.label
    assert np.all(measured[others] > 0)  # float32 rounding is there to cover
    assert np.all(allowance[others] >= measured[others])
    assert allowance[c.label] == 0


def test_relu_pool_bounds_hold_for_random_linear_inputs():
    """relu(max of 4) against its linear bounds, for random affine inputs over random boxes."""
    rng = np.random.default_rng(5)
    with jax.enable_x64(True):
        for _ in range(20):
            a = rng.normal(size=(2, 2, 3, 3)) * rng.uniform(0.1, 5)
            b = rng.normal(size=(2, 2, 3))
            gap_a, gap_b = np.abs(rng.normal(size=a.shape)) * 0.3, np.abs(rng.normal(size=b.shape)) * 0.3
            lo, hi = np.sort(rng.uniform(0, 1, (2, 3)), axis=0)
            la, lb, ua, ub = bounds.relu_pool_bounds(*(jnp.asarray(x) for x in (a, b - gap_b, a + gap_a, b + gap_b)),
                                                     jnp.asarray(lo), jnp.asarray(hi))
            v = rng.uniform(lo, hi, (500, 3))
            # any value between the input bounds: x = L + t (U - L), t in [0, 1]
            t = rng.uniform(size=(500, 2, 2, 3))
            low_in = np.einsum("hwck,nk->nhwc", a, v) + b - gap_b
            up_in = np.einsum("hwck,nk->nhwc", a + gap_a, v) + b + gap_b
            x = low_in + t * (up_in - low_in)
            out = np.maximum(x.reshape(500, 1, 2, 1, 2, 3).max(axis=(2, 4)), 0.0)[:, :, 0]  # (500, 1, 3)
            lower = np.einsum("hwck,nk->nhwc", np.asarray(la), v) + np.asarray(lb)
            upper = np.einsum("hwck,nk->nhwc", np.asarray(ua), v) + np.asarray(ub)
            assert np.all(lower[:, 0] <= out + 1e-12) and np.all(out <= upper[:, 0] + 1e-12)


# --- The search ---
@pytest.fixture(scope="module")
def planted():
    model, variables = planted_convnet()
    image = dark_image()
    certifier = certify.Certifier(model, variables, SMALL)
    return types.SimpleNamespace(model=model, variables=variables, image=image, certifier=certifier)


def block_and_some_others():
    rows, cols = np.divmod(np.arange(S * S), S)
    active = in_block(rows, cols) | ((rows % 11 == 0) & (cols % 7 == 0))
    return rows, cols, active


def test_planted_flips_are_found_inside_the_known_interval_and_the_rest_certified(planted):
    """Complete: with bias 0.25 a block pixel flips exactly when 8 tri(v_g) > 0.25, v_g in
    (0.28125, 0.34375), a slab a sixteenth of the box wide; found there, confirmed by full
    forward passes; every pixel outside the block, which the logits do not read, is certified."""
    model, variables = planted_convnet(bias=0.25)
    certifier = certify.Certifier(model, variables, SMALL)
    rows, cols, active = block_and_some_others()
    out = certifier.decide(planted.image, 0, np.zeros((S * S, 3)), np.ones((S * S, 3)), active)
    status = out["status"]
    assert np.all(status[active & in_block(rows, cols)] == certify.FLIPPABLE)
    assert np.all(status[active & ~in_block(rows, cols)] == certify.CERTIFIED)
    witness = out["witness"][active & in_block(rows, cols)]
    assert np.all((witness[:, 0] > 0.28125) & (witness[:, 0] < 0.34375))
    flips = np.flatnonzero(active & in_block(rows, cols))
    assert np.all(full_forward_flips(model, variables, planted.image, np.stack([rows[flips], cols[flips]], -1),
                                     witness.astype(np.float32), 0))


def test_certified_pixels_never_flip_on_a_dense_grid_or_random_colours(planted):
    model, variables = planted_convnet(bias=0.25)
    certifier = certify.Certifier(model, variables, SMALL)
    rows, cols, active = block_and_some_others()
    out = certifier.decide(planted.image, 0, np.zeros((S * S, 3)), np.ones((S * S, 3)), active)
    certified = np.flatnonzero(active & (out["status"] == certify.CERTIFIED))
    assert certified.size > 10
    rng = np.random.default_rng(6)
    grid = np.stack(np.meshgrid(*[np.linspace(0, 1, 9)] * 3, indexing="ij"), -1).reshape(-1, 3)
    for i in certified[:4]:
        colours = np.concatenate([grid, rng.uniform(0, 1, (200, 3))]).astype(np.float32)
        pixels = np.repeat([[rows[i], cols[i]]], len(colours), axis=0)
        assert not full_forward_flips(model, variables, planted.image, pixels, colours, 0).any()


def test_a_margin_that_touches_zero_is_never_certified(planted):
    """The default planted model peaks at a margin of exactly 0 (8 x 1/16 = 0.5, all dyadic, so
    float32 and float64 agree): no strict flip exists, and no proof may be claimed either."""
    rows, cols, active = block_and_some_others()
    pixel = np.flatnonzero(in_block(rows, cols))[:3]
    mask = np.zeros(S * S, bool)
    mask[pixel] = True
    out = planted.certifier.decide(planted.image, 0, np.zeros((S * S, 3)), np.ones((S * S, 3)), mask)
    assert np.all(out["status"][pixel] == certify.UNDECIDED)
    assert np.all(out["undecided_fraction"][pixel] > 0)
    # a hair below the touching bias it flips, a hair above it is certified
    for bias, expected in ((0.5 - 2 ** -20, certify.FLIPPABLE), (0.5 + 2 ** -20, certify.CERTIFIED)):
        model, variables = planted_convnet(bias=bias)
        decided = certify.Certifier(model, variables, SMALL).decide(
            planted.image, 0, np.zeros((S * S, 3)), np.ones((S * S, 3)), mask)
        assert np.all(decided["status"][pixel] == expected), bias


def test_radius_equals_the_closed_form_on_the_planted_model(planted):
    """A block pixel at v_g = x flips within its r-box exactly when x + r > 0.28125: the image's
    radius is 0.28125 - max x_g over the block, found to the bisection tolerance."""
    model, variables = planted_convnet(bias=0.25)
    image = planted.image
    rows, cols = np.divmod(np.arange(S * S), S)
    expected = 0.28125 - image[..., 0].ravel()[in_block(rows, cols)].max()
    result = certify.certify_images(model, variables, image[None], np.array([0]), SMALL)
    assert result["correct"][0]
    radius, upper = float(result["radius"][0]), float(result["radius_upper"][0])
    assert expected - SMALL.radius_tolerance <= radius <= expected + 1e-9
    assert upper >= expected - 1e-9 and upper - radius <= SMALL.radius_tolerance + 1e-9
    row, col = result["radius_pixel"][0]
    assert in_block(np.array([row]), np.array([col]))[0]
    assert result["radius_colour"][0, 0] > 0.28125
    assert result["counts"][0].tolist() == [S * S - 64, 64, 0]


def test_scan_and_restricted_de_never_flip_a_certified_pixel(planted):
    """Agreement: every colour of the scan's corner set and a grid at the certified pixels, as
    full forward passes, leave the class alone; the flippable block is where DE's flips lie."""
    from jaxrobust import scan

    model, variables = planted_convnet(weight=32.0, bias=0.25)  # p(1) = 0.82 > 0.5 at the bump's top
    result = certify.certify_images(model, variables, planted.image[None], np.array([0]),
                                    certify.CertifySettings(max_boxes=64, batch=64, radius=False))
    colours = np.array([[0.3125, 0, 0], [0.3, 0.5, 1], [0.5, 0.5, 0.5], [1, 1, 1], [0, 0, 0]], np.float32)
    arrays = scan.scan_images(model, variables, planted.image[None], np.array([0]), colours=colours)
    flipping = scan.vulnerability_map(arrays, 0, 0.5, targeted=True)[1]
    status = result["status"][0]
    assert flipping.sum() == 64
    assert not np.any(flipping & (status == certify.CERTIFIED))
    assert np.all(status[flipping] == certify.FLIPPABLE)


def test_misclassified_images_are_not_certified():
    model, variables = planted_convnet(bias=0.25)
    result = certify.certify_images(model, variables, dark_image()[None], np.array([1]), SMALL)
    assert not result["correct"][0] and result["radius"][0] == 0.0
    assert np.all(result["status"][0] == certify.FLIPPABLE)


def test_bad_settings_and_boxes_are_sentences(planted):
    with pytest.raises(config_lib.ConfigError, match="certify.max_boxes"):
        certify.Certifier(planted.model, planted.variables, certify.CertifySettings(max_boxes=0))
    with pytest.raises(config_lib.ConfigError, match="certify.bounds"):
        certify.CertifySettings(bounds="octagon").validate()
    with pytest.raises(config_lib.ConfigError, match=r"inside \[0, 1\]\^3"):
        planted.certifier.decide(planted.image, 0, np.zeros((S * S, 3)), np.full((S * S, 3), 1.5))
    resnet = build_model("resnet18")
    with pytest.raises(config_lib.ConfigError, match="supports the ConvNet"):
        certify.Certifier(resnet, planted.variables, SMALL)


# --- The stage ---
@pytest.fixture(scope="module")
def run_parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("certify_run")
    config = config_lib.load_config("quick", ["attack.n_images=3", "certify.n_images=2", "certify.max_boxes=64",
                                              "certify.batch=64", "certify.radius_tolerance=0.0625"])
    model, variables = planted_convnet(bias=0.25)
    images = np.stack([dark_image(1), dark_image(2), dark_image(3)])
    data = types.SimpleNamespace(subsample={"Y10": images, "Y1": images, "labels": np.array([0, 0, 0]),
                                            "test_index": np.array([5, 7, 9])})

    def make_run(name):
        run = root / name
        run.mkdir()
        (run / "config.json").write_text(config_lib.to_json(config))
        checkpoint.save(run, "best", 0, {"variables": variables}, {"epoch": 0, "image_shape": [S, S, 3]})
        return run

    return types.SimpleNamespace(config=config, data=data, make_run=make_run)


def _arrays(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files if not k.startswith("_") and k != "seconds"}


def test_an_interrupted_certificate_resumes_to_the_same_certify_npz(run_parts):
    rp = run_parts
    interrupted, straight = rp.make_run("interrupted"), rp.make_run("straight")
    log = []
    assert certify.certify_run(interrupted, rp.data, rp.config, progress=False, log=log.append, stop_after=1) is None
    assert not (interrupted / "certify.npz").exists()
    info = certify.certify_run(interrupted, rp.data, rp.config, progress=False, log=log.append)
    assert any("1 of 2 images done earlier" in line for line in log)
    certify.certify_run(straight, rp.data, rp.config, progress=False, log=log.append)
    a, b = _arrays(interrupted / "certify.npz"), _arrays(straight / "certify.npz")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert info["images"] == 2 and info["flippable_pixels"] == 128
    assert info["certified_pixels"] == 2 * (S * S - 64)
    assert certify.is_current(interrupted, rp.config)
    assert not certify.is_current(interrupted, config_lib.copy_with(rp.config, {"certify.max_boxes": 8}))


def test_the_cli_refuses_a_bad_budget_and_a_run_without_a_model(run_parts, tmp_path, capsys):
    from jaxrobust import cli

    run = run_parts.make_run("cli")
    assert cli.main(["certify", "--workdir", str(run), "--budget", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "certify.max_boxes" in err[0] and "Traceback" not in err[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["certify", "--workdir", str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config.json" in err[0]


def test_agreement_counts_by_hand():
    status = np.zeros((2, 3, 3), np.int8)
    status[0, 0, 0] = certify.FLIPPABLE
    status[0, 1, 1] = certify.FLIPPABLE
    status[0, 2, 2] = certify.UNDECIDED
    certificate = {"correct": np.array([True, False]), "status": status, "test_index": np.array([4, 8])}
    attack = {"labels": np.array([0, 1, 2]), "test_index": np.array([4, 8, 9]), "success": np.array([1, 1, 0]),
              "attacked": np.array([1, 1, 1]), "pixel": np.array([[0, 0], [1, 1], [2, 2]])}
    max_p = np.zeros((2, 3, 3, 3))
    max_p[0, 1, 0, 0] = 0.9  # towards class 1 at the flippable (0, 0)
    max_p[0, 0, 2, 1] = 0.9  # the true class: not a flip
    max_p[1, 2, 1, 1] = 0.9  # image 1 is misclassified: not counted
    scan = {"labels": np.array([0, 1]), "test_index": np.array([4, 8]), "max_probability": max_p,
            "target_threshold": np.float32(0.5), "colours": np.zeros((2, 8, 3))}
    r = certify.agreement(certificate, attack, scan)
    assert r == {"images": 1, "de_successes": 1, "de_on_certified": 0, "de_on_flippable": 1, "scanned": 1,
                 "n_colours": 8, "scan_flips": 1, "scan_flips_on_certified": 0, "scan_flips_on_flippable": 1,
                 "flippable_missed_by_scan": 1}
    md = certify.render_markdown({}, {"Reg": r})
    assert "| Reg | 1 | 0 | 1 | 1 (8) | 0 | 1 | 1 |" in md
    with pytest.raises(ValueError, match="different images"):
        certify.agreement(certificate, dict(attack, test_index=np.array([5, 8, 9])), scan)
