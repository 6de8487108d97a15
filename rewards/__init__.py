"""Reward functions for grounded reasoning: plain functions behind one contract (see ``rewards.types``).

- ``rewards.box:iou_f1``: box F1 by one-to-one IoU matching (the accuracy part of the default reward).
- ``rewards.format:format_reward``: ``<think>...</think><answer>...</answer>`` validity.
- ``rewards.rejection:rejection_reward``: reject exactly when nothing matches.
- ``rewards.rexthinker:rexthinker_reward``: the Rex-Thinker reward, reproduced exactly.
- ``rewards.composite``: load functions by name, weighted sums, ``DEFAULT_COMPONENTS``.
"""

from rewards.types import RewardInput, RewardScore

__all__ = ["RewardInput", "RewardScore"]
