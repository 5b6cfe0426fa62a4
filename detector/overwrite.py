"""The one overwrite rule of every command that writes (train, eval, demo, export, check), and the writing through a
temporary file that is renamed over the output when complete.

The rule, checked before anything is written (:class:`Outputs`):

- never an input: a file the command reads (its checkpoint, images, annotation or label files), compared by identity
  (device and inode, as ``os.path.samefile``), so another spelling or a link is caught too;
- never a checkpoint, annotation or label file, even with ``--exist_ok true`` (:func:`protected_kind`): a ``.ckpt``
  or ``.pth`` file, a ``.pt`` that is not a TorchScript export, a json object (COCO ground truth; results files are
  json lists), an XML file, a YOLO label file (five numbers a line; the demo's own txt files carry a sixth, the
  score), a txt file beside an image of its name, in a folder holding ``classes.txt``, or under a dataset's
  ``labels/`` (the same path with ``images`` is a folder);
- any other existing output is replaced only with ``--exist_ok true``; otherwise the command refuses in one line
  (the commands' defaults take a new numbered name instead: ``val2``, ``version_3``, ``runs/check/<name>2``).

A run's own files (``last.ckpt``, ``results.csv``, its logs) are the run's to update, a resume included: they are not
outputs checked here. Raises the caller's error class (the message names the flag and the fix).
"""
from __future__ import annotations

import os
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from detector.errors import DetectorError

CHECKPOINT_SUFFIXES = {".ckpt", ".pth", ".safetensors"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
EXIST_OK_HELP = ("true: replace existing output files (never an input of the command, a checkpoint, an annotation "
                 "or label file)")


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive (``code/`` inside), as ``torch.jit.save`` writes it; a ``torch.save`` file has none."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _first_char(path: Path) -> str:
    try:
        with path.open("rb") as file:
            return file.read(4096).lstrip()[:1].decode("latin-1")
    except OSError:
        return ""


def _yolo_label_lines(path: Path) -> bool:
    """Whether the txt file's first lines are five numbers each (a YOLO label file)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as file:
            lines = [line.split() for _, line in zip(range(20), file) if line.strip()]
    except OSError:
        return False
    try:
        return bool(lines) and all(len(fields) == 5 and [float(v) for v in fields] for fields in lines)
    except ValueError:
        return False


def _in_label_layout(path: Path) -> bool:
    """A txt file of a dataset's labels: beside an image of its stem, beside ``classes.txt``, or under a ``labels``
    folder whose ``images`` counterpart exists (the YOLO layout)."""
    folder = path.parent
    if (folder / "classes.txt").is_file() and path.name != "classes.txt":
        return True
    if any((folder / (path.stem + suffix)).is_file() for suffix in IMAGE_SUFFIXES):
        return True
    parts = folder.resolve().parts
    for i, part in enumerate(parts):
        if part == "labels" and Path(*parts[:i], "images", *parts[i + 1:]).is_dir():
            return True
    return False


def protected_kind(path: str | Path) -> str | None:
    """What ``path`` is when no command may write over it (``"a checkpoint"``, ``"an annotation file"``, ``"a label
    file"``), or None (nothing there, or an output of ours: an export, a results json, predictions)."""
    path = Path(path)
    if not path.is_file():
        return None
    suffix = path.suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES or (suffix in (".pt", ".bin") and not _is_torchscript(path)):
        return "a checkpoint"
    if suffix == ".xml" or (suffix == ".json" and _first_char(path) == "{"):
        return "an annotation file"
    if suffix == ".txt" and (_yolo_label_lines(path) or _in_label_layout(path)):
        return "a label file"
    return None


class Outputs:
    """The overwrite check of one command: its ``inputs`` (files it reads), ``exist_ok`` and the error class to
    raise. :meth:`check` one output file before anything is written."""

    def __init__(self, inputs: Iterable[str | Path] = (), exist_ok: bool = False,
                 error: type[DetectorError] = DetectorError):
        self.inputs: dict[tuple[int, int], Path] = {}
        self.exist_ok = exist_ok
        self.error = error
        self.add_inputs(inputs)

    def add_inputs(self, inputs: Iterable[str | Path]) -> None:
        for path in inputs:
            if path is not None and (key := _identity(Path(path))) is not None:
                self.inputs.setdefault(key, Path(path))

    def input_at(self, path: str | Path) -> Path | None:
        """The input file that ``path`` is (same device and inode), or None."""
        key = _identity(Path(path))
        return None if key is None else self.inputs.get(key)

    def check(self, flag: str, path: str | Path) -> Path:
        """Raise when writing ``path`` (for the option ``flag``) would replace an input, a checkpoint, an annotation
        or label file, or, without ``exist_ok``, any existing file; returns ``path`` as a Path."""
        path = Path(path)
        if (source := self.input_at(path)) is not None:
            raise self.error(f"{flag} {path} is {source}, an input of this command: writing it would destroy it; "
                             f"give another path")
        if path.is_dir() and not path.is_symlink():
            raise self.error(f"{flag} {path} is a folder; give a file name")
        if (kind := protected_kind(path)) is not None:
            raise self.error(f"{flag} {path} is {kind}, which no command overwrites (not even with --exist_ok "
                             f"true); give another path")
        if path.exists() and not self.exist_ok:
            raise self.error(f"{flag} {path} exists; give another path, or --exist_ok true to replace it")
        return path

    def check_all(self, flag: str, paths: Iterable[str | Path], where: str | Path) -> None:
        """:meth:`check` for the files one output writes into the folder ``where``, named in one line: how many
        exist, and the first."""
        existing = []
        for path in paths:
            path = Path(path)
            if self.input_at(path) is not None or protected_kind(path) is not None:
                self.check(flag, path)  # names the input or the kind
            if path.exists():
                existing.append(path)
        if existing and not self.exist_ok:
            raise self.error(f"{flag} {where} already holds {len(existing)} of the files it would write, such as "
                             f"{existing[0]}; give another folder, or --exist_ok true to replace them")


def numbered(path: str | Path) -> Path:
    """``path`` if nothing is there, else the first free ``<path>2``, ``<path>3``, ... (as ultralytics numbers runs)."""
    path = Path(path)
    candidate, number = path, 2
    while candidate.exists():
        candidate, number = path.with_name(f"{path.name}{number}"), number + 1
    return candidate


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary file beside ``path`` (same suffix, so writers that go by it still do) to write in the block; it
    is renamed over ``path`` when the block ends without error, and removed otherwise: ``path`` is never truncated
    or left half-written."""
    temporary = temporary_beside(path)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def temporary_beside(path: str | Path) -> Path:
    """A new empty file in ``path``'s folder (made if missing) named ``.<stem>.<random>.partial<suffix>``, with the
    permissions a new file gets; rename it over ``path`` (``os.replace``) when complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".partial{path.suffix}")
    os.close(handle)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(name, 0o666 & ~mask)
    return Path(name)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """``data`` into ``path`` through :func:`replacing`."""
    with replacing(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """``text`` (UTF-8) into ``path`` through :func:`replacing`."""
    return write_bytes(path, text.encode("utf-8"))
