"""The tiny Qwen2.5-VL: built offline, deterministic, loaded by the same code as a real checkpoint, trainable."""

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from rexthinker_rl.model.loading import load_model, load_processor, vision_token_ids
from rexthinker_rl.model.tiny import build_tiny_model

PIXELS = 112 * 112


def _prompt(processor, text="Please detect the red circle."):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def test_folder_is_a_standard_checkpoint(tiny_model_dir):
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= names
    processor = load_processor(str(tiny_model_dir), PIXELS, PIXELS)
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    model = load_model(str(tiny_model_dir))
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    text_config = model.config.text_config
    assert text_config.hidden_size // text_config.num_attention_heads >= 64  # vLLM CPU attention needs it
    assert len(vision_token_ids(processor.tokenizer)) == 5


def test_build_is_deterministic(tmp_path, tiny_model_dir):
    again = build_tiny_model(tmp_path / "again", seed=0)
    first, second = load_file(tiny_model_dir / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = load_file(build_tiny_model(tmp_path / "other", seed=1) / "model.safetensors")
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_chat_template_matches_qwen_format(tiny_model_dir):
    processor = load_processor(str(tiny_model_dir), PIXELS, PIXELS)
    assert _prompt(processor, "hi") == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>hi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_generates_from_an_image_prompt_and_trains(tiny_model_dir):
    processor = load_processor(str(tiny_model_dir), PIXELS, PIXELS)
    model = load_model(str(tiny_model_dir))
    inputs = processor(text=[_prompt(processor)], images=[Image.new("RGB", (112, 112), "red")], return_tensors="pt")
    image_tokens = (inputs["input_ids"] == processor.image_token_id).sum().item()
    assert image_tokens == 16  # (112 / 28) ** 2 after the 2x2 merge
    out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = model(**inputs, labels=inputs["input_ids"]).loss
    loss.backward()
    assert torch.isfinite(loss)
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p)]
    assert any("visual" in n for n in changed) and any("layers" in n for n in changed)


def test_rope_theta_reaches_the_saved_config(tmp_path):
    """``rexthinker-tiny --rope-theta``: the base is written where transformers and vLLM read it, the default stays
    Qwen2.5-VL's 10^6 (docs/tiny-demo.md: the base at which the columns of a 4x4 image are invisible to the text)."""
    from rexthinker_rl.apps.tiny_cli import main

    main([str(tmp_path / "low"), "--rope-theta", "100"])
    main([str(tmp_path / "default")])
    low = load_model(str(tmp_path / "low")).config.text_config.rope_parameters
    default = load_model(str(tmp_path / "default")).config.text_config.rope_parameters
    assert low["rope_theta"] == 100.0 and default["rope_theta"] == 1e6
    assert low["mrope_section"] == default["mrope_section"]
    with pytest.raises(SystemExit) as refused:  # a base of 0 is refused in one line, not taken as the default
        main([str(tmp_path / "zero"), "--rope-theta", "0"])
    assert refused.value.code == 2 and not (tmp_path / "zero").exists()


def test_stored_parameter_count_is_the_models(tiny_model_dir, tmp_path):
    """What sizes the object store (the trainer's start): the parameters in the folder's safetensors headers."""
    from rexthinker_rl.model.loading import load_model, stored_parameter_count

    model = load_model(str(tiny_model_dir))
    assert stored_parameter_count(str(tiny_model_dir)) == sum(p.numel() for p in model.parameters()) > 0
    assert stored_parameter_count(str(tmp_path)) == 0  # no weights there: the batches' room only
