"""Run folders that cannot lie: where a run's data and every derived file came from.

A run folder (`jaxrobust train --workdir DIR`) holds:
  config.json, metrics.jsonl, checkpoints/{latest,best}   the training run
  provenance.json   its run id (new for every fresh run) and the fingerprint of its data
  evaluation.json + predictions.npz + latents.npz           one unit (`jaxrobust evaluate`)
  attack.json + attack.npz                                  one unit (`jaxrobust attack`)
  scan.json + scan.npz                                      one unit (`jaxrobust scan`)
  robustness.json + robustness.npz                          margins and minimal flips (reproduce)
  analysis.json, report.md, figures/                        `jaxrobust analyze`

Checks, each a one-sentence `ProvenanceError` (a ValueError) naming the file and what to do:
  * data: evaluate, attack and `train --resume` compare the data they are given with the
    fingerprint in provenance.json (`data_fingerprint`: dataset.json's checksums for a simulated
    dataset, else per-file size + content hash) and refuse a mismatch (`--force` to go on);
  * checkpoint: every derived unit records the checkpoint it came from (`checkpoint_source`:
    run id, best epoch, hash of the best checkpoint's metadata); `check_outputs` refuses units
    of another training run or another best checkpoint;
  * units: the files of a unit share a unit id written in each (`write_unit`), so a reader never
    pairs an attack.npz with the attack.json of another attack (a kill between the writes);
  * overwrite: `claim_run_dir` refuses to train into a folder holding a run unless resuming or
    overwriting (which removes every file of the old run), `claim_dataset_dir` the same for
    `simulate` into a complete dataset.
Folders written before provenance existed (no provenance.json, no unit ids) are read as before.
"""
from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path

import numpy as np

from jaxrobust import io

RUN_RECORD = "provenance.json"
TRAINING_FILES = ("config.json", "metrics.jsonl", RUN_RECORD)
TRAINING_DIRS = ("checkpoints",)
# Derived units: the files written together by one command, which must carry one unit id.
UNITS = {
    "evaluate": ("evaluation.json", "predictions.npz", "latents.npz"),
    "attack": ("attack.json", "attack.npz"),
    "scan": ("scan.json", "scan.npz"),
    "certify": ("certify.json", "certify.npz"),
    "robustness": ("robustness.json", "robustness.npz"),  # jaxrobust.robustness (from attack.npz)
}
REPORT_FILES = ("analysis.json", "report.md")
DERIVED_DIRS = ("figures", "scan_parts", "certify_parts")  # *_parts: unfinished per-image results
# Keys a unit's files carry: in .npz as 0-d string arrays, in .json under PROVENANCE_KEY.
UNIT_ID_KEY = "_unit_id"
SOURCE_KEY = "_checkpoint_source"
INPUTS_KEY = "_inputs"  # what else a unit was made from: {"data": data_digest} or {"attack_unit": id}
PROVENANCE_KEY = "provenance"
# Files up to this size are hashed whole; larger ones by SAMPLE_BLOCKS evenly spaced blocks
# (an 8 GB Zenodo array reads 1 MiB instead of 8 GB; a resized or re-simulated array differs
# in size or in every block).
WHOLE_HASH_BYTES = 64 << 20
SAMPLE_BLOCKS, SAMPLE_BLOCK_BYTES = 16, 64 << 10


class ProvenanceError(ValueError):
    """A run or dataset folder whose contents do not belong together, or would be overwritten."""


# --- Data fingerprints ---
def data_fingerprint(data_dir) -> dict | None:
    """{"kind", "files": {name: digest}} identifying the dataset in `data_dir` (None if no folder).

    A simulated dataset (dataset.json) is identified by the checksums dataset.json records; any
    other folder (Zenodo .npy files, TFDS) by each data file's size and content hash.
    """
    if data_dir in (None, "", "simulate"):
        return None
    root = Path(data_dir)
    info_path = root / "dataset.json"
    if info_path.is_file():
        checksums = read_json(info_path, "re-simulate the dataset").get("checksums")
        if isinstance(checksums, dict) and checksums:
            return {"kind": "simulated", "files": dict(sorted(checksums.items()))}
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and (p.suffix in (".npy", ".npz") or "array_record" in p.name))
    return {"kind": "files", "files": {str(p.relative_to(root)): content_hash(p) for p in files}}


