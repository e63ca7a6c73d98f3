"""Bad inputs and damaged run folders through the command line: each a sentence, exit code 2.

One tiny run (tests/_zenodo_tiny.py: 32 x 32 stamps, ConvNet, 2 epochs, a 3-image attack) is
trained, evaluated and attacked once per test process through `jaxrobust.cli.main`
(`_zenodo_tiny.shared_run`, shared with test_kill); every case copies what it damages. Each case asserts the exit code, that the message names the file or key
and says what to do, and that no traceback is printed.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from jaxrobust import provenance
from jaxrobust.cli import main

import _synthetic  # noqa: F401  (the session's persistent XLA compilation cache)
import _zenodo_tiny as tiny


def run_cli(capsys, *argv) -> tuple[int, str]:
    """(exit code, stderr) of `jaxrobust argv`; fails on a printed traceback. The last stdout
    is kept in LAST_OUT."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    LAST_OUT[:] = [captured.out]
    return code, captured.err


LAST_OUT = [""]


def refused(capsys, *argv, names=(), says=()) -> str:
    """Runs argv, asserts exit code 2 and one line naming each of `names` and saying `says`."""
    code, err = run_cli(capsys, *argv)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for text in tuple(names) + tuple(says):
        assert str(text) in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def dataset() -> Path:
    return tiny.shared_run()[0]


@pytest.fixture(scope="module")
def run() -> Path:
    """A trained, evaluated and attacked run on `dataset` (do not modify: copy it)."""
    return tiny.shared_run()[1]


def copy_of(folder: Path, tmp_path: Path, name: str | None = None) -> Path:
    target = tmp_path / (name or folder.name)
    shutil.copytree(folder, target)
    return target


def truncate(path: Path, keep: float = 0.5) -> None:
    payload = path.read_bytes()
    path.write_bytes(payload[: int(len(payload) * keep)])


# --- Run folders: no silent overwrite, provenance ---
def test_train_into_a_folder_holding_a_run_is_refused(capsys, run, dataset):
    before = (run / "metrics.jsonl").read_bytes()
    refused(capsys, "train", "--data", dataset, "--workdir", run, *tiny.TRAIN_ARGS,
            names=[run], says=["--resume", "--overwrite"])
    assert (run / "metrics.jsonl").read_bytes() == before


def test_overwrite_removes_every_derived_file_of_the_old_run(capsys, run, dataset, tmp_path):
    work = copy_of(run, tmp_path)
    (work / ".attack.npz.x1.tmp").write_bytes(b"")
    old_id = provenance.read_run(work)["run_id"]
    code, err = run_cli(capsys, "train", "--data", dataset, "--workdir", work, "--overwrite",
                        *tiny.TRAIN_ARGS[1:], "train.epochs=1")
    assert code == 0, err
    for name in ("evaluation.json", "predictions.npz", "latents.npz", "attack.npz", "attack.json",
                 ".attack.npz.x1.tmp", "figures/confusion_matrices.png"):
        assert not (work / name).exists(), name
    assert provenance.read_run(work)["run_id"] != old_id
    assert len((work / "metrics.jsonl").read_text().splitlines()) == 1
    refused(capsys, "analyze", "--workdir", work, names=[work / "evaluation.json"], says=["jaxrobust evaluate"])


def test_resume_and_overwrite_together_are_refused(capsys, dataset, tmp_path):
    refused(capsys, "train", "--data", dataset, "--workdir", tmp_path / "new", "--resume", "--overwrite",
            *tiny.TRAIN_ARGS, says=["--resume and --overwrite"])


def changed_dataset(dataset: Path, tmp_path: Path) -> Path:
    """A copy of the dataset whose training split holds other galaxies (another seed)."""
    other = tmp_path / "other"
    tiny.write_dataset(other, seed=5)
    changed = copy_of(dataset, tmp_path, "changed")
    for name in ("images_Y10_train.npy", "images_Y1_train.npy", "labels_train.npy"):
        shutil.copy(other / name, changed / name)
    return changed


@pytest.mark.parametrize("command", ["evaluate", "attack"])
def test_data_other_than_the_runs_are_refused(capsys, run, dataset, tmp_path, command):
    changed = changed_dataset(dataset, tmp_path)
    line = refused(capsys, command, "--workdir", run, "--data", changed,
                   names=[changed, "images_Y10_train.npy"], says=["not the data", "--force"])
    assert "labels_train.npy" in line


def test_force_uses_other_data_with_a_warning(capsys, run, dataset, tmp_path):
    work = copy_of(run, tmp_path)
    changed = changed_dataset(dataset, tmp_path)
    capsys.readouterr()
    assert main(["evaluate", "--workdir", str(work), "--data", str(changed), "--force"]) == 0
    out = capsys.readouterr().out
    assert "warning (--force)" in out and "images_Y10_train.npy" in out


