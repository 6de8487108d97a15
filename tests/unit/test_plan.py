"""rexthinker-plan and the named shapes: parameter counts of the real Qwen2.5-VL-7B (meta device, no weights), the
memory formulas against hand-computed values, verdicts and knobs, and one-line errors for bad input."""

from pathlib import Path

import pytest

from rexthinker_rl.apps.plan import GIB, gpu_plan, head_bytes, main, model_shape, parse_size, verdict
from rexthinker_rl.config import load_config
from rexthinker_rl.model.shapes import ShapeError, kept_fullatt_blocks, shape_config

RECIPE = "configs/grpo_refcocog.yaml"


@pytest.fixture(scope="module")
def qwen7b():
    return model_shape(load_config(RECIPE, []), "qwen2.5-vl-7b")


def test_qwen7b_parameter_counts(qwen7b):
    assert qwen7b.total == 8_292_166_656  # Qwen2.5-VL-7B-Instruct's published size (8.29B)
    assert qwen7b.embed == qwen7b.head == 152_064 * 3_584  # untied
    # q, k, v (with bias) + o + gate/up/down + 2 norms: 3584^2 + 3584 + 2 (3584 x 512 + 512) + 3584^2 + 3 x 3584 x 18944
    assert qwen7b.layer == 233_057_792 and qwen7b.layers == 28
    assert (qwen7b.vision_depth, qwen7b.kv_dim, qwen7b.kv_heads) == (32, 512, 4)
    assert qwen7b.root == qwen7b.total - 28 * qwen7b.layer - 32 * qwen7b.vision_block


def test_head_memory_by_hand(qwen7b):
    vocab, hidden = 152_064, 3_584
    chunked = load_config(None, ["model.dtype=float32", "model.lora.rank=8", "data.max_response_length=2048"])
    response = 4 * 2048  # micro_batch_size_per_device_for_update=4 rows
    assert head_bytes(chunked, qwen7b, True) == 256 * vocab * 4 * 2 + response * hidden * 4
    everything = load_config(
        None, ["model.dtype=float32", "actor.logprob_chunk_tokens=0", "data.max_response_length=2048"]
    )
    assert head_bytes(everything, qwen7b, True) == response * vocab * 4 * 4
    assert head_bytes(everything, qwen7b, False) == 16 * 2048 * vocab * 4 * 2  # 16 rows a log-prob micro-batch


def test_paper_recipe_fits_8x80_and_names_a_knob_on_small_gpus(qwen7b):
    overrides = ["trainer.n_gpus_per_node=8"]
    assert verdict(RECIPE, overrides, qwen7b, 80 * GIB).fits
    small = verdict(
        RECIPE, overrides + ["actor.offload_params=false", "actor.offload_optimizer=false"], qwen7b, 24 * GIB
    )
    assert not small.fits and small.knob and small.knob_peak < small.peak


def test_chunking_is_the_first_knob_when_all_logits_do_not_fit(qwen7b):
    """4 rows of 4,096 + 4,096 tokens an update micro-batch, 16 a log-prob one: all-logits needs ~100 GiB."""
    overrides = ["trainer.n_gpus_per_node=8", "actor.logprob_chunk_tokens=0", "actor.max_tokens_per_micro_batch=0"]
    overrides += [
        "actor.micro_batch_size_per_device_for_update=4",
        "actor.micro_batch_size_per_device_for_experience=16",
    ]
    result = verdict(RECIPE, overrides, qwen7b, 40 * GIB)
    assert not result.fits and result.peak > 90 * GIB
    assert result.knob == ["actor.logprob_chunk_tokens=256"] and result.knob_peak <= 40 * GIB


def test_offloaded_and_sharded_state_moves_between_gpu_and_host(qwen7b):
    on_gpu, _ = gpu_plan(load_config(RECIPE, ["actor.offload_params=false"]), qwen7b, 80 * GIB)
    offloaded, _ = gpu_plan(load_config(RECIPE, []), qwen7b, 80 * GIB)
    assert on_gpu.rows["actor weights (fp32 shard)"][2] == pytest.approx(qwen7b.total * 4 / 8)
    assert offloaded.rows["actor weights (fp32 shard)"][2] == 0
    assert offloaded.host["actor offloaded state"] > on_gpu.host["actor offloaded state"]
    assert offloaded.host_load >= 8 * qwen7b.total * 4  # every rank reads the whole float32 model before sharding


