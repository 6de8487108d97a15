"""Loading the configuration: ``defaults < YAML < command-line dotlist`` through OmegaConf structured configs, errors
on one line that name the key (with a "did you mean"), and writing a resolved config back as YAML without secrets.

The schema (one dataclass per section, every field documented under it, and the derived values) is
``rexthinker_rl.config.schema``; the rules ``rexthinker_rl.config.rules``. ``load_config`` returns a checked
:class:`Config` whose ``derived`` values are computed once; nothing mutates the config after that.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from rexthinker_rl.config.schema import (
    Config,
    RewardConfig,
)
from rexthinker_rl.errors import ConfigError


def valid_keys(schema: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the schema, leaves and sections alike."""
    keys = []
    for f in fields(schema):
        key = f"{prefix}{f.name}"
        keys.append(key)
        sub = f.default_factory() if callable(f.default_factory) else None  # type: ignore[misc]
        if sub is not None and is_dataclass(sub):
            keys.extend(valid_keys(type(sub), key + "."))
    return keys


def _field_type(dotted: str) -> str:
    """The declared type of a dotted key, as written in the schema (``int``, ``list[str]``, ...)."""
    schema: Any = Config
    annotation = "the declared type"
    for part in dotted.split("."):
        match = {f.name: f for f in fields(schema)}.get(part) if is_dataclass(schema) else None
        if match is None:
            return annotation
        annotation = str(match.type)
        default = match.default_factory() if callable(match.default_factory) else None  # type: ignore[misc]
        schema = type(default) if is_dataclass(default) else None
    return annotation


def _is_section(dotted: str) -> bool:
    """True when ``dotted`` names a section of the tree (``actor``, ``model.lora``), not a value."""
    schema: Any = Config
    for part in dotted.split("."):
        match = {f.name: f for f in fields(schema)}.get(part) if is_dataclass(schema) else None
        default = match.default_factory() if match is not None and callable(match.default_factory) else None  # type: ignore[misc]
        if not is_dataclass(default):
            return False
        schema = type(default)
    return True


def _check_sections(node: DictConfig, source: str, prefix: str = "") -> None:
    """A section given a plain value (``trainer: 5``) is an error naming it; OmegaConf would say "bad value None"."""
    for key in node:
        dotted = f"{prefix}{key}"
        if not _is_section(dotted):
            continue
        value = node[key]
        if not isinstance(value, DictConfig):
            raise ConfigError(
                f"{source}: '{dotted}' is a section, not a value: give it a mapping of its keys (such as "
                f"{_example_key(dotted)}), got {value!r}"
            )
        _check_sections(value, source, dotted + ".")


def _example_key(section: str) -> str:
    return next(key for key in valid_keys() if key.startswith(section + "."))


def _unknown_section(bad_key: str) -> str | None:
    """The message for a key whose first part is no section at all (``optimizer.betas``): name the sections, and the
    key where a leaf of that name lives; None when the section exists (a bad key inside it)."""
    sections = [key for key in valid_keys() if "." not in key]
    head, _, rest = bad_key.partition(".")
    if head in sections:
        return None
    leaf = rest.rpartition(".")[2] if rest else head
    owners = [key for key in valid_keys() if key.rpartition(".")[2] == leaf and not _is_section(key)]
    where = f"; '{leaf}' is {' or '.join(owners)}" if owners else ""
    close = difflib.get_close_matches(head, sections, n=1, cutoff=0.6)
    mean = ""
    if close:
        mean = (
            f" (did you mean {close[0]}.{rest}?)"
            if f"{close[0]}.{rest}" in valid_keys()
            else f" (did you mean {close[0]}?)"
        )
    return f"unknown config section '{head}'{mean}: the sections are {', '.join(sections)}{where}"


def _did_you_mean(bad_key: str) -> str:
    matches = difflib.get_close_matches(bad_key, valid_keys(), n=1, cutoff=0.5)
    if not matches:  # a bad leaf under a good section: match the leaf name alone within that section
        section, _, leaf = bad_key.rpartition(".")
        candidates = [k for k in valid_keys() if k.startswith(section + ".")] if section else valid_keys()
        leaves = {k.rpartition(".")[2]: k for k in candidates}
        close = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.5)
        matches = [leaves[close[0]]] if close else []
    return f" (did you mean {matches[0]}?)" if matches else ""