def data_digest(source) -> str | None:
    """A short digest of data_fingerprint(source): what derived units record as their data
    (None when there is no dataset folder)."""
    fingerprint = data_fingerprint(source)
    if fingerprint is None:
        return None
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]


def content_hash(path: Path) -> str:
    """"size:blake2b" of a file: whole up to WHOLE_HASH_BYTES, else evenly spaced blocks."""
    size = path.stat().st_size
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        if size <= WHOLE_HASH_BYTES:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
        else:
            for offset in np.linspace(0, size - SAMPLE_BLOCK_BYTES, SAMPLE_BLOCKS).astype(np.int64):
                handle.seek(int(offset))
                digest.update(handle.read(SAMPLE_BLOCK_BYTES))
    return f"{size}:{digest.hexdigest()}"


def fingerprint_difference(recorded: dict, current: dict) -> str:
    """Which files differ between two fingerprints, in words."""
    old, new = recorded.get("files", {}), current.get("files", {})
    changed = sorted(n for n in old.keys() & new.keys() if old[n] != new[n])
    missing, added = sorted(old.keys() - new.keys()), sorted(new.keys() - old.keys())
    parts = []
    for words, names in (("changed", changed), ("missing", missing), ("new", added)):
        if names:
            parts.append(f"{words}: {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}")
    return "; ".join(parts) or "different dataset kind"