def test_resume_with_other_data_is_refused(capsys, run, dataset, tmp_path):
    work = copy_of(run, tmp_path)
    changed = changed_dataset(dataset, tmp_path)
    refused(capsys, "train", "--data", changed, "--workdir", work, "--resume", *tiny.TRAIN_ARGS,
            names=[changed], says=["not the data", "--overwrite"])


def test_images_of_another_size_than_the_model_are_refused(capsys, run, tmp_path):
    small = tmp_path / "small"
    tiny.write_dataset(small, side=16)
    refused(capsys, "evaluate", "--workdir", run, "--data", small, "--force",
            names=[small], says=["16 x 16 x 3", "32 x 32 x 3"])


def test_a_model_that_does_not_fit_the_images_is_a_sentence_without_provenance(capsys, run, tmp_path):
    """A run from before provenance.json: flax's shape error becomes the sentence."""
    work = copy_of(run, tmp_path)
    (work / "provenance.json").unlink()
    small = tmp_path / "small"
    tiny.write_dataset(small, side=16)
    refused(capsys, "evaluate", "--workdir", work, "--data", small, names=[work],
            says=["does not fit these images", "dataset"])


def test_simulate_into_a_complete_dataset_is_refused(capsys, tmp_path):
    out = tmp_path / "sim"
    out.mkdir()
    (out / "dataset.json").write_text("{}")
    refused(capsys, "simulate", "--out", out, names=[out], says=["complete dataset", "--overwrite"])
    assert (out / "dataset.json").read_text() == "{}"


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_an_incomplete_simulation_is_refused(capsys, run, dataset, tmp_path, command):
    folder = copy_of(dataset, tmp_path)
    (folder / "galaxies.jsonl").write_text("{}\n")  # what simulate writes before dataset.json
    args = (["train", "--workdir", tmp_path / "new", *tiny.TRAIN_ARGS] if command == "train"
            else ["evaluate", "--workdir", run])
    refused(capsys, *args, "--data", folder, names=[folder], says=["incomplete", "jaxrobust simulate", "--out"])


class _Killed(BaseException):
    """Stands for a kill: not an Exception, so the command line does not catch it."""


def test_a_simulation_killed_while_writing_its_arrays_is_refused_as_incomplete(capsys, monkeypatch, tmp_path):
    import _tiny_dataset
    from jaxrobust.data import store

    real_save = store.atomic_save_npy

    def killed_at_y1_train(path, *args, **kwargs):
        if Path(path).name == "images_Y1_train.npy":
            raise _Killed
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(store, "atomic_save_npy", killed_at_y1_train)
    out = tmp_path / "sim"
    with pytest.raises(_Killed):
        main(["simulate", "--out", str(out), *_tiny_dataset.TINY_OVERRIDES])
    assert (out / "images_Y10_train.npy").exists() and not (out / "metadata_train.npz").exists()
    refused(capsys, "train", "--data", out, "--workdir", tmp_path / "run", *tiny.TRAIN_ARGS, names=[out],
            says=["incomplete simulation", f"jaxrobust simulate --config CONFIG --out {out}"])


# --- Derived files: units and their checkpoint ---
def test_attack_files_of_two_runs_are_never_paired(capsys, run, tmp_path):
    work = copy_of(run, tmp_path)
    info = json.loads((work / "attack.json").read_text())
    info["provenance"]["unit_id"] = "0" * 32  # as an attack.json left by an earlier attack
    (work / "attack.json").write_text(json.dumps(info))
    refused(capsys, "analyze", "--workdir", work, names=[work / "attack.json"], says=["jaxrobust attack"])


def test_an_evaluation_of_another_checkpoint_is_refused(capsys, run, tmp_path):
    work = copy_of(run, tmp_path)
    record = json.loads((work / "provenance.json").read_text())
    record["run_id"] = "f" * 32  # as if the run had been retrained since
    (work / "provenance.json").write_text(json.dumps(record))
    refused(capsys, "analyze", "--workdir", work, names=[work / "evaluation.json"],
            says=["another training run", "jaxrobust evaluate"])


def test_derived_units_carry_one_id_and_their_checkpoint(run):
    from jaxrobust import checkpoint

    source = provenance.checkpoint_source(run, checkpoint.read_meta(run, "best"))
    for unit, names in (("evaluate", provenance.UNITS["evaluate"]), ("attack", provenance.UNITS["attack"])):
        tags = [provenance.unit_tags(run / n, "") for n in names]
        assert len({t[0] for t in tags}) == 1 and tags[0][0] is not None, unit
        assert all(t[1] == source for t in tags), unit


def test_stale_temporary_files_are_removed_on_the_next_write(capsys, run, tmp_path):
    work = copy_of(run, tmp_path)
    stale = work / ".attack.npz.abc123.tmp"
    stale.write_bytes(b"")
    code, err = run_cli(capsys, "attack", "--workdir", work, *tiny.ATTACK_ARGS)
    assert code == 0, err
    assert not stale.exists()
    provenance.check_outputs(work, None)  # the new pair agrees


