"""Every path the harness and the run tools write: checked before any run, written without harm.

CI and the bench scripts run as root, and as root a rename replaces anything:
``--rss-samples /dev/null`` once turned the machine's ``/dev/null`` into a
regular file. So every output goes through here:

* an output **file** (``--rss-samples``, ``--ready-file``, a profiler's output,
  a summary a tool writes into a folder it was given) may be absent or a
  regular file: it is written to a new temporary file beside it and renamed
  over it, so a reader never sees half (:func:`write_output`; a log that is
  written while a child runs is truncated in place instead, :func:`open_output`).
  A character device or a FIFO is opened and written through, never renamed
  over or truncated (``/dev/null`` stays ``/dev/null``; a FIFO's writer waits
  for its reader). A symlink (even to a regular file), a folder, a block device
  or a socket is refused, and so is a path whose folder does not exist or
  cannot take a new file.
* an output **folder** (``--out-dir``, ``--results-dir``, ``RESULTS_DIR``,
  ``CRITERION_RESULTS``) may exist (a folder, or a symlink to one, that takes a
  new file) or not yet, when its parent is such a folder: it is then made
  without parents, so a typo does not grow a tree. An empty value is refused:
  it would silently be the current folder.
* the **default** results folder (:func:`default_results_dir`) is
  ``bench/results`` of the clone the command runs in (the nearest folder,
  from the current one upward, whose ``pyproject.toml`` names the project
  ``bytes-handoff``), else ``bench/results`` under the current folder; never
  inside site-packages. It alone may be made with its parents.

A refusal before the run is a :class:`~.errors.UsageError` (one line naming the
flag and the path, exit 2); a path that changed under a run fails it
(:class:`~.errors.BenchError`, exit 1) instead of being written anyway.

Imports nothing of :mod:`.harness` or :mod:`.tools`, so both use it.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import secrets
import stat
import sysconfig
import tempfile
import tomllib
from pathlib import Path
from typing import BinaryIO

from .errors import BenchError, UsageError

__all__ = [
    "PROJECT_NAME",
    "check_output_dir",
    "check_output_file",
    "choose_results_dir",
    "default_results_dir",
    "make_output_dir",
    "open_output",
    "output_dir_arg",
    "project_root",
    "write_output",
]

#: The ``[project] name`` in the ``pyproject.toml`` of a clone of this project.
PROJECT_NAME = "bytes-handoff"

StrPath = str | os.PathLike[str]


def _shown(path: StrPath) -> str:
    return repr(os.fspath(path))


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _writable_folder(folder: Path) -> str | None:
    """Why ``folder`` cannot take a new file, or ``None``: tried for real (as root,
    ``os.access`` says yes where a write still fails, as in ``/proc``)."""
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".write-test-"):
            return None
    except OSError as exc:
        return f": cannot write in {_shown(folder)}: {_why(exc)}"


# -- files --------------------------------------------------------------------------------


def _file_refusal(path: Path) -> tuple[str | None, bool]:
    """``(why it is refused, or None; whether it is written through, not renamed over)``.

    A reason follows ``<flag> '<path>'`` in the message: it starts with a space or a colon.
    """
    try:
        mode: int | None = path.lstat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None  # the folder is looked at below
    except OSError as exc:
        return f": cannot be looked at: {_why(exc)}", False
    if mode is not None:
        if stat.S_ISLNK(mode):
            try:
                target = repr(os.readlink(path))
            except OSError:
                target = "somewhere"
            return (
                f" is a symlink (to {target}): refused, a write would follow it or replace it;"
                " give the path it points to",
                False,
            )
        if stat.S_ISDIR(mode):
            return " is a folder, not a file", False
        if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
            return None, True
        if stat.S_ISBLK(mode):
            return " is a block device: refused, a write would overwrite what it holds", False
        if not stat.S_ISREG(mode):
            return " is not a regular file, a character device or a FIFO: refused", False
    folder = path.parent
    try:
        if not folder.exists():
            return f": its folder {_shown(folder)} does not exist", False
        if not folder.is_dir():
            return f": its folder {_shown(folder)} is not a folder", False
    except OSError as exc:  # a folder on the way that cannot be searched
        return f": its folder {_shown(folder)} cannot be looked at: {_why(exc)}", False
    return _writable_folder(folder), False


def check_output_file(path: StrPath, name: str) -> None:
    """Refuse (``UsageError``) an output file that :func:`write_output` would not write."""
    if not os.fspath(path).strip():
        raise UsageError(f"{name}: expected a file name, got {os.fspath(path)!r}")
    why, _through = _file_refusal(Path(path))
    if why is not None:
        raise UsageError(f"{name} {_shown(path)}{why}")


def _open_through(path: Path) -> int:
    # No O_CREAT and no O_TRUNC: the device or FIFO is there, or the open fails; never a
    # new file. O_NOFOLLOW: a symlink put there since it was looked at is not followed.
    return os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)


def write_output(path: StrPath, data: str | bytes, name: str) -> None:
    """Write ``data`` (text as UTF-8) to the output file ``path`` (see the module: through
    a device or a FIFO, else a new file renamed over it); ``BenchError`` naming ``name``
    and the path.

    Looked at again here, not only when checked: the run may have taken hours.
    """
    target = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    why, through = _file_refusal(target)
    if why is not None:
        raise BenchError(f"{name} {_shown(path)}{why}")
    try:
        if through:
            with os.fdopen(_open_through(target), "wb") as out:
                out.write(payload)
            return
        fd, tmp = _new_file_beside(target)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(payload)
            os.replace(tmp, target)  # rename(2) replaces a link itself, never its target
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise BenchError(f"{name}: cannot write {_shown(path)}: {_why(exc)}") from None


def open_output(path: StrPath, name: str) -> BinaryIO:
    """``path`` open for writing from its start, for output written as it comes (a child's
    log): a device or a FIFO is opened through, a regular file truncated in place, an
    absent one made; never through a symlink. ``BenchError`` naming ``name`` and the path.
    """
    target = Path(path)
    why, through = _file_refusal(target)
    if why is not None:
        raise BenchError(f"{name} {_shown(path)}{why}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = _open_through(target) if through else os.open(target, flags, 0o666)
    except OSError as exc:
        raise BenchError(f"{name}: cannot write {_shown(path)}: {_why(exc)}") from None
    return os.fdopen(fd, "wb")


def _new_file_beside(target: Path) -> tuple[int, Path]:
    """A new file in ``target``'s folder (O_EXCL: never an existing file or a planted link).

    Not ``mkstemp``: its files are 0600, and the output's mode should follow the umask.
    """
    for _ in range(100):
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise OSError(errno.EEXIST, f"no free temporary name beside {target}")


# -- folders ------------------------------------------------------------------------------


def output_dir_arg(text: str) -> Path:
    """An argparse type for an output folder: refuses ``""``, which would be the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a folder, got {text!r}")
    return Path(text)


