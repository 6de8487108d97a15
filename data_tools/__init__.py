"""Dataset builders and checkers: the synthetic referring set (``synthetic``), ``validate``, and the
``rexthinker-data`` command (``cli``)."""
