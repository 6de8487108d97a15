"""Where a command may write: the one rule every writer follows, so that nothing a user has is lost.

- A path that does not exist, or an empty folder, is written.
- An existing file is replaced only when the user said so (``--overwrite``, ``sft.overwrite=true``), and never when it
  is one of the command's own inputs.
- An existing non-empty folder is replaced only when the user said so *and* it holds nothing but what that kind of
  writer writes (a Hugging Face model folder, a folder of parquet shards, an evaluation's files). A data folder, a run
  folder or anything else is never removed, whatever the flags: the error names what is in it.

Folders are built under a temp name beside the target and swapped in with two renames (:func:`swap_folder`), so a
complete folder is in place at every moment and a failed write leaves the old one untouched.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

# Every file a Hugging Face save_pretrained of a Qwen2.5-VL (model, tokenizer, processor) or `rexthinker-tiny` writes.
MODEL_FOLDER_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.json",
    "chat_template.jinja",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "processor_config.json",
    "tiny_spec.json",
)
SHARD_FILES = ("part-*-of-*.parquet",)


class OutputError(ValueError):
    """An output path that the command will not write to; the message names the path, what is there and the way out."""


# A write that failed for want of room: the OS's errno, or its words inside a library's own error (safetensors, torch).
_NO_ROOM = {errno.ENOSPC: "no space left", errno.EFBIG: "file too large", errno.EDQUOT: "disk quota exceeded"}
_NO_ROOM_WORDS = ("no space left on device", "file too large", "disk quota exceeded")


def _no_room(error: BaseException | None, depth: int = 0) -> str | None:
    """What a failed write lacked room for, from the error or the errors it arose from (a library that fails while
    cleaning up, "I/O operation on closed file", hides the EFBIG it met first); None when it was not room."""
    if error is None or depth > 8:
        return None
    if isinstance(error, OSError) and error.errno in _NO_ROOM:
        return _NO_ROOM[error.errno]
    text = str(error).lower()
    found = next((words for words in _NO_ROOM_WORDS if words in text), None)
    return found or _no_room(error.__cause__, depth + 1) or _no_room(error.__context__, depth + 1)


def stop_reason(error: BaseException) -> str:
    """Why a command stopped, for the report it writes anyway: the room a write lacked where that was it (a library
    failing while it cleans up, "I/O operation on closed file", hides it), else the error's type and message."""
    room = _no_room(error)
    return f"the write failed: {room}" if room else f"{type(error).__name__}: {error}"


@contextlib.contextmanager
def writing(target: str | Path, key: str = "--out") -> Iterator[None]:
    """Around a command's writes to ``target``: a write that fails for want of room (a full disk, a quota, a
    file-size limit) becomes one :class:`OutputError` naming ``target``, the free space and what is left. Every writer
    stages its output under a temp name and renames it into place, removing the temp file on failure, so nothing
    half-written is left under a real name; anything else passes through unchanged."""
    try:
        yield
    except OutputError:
        raise
    except Exception as error:
        reason = _no_room(error)
        if reason is None:
            raise
        target = Path(target)
        try:
            free = (
                f"{shutil.disk_usage(next(p for p in (target, *target.parents) if p.exists())).free / 2**20:.0f} MiB"
            )
        except (OSError, StopIteration):
            free = "an unknown amount"
        raise OutputError(
            f"{key} {target}: the write failed: {reason} ({free} free on that disk; a file-size limit, ulimit -f, "
            "counts too); nothing half-written was left: free space, or write elsewhere"
        ) from error


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def folder_holds_only(folder: Path, patterns: Iterable[str], required: str | None = None) -> bool:
    """True when ``folder`` holds plain files only, each named by one of ``patterns`` (and ``required`` among them)."""
    patterns = tuple(patterns)
    entries = list(folder.iterdir())
    if required is not None and not (folder / required).is_file():
        return False
    return bool(entries) and all(entry.is_file() and _matches(entry.name, patterns) for entry in entries)