def check_output_dir(path: Path, name: str, *, parents: bool = False) -> Path:
    """``path`` if it is a folder that takes a new file, or can be made as one: its parent
    is such a folder (with ``parents``: its nearest existing ancestor is); else
    ``UsageError`` naming ``name``. Makes nothing. (``Path("")`` is ``.``: refuse an
    empty value where it is read, as :func:`output_dir_arg` does.)"""
    try:
        why = _dir_refusal(path, parents)
    except OSError as exc:  # a folder on the way that cannot be searched
        why = f": cannot be looked at: {_why(exc)}"
    if why is not None:
        raise UsageError(f"{name} {_shown(path)}{why}")
    return path


def _dir_refusal(path: Path, parents: bool) -> str | None:
    """Why the folder ``path`` is refused (see :func:`check_output_dir`), or ``None``."""
    if path.is_dir():  # a symlink to a folder is a folder: what is made in it is new
        return _writable_folder(path)
    if path.is_symlink() and not path.exists():
        return f" is a symlink to nothing (to {os.readlink(path)!r})"
    if path.exists():
        return " is a file, not a folder"
    parent = ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        return f" lies under a file: {_shown(ancestor)}"
    if ancestor != parent and not parents:
        return f": its parent folder {_shown(parent)} does not exist (make it first)"
    return _writable_folder(ancestor)


def make_output_dir(path: Path, name: str, *, parents: bool = False) -> Path:
    """Make the checked folder ``path`` (if missing); ``BenchError`` in one line if that
    fails now (it changed since it was checked)."""
    try:
        path.mkdir(parents=parents, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"{name}: cannot make {_shown(path)}: {_why(exc)}") from None
    return path


# -- the default results folder -----------------------------------------------------------


def _names_this_project(pyproject: Path) -> bool:
    try:
        with pyproject.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError):
        return False
    project = data.get("project")
    return isinstance(project, dict) and project.get("name") == PROJECT_NAME


def project_root(start: Path | None = None) -> Path | None:
    """The clone of this project that ``start`` (default: the current folder) is in: the
    nearest folder upward whose ``pyproject.toml`` names ``bytes-handoff``; else ``None``."""
    here = (start or Path.cwd()).absolute()
    for folder in (here, *here.parents):
        if _names_this_project(folder / "pyproject.toml"):
            return folder
    return None


def _inside_site_packages(path: Path) -> bool:
    if {"site-packages", "dist-packages"} & set(path.parts):
        return True
    paths = sysconfig.get_paths()
    for key in ("purelib", "platlib"):
        with contextlib.suppress(KeyError, ValueError, OSError):
            if path.resolve().is_relative_to(Path(paths[key]).resolve()):
                return True
    return False


def default_results_dir(*parts: str) -> Path:
    """Where results go when no folder is given: ``bench/results`` (joined with ``parts``)
    of the clone the command runs in (:func:`project_root`), else under the current folder.

    Never inside site-packages (``UsageError``: give a folder). Computed, not made.
    """
    try:
        base = project_root() or Path.cwd().absolute()
    except OSError as exc:  # the current folder was removed
        raise UsageError(f"no default results folder: {_why(exc)}; give the folder") from None
    path = base.joinpath("bench", "results", *parts)
    if _inside_site_packages(path):
        raise UsageError(
            f"the default results folder {_shown(path)} would be inside site-packages:"
            " run from a clone or another folder, or give the results folder"
        )
    return path


def choose_results_dir(given: Path | None, name: str, *parts: str) -> tuple[Path, bool]:
    """``(the results folder, whether it is the default)``, checked before any run.

    ``given`` (the flag or variable ``name``) must pass :func:`check_output_dir`; without
    it the default (:func:`default_results_dir` with ``parts``) may lack its parents.
    Makes nothing: :func:`make_output_dir` (with ``parents`` for the default) does.
    """
    if given is not None:
        return check_output_dir(given, name), False
    path = default_results_dir(*parts)
    return check_output_dir(path, f"the default results folder (no {name})", parents=True), True
