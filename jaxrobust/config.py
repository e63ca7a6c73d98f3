"""Experiment configs: Python files with `get_config() -> ml_collections.ConfigDict`.

A config file lives in `configs/` (quick.py, medium.py, paper_convnet.py, paper_resnet18.py) or anywhere on
disk. Command-line overrides use dotted keys, e.g. `train.epochs=3 attack.population=100`;
values are parsed as Python literals (`1e-3`, `True`, `(0.7, 0.1, 0.2)`), anything else is a
string. An unknown key is an error that lists the valid keys of its section.
"""
from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path
from typing import Iterable

import ml_collections

RUN_CONFIG_FILE = "config.json"  # what `jaxrobust train` writes into a run folder (to_json)


def _bundled_config_dir() -> Path:
    """configs/ of a checkout, else the copy installed as the package jaxrobust.configs."""
    checkout = Path(__file__).resolve().parent.parent / "configs"
    if checkout.is_dir():
        return checkout
    installed = Path(__file__).resolve().parent / "configs"
    return installed


CONFIG_DIR = _bundled_config_dir()
# The class order everywhere: label one-hot columns (Zenodo labels_*.npy), logits, figures
# (Ćiprijanović et al. 2022, section 2.1).
CLASS_NAMES = ("spiral", "elliptical", "merger")


class ConfigError(ValueError):
    """A config file or an override that cannot be applied."""


def resolve_config_path(name_or_path: str | Path) -> Path:
    """Returns the config file for a path, or for a bare name such as `quick`."""
    path = Path(name_or_path)
    if path.suffix == ".py" and path.exists():
        return path
    candidate = CONFIG_DIR / f"{path.stem}.py"
    if path.suffix in ("", ".py") and candidate.exists():
        return candidate
    known = sorted(p.stem for p in CONFIG_DIR.glob("*.py")) if CONFIG_DIR.exists() else []
    raise ConfigError(f"config file {str(name_or_path)!r} not found; bundled configs: {known}")


def load_config(name_or_path: str | Path, overrides: Iterable[str] = ()) -> ml_collections.ConfigDict:
    """Loads `get_config()` from a config file and applies dotted `key=value` overrides."""
    path = resolve_config_path(name_or_path)
    spec = importlib.util.spec_from_file_location(f"jaxrobust_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        raise ConfigError(f"{path}: line {err.lineno}: not valid Python ({err.msg}); fix the config "
                          "file") from err
    except Exception as err:  # the file's own code: any error is the file's, not ours
        raise ConfigError(f"{path}: importing it raised {type(err).__name__}: {_one_line(err)}; fix the "
                          "config file") from err
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path}: a config file must define get_config() -> ConfigDict")
    try:
        config = module.get_config()
    except Exception as err:
        raise ConfigError(f"{path}: get_config() raised {type(err).__name__}: {_one_line(err)}; fix the "
                          "config file") from err
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"{path}: get_config() returned {type(config).__name__}, not an "
                          "ml_collections.ConfigDict; fix the config file")
    apply_overrides(config, overrides)
    check_counts(config)
    config.lock()
    return config


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:200] if text else "(no message)"


def parse_value(text: str):
    """`'1e-3'` -> 0.001, `'True'` -> True, `'(1, 2)'` -> (1, 2); other text stays a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> None:
    """Sets `a.b.c=value` entries in place; unknown keys raise ConfigError naming the valid ones."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.subkey=value")
        dotted, text = item.split("=", 1)
        set_dotted(config, dotted.strip(), parse_value(text.strip()))


# Old name -> new name. A run folder's config.json written before a rename still loads
# (read_run_config renames its keys); overrides and configs must use the new name.
RENAMED_KEYS = {"attack.images_per_call": "attack.tasks_per_call",
                "train.domain_adaptation": "train.da_loss"}
# Renamed keys whose values change too: old value -> new value.
RENAMED_VALUES = {"train.domain_adaptation": {True: "mmd", False: "none"}}