def _explain(error: OmegaConfBaseException, source: str, override_key: str | None = None) -> ConfigError:
    key = getattr(error, "full_key", None) or "?"
    if override_key and isinstance(error, ConfigKeyError | ConfigAttributeError):
        key = override_key  # the whole dotted key the user typed, so the suggestion is a whole key too
    if isinstance(error, ConfigKeyError | ConfigAttributeError):
        section = _unknown_section(key) if "\n" not in key else None
        if section is not None:
            return ConfigError(f"{source}: {section}")
        # repr: a key holding a line break (a YAML key can) still makes a one-line message
        return ConfigError(f"{source}: unknown config key {key!r}{_did_you_mean(key)}")
    if isinstance(error, ValidationError):
        value = getattr(error, "value", None)
        return ConfigError(f"{source}: bad value {value!r} for '{key}': expected {_field_type(key)}")
    return ConfigError(f"{source}: {str(error).splitlines()[0]} (key '{key}')")


def _merge(base: DictConfig, other: DictConfig, source: str, override_key: str | None = None) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)  # type: ignore[return-value]
    except OmegaConfBaseException as error:
        raise _explain(error, source, override_key) from None
    except (TypeError, ValueError, OverflowError) as error:  # OmegaConf lets a few raw errors through
        where = f"'{override_key}'" if override_key else "a key"
        hint = f": expected {_field_type(override_key)}" if override_key in valid_keys() else ""
        raise ConfigError(f"{source}: {str(error).splitlines()[0]} at {where}{hint}") from None


def _yaml_problem(error: Exception) -> str:
    """What the YAML parser objects to and where (1-based line:column), on one line."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    what = getattr(error, "problem", None) or str(error).splitlines()[0]
    context = getattr(error, "context", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{what}{where}" + (f" ({context})" if context else "")


def load_config(yaml_path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """defaults < YAML < dotlist overrides (``["actor.lr=2e-6"]``), then validate()."""
    merged: DictConfig = OmegaConf.structured(Config)
    if yaml_path:
        path = Path(yaml_path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = OmegaConf.load(path)
        except Exception as error:  # yaml's scanner/parser errors: report them as config errors with the file
            raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(error)}") from None
        if not isinstance(loaded, DictConfig):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
        _check_sections(loaded, str(path))
        merged = _merge(merged, loaded, str(path))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value (e.g. actor.lr=2e-6)")
        if _is_section(item.split("=", 1)[0].strip()):
            section = item.split("=", 1)[0].strip()
            raise ConfigError(
                f"override '{item}': '{section}' is a section, not a value: set one of its keys, e.g. "
                f"{_example_key(section)}=..."
            )
        try:
            dot = OmegaConf.from_dotlist([item])
        except OmegaConfBaseException as error:
            raise ConfigError(f"override '{item}': {str(error).splitlines()[0]}") from None
        except yaml.YAMLError as error:  # the value is parsed as YAML: "[1, 2" or "'text" do not parse
            raise ConfigError(f"override '{item}': the value is not valid YAML: {_yaml_problem(error)}") from None
        merged = _merge(merged, dot, f"override '{item}'", item.split("=", 1)[0].strip())
    try:
        config: Config = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as error:
        raise _explain(error, "config") from None
    except (TypeError, ValueError, OverflowError) as error:
        raise ConfigError(f"config: {str(error).splitlines()[0]}") from None
    # reward.function, when set, replaces the default components: they are cleared here, so the saved config says
    # what is scored (the rules then see a function beside components only where the user set both).
    if config.reward.function and config.reward.components == RewardConfig().components:
        config.reward.components = []
    from rexthinker_rl.config.rules import check  # the rules import torch: `rexthinker-train --help` does not wait

    check(config)  # ranges, choices and cross-section consistency; config.derived follows, computed once
    return config


SECRET_ENV_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")
REDACTED = "<redacted: from a secret environment variable>"


def _secret_values() -> set[str]:
    """Values of environment variables whose names look like credentials (WANDB_API_KEY, HF_TOKEN, ...)."""
    return {
        value
        for name, value in os.environ.items()
        if len(value) >= 8 and any(marker in name.upper() for marker in SECRET_ENV_MARKERS)
    }


def to_yaml(config: Config) -> str:
    """The resolved config as YAML; ``load_config`` of it gives back an equal config. A value that came from a
    credential-like environment variable (e.g. ``${oc.env:WANDB_API_KEY}``) is written as a placeholder, never as is."""
    text = OmegaConf.to_yaml(OmegaConf.structured(config))
    for secret in _secret_values():
        text = text.replace(secret, REDACTED)
    return text


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config atomically (temp file + rename), without secrets."""
    from rexthinker_rl.utils import atomic_write_text  # utils imports torch: loading a config does not need it

    atomic_write_text(Path(path), to_yaml(config))