# --- Pairing checks ---
def _copy_y10_into_y1(folder):
    shutil.copy(folder / "images_Y10_valid.npy", folder / "images_Y1_valid.npy")


def _shuffle_y1(folder):
    y1 = np.load(folder / "images_Y1_train.npy")
    np.save(folder / "images_Y1_train.npy", y1[np.random.default_rng(2).permutation(len(y1))])


def _two_y1_rows_swapped(folder):
    """Rows 0 and the first row of another class of the Y1 test split exchanged."""
    y1 = np.load(folder / "images_Y1_test.npy")
    labels = np.load(folder / "labels_test.npy").argmax(axis=1)
    other = int(np.flatnonzero(labels != labels[0])[0])
    y1[[0, other]] = y1[[other, 0]]
    np.save(folder / "images_Y1_test.npy", y1)


def _y1_is_y10_rescaled(folder):
    y10 = np.load(folder / "images_Y10_test.npy")
    np.save(folder / "images_Y1_test.npy", (y10 * 1.001).astype(np.float32))


def _depths_exchanged(folder):
    y10, y1 = (np.load(folder / f"images_{d}_valid.npy") for d in ("Y10", "Y1"))
    np.save(folder / "images_Y10_valid.npy", y1)
    np.save(folder / "images_Y1_valid.npy", y10)


def _wrong_subsample_labels(folder):
    labels = np.load(folder / "labels_150.npy")
    np.save(folder / "labels_150.npy", np.roll(labels, 1, axis=1))


def _all_zero_images(folder):
    y1 = np.load(folder / "images_Y1_test.npy")
    np.save(folder / "images_Y1_test.npy", np.zeros_like(y1))


def _truncated_metadata_150(folder):
    truncate(folder / "metadata_150.npz")


def _nan_pixel(folder):  # already clear before issue 15: keep it so
    y10 = np.load(folder / "images_Y10_valid.npy")
    y10[1, 0, 3, 3] = np.nan
    np.save(folder / "images_Y10_valid.npy", y10)


def _float16_overflow(folder):
    y10 = np.load(folder / "images_Y10_valid.npy")
    y10[2, 1, 5, 5] = 70000.0  # electrons: above float16's largest value, 65,504
    with np.errstate(over="ignore"):  # the overflow is the point
        np.save(folder / "images_Y10_valid.npy", y10.astype(np.float16))


def _labels_not_one_hot(folder):  # already clear before issue 15
    labels = np.load(folder / "labels_test.npy")
    labels[2] = [1, 1, 0]
    np.save(folder / "labels_test.npy", labels)


def _missing_split(folder):  # already clear before issue 15
    (folder / "images_Y1_valid.npy").unlink()


DATASET_DAMAGE = {
    "y1_copy_of_y10": (_copy_y10_into_y1, "images_Y1_valid.npy", "exact copy"),
    "y1_other_order": (_shuffle_y1, "images_Y1_train.npy", "same order"),
    "y1_two_rows_swapped": (_two_y1_rows_swapped, "images_Y1_test.npy", "swapped"),
    "y1_is_y10_rescaled": (_y1_is_y10_rescaled, "images_Y1_test.npy", "no noise of its own"),
    "depths_exchanged": (_depths_exchanged, "images_Y1_valid.npy", "less noisy"),
    "subsample_labels": (_wrong_subsample_labels, "labels_150.npy", "test labels"),
    "all_zero_images": (_all_zero_images, "images_Y1_test.npy", "percentile"),
    "truncated_metadata_150": (_truncated_metadata_150, "metadata_150.npz", "simulate or download"),
    "nan_pixel": (_nan_pixel, "images_Y10_valid.npy", "non-finite"),
    "float16_overflow": (_float16_overflow, "images_Y10_valid.npy", "float16 array holds at most 65,504"),
    "labels_not_one_hot": (_labels_not_one_hot, "labels_test.npy", "not one-hot"),
    "missing_split": (_missing_split, "images_Y1_valid.npy", "not found"),
}


@pytest.mark.parametrize("kind", sorted(DATASET_DAMAGE))
def test_damaged_dataset_is_a_sentence(capsys, run, dataset, tmp_path, kind):
    damage, name, says = DATASET_DAMAGE[kind]
    folder = copy_of(dataset, tmp_path)
    damage(folder)
    refused(capsys, "evaluate", "--workdir", run, "--data", folder, "--force", names=[folder / name], says=[says])


@pytest.mark.parametrize("option, says", [("attack.n_images=-3", ">= 0 (0 = every test image)"),
                                          ("attack.n_images=2.5", "expects int")])
def test_counts_below_their_minimum_are_refused(capsys, run, option, says):
    refused(capsys, "attack", "--workdir", run, option, names=["attack.n_images"], says=[says])