def set_dotted(config: ml_collections.ConfigDict, dotted: str, value) -> None:
    """Sets one dotted key, checking every level exists and the type is compatible."""
    *parents, leaf = dotted.split(".")
    node, walked = config, []
    for part in parents:
        if part not in node:
            raise ConfigError(_unknown_key(".".join(walked + [part]), node, walked))
        if not isinstance(node[part], ml_collections.ConfigDict):
            where = ".".join(walked + [part])
            raise ConfigError(f"config key {where!r} is a value, not a section: cannot set {dotted!r}")
        node, walked = node[part], walked + [part]
    if dotted in RENAMED_KEYS:
        values = "".join(f"; {old!r} is {new!r}" for old, new in RENAMED_VALUES.get(dotted, {}).items())
        raise ConfigError(f"config key {dotted!r} was renamed to {RENAMED_KEYS[dotted]!r}; set that instead{values}")
    if leaf not in node:
        raise ConfigError(_unknown_key(dotted, node, walked))
    old = node[leaf]
    if isinstance(old, ml_collections.ConfigDict):
        raise ConfigError(f"config key {dotted!r} is a section; set one of its keys: {sorted(old.keys())}")
    expected = f"config key {dotted!r} expects {type(old).__name__} (now {old!r}), got {value!r}"
    # ConfigDict lets a bool into an int field (bool is an int subclass): `train.epochs=True`.
    if old is not None and value is not None and isinstance(value, bool) != isinstance(old, bool):
        raise ConfigError(expected)
    try:  # ConfigDict's own type check: int -> float and list -> tuple cast, other changes refused
        with node.unlocked():
            node[leaf] = value
    except TypeError as err:
        raise ConfigError(expected) from err
    check_count(dotted, node[leaf])


# Counts and the smallest value each takes, with what that value means when it is 0 (a
# negative count would slice from the end: `attack.n_images=-3` attacked 6 of 9 images).
COUNT_KEYS = {
    "attack.n_images": (0, " (0 = every test image)"),
    "scan.n_images": (1, ""),
    "certify.n_images": (1, ""),
    "certify.max_boxes": (1, ""),
    "certify.batch": (1, ""),
    "certify.radius_max_boxes": (1, ""),
    "data.n_attack_subsample": (0, " (0 = no subsample drawn)"),
    "data.workers": (0, " (0 = all cores)"),
    "analysis.isomap_points": (1, ""),
    "analysis.church_windows": (0, " (0 = none)"),
    "analysis.histogram_bins": (1, ""),
    "analysis.bootstrap": (1, ""),
    "analysis.isomap_neighbors": (1, ""),
    "seed": (0, ""),  # NumPy's SeedSequence takes no negative entropy
    "run_seed": (-1, " (-1 = use seed)"),
    "data.n_spiral": (1, ""),  # every class needs galaxies: a class without any has no split
    "data.n_elliptical": (1, ""),
    "data.n_merger": (1, ""),
    "model.latent_dim": (1, ""),
    "train.epochs": (1, ""),
    "train.batch_size": (1, ""),
    "train.eval_batch_size": (1, ""),
    "train.warmup_epochs": (0, ""),
    "train.patience": (1, ""),
    "attack.population": (4, " (DE/rand/1 mixes three other members)"),
    "attack.max_generations": (0, " (0 = the initial population only)"),
    "attack.block_generations": (1, ""),
    "attack.tasks_per_call": (1, ""),
    "attack.chunk_candidates": (0, " (0 = per backend)"),
}
# Probabilities, rates and other real numbers: (low, high, low included, high included). A value
# outside, or not finite, is refused naming the key: a target_threshold of 1.5 can never be met
# (the attack reports 0 successes), a learning rate of inf trains to NaN.
INF = float("inf")
RANGE_KEYS = {
    "attack.target_threshold": (0.0, 1.0, False, False),  # success: p(target) > threshold
    "attack.untargeted_threshold": (0.0, 1.0, False, False),  # success: p(true) < threshold
    "attack.differential_weight": (0.0, 2.0, False, True),  # F of DE (Storn & Price 1997: (0, 2])
    "certify.radius_tolerance": (0.0, 1.0, False, False),  # stretched colour units
    "train.learning_rate": (0.0, INF, False, False),
    "train.b1": (0.0, 1.0, True, False),  # Adam's decay rates (Kingma & Ba 2015: [0, 1))
    "train.b2": (0.0, 1.0, True, False),
    "train.eps": (0.0, INF, False, False),
    "train.weight_decay": (0.0, INF, True, False),
    "train.weight_decay_da": (0.0, INF, True, False),
    "train.mmd_weight": (0.0, INF, True, False),
    "train.coral_weight": (0.0, INF, True, False),
    "preprocess.stretch": (0.0, INF, False, False),
    "data.sky_area_per_pixel_arcsec2": (0.0, INF, False, False),
    "data.max_candidates_factor": (1.0, INF, True, False),
    "data.catalogue_mag_shift": (-INF, INF, False, False),
    "data.gsparams_folding_threshold": (0.0, 1.0, False, False),
    "data.gsparams_maxk_threshold": (0.0, 1.0, False, False),
}


