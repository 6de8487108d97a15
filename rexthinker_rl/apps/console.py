"""How every console script ends: its result, or ONE line on stderr and a non-zero exit status, never a traceback
unless asked for (``--debug`` anywhere on the command line, or ``REXTHINKER_DEBUG=1``).

- bad input or a refusal (config, data, paths, permissions, a full disk: ``ValueError`` and ``OSError`` and their
  kinds): ``error: <what, where, what would be right>``, exit status 2;
- anything else (a bug here, or an error a library raised that we did not foresee): ``error: unexpected <type>:
  <message> (... traceback in FILE ...)``, exit status 1;
- Ctrl-C: ``interrupted``, exit status 130.

The traceback is never lost: a command that has a folder of its own (a training run's folder) names it with
:func:`keep_errors_in`, and every error's traceback is appended to ``errors.log`` there; an unexpected error with no
such folder goes to a temp file the line names. Commands keep their own handling of the errors they expect (with
their own exit statuses); this is the one top-level handler around each entry point (:func:`console_entry`).
"""

from __future__ import annotations

import errno
import functools
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path

DEBUG_FLAG = "--debug"
DEBUG_ENV = "REXTHINKER_DEBUG"
ERRORS_LOG = "errors.log"
# The folder of the command running in this context (set once it is known to be the command's own).
_ERRORS_FOLDER: ContextVar[Path | None] = ContextVar("rexthinker_errors_folder", default=None)
_DEBUG: ContextVar[bool] = ContextVar("rexthinker_debug", default=False)

# What the OS says when a write fails, as what to do about it.
_OS_ADVICE = {
    errno.ENOSPC: "the disk is full: free space there or write elsewhere",
    errno.EDQUOT: "the disk quota is used up: free space there or write elsewhere",
    errno.EFBIG: "the file is larger than this process may write (ulimit -f) or the disk allows: free space or raise "
    "the limit",
    errno.EROFS: "that file system is read-only: choose a folder you can write to",
    errno.EACCES: "permission denied: choose a path you can use, or fix its permissions",
    errno.EPERM: "operation not permitted: choose a path you can use, or fix its permissions",
    errno.ENOTDIR: "a part of that path is a file, not a folder: choose another path",
    errno.EISDIR: "that is a folder, not a file",
    errno.ENOENT: "no such file or folder",
}


def keep_errors_in(folder: str | Path) -> None:
    """Tracebacks of this command go to ``folder/errors.log`` from now on (``folder`` is the command's own)."""
    _ERRORS_FOLDER.set(Path(folder))


def debugging() -> bool:
    """True when the user asked for tracebacks (``--debug`` or ``REXTHINKER_DEBUG=1``)."""
    return _DEBUG.get() or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def one_line(error: BaseException) -> str:
    """An error as one line: an error from a Ray worker by its cause; an OS error with its path and what to do."""
    cause = getattr(error, "cause", None)
    error = cause if isinstance(cause, BaseException) else error
    if isinstance(error, OSError) and error.errno in _OS_ADVICE and not _is_our_message(error):
        where = " -> ".join(str(name) for name in (error.filename, error.filename2) if name) or "a file"
        return f"{where}: {error.strerror or os.strerror(error.errno)} ({_OS_ADVICE[error.errno]})"
    return " ".join(str(error).split()) or type(error).__name__


def error_lines(error: BaseException) -> str:
    """``error: <one line>``, then one indented line per detail the error carries (``details``: a list of things
    it names one by one, such as each unusable checkpoint)."""
    cause = getattr(error, "cause", None)
    details = getattr(cause if isinstance(cause, BaseException) else error, "details", None) or []
    return "\n".join([f"error: {one_line(error)}", *(f"  {' '.join(str(item).split())}" for item in details)])


def _is_our_message(error: OSError) -> bool:
    """An OSError raised by our code with a whole sentence (``FileNotFoundError("--image x does not exist")``)."""
    return error.strerror is None and bool(error.args) and isinstance(error.args[0], str)


def record(error: BaseException, command: str) -> Path | None:
    """Append ``error``'s traceback to the command's ``errors.log`` (when it has a folder); the file, or None."""
    folder = _ERRORS_FOLDER.get()
    if folder is None or not folder.is_dir():
        return None
    text = _traceback_text(error, command)
    try:
        with (folder / ERRORS_LOG).open("a", encoding="utf-8") as log:
            log.write(text)
    except OSError:  # a full disk is what may have failed the command: say the traceback is lost, not crash
        return None
    return folder / ERRORS_LOG


def _traceback_text(error: BaseException, command: str) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return f"--- {stamp} {command} {' '.join(sys.argv[1:])}\n{trace}\n"


def _temp_record(error: BaseException, command: str) -> Path | None:
    try:
        handle, name = tempfile.mkstemp(prefix=f"{command}-error-", suffix=".log")
        with os.fdopen(handle, "w", encoding="utf-8") as log:
            log.write(_traceback_text(error, command))
    except OSError:
        return None
    return Path(name)


def report(error: BaseException, command: str) -> int:
    """Print ``error`` as one line (the traceback first when debugging), keep its traceback; the exit status."""
    if debugging():
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    expected = isinstance(error, ValueError | OSError)
    kept = record(error, command)
    if expected:
        print(error_lines(error), file=sys.stderr, flush=True)
        return 2
    kept = kept or _temp_record(error, command)
    where = f"the traceback is in {kept}" if kept else "the traceback could not be written"
    hint = "" if debugging() else f"; {DEBUG_FLAG} or {DEBUG_ENV}=1 shows it"
    print(
        f"error: unexpected {type(error).__name__}: {one_line(error)} ({where}{hint}; please report it)",
        file=sys.stderr,
        flush=True,
    )
    return 1


def console_entry(command: str) -> Callable:
    """Decorator for a console script's ``main(argv)``: strips ``--debug``, and ends any exception escaping ``main``
    in one line (:func:`report`) and ``sys.exit`` with its status. ``main``'s own return value passes through."""

    def wrap(main: Callable[[list[str] | None], int | None]) -> Callable[[list[str] | None], int | None]:
        @functools.wraps(main)
        def entry(argv: list[str] | None = None) -> int | None:
            args = list(sys.argv[1:] if argv is None else argv)
            debug = _DEBUG.set(DEBUG_FLAG in args)
            folder = _ERRORS_FOLDER.set(None)
            try:
                return main([arg for arg in args if arg != DEBUG_FLAG])
            except KeyboardInterrupt:
                print("interrupted", file=sys.stderr, flush=True)
                sys.exit(130)
            except Exception as error:  # the one place every error ends, as one line
                sys.exit(report(error, command))
            finally:
                _ERRORS_FOLDER.reset(folder)
                _DEBUG.reset(debug)

        entry.console_command = command  # what tests check every script has
        return entry

    return wrap
