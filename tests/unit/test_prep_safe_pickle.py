"""data_tools.safe_pickle: plain data loads; a pickle naming any other global is refused and nothing it asks for runs."""

from __future__ import annotations

import os
import pickle

import pytest

from data_tools.cli import main
from data_tools.safe_pickle import UnsafePickleError, load_plain_pickle, loads_plain_pickle

PLAIN = {
    "refs": [{"ref_id": 1, "sentences": [{"sent": "the man", "raw": "The man ☃"}], "box": (1.5, 2, 3e3, -4)}],
    "flags": [True, False, None],
    "tags": {"a", "b"},
    "frozen": frozenset({1, 2}),
    "big": 2**70,
}


class Shell:
    """Unpickling this would run a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Thing:
    """An ordinary class instance: not plain data."""

    def __init__(self):
        self.value = 1


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_data_loads_with_every_protocol(protocol):
    assert loads_plain_pickle(pickle.dumps(PLAIN, protocol=protocol)) == PLAIN


def test_bytes_load_with_protocol_3_and_later():
    assert loads_plain_pickle(pickle.dumps({"b": b"\x00\xff"}, protocol=3)) == {"b": b"\x00\xff"}


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_shell_command_is_refused_and_never_runs(tmp_path, protocol):
    marker = tmp_path / "marker"
    data = pickle.dumps([{"ok": 1}, Shell(marker)], protocol=protocol)
    with pytest.raises(UnsafePickleError) as info:
        loads_plain_pickle(data, "evil.p")
    assert f"refused to load global '{os.system.__module__}.system'" in str(info.value)
    assert str(info.value).startswith("evil.p: ")
    assert not marker.exists()


def test_class_instance_and_builtin_callables_are_refused(tmp_path):
    with pytest.raises(UnsafePickleError, match=f"'{__name__}.Thing'"):
        loads_plain_pickle(pickle.dumps(Thing(), protocol=2))
    evil_eval = b"cbuiltins\neval\n(S'1+1'\ntR."  # protocol 0 by hand: builtins.eval("1+1")
    with pytest.raises(UnsafePickleError, match="'builtins.eval'"):
        loads_plain_pickle(evil_eval)


def test_garbage_and_persistent_ids_are_refused(tmp_path):
    with pytest.raises(UnsafePickleError, match="not a readable pickle"):
        loads_plain_pickle(b"not a pickle at all")
    with pytest.raises(UnsafePickleError, match="persistent id"):
        loads_plain_pickle(b"Pfoo\n.")  # protocol 0 PERSID opcode
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_plain_pickle(tmp_path / "absent.p")


def test_from_refcoco_refuses_an_evil_refs_file(tmp_path, capsys):
    marker = tmp_path / "marker"
    refs = tmp_path / "refs(unc).p"
    refs.write_bytes(pickle.dumps([{"ref_id": 0, "payload": Shell(marker)}], protocol=2))
    instances = tmp_path / "instances.json"
    instances.write_text('{"images": [], "annotations": [], "categories": []}')
    out = tmp_path / "out.json"
    status = main(["from-refcoco", "--refs", str(refs), "--instances", str(instances), "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("error: ") and f"refused to load global '{os.system.__module__}.system'" in err
    assert not marker.exists() and not out.exists()