def is_model_folder(folder: str | Path) -> bool:
    """A Hugging Face model folder (config.json and weights or tokenizer files, nothing else)."""
    return Path(folder).is_dir() and folder_holds_only(Path(folder), MODEL_FOLDER_FILES, "config.json")


def is_shard_folder(folder: str | Path) -> bool:
    """A folder of ``part-XXXXX-of-YYYYY.parquet`` shards and nothing else (what ``convert --shard-size`` writes)."""
    return Path(folder).is_dir() and folder_holds_only(Path(folder), SHARD_FILES)


def check_writable(path: str | Path, key: str, is_file: bool = False) -> None:
    """Raise :class:`OutputError` unless ``path`` (a folder, or with ``is_file`` a file) can be written: the folder
    itself or its nearest existing ancestor is a folder this process can write in. Tried for real (a probe file made
    and removed at once): permission bits say nothing for root, and only a write tells a read-only mount."""
    path = Path(path)
    named = f"{key}={path}" if "." in key and not key.startswith("-") else f"{key} {path}"  # a config key, or a flag
    ancestor = path.parent if is_file else path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{named}: {ancestor} is a file, not a folder, so nothing can be made under it")
    try:
        handle, probe = tempfile.mkstemp(dir=ancestor, prefix=".rexthinker-write-check-")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        reason = error.strerror or str(error)
        raise OutputError(
            f"{named}: cannot write in {ancestor} ({reason}); choose a folder you can write to"
        ) from None


def _listing(folder: Path, limit: int = 4) -> str:
    names = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in folder.iterdir())
    more = f", ... ({len(names)} entries)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _same(path: Path, inputs: Iterable[str | Path]) -> bool:
    resolved = path.resolve()
    return any(Path(item).resolve() == resolved for item in inputs if item)


def check_new_file(
    path: str | Path,
    overwrite: bool,
    inputs: Iterable[str | Path] = (),
    key: str = "--out",
    hint: str = "pass --overwrite",
) -> Path:
    """Raise :class:`OutputError` unless ``path`` may be written as a file (see the module docstring)."""
    path = Path(path)
    if _same(path, inputs):
        raise OutputError(
            f"{key} {path} is also an input of this command: writing it would replace it; choose another"
        )
    if path.is_dir():
        raise OutputError(f"{key} {path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise OutputError(f"{key} {path} already exists; {hint} to replace it, or choose another")
    check_writable(path, key, is_file=True)
    return path


def check_new_folder(
    path: str | Path,
    overwrite: bool,
    owned: Callable[[Path], bool],
    kind: str,
    key: str = "--out",
    hint: str = "pass --overwrite",
    inputs: Iterable[str | Path] = (),
) -> Path:
    """Raise :class:`OutputError` unless ``path`` may be (re)written as a folder of ``kind``; ``owned`` says whether an
    existing folder holds nothing but such output (the only kind ever replaced)."""
    path = Path(path)
    for item in inputs:
        if item and (path.resolve() == Path(item).resolve() or path.resolve() in Path(item).resolve().parents):
            raise OutputError(f"{key} {path} holds an input of this command ({item}); choose another folder")
    if path.is_file():
        raise OutputError(f"{key} {path} is a file, not a folder; choose a folder name")
    if not path.is_dir() or not any(path.iterdir()):
        check_writable(path, key)
        return path
    if not owned(path):
        raise OutputError(
            f"{key} {path} is not empty and not a {kind} ({_listing(path)}); it is never replaced, whatever the "
            "flags: choose a new or empty folder"
        )
    if not overwrite:
        raise OutputError(f"{key} {path} already holds a {kind}; {hint} to replace it, or choose another folder")
    check_writable(path, key)
    return path


def staging_folder(target: Path) -> Path:
    """A new, uniquely named temp folder beside ``target`` (same file system, so the final rename is atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))


def swap_folder(staged: Path, target: Path) -> Path:
    """Move the complete folder ``staged`` to ``target``; an existing ``target`` (already checked to be ours) is
    renamed aside first and removed last, so some complete folder is in place at every moment."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
        os.replace(target, old / target.name)
    os.replace(staged, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target
