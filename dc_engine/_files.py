"""Files in and out (one home; no heavy imports): paths shown on one line, inputs that must be
regular files, and atomic writes that leave no stale temporary files behind.

Every file dc-engine reads (models, configs, datasets, ONNX files) is checked with
:func:`regular_file` before anything opens it: a FIFO, socket or device given as an input could
block forever (HDF5's open of a FIFO does) or never end (``/dev/zero``). The check is made on
the path just before it is opened; swapping a special file in between is not guarded against.

Every file dc-engine writes goes through :func:`atomic_write`: the content goes to a temporary
file in the target's folder, named ``.<target name>.<pid>-<random>.tmp``, which is fsync'ed and
renamed over the target. A process killed inside that window leaves its temporary file behind;
the next write to the same target removes those whose process no longer runs (on this machine:
the pid is how they are told apart from a live writer's).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import one_line

PathLike = str | os.PathLike

_NEW_FILE_MODE = 0o644  # mkstemp creates 0600; a new file gets the usual mode


def show_path(path: PathLike | str) -> str:
    """``path`` as text for a one-line message: characters that are not printable (newlines,
    tabs, control characters, undecodable bytes) are shown as Python escapes (``\\n``,
    ``\\x1b``, ``\\udcff``); a printable path is returned as it is."""
    text = os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else str(path)
    return one_line(text)


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def regular_file(path: PathLike, what: str, fix: str, error: type[Exception] = OSError,
                 missing: type[Exception] | None = None,
                 directory: type[Exception] | None = None) -> Path:
    """``path`` as a Path after checking that it names an existing regular file (a symlink to
    one is fine), before anything opens it.

    ``what`` names the file in the message (e.g. ``"model file"``), ``fix`` ends it. A missing
    path raises ``missing`` (default FileNotFoundError), a directory ``directory`` (default
    IsADirectoryError), and a FIFO, socket or device ``error``: each names the path (escaped
    onto one line), what was expected and what was found.
    """
    p = Path(path)
    shown = show_path(p)
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError as exc:
        raise (missing or FileNotFoundError)(
            f"{what} not found: expected a file at {shown}, found nothing. {fix}") from exc
    except OSError as exc:
        raise error(f"cannot read the {what} {shown}: {exc.strerror or exc}. {fix}") from exc
    if stat.S_ISDIR(mode):
        raise (directory or IsADirectoryError)(
            f"expected a {what} at {shown}, found a directory. {fix}")
    if not stat.S_ISREG(mode):
        raise error(f"expected the {what} {shown} to be a regular file, found {_kind(mode)}: "
                    f"dc-engine reads only regular files (a pipe or device can block or never "
                    f"end). {fix}")
    return p


def _fsync_file(path: str) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(folder: Path) -> None:
    """Persist the rename; not every platform can open a directory, which is then skipped."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: the process exists, it is someone else's
        return True
    return True


def _temporary(target: Path) -> tuple[int, str]:
    """A new temporary file beside ``target``, named ``.NAME.PID-RANDOM.tmp`` (what
    :func:`stale_temporaries` looks for): ``(fd, path)``."""
    return tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}-", suffix=".tmp",
                            dir=target.parent)


def stale_temporaries(target: Path) -> list[Path]:
    """The temporary files left beside ``target`` by writers that were killed (their pid no
    longer runs on this machine)."""
    pattern = re.compile(re.escape(f".{target.name}.") + r"(\d+)-[^/]*\.tmp")
    stale = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(target.parent):
            m = pattern.fullmatch(entry.name)
            if m and not _pid_alive(int(m.group(1))):
                stale.append(Path(entry.path))
    return stale


def check_output(path: PathLike, what: str = "output", probe: bool = False) -> Path:
    """The absolute target path after checking it can be written as a file: its folder exists
    and is a folder, the target is not a directory or a special file, and the folder is
    writable (with ``probe``, by creating and removing a temporary file there, which also
    catches read-only mounts and access lists). Raises FileNotFoundError, IsADirectoryError,
    PermissionError or OSError with a one-line message; nothing is left behind."""
    target = Path(path).absolute()
    folder = target.parent
    shown = show_path(target)
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot save the {what} to {shown}: expected an existing "
                                f"folder {show_path(folder)}, found "
                                f"{'a file' if folder.exists() else 'nothing'}. Create the "
                                f"folder first (mkdir -p) or pick another path.")
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise OSError(f"cannot save the {what} to {shown}: {exc.strerror or exc}") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise IsADirectoryError(f"cannot save the {what} to {shown}: expected a file path, "
                                f"found a directory. Pass a file name inside it.")
    if mode is not None and not stat.S_ISREG(mode):
        raise OSError(f"cannot save the {what} to {shown}: it is {_kind(mode)}, and dc-engine "
                      f"replaces only regular files. Pick another path.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot save the {what} to {shown}: the folder "
                              f"{show_path(folder)} is not writable. Pick another path.")
    if probe:
        try:
            fd, tmp = _temporary(target)
        except OSError as exc:
            raise PermissionError(f"cannot save the {what} to {shown}: cannot create a file in "
                                  f"{show_path(folder)} ({exc.strerror or exc}). Pick another "
                                  f"path.") from None
        os.close(fd)
        os.unlink(tmp)
    return target


def atomic_write(path: PathLike, write: Callable[[str], None], what: str = "file") -> Path:
    """Create ``path`` through ``write(tmp)`` without ever leaving a half-written file.

    ``write`` fills the temporary file ``tmp`` (in the target's folder); it is then fsync'ed,
    given the target's mode (0644 for a new file) and renamed over the target with
    ``os.replace``. On any error the temporary file is removed and an existing target is left
    as it was; temporary files of earlier, killed writes to the same target are removed first.
    Returns the resolved target path.

    Raises what :func:`check_output` raises (a missing folder, a directory or special file at
    the target, a read-only folder), and whatever ``write`` raises.
    """
    target = check_output(path, what)
    folder = target.parent
    mode = (target.stat().st_mode & 0o777) if target.exists() else _NEW_FILE_MODE
    for old in stale_temporaries(target):
        with contextlib.suppress(OSError):
            old.unlink()
    fd, tmp = _temporary(target)
    try:
        os.close(fd)
        write(tmp)
        os.chmod(tmp, mode)
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)
    return target.resolve()


def write_bytes(path: PathLike, data: bytes, what: str = "file") -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_write`)."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    return atomic_write(path, write, what)


def write_text(path: PathLike, text: str, what: str = "file") -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (:func:`atomic_write`)."""
    return write_bytes(path, text.encode("utf-8"), what)


def write_json(path: PathLike, value, what: str = "report") -> Path:
    """Write ``value`` as indented JSON (and a final newline) to ``path`` atomically."""
    return write_text(path, json.dumps(value, indent=1) + "\n", what)


__all__ = ["PathLike", "show_path", "regular_file", "check_output",
           "stale_temporaries", "atomic_write", "write_bytes", "write_text", "write_json"]