# --- The run record ---
def read_json(path: Path, remedy: str) -> dict:
    """A JSON file's contents, or a ProvenanceError naming it and `remedy` (what to do)."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ProvenanceError(f"{path}: not valid JSON (truncated or corrupt: {err}); {remedy}") from err
    if not isinstance(value, dict):
        raise ProvenanceError(f"{path}: expected a JSON object, got {type(value).__name__}; {remedy}")
    return value


def read_run(run_dir) -> dict | None:
    """provenance.json of a run folder, or None for a run written before it existed."""
    path = Path(run_dir) / RUN_RECORD
    if not path.exists():
        return None
    return read_json(path, f"retrain with `jaxrobust train --workdir {run_dir} --overwrite`")


def start_run(run_dir, data, resume: bool = False, log=print) -> dict:
    """Records a training run in `run_dir`: a new run id, or the old one when resuming.

    A fresh run also removes every derived file an earlier run left (evaluation, attack, scan,
    report): they described another model. A resumed run must be given the data it started
    with. `data` is a PreparedData (its `source` folder and `image_shape` are recorded).
    """
    run_dir = Path(run_dir)
    source = getattr(data, "source", None)
    fingerprint = data_fingerprint(source)
    old = read_run(run_dir) if resume else None
    if old is not None:
        check_fingerprint(run_dir, old, source, fingerprint,
                          "resume with the dataset the run started with, or start a new run with "
                          "`--overwrite` (or another --workdir)")
        return old
    if not resume:
        remove_derived(run_dir)
    record = {"run_id": uuid.uuid4().hex, "data_dir": str(Path(source).resolve()) if source else None,
              "data": fingerprint, "image_shape": list(getattr(data, "image_shape", ()) or ())}
    io.atomic_write_json(run_dir / RUN_RECORD, record)
    return record


def check_data(run_dir, data, force: bool = False, log=print) -> None:
    """Refuses `data` (a PreparedData) that is not what the run in `run_dir` was trained on.

    With `force` a different dataset is used with a warning; images of another size never are
    (the model cannot read them).
    """
    record = read_run(run_dir)
    if record is None:
        return
    shape = tuple(record.get("image_shape") or ())
    image_shape = tuple(getattr(data, "image_shape", ()) or ())
    source = getattr(data, "source", None)
    if shape and image_shape and shape != image_shape:
        raise ProvenanceError(
            f"{source or 'the data'}: images of {_shape(image_shape)}, but the run in {run_dir} was "
            f"trained on {_shape(shape)}; pass the run's dataset with --data ({record.get('data_dir')})")
    fingerprint = data_fingerprint(source)
    how = (f"pass the run's dataset with --data ({record.get('data_dir')}), or --force to use "
           "these data anyway")
    if force:
        try:
            check_fingerprint(run_dir, record, source, fingerprint, how)
        except ProvenanceError as err:
            log(f"warning (--force): {err}")
        return
    check_fingerprint(run_dir, record, source, fingerprint, how)


def same_data(run_dir, data) -> bool:
    """Whether `data` is what the run in `run_dir` was trained on (True when nothing is recorded)."""
    record = read_run(run_dir)
    if record is None or record.get("data") is None:
        return True
    return record["data"] == data_fingerprint(getattr(data, "source", None)) and \
        tuple(record.get("image_shape") or ()) in ((), tuple(getattr(data, "image_shape", ()) or ()))


def check_fingerprint(run_dir, record: dict, source, fingerprint: dict | None, how: str) -> None:
    recorded = record.get("data")
    if recorded is None or fingerprint is None or recorded == fingerprint:
        return
    raise ProvenanceError(
        f"{source}: not the data the run in {run_dir} was trained on "
        f"({fingerprint_difference(recorded, fingerprint)}); {how}")


def _shape(shape) -> str:
    return " x ".join(str(s) for s in shape)


# --- Derived files: their checkpoint and their unit ---
def checkpoint_source(run_dir, best_meta: dict | None) -> dict:
    """What identifies the model a derived file came from: run id, best epoch, metadata hash.

    `best_meta` is the JSON record of the run's best checkpoint (checkpoint.read_meta(run, "best")).
    """
    record = read_run(run_dir) or {}
    meta = best_meta or {}
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True, default=io.json_default).encode()).hexdigest()
    return {"run_id": record.get("run_id"), "best_epoch": meta.get("epoch"), "meta_sha256": digest[:16]}


def write_unit(run_dir, unit: str, source: dict, npz: dict[str, dict], json_files: dict[str, dict],
               inputs: dict | None = None) -> str:
    """Writes the files of one unit (UNITS[unit]) with a shared unit id and their source.

    `inputs` records what else the unit was made from ({"data": data_digest(...)} for evaluate,
    attack and scan; {"attack_unit": id} for robustness): `unit_current` compares it.

    The .npz files are written first and the .json last; each write is atomic. A reader that
    finds ids that differ (a kill between the writes) refuses the pair (`check_outputs`).
    Temporary files left by an earlier interrupted write of these files are removed first.
    Returns the unit id.
    """
    run_dir = Path(run_dir)
    names = set(npz) | set(json_files)
    if not names <= set(UNITS[unit]):
        raise ValueError(f"unit {unit!r} holds {UNITS[unit]}, got {sorted(names)}")
    remove_stale_temporaries(run_dir, names)
    unit_id = uuid.uuid4().hex
    tags = {UNIT_ID_KEY: np.array(unit_id), SOURCE_KEY: np.array(json.dumps(source, sort_keys=True)),
            INPUTS_KEY: np.array(json.dumps(inputs or {}, sort_keys=True))}
    for name, arrays in npz.items():
        io.atomic_save_npz(run_dir / name, **arrays, **tags)
    record = {"unit_id": unit_id, "source": source, "inputs": inputs or {}}
    for name, obj in json_files.items():
        io.atomic_write_json(run_dir / name, dict(obj, **{PROVENANCE_KEY: record}))
    return unit_id


def unit_record(run_dir, unit: str) -> dict:
    """{"unit_id", "source", "inputs"} of a unit, from its JSON file ({} when absent or untagged)."""
    names = UNITS[unit]
    path = Path(run_dir) / next(n for n in names if n.endswith(".json"))
    if not path.exists():
        return {}
    return read_json(path, rerun_command(unit, Path(run_dir))).get(PROVENANCE_KEY) or {}


def unit_current(run_dir, unit: str, source: dict | None, inputs: dict) -> bool:
    """Whether the unit's files are present, agree, come from `source` (checkpoint_source of the
    run's best checkpoint; None: not compared) and were made from `inputs`. An input the unit
    does not record (written before inputs were recorded) is not held against it."""
    try:
        check_outputs(run_dir, source, units=(unit,), required=(unit,))
    except ProvenanceError:
        return False
    recorded = unit_record(run_dir, unit).get("inputs") or {}
    return all(recorded.get(key) in (None, value) for key, value in inputs.items())


def remove_stale_temporaries(folder: Path, names) -> None:
    """Deletes `.NAME.*.tmp` files that an interrupted atomic write of NAME left behind."""
    for name in names:
        for tmp in Path(folder).glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def unit_tags(path: Path, remedy: str) -> tuple[str | None, dict | None]:
    """(unit id, checkpoint source) written in one file of a unit; (None, None) if untagged."""
    import zipfile

    path = Path(path)
    if path.suffix == ".json":
        tag = read_json(path, remedy).get(PROVENANCE_KEY) or {}
        return tag.get("unit_id"), tag.get("source")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if UNIT_ID_KEY not in archive.files:
                return None, None
            return str(archive[UNIT_ID_KEY]), json.loads(str(archive[SOURCE_KEY]))
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as err:
        raise ProvenanceError(f"{path}: unreadable (truncated or corrupt: {err}); {remedy}") from err


def rerun_command(unit: str, run_dir) -> str:
    return f"rerun `jaxrobust {unit} --workdir {run_dir}`"


def check_outputs(run_dir, source: dict | None, units=("evaluate", "attack", "scan"),
                  required=()) -> None:
    """Refuses derived units in `run_dir` whose files disagree or come from another checkpoint.

    Args:
      source: checkpoint_source() of the run's current best checkpoint (None: not compared).
      units: which units to check when present; `required` units must be present.
    """
    run_dir = Path(run_dir)
    for unit in units:
        names = UNITS[unit]
        present = [n for n in names if (run_dir / n).exists()]
        remedy = rerun_command(unit, run_dir)
        if not present:
            if unit in required:
                raise ProvenanceError(f"{run_dir / names[0]}: not found; run `jaxrobust {unit} --workdir {run_dir}` first")
            continue
        if len(present) < len(names):
            missing = next(n for n in names if n not in present)
            raise ProvenanceError(f"{run_dir / missing}: missing beside {', '.join(present)} (an interrupted "
                                  f"`jaxrobust {unit}`?); {remedy}")
        tags = {n: unit_tags(run_dir / n, remedy) for n in names}
        ids = {tag[0] for tag in tags.values()}
        if len(ids) > 1:
            raise ProvenanceError(f"{run_dir / names[0]}: written by another `jaxrobust {unit}` than "
                                  f"{', '.join(names[1:])} (an interrupted write); {remedy}")
        recorded = next(iter(tags.values()))[1]
        if source is not None and recorded is not None and recorded != source:
            why = ("another training run" if recorded.get("run_id") != source.get("run_id") else
                   f"the best checkpoint of epoch {_epoch(recorded)}, the run's best is now epoch {_epoch(source)}")
            raise ProvenanceError(f"{run_dir / names[0]}: made from {why}; {remedy}")


def units_of_other_data(run_dir, units=("evaluate", "attack", "scan")) -> list[str]:
    """The units of a run made from other data than it was trained on (`--force`): those whose
    recorded data digest differs from the digest of provenance.json's fingerprint."""
    record = read_run(run_dir) or {}
    if record.get("data") is None:
        return []
    trained = hashlib.sha256(json.dumps(record["data"], sort_keys=True).encode()).hexdigest()[:16]
    return [unit for unit in units
            if (unit_record(run_dir, unit).get("inputs") or {}).get("data") not in (None, trained)]


