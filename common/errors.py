"""The errors a user can cause, and the one place that turns them into one line.

Every command of `delf` (and the server) reports an anticipated failure as
one line that names the file and the problem, never a traceback: a missing,
unreadable, unwritable or damaged file, a file of the wrong kind, a bad
option or value, a second writer, a closed output. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import errno


class UserError(ValueError):
    """An error caused by the user's input (a bad option, a file of the wrong kind): the command
    line prints it as one line, without a traceback, and exits with status 2."""


# What an OSError with a file name says, in words a user reads.
_OS_PROBLEMS = {
    errno.ENOENT: "no such file or folder",
    errno.EACCES: "permission denied",
    errno.EPERM: "not permitted (read-only or immutable)",
    errno.EROFS: "read-only file system",
    errno.EISDIR: "a folder, where a file is expected",
    errno.ENOTDIR: "not a folder, where a folder is expected",
    errno.ENOSPC: "no space left on the device",
    errno.EEXIST: "already exists",
}


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def user_message(exc: BaseException) -> str | None:
    """The one line to show for an anticipated failure, or None for a bug (which keeps its traceback)."""
    if isinstance(exc, OSError):
        name = exc.filename2 if exc.filename2 is not None else exc.filename
        if name is not None:
            problem = _OS_PROBLEMS.get(exc.errno, exc.strerror or type(exc).__name__)
            return one_line(f"{name}: {problem}")
        return one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, ValueError):  # UserError, FeatureFileError, IndexFileError, JSON and CSV errors
        return one_line(str(exc)) or type(exc).__name__
    return None
