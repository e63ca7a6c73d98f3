"""jaxrobust.config: bundled configs, dotted overrides, and the errors a user sees."""
from __future__ import annotations

import re

import numpy as np
import pytest

from jaxrobust import config as cfg
from jaxrobust.config import ConfigError, load_config
from jaxrobust.data import simulate


def test_quick_config():
    """What quick.py's docstring promises: 1,000 galaxies in the paper's proportions (14,312 :
    8,151 : 2,542), archive-like sky, the paper's split; and only keys base_config knows."""
    config = load_config("quick")
    counts = (config.data.n_spiral, config.data.n_elliptical, config.data.n_merger)
    assert sum(counts) == 1000
    np.testing.assert_allclose(np.array(counts) / 1000, np.array([14312, 8151, 2542]) / 25005, atol=1e-3)
    assert config.data.sky_area_per_pixel_arcsec2 == 1.0
    assert config.data.split_fractions == (0.7, 0.1, 0.2)
    assert flat_keys(config) == flat_keys(cfg.base_config())
    spec = simulate.SimulationSpec.from_config(config)
    assert spec.counts == counts and spec.sky_area_per_pixel_arcsec2 == 1.0


def test_medium_config():
    """What medium.py's docstring promises: 3x quick's galaxies in the paper's proportions, the
    same noise, 40 epochs of batch 32 without early stopping; only keys base_config knows."""
    medium, quick = load_config("medium"), load_config("quick")
    counts = np.array([medium.data.n_spiral, medium.data.n_elliptical, medium.data.n_merger])
    assert counts.sum() == 3000
    np.testing.assert_allclose(counts / 3000, np.array([14312, 8151, 2542]) / 25005, atol=1e-3)
    for key in ("mag_r_range", "catalogue_mag_shift", "sky_area_per_pixel_arcsec2", "split_fractions"):
        assert medium.data[key] == quick.data[key], key
    assert (medium.train.epochs, medium.train.batch_size, medium.train.early_stopping) == (40, 32, "none")
    assert medium.attack.to_dict() == cfg.base_config().attack.to_dict()  # the paper's attack
    assert flat_keys(medium) == flat_keys(cfg.base_config())


def flat_keys(node, prefix=""):
    keys = set()
    for key, value in node.items():
        keys |= flat_keys(value, f"{prefix}{key}.") if hasattr(value, "items") else {prefix + key}
    return keys


def test_config_by_path_and_name_agree():
    by_path = load_config(cfg.CONFIG_DIR / "paper_resnet18.py")
    assert by_path.to_dict() == load_config("paper_resnet18").to_dict()
    assert load_config("quick.py").to_dict() == load_config("quick").to_dict()


def test_overrides_parse_and_coerce():
    config = load_config("quick", [
        "train.learning_rate=1",  # int given for a float key: becomes 1.0
        "train.epochs=3",
        "data.split_fractions=(0.6, 0.2, 0.2)",
        "data.mag_r_range=[15, 16.5]",  # a list for a tuple key: becomes a tuple
        "model.name=resnet18",  # not a Python literal: stays a string
        "data.merger_augment=False",
        "seed = 7",
    ])
    assert config.train.learning_rate == 1.0 and type(config.train.learning_rate) is float
    assert config.train.epochs == 3 and type(config.train.epochs) is int
    assert config.data.split_fractions == (0.6, 0.2, 0.2)
    assert config.data.mag_r_range == (15, 16.5) and isinstance(config.data.mag_r_range, tuple)
    assert config.model.name == "resnet18"
    assert config.data.merger_augment is False
    assert config.seed == 7


def test_loaded_config_is_locked():
    config = load_config("quick")
    with pytest.raises(AttributeError):
        config.train.epoch = 3  # a typo cannot add a key


def test_unknown_key_lists_valid_keys_of_its_section():
    with pytest.raises(ConfigError) as info:
        load_config("quick", ["data.n_spirals=3"])
    message = str(info.value)
    assert "'data.n_spirals'" in message and "valid keys at data:" in message
    for key in cfg.base_config().data.keys():
        assert key in message


