"""Load a user-supplied pickle that holds plain data only, without ever running code from it.

RefCOCO's ``refs(unc).p`` files are pickles. An ordinary ``pickle.load`` of a file from the internet runs whatever
callable the file names (``os.system`` included). :func:`load_plain_pickle` admits only what plain data needs: the
pickle opcodes for ``dict``, ``list``, ``tuple``, ``str``, ``bytes``, numbers, ``bool`` and ``None`` (which name no
global), plus ``set`` and ``frozenset``, which protocols 0-2 rebuild by calling the builtin. Every other global a pickle
asks for is refused before it is imported, with an error naming it; nothing in the file is ever called.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

# (module, name) pairs a plain-data pickle may name. Python 2 pickles say "__builtin__" where Python 3 says "builtins"
# (the overridden find_class sees the name as written in the file).
_ALLOWED_GLOBALS = frozenset((module, name) for module in ("builtins", "__builtin__") for name in ("set", "frozenset"))


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asks for something other than plain data (a class, a function, a persistent id)."""


class _PlainDataUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        # Python 2 byte strings come back as text; undecodable bytes become U+FFFD rather than failing the whole file.
        super().__init__(file, encoding="utf-8", errors="replace")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return set if name == "set" else frozenset
        raise UnsafePickleError(
            f"{self._source}: refused to load global '{module}.{name}': only plain data (dict, list, tuple, str, "
            "numbers, bool, None, set) is admitted, so this file is not a plain refs file; nothing from it was run"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._source}: refused a persistent id {pid!r}: only plain data is admitted")


def loads_plain_pickle(data: bytes, source: str = "<bytes>") -> Any:
    """The plain-data object pickled in ``data``; :class:`UnsafePickleError` names any other global it asks for."""
    try:
        return _PlainDataUnpickler(io.BytesIO(data), source).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as err:
        raise UnsafePickleError(f"{source}: not a readable pickle ({type(err).__name__}: {err})") from None


def load_plain_pickle(path: str | Path) -> Any:
    """The plain-data object in the pickle file at ``path`` (see :func:`loads_plain_pickle`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pickle file {path} does not exist")
    return loads_plain_pickle(path.read_bytes(), str(path))