def test_negative_workers_are_refused(capsys, tmp_path):
    refused(capsys, "simulate", "--out", tmp_path / "sim", "--workers", "-2", names=["--workers"], says=[">= 0"])
    assert not (tmp_path / "sim").exists()


@pytest.mark.parametrize("option", ["scan.n_images=-1", "analysis.isomap_points=0"])
def test_other_counts_are_checked_when_loading_a_config(capsys, dataset, tmp_path, option):
    from jaxrobust import config as config_lib

    key = option.split("=")[0]
    if key.split(".")[0] not in config_lib.base_config():
        pytest.skip(f"no {key.split('.')[0]} section in this config")
    refused(capsys, "train", "--data", dataset, "--workdir", tmp_path / "new", option, names=[key], says=[">="])


@pytest.mark.parametrize("option, key, says", [
    ("attack.target_threshold=1.5", "attack.target_threshold", "(0, 1)"),
    ("attack.untargeted_threshold=-0.05", "attack.untargeted_threshold", "(0, 1)"),
    ("train.learning_rate=1e999", "train.learning_rate", "finite"),
    ("data.n_spiral=-5", "data.n_spiral", ">= 1"),
    ("data.n_merger=0", "data.n_merger", ">= 1"),
    ("seed=-1", "seed", ">= 0"),
    ("preprocess.percentiles=(99.9, 0.1)", "preprocess.percentiles", "low < high"),
])
def test_values_out_of_range_are_refused_naming_the_key(capsys, dataset, tmp_path, option, key, says):
    refused(capsys, "train", "--data", dataset, "--workdir", tmp_path / "new", option, names=[f"'{key}'"], says=[says])
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("command, takes", [("attack", "attack.* and seed"), ("scan", "attack.*, scan.* and seed")])
def test_attack_and_scan_refuse_a_training_override_alike(capsys, run, command, takes):
    refused(capsys, command, "--workdir", run, "train.epochs=5", names=["train.epochs=5", f"`{command}`"],
            says=[f"takes {takes} overrides only", "retrain"])


def test_an_attack_threshold_out_of_range_is_refused_before_the_attack(capsys, run):
    refused(capsys, "attack", "--workdir", run, "attack.target_threshold=1.5", names=["attack.target_threshold"],
            says=["(0, 1)"])


@pytest.mark.parametrize("text, says", [
    ("def get_config(:\n    pass\n", "line 1: not valid Python"),
    ("def get_config():\n    return {}['data']\n", "get_config() raised KeyError"),
    ("import no_such_module_here\n", "importing it raised ModuleNotFoundError"),
])
def test_a_broken_config_file_is_a_sentence(capsys, dataset, tmp_path, text, says):
    path = tmp_path / "mine.py"
    path.write_text(text)
    refused(capsys, "train", "--config", path, "--data", dataset, "--workdir", tmp_path / "new",
            names=[path], says=[says, "fix the config file"])


def test_files_changed_after_simulate_are_named(capsys, run, dataset, tmp_path):
    """dataset.json records each file's checksum; a file edited since is refused when read."""
    from jaxrobust.data import store

    folder = copy_of(dataset, tmp_path)
    store.write_info(folder, {"note": "the shared tiny dataset, recorded as a simulation would"})
    import hashlib

    recorded = json.loads((folder / "dataset.json").read_text())["content_hashes"]["labels_test.npy"]
    payload = (folder / "labels_test.npy").read_bytes()  # under 64 MiB: hashed whole
    assert recorded == f"{len(payload)}:{hashlib.blake2b(payload, digest_size=16).hexdigest()}"
    labels = np.load(folder / "labels_test.npy")
    other = int(np.flatnonzero(labels.argmax(axis=1) != labels[0].argmax())[0])
    labels[[0, other]] = labels[[other, 0]]  # still one-hot, counts unchanged: only the checksum sees it
    np.save(folder / "labels_test.npy", labels)
    refused(capsys, "evaluate", "--workdir", run, "--data", folder, "--force",
            names=[folder / "labels_test.npy", "dataset.json"], says=["changed since", "simulate"])
    info = json.loads((folder / "dataset.json").read_text())
    del info["content_hashes"]  # a dataset.json from before: its sha256 checksums are used
    (folder / "dataset.json").write_text(json.dumps(info))
    refused(capsys, "evaluate", "--workdir", run, "--data", folder, "--force",
            names=[folder / "labels_test.npy"], says=["changed since"])


# --- Damaged run folders ---
def _truncated_config(work):
    truncate(work / "config.json")
    return ["evaluate", "--workdir", work], work / "config.json", "--overwrite"


def _truncated_checkpoint(work):
    step = next(p for p in (work / "checkpoints" / "best").iterdir() if p.name.isdigit())
    biggest = max((p for p in step.rglob("*") if p.is_file() and "meta" not in p.parts),
                  key=lambda p: p.stat().st_size)
    truncate(biggest, 0.3)
    return ["evaluate", "--workdir", work], work / "checkpoints", "--overwrite"


