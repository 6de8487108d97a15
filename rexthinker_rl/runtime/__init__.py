"""The run's processes, one object per topology, behind the controller's verbs (``base.Runtime``: generate, logprobs,
ref_logprobs, update, sync_weights, save, load, save_pretrained, shutdown): the topologies and their start
(``topology``, ``separate``, ``colocated``), the actor's ranks (``ranks``), the placement table of every role
(``placement``), the worker processes (``workers``), the process group (``process_group``), naming a worker that died
(``deaths``) and starting Ray safely (``ray_cluster``).

Nothing is imported here: ``ray_cluster`` must be importable before Ray is (it sets Ray's authentication first).
"""