def check_count(dotted: str, value) -> None:
    """ConfigError when a count key (COUNT_KEYS) is not an integer at or above its minimum, or
    a real-valued key (RANGE_KEYS) is not a finite number inside its range."""
    if dotted in RANGE_KEYS:
        _check_range(dotted, value)
    if dotted not in COUNT_KEYS:
        return
    minimum, meaning = COUNT_KEYS[dotted]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"config key {dotted!r} must be an integer >= {minimum}{meaning}, got {value!r}")


def _check_range(dotted: str, value) -> None:
    import math

    low, high, low_in, high_in = RANGE_KEYS[dotted]
    inside = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
              and (value > low or (low_in and value == low)) and (value < high or (high_in and value == high)))
    if not inside:
        bounds = f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"
        raise ConfigError(f"config key {dotted!r} must be a finite number in {bounds}, got {value!r}")


def _lookup(config, dotted: str):
    """The value of a dotted key, or a KeyError when the config lacks it."""
    node = config
    for part in dotted.split("."):
        if part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def check_counts(config: ml_collections.ConfigDict) -> None:
    """check_count for every count and range key the config has, and the keys that go in pairs:
    preprocess.percentiles (0 <= low < high <= 100), data.split_fractions (three non-negative
    numbers summing to 1), data.mag_r_range (bright < faint)."""
    for dotted in list(COUNT_KEYS) + list(RANGE_KEYS):
        try:
            value = _lookup(config, dotted)
        except KeyError:
            continue
        check_count(dotted, value)
    checks = (
        ("preprocess.percentiles", lambda v: len(v) == 2 and 0 <= v[0] < v[1] <= 100,
         "(low, high) with 0 <= low < high <= 100"),
        ("data.split_fractions", lambda v: len(v) == 3 and min(v) >= 0 and abs(sum(v) - 1) < 1e-9,
         "three non-negative fractions (train, valid, test) summing to 1"),
        ("data.mag_r_range", lambda v: len(v) == 2 and v[0] < v[1], "(bright, faint) magnitudes, bright < faint"),
    )
    for dotted, ok, expected in checks:
        try:
            value = _lookup(config, dotted)
        except KeyError:
            continue
        try:
            good = ok(tuple(float(x) for x in value))
        except (TypeError, ValueError):
            good = False
        if not good:
            raise ConfigError(f"config key {dotted!r} must be {expected}, got {value!r}")


def _unknown_key(dotted: str, node, walked) -> str:
    where = ".".join(walked) or "the top level"
    valid = ", ".join(sorted(node.keys()))
    return f"unknown config key {dotted!r}; valid keys at {where}: {valid}"


def to_json(config: ml_collections.ConfigDict) -> str:
    """The config as stable, human-readable JSON (what a run stores in config.json)."""
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list)


def from_json(text: str) -> ml_collections.ConfigDict:
    """Inverse of `to_json` (tuples come back as tuples where the default config has them)."""
    return ml_collections.ConfigDict(_tuplify(json.loads(text)))


