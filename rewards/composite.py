"""Load reward functions by name and combine them into one weighted reward.

Configured in YAML either as one function::

    reward:
      function: rewards.rexthinker:rexthinker_reward
      kwargs: {format_weight: 0.1}

or as weighted components (our default, :data:`DEFAULT_COMPONENTS`)::

    reward:
      components:
        - {name: accuracy, function: rewards.box:iou_f1, weight: 0.9, kwargs: {iou_threshold: 0.5}}
        - {name: format, function: rewards.format:format_reward, weight: 0.1}

A function is ``package.module:function`` or ``path/to/file.py:function``. The composite's ``overall`` is
``sum(weight * component overall)``; each component's ``overall`` is reported as ``<name>`` and its other
keys as ``<name>/<key>``, which the trainer logs under ``reward/``. Every returned list is checked (length,
a finite ``overall``, float components) so a broken reward function fails loudly instead of training on
garbage.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import math
import numbers
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rewards.types import RewardInput, RewardScore

RewardFunction = Callable[..., list[RewardScore]]

# Mirrors Rex-Thinker's 0.9 accuracy + 0.1 format split, with IoU matching instead of exact equality.
# Copy it before changing it: it is shared by every importer.
DEFAULT_COMPONENTS: list[dict] = [
    {
        "name": "accuracy",
        "function": "rewards.box:iou_f1",
        "weight": 0.9,
        "kwargs": {"iou_threshold": 0.5, "matching": "hungarian"},
    },
    {"name": "format", "function": "rewards.format:format_reward", "weight": 0.1, "kwargs": {}},
]

_COMPONENT_KEYS = ("name", "function", "weight", "kwargs")


def _import_module_from_file(path_text: str, spec: str):
    path = Path(path_text).expanduser().resolve()
    if not path.is_file():
        raise ImportError(f"reward function {spec!r}: file {str(path)!r} does not exist")
    # A unique, private name so two files called rewards.py do not collide.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    module_name = f"_reward_file_{path.stem}_{digest}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"reward function {spec!r}: cannot load {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    # Registered only while executing (dataclasses and typing look the module up by name); removed afterwards
    # so that pickling the function (e.g. to a Ray worker) sends it by value rather than by an unimportable name.
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    finally:
        sys.modules.pop(module_name, None)
    return module


def _import_module(module_name: str, spec: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise ImportError(f"reward function {spec!r}: no module named {module_name!r}") from error
        raise ImportError(f"reward function {spec!r}: importing {module_name!r} failed: {error}") from error


def load_function(spec: str) -> RewardFunction:
    """Resolve ``"package.module:function"`` or ``"path/to/file.py:function"`` to a reward function.

    Raises ImportError (module or file not found), AttributeError (no such function, with suggestions),
    TypeError (not callable, or cannot take the list of inputs as its first positional argument) or
    ValueError (a spec without ``:``).
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"reward function must be 'module:function' or 'path/to/file.py:function', got {spec!r}")
    module_part, _, attribute = spec.rpartition(":")
    if not module_part or not attribute:
        raise ValueError(f"reward function must be 'module:function' or 'path/to/file.py:function', got {spec!r}")
    is_file = module_part.endswith(".py") or "/" in module_part or "\\" in module_part
    module = _import_module_from_file(module_part, spec) if is_file else _import_module(module_part, spec)

    target = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            available = [name for name in dir(target) if not name.startswith("_")]
            close = difflib.get_close_matches(part, available, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise AttributeError(f"reward function {spec!r}: {module_part!r} has no attribute {part!r}{hint}")
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"reward function {spec!r}: {attribute!r} is a {type(target).__name__}, not callable")
    _check_signature(target, spec)
    return target


def _check_signature(function: Callable, spec: str) -> inspect.Signature:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError) as error:
        raise TypeError(f"reward function {spec!r}: cannot inspect its signature ({error})") from error
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    parameters = list(signature.parameters.values())
    if not parameters or parameters[0].kind not in (*positional, inspect.Parameter.VAR_POSITIONAL):
        raise TypeError(
            f"reward function {spec!r} has signature {signature}; expected "
            "fn(inputs: list[RewardInput], **kwargs) -> list[RewardScore] (a positional parameter for the inputs)"
        )
    return signature


def _check_kwargs(function: Callable, kwargs: Mapping, spec: str) -> None:
    """Fail at build time, not mid-training, on a misspelt keyword argument."""
    signature = inspect.signature(function)
    try:
        signature.bind([], **kwargs)
    except TypeError as error:
        accepted = list(signature.parameters)[1:]
        hints = "".join(
            f"; {key!r}: did you mean {close[0]!r}?"
            for key in kwargs
            if key not in signature.parameters and (close := difflib.get_close_matches(str(key), accepted, n=1))
        )
        raise TypeError(
            f"reward function {spec!r} cannot be called as fn(inputs, **{dict(kwargs)!r}): {error}; "
            f"its signature is {signature}{hints}"
        ) from error


def _function_name(spec: str) -> str:
    return spec.rpartition(":")[2].rpartition(".")[2]


