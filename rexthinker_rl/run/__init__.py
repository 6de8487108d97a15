"""What a run leaves behind, and how it may write: the one rule for output folders (``outputs``), one live run per
folder (``lock``), metric sinks (``logging``), training curves (``plots``), the summary with its paired standard error
(``summary``) and what a step's rollouts tell (``rollout_log``)."""
