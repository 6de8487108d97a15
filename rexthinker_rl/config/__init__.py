"""The configuration: one typed tree of dataclasses (``schema``: every key documented under it, and the values derived
from a config), the rules a valid config keeps (``rules``), loading it from defaults, YAML and ``key=value`` overrides
with one-line errors (``loading``), and the generated reference page (``doc``, docs/configuration.md).

``from rexthinker_rl.config import load_config, Config`` is the way in; the section classes are importable from here.
"""

from rexthinker_rl.config.loading import REDACTED, load_config, save_config, to_yaml, valid_keys
from rexthinker_rl.config.schema import (
    ActorConfig,
    AlgorithmConfig,
    CheckpointConfig,
    Config,
    DataConfig,
    LoggingConfig,
    LoraConfig,
    ModelConfig,
    RefConfig,
    RewardComponent,
    RewardConfig,
    RolloutConfig,
    SFTConfig,
    TrainerConfig,
    compute_device,
)
from rexthinker_rl.errors import ConfigError

__all__ = [
    "REDACTED",
    "ActorConfig",
    "AlgorithmConfig",
    "CheckpointConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "LoggingConfig",
    "LoraConfig",
    "ModelConfig",
    "RefConfig",
    "RewardComponent",
    "RewardConfig",
    "RolloutConfig",
    "SFTConfig",
    "TrainerConfig",
    "compute_device",
    "load_config",
    "save_config",
    "to_yaml",
    "valid_keys",
]