def _tuplify(obj):
    if isinstance(obj, dict):
        return {k: _tuplify(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return tuple(_tuplify(v) for v in obj)
    return obj


def base_config() -> ml_collections.ConfigDict:
    """Every key jaxrobust knows, at the paper's values (Ćiprijanović et al. 2022).

    The files in configs/ start from this and override a few fields, so a command-line override
    (`train.epochs=3`) always finds its key. Numbers without a source comment are our own
    engineering choices. Class order everywhere: (spiral, elliptical, merger).
    """
    config = ml_collections.ConfigDict()
    config.seed = 0  # one seed drives every draw: galaxies, split, init, shuffling, attack
    # Seed of the training and attack streams (init, shuffling, dropout, attack; rng.run_seed):
    # -1 = use `seed` (one seed for everything, as before). `reproduce --seeds N` sets 0..N-1
    # so that the dataset (drawn with `seed`) stays fixed while the runs vary.
    config.run_seed = -1

    # --- data: the simulated LSST-like dataset (see jaxrobust/data/simulate.py) ---
    data = config.data = ml_collections.ConfigDict()
    data.source = "simulate"  # "simulate" or a path to a folder of .npy files (Zenodo layout)
    data.n_spiral = 14312  # unique galaxies per class: Ćiprijanović et al. 2022, section 2.1
    data.n_elliptical = 8151
    data.n_merger = 2542  # before the x5 augmentation (-> 12,710 merger images)
    # One continuous generative population labelled afterwards (data/population.py), or
    # "recipes": the three per-class generators with rejection sampling of datasets made before.
    data.population = "continuous"
    # "catalogue": G-M20 on a Pan-STARRS-like i-band rendering of the same galaxy, as the paper's TNG
    # labels (Rodriguez-Gomez et al. 2019; data/catalogue.py); "gini_m20": on our own stamp's
    # label_band at label_depth; "intended": the drawn class, no labeller.
    data.label_by = "catalogue"
    # Magnitudes added to every galaxy in the catalogue rendering only: a config that dims its
    # galaxies to emulate the archive's noise (configs/quick.py) lets the catalogue see them at the
    # brightness of the paper's TNG sample (r ~ 14-17.5 at z = 0.05: the stellar masses of
    # Rodriguez-Gomez et al. 2019, log M* 9.8-11.3, at M/L_r = 1-3; docs/data.md).
    data.catalogue_mag_shift = 0.0
    data.label_band = "i"  # Rodriguez-Gomez et al. 2019 show their statmorph measurements in i
    data.label_depth = "Y10"  # "Y10", "Y1" or "noiseless"
    data.max_candidates_factor = 4.0  # give up if a class needs more than this x its count
    data.mag_r_range = (14.0, 17.5)  # AB, total r: the TNG sample's brightness (above)
    # 0.2" pixels (Ivezić et al. 2019, Table 1); 1.0 emulates the archive's noise (docs/data.md)
    data.sky_area_per_pixel_arcsec2 = 0.04
    data.merger_augment = True  # identity, h-flip, v-flip, rot90, rot180 (Ćiprijanović et al. 2022, section 2.1)
    data.split_fractions = (0.7, 0.1, 0.2)  # train, valid, test (Ćiprijanović et al. 2022, section 2.1)
    data.split_mode = "galaxy"  # "galaxy": split unique galaxies, then augment; "paper": images
    data.n_attack_subsample = 150  # test images in regular_images_150.npy (Ćiprijanović+ 2022, sec. 4.1)
    data.workers = 0  # simulation processes; 0 = all cores
    data.gsparams_folding_threshold = 1e-2  # GalSim default 5e-3; see scripts/bench_simulate.py
    data.gsparams_maxk_threshold = 3e-3  # GalSim default 1e-3
    data.preview = True  # `simulate`/`reproduce` write preview.png (paper Fig. 2), gini_m20.png (Fig. 1)

    # --- preprocessing (import_and_scale.py `update_sinh`) ---
    pre = config.preprocess = ml_collections.ConfigDict()
    pre.percentiles = (0.1, 99.9)  # clip bounds over the whole array being prepared
    pre.stretch = 0.85  # c = stretch / p_hi, x -> (arcsinh(c x) + 1) / 2
    pre.stats_from = "self"  # "self": each array its own percentiles (the code); "train"

    # --- model ---
    model = config.model = ml_collections.ConfigDict()
    model.name = "convnet"  # "convnet" or "resnet18"
    model.latent_dim = 256  # bottleneck width (Ćiprijanović et al. 2022, section 3)
    model.num_classes = 3

    # --- training (training.py: Adam, weighted CE, MMD) ---
    train = config.train = ml_collections.ConfigDict()
    # The domain-adaptation loss between the Y10 and Y1 batches' latents (losses.DA_LOSSES):
    # "none" (regular training: CE only), "mmd" (the paper: CE + mmd_weight * MMD) or "coral"
    # (Sun & Saenko 2016, Deep CORAL: CE + coral_weight * CORAL).
    train.da_loss = "none"
    train.epochs = 100
    train.batch_size = 128
    train.eval_batch_size = 64
    train.learning_rate = 1e-5  # the peak when lr_schedule is not "constant"
    train.lr_schedule = "constant"  # paper; "warmup_cosine": linear warm-up, cosine decay to 0
    train.warmup_epochs = 0  # warm-up length of "warmup_cosine"
    train.augment = "none"  # paper: "none"; "dihedral": a random flip/90-degree rotation per image and step
    train.b1 = 0.7
    train.b2 = 0.8
    train.eps = 1e-8
    train.weight_decay = 1e-3  # coupled L2 (PyTorch Adam), regular training
    train.weight_decay_da = 1e-4  # coupled L2 with domain adaptation
    train.mmd_weight = 0.05  # lambda: paper 0.05, published code 0.01
    # CORAL's lambda. Sun & Saenko (2016) choose it so that the classification and CORAL losses are
    # about equal at the end of training. Ours, not tuned by a study: the quick config's regular
    # model has CORAL ~0.007 between Y10 and Y1 batches of 32 (test latents) against a CE of ~0.6.
    train.coral_weight = 100.0
    # Ablations; the defaults are the method as published. Weight decay swapped between
    # the arms needs no switch: train.weight_decay=1e-4 train.weight_decay_da=1e-3.
    # mixed_batch_forward: the regular arm's forward also carries the Y1 batch (BatchNorm statistics
    # over Y10 + Y1, as with DA) while its loss stays CE on Y10: with train.weight_decay_da set to
    # train.weight_decay, regular vs DA then differ by the MMD term alone (DA's BatchNorm effect).
    train.mixed_batch_forward = False
    # accumulate_gradients: the published training never zeroes its gradients, so Adam steps on the
    # running sum of all past gradients. For reproducing the paper's code only; never the default.
    train.accumulate_gradients = False
    train.mmd_estimator = "biased"  # "biased" (code: all pairs, clamps) or "unbiased" (eq. 2)
    train.early_stopping = "graded"  # "graded" (code's counter), "patience" or "none"
    train.patience = 10
    train.data_placement = "auto"  # "device" (dataset on the accelerator), "host" (stream), "auto"

    # --- one-pixel attack (onepixel_attack.py) ---
    attack = config.attack = ml_collections.ConfigDict()
    attack.population = 400
    attack.differential_weight = 0.5  # F in DE/rand/1
    attack.max_generations = 80  # Ćiprijanović et al. 2022, section 5.2
    attack.targeted = True  # paper protocol: each other class in turn, first success kept
    attack.target_threshold = 0.5  # targeted success: p(target) > 0.5
    attack.untargeted_threshold = 0.05  # untargeted success: p(true) < 0.05
    # Size of the seeded test subsample (Ćiprijanović et al. 2022, section 4.1: 150). 0 = every
    # test image, in test-split order: several times the attacked images, so a per-image paired
    # test has less attack noise.
    attack.n_images = 150
    attack.block_generations = 8  # generations per jitted block between compactions
    attack.tasks_per_call = 16  # attack tasks (image, target class) resident in one jitted block
    attack.chunk_candidates = 0  # candidates per forward chunk (memory budget); 0 = per backend
    attack.evaluator = "auto"  # "full", "incremental" or "auto"
    # Ours: attack the images classified correctly in Y10. False: every image of the subsample, as the
    # published church_window(); misclassified ones run the DE like the others (success at
    # generation 0 when the initial population already meets the criterion).
    attack.only_correct = True
    # Initial colours: "normal" = clip(N(0.5, 0.5), 0, 1) (onepixel_attack.py); "image_range" = U
    # within the image's own per-band (min, max), to separate extreme-pixel effects from vulnerability.
    attack.colour_init = "normal"

    # --- exhaustive one-pixel scan (jaxrobust/scan.py): every pixel x a colour set ---
    scan = config.scan = ml_collections.ConfigDict()
    scan.enabled = True  # `reproduce` scans both runs after their attacks
    scan.n_images = 150  # first n of the attack subsample (150), at most attack.n_images
    scan.colours = "corners"  # "corners" (8 RGB-cube corners), "minmax", "grid:K" or a .npy/.txt file

    # --- one-pixel certificates (jaxrobust/certify.py): every pixel over the whole colour box ---
    certify = config.certify = ml_collections.ConfigDict()
    # off: at the paper's scale a CPU needs minutes per image (docs/certify.md); quick turns it on
    certify.enabled = False  # `reproduce` certifies both runs after their scans
    certify.n_images = 150  # first n of the attack subsample, at most attack.n_images (0 there: all)
    certify.max_boxes = 32  # per-pixel budget of bounded boxes before a pixel is undecided (--budget)
    certify.batch = 1024  # boxes bounded per step of the branch and bound
    certify.bounds = "linear"  # "linear" (forward linear relaxations) or "interval" (docs/certify.md)
    certify.radius = True  # search the certified one-pixel radius by bisection
    certify.radius_tolerance = 1.0 / 256  # width of the radius's final bracket, stretched units
    certify.radius_max_boxes = 16  # per-pixel budget of each step of the radius's bisection

    # --- analysis ---
    analysis = config.analysis = ml_collections.ConfigDict()
    analysis.isomap_points = 250  # test galaxies in the isomaps (paper Fig. 3)
    analysis.isomap_neighbors = 5  # scikit-learn's default
    analysis.church_windows = 3  # church-window figures per run
    analysis.histogram_bins = 20
    analysis.bootstrap = 1000  # resamples for confidence intervals
    analysis.animation = True  # rotating 3D isomap GIF
    return config


def read_run_config(run_dir: Path) -> ml_collections.ConfigDict:
    """The config a run folder was trained with (its config.json), with every base_config key.

    Keys renamed since the run was written take their new names and values (RENAMED_KEYS: a run
    with `train.domain_adaptation=True` reads as `train.da_loss="mmd"`), and keys added since take
    their base_config default, the behaviour the run was trained with; readers index the config
    without defaults of their own.
    """
    path = Path(run_dir) / RUN_CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: not a training run folder (no {RUN_CONFIG_FILE}); run "
                                "`jaxrobust train` first")
    values = _with_defaults(_renamed(json.loads(path.read_text())), json.loads(to_json(base_config())))
    return ml_collections.ConfigDict(_tuplify(values))


def _renamed(values: dict) -> dict:
    """Config values (nested dicts) with the old keys of RENAMED_KEYS under their new names."""
    values = json.loads(json.dumps(values))  # a deep copy
    for old, new in RENAMED_KEYS.items():
        (old_section, old_key), (new_section, new_key) = old.split("."), new.split(".")
        section = values.get(old_section)
        if not isinstance(section, dict) or old_key not in section:
            continue
        value = section.pop(old_key)
        value = RENAMED_VALUES.get(old, {}).get(value, value)
        values.setdefault(new_section, {}).setdefault(new_key, value)
    return values


def training_settings(config) -> dict:
    """The sections of a config (ConfigDict or dict) that determine a trained model, as JSON
    values: all but `attack`, `scan`, `certify` and `analysis`.

    A key the config lacks counts at its `base_config` default: a run folder written before the
    key existed was trained with the behaviour that default keeps, so it stays current.
    `data.source` (where the dataset lies) is left out: the data's fingerprint decides whether
    the data are the same (provenance.py), so a dataset or study moved to another path resumes.
    """
    values = _with_defaults(_renamed(json.loads(to_json(ml_collections.ConfigDict(config)))),
                            json.loads(to_json(base_config())))
    if isinstance(values.get("data"), dict):
        values["data"] = {k: v for k, v in values["data"].items() if k != "source"}
    return {k: v for k, v in values.items() if k not in ("attack", "scan", "certify", "analysis")}


def _with_defaults(values: dict, defaults: dict) -> dict:
    merged = dict(values)
    for key, default in defaults.items():
        if key not in merged:
            merged[key] = default
        elif isinstance(default, dict) and isinstance(merged[key], dict):
            merged[key] = _with_defaults(merged[key], default)
    return merged


def copy_with(config: ml_collections.ConfigDict, updates: dict) -> ml_collections.ConfigDict:
    """A locked copy of `config` with dotted-key updates applied (same checks as overrides)."""
    new = ml_collections.ConfigDict(config.to_dict())
    for dotted, value in updates.items():
        set_dotted(new, dotted, value)
    new.lock()
    return new


def run_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str], sections: tuple[str, ...],
                  command: str) -> ml_collections.ConfigDict:
    """A locked copy of a trained run's config with `key=value` overrides of the given sections
    (and the top-level `seed`) applied: what `attack` and `scan` may change without retraining.

    An override of another key raises ConfigError naming `command` and what it takes.
    """
    overrides = list(overrides)
    allowed = lambda key: key == "seed" or key.split(".", 1)[0] in sections  # noqa: E731
    bad = [o for o in overrides if not allowed(o.split("=", 1)[0].strip())]
    if bad:
        takes = ", ".join(f"{s}.*" for s in sections)
        raise ConfigError(f"`{command}` takes {takes} and seed overrides only, got {bad}; the other "
                          "settings are the trained run's (retrain to change them)")
    new = ml_collections.ConfigDict(config.to_dict())
    apply_overrides(new, overrides)
    new.lock()
    return new