def test_unknown_section_lists_top_level_keys():
    with pytest.raises(ConfigError) as info:
        load_config("quick", ["trian.epochs=3"])
    message = str(info.value)
    assert "'trian'" in message and "the top level" in message
    for key in ("analysis", "attack", "data", "model", "preprocess", "seed", "train"):
        assert key in message


def test_section_and_leaf_misuse():
    with pytest.raises(ConfigError, match="is a section"):
        load_config("quick", ["train=3"])
    with pytest.raises(ConfigError, match="'seed' is a value, not a section: cannot set 'seed.value'"):
        load_config("quick", ["seed.value=3"])
    with pytest.raises(ConfigError, match="must look like key.subkey=value"):
        load_config("quick", ["train.epochs"])


@pytest.mark.parametrize("override, expected", [
    ("train.epochs=1.5", "expects int"),
    ("train.epochs=abc", "expects int"),
    ("train.epochs=True", "expects int"),  # bool is an int subclass, still refused
    ("data.merger_augment=1", "expects bool"),
    ("train.learning_rate=fast", "expects float"),
    ("data.split_fractions=0.7", "expects tuple"),
    ("model.name=3", "expects str"),
])
def test_wrong_type(override, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        load_config("quick", [override])
    assert override.split("=")[0] in str(info.value)


def test_missing_config_file_lists_bundled_configs():
    bundled = sorted(p.stem for p in cfg.CONFIG_DIR.glob("*.py"))
    assert {"quick", "medium", "paper_convnet", "paper_resnet18"} <= set(bundled)
    with pytest.raises(ConfigError) as info:
        load_config("quikc")
    message = str(info.value)
    assert "'quikc' not found" in message and str(bundled) in message


def test_config_file_without_get_config(tmp_path):
    path = tmp_path / "empty.py"
    path.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="must define get_config"):
        load_config(path)