def _truncated_checkpoint_meta(work):
    step = next(p for p in (work / "checkpoints" / "best").iterdir() if p.name.isdigit())
    for meta in (step / "meta").glob("*"):
        truncate(meta, 0.5)
    return ["evaluate", "--workdir", work], work / "checkpoints", "--overwrite"


def _truncated_attack(work):
    truncate(work / "attack.npz")
    return ["analyze", "--workdir", work], work / "attack.npz", "jaxrobust attack"


def _truncated_latents(work):
    truncate(work / "latents.npz")
    return ["analyze", "--workdir", work], work / "latents.npz", "jaxrobust evaluate"


def _attack_json_missing(work):
    (work / "attack.json").unlink()
    return ["analyze", "--workdir", work], work / "attack.json", "jaxrobust attack"


def _workdir_is_a_file(work):
    target = work / "config.json"  # a file where a run folder is wanted
    return ["train", "--data", work.parent / "data", "--workdir", target, *tiny.TRAIN_ARGS], target, "another --workdir"


def _not_a_run(work):  # already clear before issue 15
    empty = work / "empty"
    empty.mkdir()
    return ["attack", "--workdir", empty], empty / "config.json", "jaxrobust train"


RUN_DAMAGE = {
    "truncated_config": _truncated_config,
    "truncated_checkpoint": _truncated_checkpoint,
    "truncated_checkpoint_meta": _truncated_checkpoint_meta,
    "truncated_attack_npz": _truncated_attack,
    "truncated_latents_npz": _truncated_latents,
    "attack_json_missing": _attack_json_missing,
    "workdir_is_a_file": _workdir_is_a_file,
    "not_a_run": _not_a_run,
}


@pytest.mark.parametrize("kind", sorted(RUN_DAMAGE))
def test_damaged_run_folder_is_a_sentence(capsys, run, dataset, tmp_path, kind):
    work = copy_of(run, tmp_path)
    shutil.copytree(dataset, tmp_path / "data")
    argv, name, says = RUN_DAMAGE[kind](work)
    refused(capsys, *argv, names=[name], says=[says])


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_run_folder_is_refused_before_the_attack(capsys, run, tmp_path):
    work = copy_of(run, tmp_path)
    work.chmod(0o555)
    try:
        line = refused(capsys, "attack", "--workdir", work, *tiny.ATTACK_ARGS, names=[work], says=["cannot write"])
    finally:
        work.chmod(0o755)
    assert "attacking" not in line
    assert json.loads((run / "attack.json").read_text()) == json.loads((work / "attack.json").read_text())