def check_pair(first, second) -> None:
    """Refuses to compare two runs (regular vs DA, seeds of a study) that were not trained on one
    dataset or whose attacks did not attack the same images of it, naming the file that differs.
    Runs written before provenance existed are compared on what they record."""
    first, second = Path(first), Path(second)
    a, b = read_run(first) or {}, read_run(second) or {}
    if a.get("data") is not None and b.get("data") is not None and a["data"] != b["data"]:
        raise ProvenanceError(
            f"{second}: trained on other data than {first} ({fingerprint_difference(a['data'], b['data'])}); "
            "compare runs trained on one dataset")
    data_a = (unit_record(first, "attack").get("inputs") or {}).get("data")
    data_b = (unit_record(second, "attack").get("inputs") or {}).get("data")
    if data_a is not None and data_b is not None and data_a != data_b:
        raise ProvenanceError(f"{second / 'attack.json'}: attacked images of other data than {first / 'attack.json'} "
                              f"(an attack --force?); rerun `jaxrobust attack --workdir {second}` with the data of "
                              f"{first}")
    arrays = []
    for run in (first, second):
        path = run / "attack.npz"
        remedy = rerun_command("attack", run)
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays.append({k: np.asarray(archive[k]) for k in ("labels", "test_index") if k in archive.files})
        except FileNotFoundError:
            return  # analyze names the missing attack itself
        except (OSError, ValueError, EOFError) as err:
            raise ProvenanceError(f"{path}: unreadable (truncated or corrupt: {err}); {remedy}") from err
    n_a, n_b = len(arrays[0].get("labels", ())), len(arrays[1].get("labels", ()))
    if n_a != n_b:
        raise ProvenanceError(
            f"{second / 'attack.npz'}: {n_b} attacked images, but {first / 'attack.npz'} has {n_a}; attack both "
            f"runs on the same images (`jaxrobust attack --workdir RUN attack.n_images={min(n_a, n_b)}` for each)")
    for key in ("test_index", "labels"):
        if key in arrays[0] and key in arrays[1] and not np.array_equal(arrays[0][key], arrays[1][key]):
            raise ProvenanceError(
                f"{second / 'attack.npz'}: attacked other images than {first / 'attack.npz'} (their {key} differ: "
                "another dataset or data seed); rerun `jaxrobust attack` on both with one dataset")