def test_config_file_elsewhere_on_disk(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text("from jaxrobust.config import base_config\n\n"
                    "def get_config():\n    c = base_config()\n    c.train.epochs = 2\n    return c\n")
    assert load_config(path, ["train.batch_size=8"]).train.epochs == 2


def test_json_round_trip_keeps_tuples():
    config = load_config("quick", ["data.split_fractions=(0.5, 0.25, 0.25)"])
    back = cfg.from_json(cfg.to_json(config))
    assert back.data.split_fractions == (0.5, 0.25, 0.25) and isinstance(back.data.split_fractions, tuple)
    assert back.to_dict() == config.to_dict()


def test_run_config_round_trip_and_missing_folder(tmp_path):
    config = load_config("quick", ["train.epochs=4", "attack.population=40"])
    (tmp_path / cfg.RUN_CONFIG_FILE).write_text(cfg.to_json(config))
    back = cfg.read_run_config(tmp_path)
    assert back.to_dict() == config.to_dict()
    # training_settings: JSON values of what determines a trained model (not attack or analysis)
    settings = cfg.training_settings(back)
    assert {"data", "preprocess", "model", "train", "seed"} <= set(settings)
    assert not {"attack", "analysis"} & set(settings)
    assert settings["train"]["epochs"] == 4 and settings["data"]["split_fractions"] == [0.7, 0.1, 0.2]
    assert settings == cfg.training_settings(cfg.copy_with(config, {"attack.population": 400}))
    assert settings != cfg.training_settings(cfg.copy_with(config, {"train.epochs": 5}))
    with pytest.raises(FileNotFoundError, match="no config.json.*jaxrobust train"):
        cfg.read_run_config(tmp_path / "elsewhere")


def test_a_run_written_before_a_key_existed_counts_it_at_its_default():
    import json
    config = cfg.copy_with(cfg.base_config(), {"train.epochs": 4})  # the two keys at their defaults
    older = json.loads(cfg.to_json(config))
    del older["train"]["lr_schedule"], older["train"]["augment"]  # a config.json from before these keys
    settings = cfg.training_settings(older)
    assert settings == cfg.training_settings(config)
    assert settings["train"]["lr_schedule"] == cfg.base_config().train.lr_schedule
    # a key set away from its default still tells the runs apart
    other = "dihedral" if config.train.augment == "none" else "none"
    assert settings != cfg.training_settings(cfg.copy_with(config, {"train.augment": other}))


def test_an_old_run_folder_reads_with_renamed_keys_and_every_default(tmp_path):
    import json
    config = cfg.copy_with(cfg.base_config(), {"train.epochs": 4, "attack.tasks_per_call": 5, "train.da_loss": "mmd"})
    older = json.loads(cfg.to_json(config))
    # a config.json from before the DA loss had a name, the attack's batching its current key, and
    # before the lr schedule and the scan section existed
    del older["train"]["da_loss"], older["train"]["coral_weight"], older["train"]["lr_schedule"], older["scan"]
    older["train"]["domain_adaptation"] = True
    older["attack"]["images_per_call"] = older["attack"].pop("tasks_per_call")
    (tmp_path / cfg.RUN_CONFIG_FILE).write_text(json.dumps(older))
    back = cfg.read_run_config(tmp_path)
    assert back.to_dict() == config.to_dict()  # every key, at the run's values or base_config's defaults
    assert back.train.da_loss == "mmd" and back.attack.tasks_per_call == 5 and "domain_adaptation" not in back.train
    assert back.scan.to_dict() == cfg.base_config().scan.to_dict()
    assert cfg.training_settings(older) == cfg.training_settings(config)  # a resume of it is current
    older["train"]["domain_adaptation"] = False
    (tmp_path / cfg.RUN_CONFIG_FILE).write_text(json.dumps(older))
    assert cfg.read_run_config(tmp_path).train.da_loss == "none"


def test_a_renamed_key_is_refused_as_an_override_naming_its_new_name():
    with pytest.raises(cfg.ConfigError, match=r"'train.domain_adaptation' was renamed to 'train.da_loss'.*True is 'mmd'"):
        load_config("quick", ["train.domain_adaptation=True"])


def test_attack_and_scan_take_their_own_sections_and_the_seed_only():
    config = cfg.copy_with(cfg.base_config(), {"train.epochs": 4})
    new = cfg.run_overrides(config, ["attack.population=40", "seed=3"], ("attack",), "attack")
    assert new.attack.population == 40 and new.seed == 3 and new.train.epochs == 4
    assert cfg.run_overrides(config, ["scan.n_images=2"], ("attack", "scan"), "scan").scan.n_images == 2
    with pytest.raises(cfg.ConfigError, match=r"`attack` takes attack\.\* and seed overrides only, got \['scan.n_images=2'\]"):
        cfg.run_overrides(config, ["scan.n_images=2"], ("attack",), "attack")
    with pytest.raises(cfg.ConfigError, match=r"`scan` takes attack\.\*, scan\.\* and seed overrides only.*train.epochs"):
        cfg.run_overrides(config, ["train.epochs=2"], ("attack", "scan"), "scan")
    with pytest.raises(cfg.ConfigError, match="seeds"):
        cfg.run_overrides(config, ["seeds=2"], ("attack",), "attack")
    with pytest.raises(cfg.ConfigError, match="attack.populaton"):  # an unknown key of an allowed section
        cfg.run_overrides(config, ["attack.populaton=2"], ("attack",), "attack")


@pytest.mark.parametrize("value", ["-1.0", "nan", "1e999"])
def test_a_negative_or_non_finite_da_weight_is_refused(value):
    for key in ("train.mmd_weight", "train.coral_weight"):
        with pytest.raises(cfg.ConfigError, match=re.escape(f"'{key}'")):
            load_config("quick", [f"{key}={value}"])
