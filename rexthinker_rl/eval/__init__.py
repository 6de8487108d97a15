"""HumanRef-style evaluation: metrics (``metrics``), benchmark files (``annotations``), batch inference (``run``) and
the ``rexthinker-eval`` command (``cli``)."""

from rexthinker_rl.eval.metrics import GroundTruth, evaluate, markdown_table, score_sample

__all__ = ["GroundTruth", "evaluate", "markdown_table", "score_sample"]