@pytest.mark.parametrize(("kept", "expected"), [(1, [0]), (2, [1]), (8, [7]), (9, [0, 8]), (32, [7, 15, 23, 31])])
def test_cut_vision_tower_keeps_the_released_window_pattern(kept, expected):
    assert kept_fullatt_blocks([7, 15, 23, 31], 32, kept) == expected
    config = shape_config("qwen2.5-vl-7b", 1, kept).vision_config
    assert config.fullatt_block_indexes == expected and config.depth == kept


def test_bad_shapes_and_sizes_are_one_line_errors(capsys):
    with pytest.raises(ShapeError, match="known shapes: qwen2.5-vl-3b, qwen2.5-vl-7b"):
        shape_config("qwen2.5-vl-8b")
    with pytest.raises(ShapeError, match="1 to 28 text blocks"):
        shape_config("qwen2.5-vl-7b", layers=29)
    assert parse_size("80GiB") == 80 * GIB and parse_size("40GB") == 40e9
    for argv in (["--shape", "qwen2.5-vl-7b", "--gpu-mem", "eighty"], ["model.path=/nonexistent/folder"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--gpu-mem", "0GiB"], "error: --gpu-mem '0GiB': expected a size above 0"),  # was a ZeroDivisionError
        (["--gpus", "0"], "error: --gpus 0: expected a positive count (trainer.n_gpus_per_node)"),  # was ignored
        (["--nodes", "0"], "error: --nodes 0: expected a positive count (trainer.nnodes)"),  # was ignored
    ],
)
def test_zero_gpus_nodes_or_memory_are_refused(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--shape", "qwen2.5-vl-7b", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(expected) and err.count("\n") == 1


def test_tiny_cli_refuses_to_change_a_real_shape(tmp_path, capsys):
    from rexthinker_rl.apps.tiny_cli import main as tiny_main

    for argv in (["--like", "qwen2.5-vl-7b", "--hidden", "512"], ["--like", "qwen2.5-vl-7b", "--layers", "40"]):
        with pytest.raises(SystemExit) as exit_info:
            tiny_main([*argv, str(tmp_path / "out")])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_plan_of_the_paper_recipe_knows_the_released_models_shape(capsys, tmp_path, monkeypatch):
    # rexthinker/scripts/grpo_tune_refcocog.sh line 40: MODEL_PATH="IDEA-Research/Rex-Thinker-GRPO-7B" (a hub id; the
    # README's line 63: it is built on Qwen2.5-VL), and configs/grpo_refcocog.yaml names it as such.
    main([RECIPE])
    printed = capsys.readouterr().out
    assert printed.startswith(
        "model.path=IDEA-Research/Rex-Thinker-GRPO-7B: planned with its known shape, qwen2.5-vl-7b"
    )
    assert "model: 8.29B parameters" in printed and "fits on 80 GiB" in printed
    for hub_id, total in (("Qwen/Qwen2.5-VL-7B-Instruct", "8.29B"), ("Qwen/Qwen2.5-VL-3B-Instruct", "3.75B")):
        main([RECIPE, f"model.path={hub_id}"])
        assert f"model: {total} parameters" in capsys.readouterr().out
    # An unknown id is one line naming the known ones; a local folder of a known id's name is read, not assumed.
    with pytest.raises(SystemExit):
        main([RECIPE, "model.path=someone/Other-7B"])
    assert "name a released model (IDEA-Research/Rex-Thinker-GRPO-7B, " in capsys.readouterr().err
    folder = tmp_path / "IDEA-Research" / "Rex-Thinker-GRPO-7B"
    folder.mkdir(parents=True)
    shape_config("qwen2.5-vl-3b").save_pretrained(folder)
    recipe = str(Path(RECIPE).resolve())
    monkeypatch.chdir(tmp_path)  # model.path=IDEA-Research/Rex-Thinker-GRPO-7B now names that folder
    main([recipe])
    printed = capsys.readouterr().out
    assert "model: 3.75B parameters" in printed and "known shape" not in printed
