"""Rex-Thinker RL: GRPO training of Qwen2.5-VL to reason before grounding."""

from rexthinker_rl import _torchvision_shim

_torchvision_shim.install()

__version__ = "0.1.0"
