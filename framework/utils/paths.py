"""Looking at a path a user typed before opening it: one line for what the OS refuses or what would hang.

``pathlib``'s ``exists()``/``is_file()`` raise for a name the OS refuses (``File name too long``, a symlink loop), and
``open()`` of a FIFO blocks until something writes to it: a run would hang before it starts. Every file a config or
the command line names is looked at here first.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Optional

from framework.errors import UserError

REFUSED = {
    errno.ENAMETOOLONG: "the path is too long for the file system",
    errno.ELOOP: "the path has a symbolic-link loop",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def path_status(path: str | os.PathLike, what: str) -> Optional[os.stat_result]:
    """``os.stat(path)`` (links followed); None when nothing is there.

    ``what`` starts the message, before the quoted path (``resume``, ``config error: data.image_path: the file``). A path the OS refuses raises a one-line
    UserError instead of a traceback.
    """
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None
    except OSError as e:
        reason = REFUSED.get(e.errno, e.strerror or str(e))
        shown = str(path) if len(str(path)) <= 120 else f"{str(path)[:60]}...{str(path)[-40:]} ({len(str(path))} characters)"
        raise UserError(f"{what} '{shown}' cannot be used: {reason}; give another path") from None
    except ValueError as e:  # e.g. an embedded NUL character
        raise UserError(f"{what} {str(path)[:120]!r} cannot be used: {e}; give another path") from None


def special_file(st: os.stat_result) -> Optional[str]:
    """What a path is when it is neither a regular file nor a folder (a FIFO, a socket, a device), else None."""
    mode = st.st_mode
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def require_regular_file(path: str | os.PathLike, what: str, fix: str) -> Path:
    """``path`` as a Path if it is a regular file (links followed); else a one-line UserError.

    Missing, a folder, a FIFO/socket/device (which would block or stream forever when read), or a path the OS refuses
    each get their own line; ``fix`` says what to give instead.
    """
    st = path_status(path, what)
    if st is None:
        raise UserError(f"{what} '{path}' does not exist; {fix}")
    if stat.S_ISDIR(st.st_mode):
        raise UserError(f"{what} '{path}' is a folder; {fix}")
    kind = special_file(st)
    if kind is not None:
        raise UserError(f"{what} '{path}' is {kind}, not a file (reading it could block forever); {fix}")
    return Path(path)
