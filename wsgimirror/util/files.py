"""Files wsgimirror writes: never through a planted link, private to the user, never someone else's.

Everything the project writes holds real traffic (the diff log, recordings, the HTML report, the
sink's ``--out``), so each file is opened the way a recording's chunk is:

- ``O_NOFOLLOW``: a symbolic link planted at the path is refused, never followed;
- created ``0600``; an existing file of ours with wider permissions is narrowed to ``0600``;
- an existing file that is not a regular file, or belongs to another user, is refused: appending
  to a world-writable file someone else created would hand them the traffic.

A whole file (the HTML report) is written to a new file in the same directory and renamed into
place, so a link at the path is replaced, not written through, and a reader never sees half a page.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile

PRIVATE = 0o600


class UnsafeFile(OSError):
    """A path wsgimirror refuses to write: a link, not a regular file, or another user's file."""


def open_private(path: str, append: bool = True) -> int:
    """A descriptor open for writing (appending by default) on ``path``, created 0600 if absent."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_APPEND if append else os.O_TRUNC)
    try:
        fd = os.open(path, flags, PRIVATE)
    except OSError as err:
        if err.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
            raise UnsafeFile(errno.ELOOP, "is a symbolic link; wsgimirror never writes through one", path) from None
        raise
    try:
        _check_ours(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_ours(fd: int, path: str) -> None:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeFile(errno.EINVAL, "is not a regular file", path)
    if info.st_uid != os.geteuid():
        raise UnsafeFile(errno.EPERM, f"belongs to another user (uid {info.st_uid}); wsgimirror writes only its own "
                                      "files", path)  # fmt: skip
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.fchmod(fd, PRIVATE)  # ours, but readable or writable by others: narrowed before anything is written


def write_replacing(path: str, data: bytes) -> None:
    """Write ``data`` as the whole of ``path``: a new 0600 file in the same directory, renamed into place."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(temporary, path)  # a link at ``path`` is replaced itself; its target is never touched
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