def test_an_unwritable_run_folder_is_refused_before_the_attack_even_as_root(capsys, run, tmp_path, monkeypatch):
    """The same check with the write refused by a stand-in (root may write into read-only folders)."""
    work = copy_of(run, tmp_path)
    real_write = Path.write_bytes

    def refuse_probe(path, data):
        if path.name.startswith(".jaxrobust-write-test"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_write(path, data)

    monkeypatch.setattr(Path, "write_bytes", refuse_probe)
    refused(capsys, "attack", "--workdir", work, *tiny.ATTACK_ARGS, names=[work], says=["cannot write", "permissions"])
    assert "attacking" not in LAST_OUT[0]
    assert (work / "attack.json").read_bytes() == (run / "attack.json").read_bytes()


def test_analyze_creates_a_missing_out_folder(capsys, run, tmp_path):
    out = tmp_path / "new" / "report"
    code, err = run_cli(capsys, "analyze", "--workdir", run, "--out", out, *())
    assert code == 0, err
    assert (out / "report.md").exists()


def test_debug_shows_the_traceback(run, tmp_path):
    work = copy_of(run, tmp_path)
    truncate(work / "config.json")
    with pytest.raises(json.JSONDecodeError):
        main(["--debug", "evaluate", "--workdir", str(work)])


# --- Pairs of runs, torn metrics and stale derived files in a report ---
def test_analyze_refuses_a_torn_metrics_line_instead_of_counting_fewer_epochs(capsys, run, tmp_path):
    work = copy_of(run, tmp_path)
    truncate(work / "metrics.jsonl", 0.8)  # the last epoch's line cut, its checkpoint written
    refused(capsys, "analyze", "--workdir", work, names=[work / "metrics.jsonl"], says=["torn", "--overwrite"])
    work = copy_of(run, tmp_path, "interrupted")
    with open(work / "metrics.jsonl", "a") as handle:  # killed while appending an epoch that never checkpointed
        handle.write('{"epoch": 2, "train_loss": 1.0')
    refused(capsys, "analyze", "--workdir", work, names=[work / "metrics.jsonl"], says=["interrupted during epoch 3", "--resume"])


def test_compare_refuses_runs_attacked_on_different_numbers_of_images(capsys, run, tmp_path):
    first, second = copy_of(run, tmp_path, "first"), copy_of(run, tmp_path, "second")
    with np.load(second / "attack.npz") as archive:  # as `attack attack.n_images=2` writes it (same unit)
        arrays = {k: archive[k][:2] if archive[k].ndim else archive[k] for k in archive.files}
    np.savez(second / "attack.npz", **arrays)
    refused(capsys, "analyze", "--workdir", first, "--compare", second, names=[second / "attack.npz"],
            says=["2 attacked images", "has 3", "attack.n_images=2"])


def test_compare_refuses_runs_trained_on_other_data(capsys, run, tmp_path):
    first, second = copy_of(run, tmp_path, "first"), copy_of(run, tmp_path, "second")
    record = json.loads((second / "provenance.json").read_text())
    record["data"]["files"]["labels_train.npy"] = "1:other"  # as a run trained on another dataset records
    (second / "provenance.json").write_text(json.dumps(record))
    refused(capsys, "analyze", "--workdir", first, "--compare", second, names=[second, "labels_train.npy"],
            says=["other data", "one dataset"])


def test_derived_units_record_their_data_and_reproduce_redoes_an_evaluation_of_other_data(capsys, run, dataset, tmp_path):
    """`evaluate --force` on another dataset, then the run's own data: the evaluation is not current."""
    from jaxrobust import checkpoint

    work = copy_of(run, tmp_path)
    source = provenance.checkpoint_source(work, checkpoint.read_meta(work, "best"))
    own = {"data": provenance.data_digest(dataset)}
    assert provenance.unit_current(work, "evaluate", source, own) and provenance.unit_current(work, "attack", source, own)
    changed = changed_dataset(dataset, tmp_path)
    code, err = run_cli(capsys, "evaluate", "--workdir", work, "--data", changed, "--force")
    assert code == 0, err
    assert provenance.unit_record(work, "evaluate")["inputs"] == {"data": provenance.data_digest(changed)}
    assert not provenance.unit_current(work, "evaluate", source, own)
    assert provenance.unit_current(work, "evaluate", source, {"data": provenance.data_digest(changed)})
    assert provenance.units_of_other_data(work) == ["evaluate"]
    code, err = run_cli(capsys, "analyze", "--workdir", work)
    assert code == 0, err
    assert "evaluate results come from other data" in (work / "report.md").read_text()


def test_robustness_of_an_earlier_attack_is_left_out_of_the_report(capsys, run, dataset, tmp_path):
    from jaxrobust import config as config_lib, robustness
    from jaxrobust.data import load_prepared

    work = copy_of(run, tmp_path)
    config = config_lib.read_run_config(work)
    robustness.robustness_run(work, load_prepared(dataset, config), log=lambda *_: None)
    assert robustness.is_current(work) and robustness.load_summary(work) is not None
    code, err = run_cli(capsys, "analyze", "--workdir", work)
    assert code == 0, err
    assert "Exact robustness measures" in (work / "report.md").read_text()
    code, err = run_cli(capsys, "attack", "--workdir", work, *tiny.ATTACK_ARGS, "attack.max_generations=1")
    assert code == 0, err
    assert not robustness.is_current(work) and robustness.load_summary(work) is None
    code, err = run_cli(capsys, "analyze", "--workdir", work)
    assert code == 0, err
    report = (work / "report.md").read_text()
    assert "Exact robustness measures" not in report and "made from an earlier attack" in report


# --- One writer per folder ---
def _lock_owned_by(folder: Path, pid: int, command: str, host: str | None = None) -> None:
    record = provenance.lock_record(pid, command)
    if host is not None:
        record["host"] = host
    (folder / provenance.LOCK_FILE).write_text(json.dumps(record))


def test_a_folder_in_use_by_a_live_command_is_refused(capsys, run, tmp_path):
    import subprocess

    work = copy_of(run, tmp_path)
    owner = subprocess.Popen(["sleep", "60"])  # stands for a running `jaxrobust attack`
    try:
        _lock_owned_by(work, owner.pid, "attack")
        refused(capsys, "attack", "--workdir", work, *tiny.ATTACK_ARGS, names=[work, f"pid {owner.pid}"],
                says=["in use by `jaxrobust attack`", "wait for it"])
        refused(capsys, "train", "--data", work.parent, "--workdir", work, "--overwrite", *tiny.TRAIN_ARGS,
                names=[work], says=["in use"])
    finally:
        owner.kill()
        owner.wait()
    assert (work / "attack.json").read_bytes() == (run / "attack.json").read_bytes()
    assert (work / "metrics.jsonl").read_bytes() == (run / "metrics.jsonl").read_bytes()  # --overwrite removed nothing


def test_a_lock_held_on_another_host_says_how_to_clear_it(capsys, run, tmp_path):
    work = copy_of(run, tmp_path)
    _lock_owned_by(work, 1, "evaluate", host="elsewhere.example")
    refused(capsys, "evaluate", "--workdir", work, names=[work / provenance.LOCK_FILE, "elsewhere.example"],
            says=["in use", "if that process is gone, delete"])


def test_a_stale_lock_is_replaced_and_the_lock_given_back(capsys, run, tmp_path):
    import subprocess

    work = copy_of(run, tmp_path)
    gone = subprocess.Popen(["true"])
    gone.wait()  # a command killed with -9 leaves its lock behind
    _lock_owned_by(work, gone.pid, "evaluate")
    code, err = run_cli(capsys, "evaluate", "--workdir", work)
    assert code == 0, err
    assert "removed a stale lock" in LAST_OUT[0] and f"pid {gone.pid}" in LAST_OUT[0]
    assert not (work / provenance.LOCK_FILE).exists()


def test_a_reused_pid_does_not_keep_a_lock(capsys, run, tmp_path):
    """The lock records the owner's start time: another process with the same pid is not it."""
    work = copy_of(run, tmp_path)
    record = provenance.lock_record(os.getppid(), "attack")  # a live process ...
    record["pid_start"] = "1"  # ... that started at another time than the owner
    (work / provenance.LOCK_FILE).write_text(json.dumps(record))
    code, err = run_cli(capsys, "analyze", "--workdir", work)
    assert code == 0, err
    assert "removed a stale lock" in LAST_OUT[0]


# --- Failures of the machine and of other libraries, as sentences ---
def test_a_full_disk_while_writing_results_is_a_sentence(capsys, monkeypatch, run, tmp_path):
    """An OSError ENOSPC from any write (here evaluate's predictions; simulate's arrays alike)."""
    import errno

    from jaxrobust import io

    def no_space(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(io, "atomic_save_npz", no_space)
    work = copy_of(run, tmp_path)
    refused(capsys, "evaluate", "--workdir", work, names=[work / "predictions.npz"],
            says=["disk is full", "free some space"])


def test_a_full_disk_while_checkpointing_is_not_called_an_unreadable_checkpoint(capsys, monkeypatch, dataset, tmp_path):
    from jaxrobust import checkpoint

    work = tmp_path / "new"

    def no_space(*args, **kwargs):  # the text orbax / tensorstore raise on a full disk
        raise ValueError(f'RESOURCE_EXHAUSTED: Error writing local file "{work}/checkpoints/latest/0/d/x": '
                         "No space left on device [OS error: No space left on device]")

    monkeypatch.setattr(checkpoint, "save", no_space)
    line = refused(capsys, "train", "--data", dataset, "--workdir", work, *tiny.TRAIN_ARGS,
                   names=[work / "checkpoints"], says=["disk is full", "--resume"])
    assert "unreadable" not in line


def test_a_truncated_checkpoint_array_names_the_array_without_library_internals(capsys, run, tmp_path):
    work = copy_of(run, tmp_path)
    _truncated_checkpoint(work)
    line = refused(capsys, "evaluate", "--workdir", work, names=[work / "checkpoints"], says=["truncated or corrupt"])
    assert "TensorStore" not in line and "<bound method" not in line and "OCDBT database" not in line


def test_a_colour_file_of_words_is_a_sentence(capsys, run, tmp_path):
    work = copy_of(run, tmp_path)
    colours = tmp_path / "colours.txt"
    colours.write_text("red green blue\nwhite black grey\n")
    refused(capsys, "scan", "--workdir", work, "--colours", colours, "--images", "1", names=[colours],
            says=["not a colour file", "three numbers"])


@pytest.fixture(scope="module")
def tfds_dataset(tmp_path_factory, dataset) -> Path:
    """The tiny dataset built as a TFDS dataset (array_record shards)."""
    pytest.importorskip("tensorflow_datasets", reason="needs the `tfds` extra")
    pytest.importorskip("array_record", reason="needs the `tfds` extra")
    from jaxrobust.data import tfds as jr_tfds

    return jr_tfds.build(tmp_path_factory.mktemp("tfds") / "data", "zenodo", manual_dir=dataset)


def _empty_dataset_info(folder):
    (folder / "dataset_info.json").write_text("")
    return folder / "dataset_info.json", "empty file"


def _truncated_shard(folder):
    shard = next(p for p in sorted(folder.iterdir()) if "train.array_record" in p.name)
    truncate(shard)
    return shard, "truncated or corrupt array_record shard"


@pytest.mark.parametrize("damage", [_empty_dataset_info, _truncated_shard])
def test_a_damaged_tfds_dataset_is_a_sentence(capsys, tfds_dataset, tmp_path, damage):
    folder = copy_of(tfds_dataset, tmp_path)
    name, says = damage(folder)
    refused(capsys, "train", "--data", folder, "--workdir", tmp_path / "run", *tiny.TRAIN_ARGS, names=[name],
            says=[says, "build the TFDS dataset again"])


# --- Resume: torn metrics, no checkpoint ---
def test_a_torn_last_metrics_line_is_dropped_on_resume(capsys, run, dataset, tmp_path):
    work = copy_of(run, tmp_path)
    # a kill while appending the line of an epoch whose checkpoint was never written
    with open(work / "metrics.jsonl", "a") as handle:
        handle.write('{"epoch": 2, "train_loss": 1.0')
    code, err = run_cli(capsys, "train", "--data", dataset, "--workdir", work, "--resume", *tiny.TRAIN_ARGS)
    assert code == 0, err
    assert "metrics.jsonl" in LAST_OUT[0] and "torn" in LAST_OUT[0]
    epochs = [json.loads(x)["epoch"] for x in (work / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1]


def test_resume_after_the_dataset_moved_is_decided_by_its_fingerprint(capsys, run, dataset, tmp_path):
    """The same files at a new path: resuming is allowed (the path is not a training setting)."""
    from jaxrobust import config as config_lib, pipeline

    moved = copy_of(dataset, tmp_path, "moved")
    work = copy_of(run, tmp_path)
    code, err = run_cli(capsys, "train", "--data", moved, "--workdir", work, "--resume", *tiny.TRAIN_ARGS)
    assert code == 0, err
    assert (work / "metrics.jsonl").read_bytes() == (run / "metrics.jsonl").read_bytes()  # finished: nothing retrained
    config = config_lib.read_run_config(work)
    assert config.data.source == str(moved.resolve())
    # what `reproduce` in a study copied elsewhere asks: the same training, whatever the path
    old = config_lib.read_run_config(run)
    assert pipeline.same_training(work, old) and old.data.source != config.data.source
    changed = changed_dataset(dataset, tmp_path)  # other contents are still refused
    refused(capsys, "train", "--data", changed, "--workdir", work, "--resume", *tiny.TRAIN_ARGS,
            names=[changed], says=["not the data"])


def test_resume_without_a_checkpoint_starts_over_and_says_so(capsys, run, dataset, tmp_path):
    work = copy_of(run, tmp_path)
    shutil.rmtree(work / "checkpoints")
    capsys.readouterr()
    assert main(["train", "--data", str(dataset), "--workdir", str(work), "--resume", *tiny.TRAIN_ARGS]) == 0
    out = capsys.readouterr().out
    assert "starting over" in out
    rows = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]  # no epoch twice
    reference = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for got, want in zip(rows, reference):
        assert got["train_loss"] == want["train_loss"] and got["val_acc_y10"] == want["val_acc_y10"]


# --- The pieces, against independent computations ---
def test_content_hash_reads_evenly_spaced_blocks_of_large_files(tmp_path, monkeypatch):
    import hashlib

    monkeypatch.setattr(provenance, "WHOLE_HASH_BYTES", 1000)
    monkeypatch.setattr(provenance, "SAMPLE_BLOCKS", 3)
    monkeypatch.setattr(provenance, "SAMPLE_BLOCK_BYTES", 10)
    payload = bytes(range(256)) * 8  # 2048 bytes: blocks at 0, 1019, 2038
    path = tmp_path / "a.npy"
    path.write_bytes(payload)
    expected = hashlib.blake2b(payload[0:10] + payload[1019:1029] + payload[2038:2048], digest_size=16)
    assert provenance.content_hash(path) == f"2048:{expected.hexdigest()}"
    changed = bytearray(payload)
    changed[1020] ^= 1  # inside a sampled block
    path.write_bytes(bytes(changed))
    assert provenance.content_hash(path) != f"2048:{expected.hexdigest()}"


def test_fingerprint_difference_names_the_files():
    old = {"kind": "files", "files": {"a.npy": "1:x", "b.npy": "1:y", "c.npy": "1:z"}}
    new = {"kind": "files", "files": {"a.npy": "1:x", "b.npy": "2:y", "d.npy": "1:w"}}
    assert provenance.fingerprint_difference(old, new) == "changed: b.npy; missing: c.npy; new: d.npy"


def test_matched_wins_by_hand():
    from jaxrobust.data import pairing

    # three stamps of four pixels; Y1 in the same order correlates best with its own stamp
    y10 = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1]], float)
    y1 = y10 + np.array([[0, 0, 0.1, 0], [0.1, 0, 0, 0], [0, 0.1, 0, 0]])
    assert pairing.matched_wins(y10, y1) == 1.0
    # reversed: stamp 1 still meets itself (1 of 2 others beaten), 0 and 2 beat nothing
    reversed_wins = pairing.matched_wins(y10, y1[::-1])
    corr = np.corrcoef(y10, y1[::-1])[:3, 3:]
    expected = np.mean([(corr[i, i] > np.delete(corr[i], i)).sum() / 2 for i in range(3)])
    assert reversed_wins == pytest.approx(expected) and reversed_wins < 0.75
