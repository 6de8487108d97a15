"""LoRA on the tiny model: only adapters train, the reference is the adapter-free base, merged weights are what the
rollout engine and a converted checkpoint get, and the conversion's logits match the trained adapter model."""

import pytest
import torch

from rexthinker_rl.algo.batch import split_mini_batches
from rexthinker_rl.apps.convert import convert_checkpoint
from rexthinker_rl.config import load_config, to_yaml
from rexthinker_rl.model.loading import load_model
from rexthinker_rl.train.checkpoint import CheckpointError, save_checkpoint
from rexthinker_rl.train.policy import Policy
from tests.tiny.test_policy import BASE, _batch

LORA = ["model.lora.rank=4", "model.lora.alpha=8", "actor.lr=1e-2", "actor.micro_batch_size_per_device_for_update=6"]
# Merged (W + s * B @ A) and unmerged (x W^T + s * x A^T B^T) differ by float round-off only.
MERGE_TOL = {"atol": 1e-5, "rtol": 1e-5}


@pytest.fixture(scope="module")
def trained(tiny_model_dir):
    config = load_config(None, BASE + LORA + [f"model.path={tiny_model_dir}"])
    policy = Policy(config, str(tiny_model_dir), trainable=True, total_updates=4)
    base_logprobs = Policy(config, str(tiny_model_dir), trainable=False).compute_logprobs(_batch(tiny_model_dir))
    before = {name: tensor.clone() for name, tensor in policy.checkpoint_state().items()}
    for _ in range(2):
        batch = _batch(tiny_model_dir)
        batch.old_logprobs = policy.compute_logprobs(batch)
        policy.update(split_mini_batches(batch, config)[0])
    return config, policy, before, base_logprobs


def test_only_adapters_change(trained):
    _, policy, before, _ = trained
    after = policy.checkpoint_state()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed, "nothing trained"
    assert all(".lora_" in name for name in changed), sorted(changed)[:5]
    assert not any("visual" in name for name in before if ".lora_" in name)  # language model only
    assert {p.requires_grad for n, p in policy.model.named_parameters() if ".lora_" not in n} == {False}


def test_reference_is_the_base_model_with_adapters_off(trained, tiny_model_dir):
    _, policy, _, base_logprobs = trained
    batch = _batch(tiny_model_dir)
    mask = batch.response_mask.bool()
    reference = policy.compute_ref_logprobs(batch)
    torch.testing.assert_close(reference[mask], base_logprobs[mask], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(policy.compute_logprobs(batch)[mask], base_logprobs[mask], atol=1e-4)


def test_merged_weights_give_the_adapter_models_outputs(trained, tiny_model_dir):
    config, policy, _, _ = trained
    merged = policy.state_dict()
    plain = load_model(str(tiny_model_dir))
    assert set(merged) == set(plain.state_dict())  # plain Hugging Face names: what vLLM loads
    plain.load_state_dict(merged)
    frozen = Policy(config, str(tiny_model_dir), trainable=False)
    frozen.model = plain
    batch = _batch(tiny_model_dir)
    mask = batch.response_mask.bool()
    torch.testing.assert_close(frozen.compute_logprobs(batch)[mask], policy.compute_logprobs(batch)[mask], **MERGE_TOL)


def test_lora_checkpoint_converts_to_a_merged_model(trained, tiny_model_dir, tmp_path):
    config, policy, _, _ = trained
    state = {"step": 2, "sampler": {}, "history": []}
    folder = save_checkpoint(tmp_path / "ckpts", 2, policy.checkpoint_state(), None, state, to_yaml(config))
    out = convert_checkpoint(folder, tmp_path / "hf")
    converted = Policy(config, str(tiny_model_dir), trainable=False)
    converted.model = load_model(str(out))
    assert not any(".lora_" in name for name in converted.model.state_dict())
    batch = _batch(tiny_model_dir)
    mask = batch.response_mask.bool()
    torch.testing.assert_close(
        converted.compute_logprobs(batch)[mask], policy.compute_logprobs(batch)[mask], **MERGE_TOL
    )


def test_lora_checkpoint_with_other_rank_is_refused(trained, tiny_model_dir, tmp_path):
    config, policy, _, _ = trained
    other = load_config(None, BASE + ["model.lora.rank=8", f"model.path={tiny_model_dir}"])
    state = {"step": 2, "sampler": {}, "history": []}
    folder = save_checkpoint(tmp_path / "ckpts", 2, policy.checkpoint_state(), None, state, to_yaml(other))
    with pytest.raises(CheckpointError, match="does not fit model.lora"):
        convert_checkpoint(folder, tmp_path / "hf")


def test_the_final_model_holds_the_merged_weights_without_a_copy(trained, tiny_model_dir, tmp_path):
    """``final/`` of a LoRA run: the merged weights, saved from a weightless skeleton of the base model (no second
    copy of the model in memory), with the base folder's generation config; it loads back to the same tensors."""
    from rexthinker_rl.model.loading import load_processor, save_hf_folder

    _, policy, _, _ = trained
    model, merged = policy.hf_model(), policy.state_dict()
    live = {name: p for name, p in policy.model.get_base_model().named_parameters() if ".lora_" not in name}
    embed = "model.language_model.embed_tokens.weight"  # frozen, not adapted: the policy's own tensor
    assert model.state_dict()[embed].data_ptr() == live[embed].data_ptr()
    assert not any(p.is_meta for p in model.parameters())
    out = save_hf_folder(model, load_processor(str(tiny_model_dir), 112 * 112, 112 * 112), tmp_path / "final")
    loaded = load_model(str(out)).state_dict()
    assert set(loaded) == set(merged) and all(torch.equal(loaded[name], merged[name]) for name in merged)
    assert (out / "generation_config.json").read_text() == (tiny_model_dir / "generation_config.json").read_text()
