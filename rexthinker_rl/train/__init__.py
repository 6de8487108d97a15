"""Training: the policy and its one update path on a training backend (``policy``, ``backends/``: torch, FSDP2,
DeepSpeed), the controller whose ``fit()`` reads as the algorithm (``trainer``), the batch in flight and the weight
versions (``pipeline``), reward scoring in a Ray actor (``rewarding``), atomic checkpoints (``checkpoint``) and the
SFT warm start (``sft``)."""