def _epoch(source: dict):
    epoch = source.get("best_epoch")
    return "?" if epoch is None else int(epoch) + 1


# --- One writer per folder ---
LOCK_FILE = ".jaxrobust.lock"
_HELD: dict[Path, int] = {}  # folders this process holds: how many times taken
# The processes of one multi-process (jax.distributed) command share its folders: process 0
# takes the locks, the others set this (cli.main) and take none.
FOLLOWER = False


class FolderLocked(ProvenanceError):
    """Another live command is writing into the folder."""


def _process_start(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks since boot (Linux /proc), or None: with
    the pid it identifies a process even after its pid is reused."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[19]  # field 22 of proc(5), counted after the command name
    except (OSError, IndexError):
        return None


def lock_record(pid: int | None = None, command: str = "") -> dict:
    """What a lock file holds: the owner's pid, its start time, host and command."""
    pid = os.getpid() if pid is None else int(pid)
    return {"pid": pid, "pid_start": _process_start(pid), "host": socket.gethostname(),
            "command": command, "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def _owner_alive(owner: dict) -> bool | None:
    """True / False for an owner on this host; None when it runs elsewhere (cannot tell)."""
    if owner.get("host") != socket.gethostname():
        return None
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    recorded, now = owner.get("pid_start"), _process_start(pid)
    return recorded is None or now is None or recorded == now


def lock_folder(folder, command: str, log=print) -> Path:
    """Takes `folder` for this process until `release_folder` (or exit): a lock file with the
    owner's pid, start time and host, created exclusively. A lock of a live process is refused
    with a FolderLocked sentence; one whose process is gone (a kill -9, a crash) is stale and
    replaced with a note. Taking a folder this process holds again is allowed (nested calls)."""
    folder = Path(folder).resolve()
    if FOLLOWER:
        return folder
    if folder in _HELD:
        _HELD[folder] += 1
        return folder
    path = folder / LOCK_FILE
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = json.loads(path.read_text() or "{}")
            except (OSError, ValueError):
                owner = {}  # torn or vanished: judged by its age below
            if not owner and time.time() - _mtime(path) < 10:
                time.sleep(0.2)  # being written by its owner right now
                continue
            alive = _owner_alive(owner) if owner else False
            if alive is False:
                stale = path.with_name(f"{LOCK_FILE}.stale-{uuid.uuid4().hex[:8]}")
                with contextlib.suppress(OSError):
                    os.replace(path, stale)
                    stale.unlink()
                    log(f"{folder}: removed a stale lock of `jaxrobust {owner.get('command', '?')}` (pid "
                        f"{owner.get('pid', '?')}, no longer running)")
                continue
            where = f"pid {owner.get('pid')} on {owner.get('host')}, since {owner.get('since')}"
            gone = (f"; if that process is gone, delete {path}" if alive is None else "")
            raise FolderLocked(f"{folder}: in use by `jaxrobust {owner.get('command', '?')}` ({where}); wait for it "
                               f"to finish or choose another folder{gone}")
        with os.fdopen(fd, "w") as handle:
            json.dump(lock_record(command=command), handle)
        _HELD[folder] = 1
        return folder
    raise FolderLocked(f"{path}: could not take the folder's lock (another command keeps taking it); retry")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def release_folder(folder) -> None:
    """Gives back a folder taken by lock_folder (the last of nested takes removes the lock)."""
    folder = Path(folder).resolve()
    if folder not in _HELD:
        return
    _HELD[folder] -= 1
    if _HELD[folder] > 0:
        return
    del _HELD[folder]
    path = folder / LOCK_FILE
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


def release_all() -> None:
    """Gives back every folder this process holds (the command line's last step)."""
    for folder in list(_HELD):
        _HELD[folder] = 1
        release_folder(folder)


atexit.register(release_all)  # a normal exit or an exception; a kill -9 leaves a stale lock


@contextlib.contextmanager
def folder_lock(folder, command: str, log=print):
    """lock_folder for the duration of a `with` block."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    lock_folder(folder, command, log)
    try:
        yield
    finally:
        release_folder(folder)


# --- Claiming folders: no silent overwrite ---
def holds_run(run_dir) -> bool:
    run_dir = Path(run_dir)
    return any((run_dir / n).exists() for n in TRAINING_FILES + TRAINING_DIRS)


def check_folder(path, option: str) -> Path:
    """`path` as a folder to write (created if missing), or a ProvenanceError naming it."""
    path = Path(path)
    for parent in [path, *path.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise ProvenanceError(f"{parent}: is a file, not a folder; choose another {option}")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ProvenanceError(f"{path}: cannot create the folder ({err.strerror}); choose another {option}") from err
    check_writable(path, option)
    return path


def check_writable(folder, option: str) -> None:
    """Refuses a folder this process cannot write into (before any long work)."""
    folder = Path(folder)
    try:
        probe = folder / f".jaxrobust-write-test-{os.getpid()}.tmp"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ProvenanceError(f"{folder}: cannot write into this folder ({err.strerror}); fix its "
                              f"permissions or choose another {option}") from err


def claim_run_dir(run_dir, resume: bool = False, overwrite: bool = False, log=print) -> Path:
    """The folder `jaxrobust train` may write: refuses a folder holding a run unless
    `resume` (continue it) or `overwrite` (remove the old run and everything made from it)."""
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise ProvenanceError("--resume and --overwrite exclude each other: --resume continues the run in "
                              f"{run_dir}, --overwrite replaces it")
    check_folder(run_dir, "--workdir")
    lock_folder(run_dir, "train", log)  # before anything is removed
    if holds_run(run_dir) and not (resume or overwrite):
        raise ProvenanceError(
            f"{run_dir}: already holds a training run; pass --resume to continue it, --overwrite to replace "
            "it (removes its checkpoints, metrics, evaluation, attack, scan and report), or choose another --workdir")
    if overwrite and holds_run(run_dir):
        remove_run(run_dir)
        log(f"--overwrite: removed the earlier run in {run_dir}")
    return run_dir


def remove_derived(run_dir) -> None:
    """Deletes what evaluate, attack, scan and analyze made from a run (not the run itself)."""
    run_dir = Path(run_dir)
    names = [n for files in UNITS.values() for n in files] + list(REPORT_FILES)
    for name in names:
        (run_dir / name).unlink(missing_ok=True)
    remove_stale_temporaries(run_dir, names)
    for name in DERIVED_DIRS:
        shutil.rmtree(run_dir / name, ignore_errors=True)


def remove_run(run_dir) -> None:
    """Deletes a training run and every file derived from it; other files are left alone."""
    run_dir = Path(run_dir)
    remove_derived(run_dir)
    for name in TRAINING_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for name in TRAINING_DIRS:
        shutil.rmtree(run_dir / name, ignore_errors=True)


# --- Dataset folders ---
SIMULATING_MARKER = ".simulation-in-progress"  # simulate writes it first and removes it last
SIMULATION_MARKERS = (SIMULATING_MARKER, "galaxies.jsonl", "metadata_train.npz", "metadata_valid.npz",
                      "metadata_test.npz")


def claim_dataset_dir(out_dir, overwrite: bool = False, log=print) -> Path:
    """The folder `jaxrobust simulate` may write: refuses a complete dataset unless `overwrite`.

    An incomplete simulation (files but no dataset.json) is redone without asking: it was never
    a dataset anyone could use.
    """
    out_dir = check_folder(out_dir, "--out")
    lock_folder(out_dir, "simulate", log)
    if (out_dir / "dataset.json").exists():
        if not overwrite:
            raise ProvenanceError(
                f"{out_dir}: already holds a complete dataset (dataset.json); pass --overwrite to replace "
                "it (runs trained on it will then refuse to evaluate, attack or resume), or choose another --out")
        for path in out_dir.glob("*.np[yz]"):
            path.unlink()
        for name in ("dataset.json",) + SIMULATION_MARKERS:
            (out_dir / name).unlink(missing_ok=True)
        log(f"--overwrite: removed the dataset in {out_dir}")
    return out_dir


def incomplete_simulation(root) -> str | None:
    """A sentence when `root` holds a simulation killed before dataset.json, else None."""
    root = Path(root)
    if (root / "dataset.json").exists():
        return None
    found = [n for n in SIMULATION_MARKERS if (root / n).exists()]
    if not found:
        return None
    return (f"{root}: an incomplete simulation (`jaxrobust simulate` stopped before its last file: {found[0]} "
            f"but no dataset.json); rerun `jaxrobust simulate --config CONFIG --out {root}` with the same config "
            "to redo it")


def part_path(parts: Path, index: int) -> Path:
    """The file of image `index` in a parts folder."""
    return Path(parts) / f"image_{index:05d}.npz"


def open_parts(parts: Path, record: dict, what: str, n_images: int, log=print,
               stop_after: int | None = None) -> tuple[Path, np.ndarray]:
    """The per-image parts folder of a resumable stage (scan_parts/, certify_parts/) and the
    indices of the images still to do (the first `stop_after` of them when given).

    The folder is kept when `record` (the settings and the checkpoint it was made with) matches
    its settings.json, emptied otherwise, so a resumed run never mixes images decided under
    other settings."""
    parts = Path(parts)
    record_path = parts / "settings.json"
    if parts.exists() and (not record_path.exists() or json.loads(record_path.read_text()) != json.loads(
            json.dumps(record, default=io.json_default))):
        log(f"{parts}: partial {what} with other settings or another checkpoint: discarded")
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    if not record_path.exists():
        io.atomic_write_json(record_path, record)
    done = np.array([part_path(parts, i).exists() for i in range(n_images)], bool)
    if done.any():
        log(f"{parts.parent}: resuming the {what}, {int(done.sum())} of {n_images} images done earlier")
    todo = np.flatnonzero(~done)
    return parts, (todo if stop_after is None else todo[: int(stop_after)])

