"""Owner-only files and directories, and the state directory's safety check.

The state directory holds the stack's secrets (admin password, Fernet key, JWT secret), Airflow's
configuration (whose ``*_cmd`` options run commands) and every tenant's configs. Its default path
under ``/var/tmp`` is predictable, so another local user can create it first: the stack refuses a
directory it does not own, or that others may write, before it reads anything from it. What the
stack writes there is created owner-only (0600 files, 0700 directories), never chmodded afterwards."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import IO

OWNER_ONLY_UMASK = 0o077
"""The umask of the stack's processes: what they create (Airflow's config, logs, the snapshot, the
spool) is readable by the stack's user only."""
FILE_MODE = 0o600
DIR_MODE = 0o700


class UnsafeStateDirError(RuntimeError):
    """The state directory (or a directory above it) could be changed by another user."""


def _describe(path: Path, st: os.stat_result) -> str:
    return f"{path} (owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})"


def check_private_dir(path: Path) -> None:
    """Raise :class:`UnsafeStateDirError` unless ``path`` is a real directory (not a symlink) owned by
    this user and not writable by group or others, and every directory above it is owned by this
    user or root and writable by others only with the sticky bit (as ``/tmp``, ``/var/tmp``)."""
    path = Path(os.path.abspath(path))
    uid = os.geteuid()
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise UnsafeStateDirError(f"state directory {path} does not exist") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UnsafeStateDirError(f"state directory {path} is refused: it is not a directory (a symlink or a file)")
    if st.st_uid != uid:
        raise UnsafeStateDirError(
            f"state directory {_describe(path, st)} is refused: it belongs to another user (you are uid {uid}); "
            "another local user may have created it to plant settings. Remove it, or set CP_STATE_DIR to a "
            "directory of your own"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeStateDirError(
            f"state directory {_describe(path, st)} is refused: group or others may write to it. "
            f"Check its contents, then `chmod 700 {path}`, or set CP_STATE_DIR to a directory of your own"
        )
    for parent in path.parents:
        pst = os.stat(parent)
        if pst.st_uid not in (0, uid):
            raise UnsafeStateDirError(
                f"state directory {path} is refused: {_describe(parent, pst)} above it belongs to another user, "
                "who could replace it"
            )
        if pst.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not pst.st_mode & stat.S_ISVTX:
            raise UnsafeStateDirError(
                f"state directory {path} is refused: {_describe(parent, pst)} above it is writable by others "
                "without the sticky bit, so they could replace it"
            )


def ensure_state_dir(path: Path) -> Path:
    """The state directory, created 0700 if missing, else checked (:func:`check_private_dir`) and
    narrowed to 0700 (a directory older stacks left 0755)."""
    path = Path(os.path.abspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):  # whatever is there (a dangling symlink too) is checked
        path.mkdir(mode=DIR_MODE)
    check_private_dir(path)
    # 0700; a group's traversal alone (0710) is kept: the embedded PostgreSQL's own user is granted
    # it when the stack runs as root (local/postgres.py), and needs it as long as the server runs.
    if stat.S_IMODE(os.stat(path).st_mode) & ~(DIR_MODE | stat.S_IXGRP):
        path.chmod(DIR_MODE)
    return path


def private_dir(path: Path) -> Path:
    """``path`` (and missing parents) created 0700; an existing one narrowed to 0700."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if stat.S_IMODE(os.stat(path).st_mode) != DIR_MODE:
        path.chmod(DIR_MODE)
    return path


def open_private(path: Path, mode: str = "w", *, exclusive: bool = False) -> IO:
    """``path`` opened for writing (``mode`` "w", "wb", or "a"/"ab" to append), created 0600 (an
    existing file is narrowed to 0600 before it is written); ``exclusive``: fail if it exists (a
    temporary file about to be renamed)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    if exclusive:
        flags |= os.O_EXCL
    fd = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` as a 0600 file, replaced atomically (readers never see half of it)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    with open_private(tmp, exclusive=True) as fh:
        fh.write(text)
    os.replace(tmp, path)