def validate_scores(scores: object, num_inputs: int, name: str) -> list[RewardScore]:
    """Check a reward function's output and return it as plain floats.

    Raises TypeError for a wrong type and ValueError for a wrong length or a non-finite value, naming the
    function and the row index.
    """
    if not isinstance(scores, Sequence) or isinstance(scores, str | bytes):
        raise TypeError(f"reward function {name!r} returned {type(scores).__name__}; expected a list of dicts")
    if len(scores) != num_inputs:
        raise ValueError(f"reward function {name!r} returned {len(scores)} scores for {num_inputs} inputs")
    checked: list[RewardScore] = []
    for index, score in enumerate(scores):
        if not isinstance(score, Mapping):
            raise TypeError(f"reward function {name!r}, row {index}: got {type(score).__name__}, expected a dict")
        if "overall" not in score:
            raise ValueError(f"reward function {name!r}, row {index}: no 'overall' key in {dict(score)!r:.200}")
        plain: RewardScore = {}
        for key, value in score.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(
                    f"reward function {name!r}, row {index}: {key!r} is {type(value).__name__}, expected a float"
                )
            if not math.isfinite(value):
                raise ValueError(
                    f"reward function {name!r}, row {index}: {key!r} is {value!r}, expected a finite float"
                )
            plain[str(key)] = float(value)
        checked.append(plain)
    return checked


@dataclass(frozen=True)
class BoundReward:
    """One reward function with its kwargs bound; calling it checks what the function returns."""

    spec: str
    function: RewardFunction
    kwargs: dict = field(default_factory=dict)

    def __call__(self, inputs: list[RewardInput]) -> list[RewardScore]:
        return validate_scores(self.function(inputs, **self.kwargs), len(inputs), self.spec)


@dataclass(frozen=True)
class CompositeReward:
    """A weighted sum of named reward components."""

    components: tuple[tuple[str, float, BoundReward], ...]  # (name, weight, reward)

    def __call__(self, inputs: list[RewardInput]) -> list[RewardScore]:
        combined: list[RewardScore] = [{"overall": 0.0} for _ in inputs]
        for name, weight, reward in self.components:
            for total, score in zip(combined, reward(inputs), strict=True):
                total["overall"] += weight * score["overall"]
                total[name] = score["overall"]
                total.update({f"{name}/{key}": value for key, value in score.items() if key != "overall"})
        return combined


def _build_component(index: int, component: Mapping) -> tuple[str, float, BoundReward]:
    if not isinstance(component, Mapping):
        raise TypeError(f"reward component {index} must be a mapping, got {type(component).__name__}")
    unknown = [key for key in component if key not in _COMPONENT_KEYS]
    if unknown:
        hints = [
            f"{key!r}"
            + (
                f" (did you mean {close[0]!r}?)"
                if (close := difflib.get_close_matches(str(key), _COMPONENT_KEYS, n=1))
                else ""
            )
            for key in unknown
        ]
        raise ValueError(
            f"reward component {index}: unknown keys {', '.join(hints)}; allowed: {', '.join(_COMPONENT_KEYS)}"
        )
    if "function" not in component:
        raise ValueError(f"reward component {index}: missing 'function' (e.g. 'rewards.box:iou_f1')")
    spec = component["function"]
    weight = component.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight):
        raise ValueError(f"reward component {index} ({spec!r}): weight must be a finite number, got {weight!r}")
    name = component.get("name") or _function_name(spec)
    if not isinstance(name, str) or "/" in name or name == "overall":
        raise ValueError(f"reward component {index} ({spec!r}): name must be a string without '/', not 'overall'")
    return name, float(weight), _bind(spec, component.get("kwargs"))


def _bind(spec: str, kwargs: Mapping | None) -> BoundReward:
    function = load_function(spec)
    kwargs = dict(kwargs or {})
    _check_kwargs(function, kwargs, spec)
    return BoundReward(spec, function, kwargs)


def build_reward(
    function: str | None = None, kwargs: Mapping | None = None, components: Sequence[Mapping] | None = None
) -> Callable[[list[RewardInput]], list[RewardScore]]:
    """Build the trainer's reward: one ``function`` with ``kwargs`` bound, or a weighted sum of ``components``.

    Each component is ``{"name": optional (defaults to the function name), "function": "module:function",
    "weight": 1.0, "kwargs": {}}``. Everything is loaded and checked now, so a config error surfaces before
    training starts.
    """
    if (function is None) == (components is None):
        raise ValueError("build_reward: give exactly one of 'function' or 'components'")
    if function is not None:
        return _bind(function, kwargs)
    if kwargs:
        raise ValueError("build_reward: 'kwargs' goes inside each component when 'components' is given")
    if isinstance(components, str | bytes | Mapping) or not isinstance(components, Sequence) or not components:
        raise ValueError(f"build_reward: 'components' must be a non-empty list of mappings, got {components!r:.200}")
    built = tuple(_build_component(index, component) for index, component in enumerate(components))
    names = [name for name, _, _ in built]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"build_reward: component names must be unique, {repeated} repeat; set 'name' on each")
    return CompositeReward(built)
