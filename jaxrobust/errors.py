"""Which failures are the user's, and the one sentence that says so (for the command line).

`describe(err)` turns a known failure kind into one line naming the file and what to do:
sentence errors the package raises (ValueError subclasses: ConfigError, DataError,
ProvenanceError, PairingError, ...), corrupt or truncated files (JSON, .npz archives, orbax /
tensorstore checkpoints), permissions, a file where a folder is needed, and a model that does
not fit the data (flax's ScopeParamShapeError). Anything else is a bug: `describe` returns None
and the command line shows the traceback. The file is read from the exception when it carries
one (OSError.filename) or else from the traceback: the innermost frame of jaxrobust (or numpy's
loader) that holds an existing file path in a local variable.
"""
from __future__ import annotations

import errno
import json
import re
import zipfile
from pathlib import Path

# What to do about a damaged file, by its name (a run folder's or a dataset's).
REMEDIES = {
    "config.json": "the run folder is damaged; retrain with `jaxrobust train ... --overwrite`",
    "provenance.json": "the run folder is damaged; retrain with `jaxrobust train ... --overwrite`",
    "metrics.jsonl": "the run folder is damaged; retrain with `jaxrobust train ... --overwrite`",
    "evaluation.json": "rerun `jaxrobust evaluate --workdir {dir}`",
    "predictions.npz": "rerun `jaxrobust evaluate --workdir {dir}`",
    "latents.npz": "rerun `jaxrobust evaluate --workdir {dir}`",
    "attack.npz": "rerun `jaxrobust attack --workdir {dir}`",
    "attack.json": "rerun `jaxrobust attack --workdir {dir}`",
    "scan.npz": "rerun `jaxrobust scan --workdir {dir}`",
    "scan.json": "rerun `jaxrobust scan --workdir {dir}`",
    "certify.npz": "rerun `jaxrobust certify --workdir {dir}`",
    "certify.json": "rerun `jaxrobust certify --workdir {dir}`",
    "dataset.json": "the dataset is damaged; simulate it again (`jaxrobust simulate --overwrite`)",
}
DATASET_REMEDY = "the dataset is damaged; simulate or download it again"
CHECKPOINT_REMEDY = ("retrain with `jaxrobust train --workdir {run} --overwrite` (or `--resume` if only the "
                     "latest checkpoint is damaged)")
PATH_NAMES = ("path", "file", "filename", "fname", "info_path", "config_path", "meta_path", "label_path")


def describe(err: BaseException) -> str | None:
    """One line for a known failure kind, or None for a bug (show the traceback)."""
    if type(err).__module__.startswith("jaxrobust"):
        return _first_line(err)  # the package's own sentence errors (ConfigError, DataError, TrainingDiverged...)
    full = _disk_full(err)
    if full is not None:
        return full
    if _raised_in(err, ("orbax", "tensorstore")):
        return _checkpoint_message(err)
    if type(err).__name__ == "ScopeParamShapeError" or _raised_in(err, ("flax",)) and "shape" in str(err).lower():
        return (f"{_where(_path_in_traceback(err))}: the run's model does not fit these images "
                f"({_first_line(err)}); evaluate or attack with the dataset the run was trained on "
                "(images of the same size)")
    if isinstance(err, (json.JSONDecodeError, UnicodeDecodeError)):
        path = _path_in_traceback(err)
        what = "torn mid-line" if path is not None and path.suffix == ".jsonl" else "truncated or corrupt"
        return f"{_where(path)}: not valid JSON ({what}: {_first_line(err)}); {_remedy(path)}"
    if isinstance(err, (zipfile.BadZipFile, EOFError)):
        path = _path_in_traceback(err)
        return f"{_where(path)}: unreadable archive (truncated or corrupt: {_first_line(err)}); {_remedy(path)}"
    if isinstance(err, PermissionError):
        where = err.filename or _where(_path_in_traceback(err))
        return f"{where}: permission denied; fix its permissions or choose another folder"
    if isinstance(err, (FileExistsError, NotADirectoryError)):
        where = err.filename or _where(_path_in_traceback(err))
        return f"{where}: a file is in the way where a folder is needed; remove it or choose another folder"
    if isinstance(err, IsADirectoryError):
        return f"{err.filename}: is a folder where a file is needed"
    if isinstance(err, (ValueError, FileNotFoundError)):  # the package's sentence errors
        return _first_line(err) if "\n" not in str(err).strip() else None
    return None


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
DISK_FULL_TEXT = ("No space left on device", "RESOURCE_EXHAUSTED", "Disk quota exceeded")


def _chain(err: BaseException) -> list[BaseException]:
    """The error and its causes / contexts, outermost first."""
    seen, out = set(), []
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        out.append(err)
        err = err.__cause__ or err.__context__
    return out


def _disk_full(err: BaseException) -> str | None:
    """A sentence when the failure is a full disk (or quota) anywhere in the chain, else None:
    an OSError ENOSPC / EDQUOT, or the text tensorstore and orbax wrap it in."""
    for link in _chain(err):
        text = str(link)
        if (isinstance(link, OSError) and link.errno in DISK_FULL) or any(t in text for t in DISK_FULL_TEXT):
            where = getattr(link, "filename", None) or _quoted_path(text) or _where(_path_in_traceback(err, False))
            return (f"{where}: the disk is full (no space left while writing); free some space or choose "
                    "another folder, then rerun the command (an interrupted `train` continues with --resume)")
    return None


def _quoted_path(text: str) -> str | None:
    """The first absolute path in double quotes in an error text (tensorstore names its files so)."""
    found = re.search(r'"(/[^"]+)"', text)
    return found.group(1) if found else None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _raised_in(err: BaseException, packages) -> bool:
    """Whether any frame of the traceback (or of a chained cause) runs inside one of `packages`."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if type(err).__module__.split(".")[0] in packages:
            return True
        tb = err.__traceback__
        while tb is not None:
            filename = tb.tb_frame.f_code.co_filename
            if any(f"/{p}/" in filename for p in packages):
                return True
            tb = tb.tb_next
        err = err.__cause__ or err.__context__
    return False


def _frames(err: BaseException):
    tb, frames = err.__traceback__, []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames[::-1]  # innermost first


def _path_in_traceback(err: BaseException, want_file: bool = True) -> Path | None:
    """The innermost existing file (or, failing that, folder) a jaxrobust/numpy frame names."""
    folders = []
    for frame in _frames(err):
        filename = frame.f_code.co_filename
        if "/jaxrobust/" not in filename and "/numpy/" not in filename:
            continue
        for name, value in frame.f_locals.items():
            if isinstance(value, (str, Path)) and (isinstance(value, Path) or name in PATH_NAMES):
                try:
                    path = Path(value)
                    if path.is_file():
                        return path
                    if path.is_dir():
                        folders.append(path)
                except (OSError, ValueError):
                    continue
    return folders[0] if folders else None


def _where(path: Path | None) -> str:
    return str(path) if path is not None else "a file"


def _remedy(path: Path | None) -> str:
    if path is None:
        return "rerun the command that wrote it"
    template = REMEDIES.get(path.name)
    if template is None:
        return DATASET_REMEDY if path.suffix in (".npy", ".npz") else "rerun the command that wrote it"
    return template.format(dir=path.parent)


def _checkpoint_message(err: BaseException) -> str:
    path = _path_in_traceback(err)
    run = path
    while run is not None and run.parent != run and not (run / "config.json").exists():
        run = run.parent
    run = run if run is not None and (run / "config.json").exists() else path
    where = f"{run}/checkpoints" if run is not None else "the run's checkpoints"
    return (f"{where}: a checkpoint is unreadable (truncated or corrupt: {_storage_reason(err)}); "
            f"{CHECKPOINT_REMEDY.format(run=run or 'RUN')}")


def _storage_reason(err: BaseException) -> str:
    """The innermost tensorstore status of a checkpoint error ("OUT_OF_RANGE: Error reading
    "params.kernel/0.0": Requested byte range ..."), without the database path or the
    TensorStore object repr that orbax appends; the outermost first line otherwise."""
    for link in reversed(_chain(err)):
        text = _first_line(link)
        if re.match(r"[A-Z_]{4,}: ", text):
            text = re.sub(r' in OCDBT database at [^:]*"', "", text)
            return text[:200]
    text = re.split(r"\.? See full TensorStore details", _first_line(err))[0]
    return re.split(r"<bound method|TensorStore\(", text)[0].strip()[:200]
