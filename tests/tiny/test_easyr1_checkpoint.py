"""EasyR1 actor checkpoints, as Rex-Thinker's training leaves them, come in whole: two gloo ranks write the tiny model's
FSDP sharded state dict as EasyR1's checkpoint manager does (rexthinker/verl/utils/checkpoint/fsdp_checkpoint_manager.py
lines 80-113: get_state_dict with cpu_offload, one torch.save a rank, config / generation config / processor under
huggingface/) with the parameter names of transformers 4.51; ``rexthinker-convert`` turns it into a Hugging Face folder
whose tensors equal the original converter's merge (tests/rexthinker_original.py), which transformers loads, and a run
can start from it. Files holding anything but tensors and DTensors are refused unrun."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import load_file

from rexthinker_rl.apps.convert import main as convert_main
from rexthinker_rl.model.easyr1_checkpoint import current_name, load_rank_file, merge_actor, model_for_run
from rexthinker_rl.train.checkpoint import CheckpointError
from tests import rexthinker_original as original
from tests.scale.ranks import run_ranks

SPAWNS_RANKS = pytest.mark.slow  # 2 gloo processes: ~20-40 s on 2 cores


@pytest.fixture(scope="module")
def easyr1_step(tiny_model_dir, tmp_path_factory):
    """work_dirs/.../global_step_3 with actor/ as EasyR1 writes it, from the tiny model on 2 gloo ranks."""
    step = tmp_path_factory.mktemp("easyr1") / "global_step_3"
    (step / "actor").mkdir(parents=True)
    run_ranks(original.write_easyr1_actor, 2, (str(tiny_model_dir), str(step / "actor")), step.parent)
    return step


def write_placements(rank: int, world_size: int, root: str) -> None:
    """Rank files of DTensors in every placement the original converter merges: sharded along dimension 0 (unevenly)
    and 1, replicated, a plain tensor (different on each rank), over EasyR1's ("fsdp",) mesh; and over an HSDP
    ("ddp", "fsdp") mesh of 2 x 1, where each rank holds a full replica."""
    from pathlib import Path

    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    full = {name: torch.arange(n, dtype=torch.float32).reshape(shape) / 7 for name, n, shape in
            (("a", 15, (5, 3)), ("b", 10, (2, 5)), ("c", 4, (4,)))}  # fmt: skip
    fsdp = init_device_mesh("cpu", (world_size,), mesh_dim_names=("fsdp",))
    state = {
        "a": distribute_tensor(full["a"], fsdp, [Shard(0)]),
        "b": distribute_tensor(full["b"], fsdp, [Shard(1)]),
        "c": distribute_tensor(full["c"], fsdp, [Replicate()]),
        "d": torch.full((3, 2), float(rank)),
    }
    for name, mesh, placements in (("fsdp", fsdp, None), ("hsdp", None, [Replicate(), Shard(0)])):
        folder = Path(root) / name
        folder.mkdir(exist_ok=True)
        if placements is not None:
            mesh = init_device_mesh("cpu", (world_size, 1), mesh_dim_names=("ddp", "fsdp"))
            state = {key: distribute_tensor(value, mesh, placements) for key, value in full.items()}
        torch.save(state, folder / f"model_world_size_{world_size}_rank_{rank}.pt")


@SPAWNS_RANKS
def test_every_placement_merges_as_the_original_merges(tmp_path):
    run_ranks(write_placements, 2, (str(tmp_path),), tmp_path)
    for name in ("fsdp", "hsdp"):
        theirs, ours = original.easyr1_merge(tmp_path / name), merge_actor(tmp_path / name)
        assert ours.keys() == theirs.keys()
        for key in theirs:
            assert ours[key].dtype == torch.bfloat16 and torch.equal(ours[key], theirs[key]), (name, key)
    full = merge_actor(tmp_path / "fsdp")
    assert full["a"].shape == (5, 3) and full["b"].shape == (2, 5) and full["c"].shape == (4,)
    assert full["d"].shape == (6, 2)  # a plain tensor: every rank's, one after the other (the original's rule)


def _folder_tensors(folder) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors |= load_file(file)
    return tensors


@SPAWNS_RANKS
def test_rank_files_hold_dtensors_sharded_as_fsdp_saves_them(easyr1_step):
    from torch.distributed.tensor import DTensor, Shard

    ranks = [load_rank_file(easyr1_step / "actor" / f"model_world_size_2_rank_{rank}.pt") for rank in (0, 1)]
    assert set(ranks[0]) == set(ranks[1]) and any(key.startswith("visual.") for key in ranks[0])
    assert any(key.startswith("model.layers.") for key in ranks[0])  # the names of the transformers of the time
    for key, tensor in ranks[0].items():
        assert isinstance(tensor, DTensor) and tuple(tensor.placements) == (Shard(0),), key
        assert tensor.device_mesh.mesh_dim_names == ("fsdp",)
        assert tensor.to_local().shape[0] + ranks[1][key].to_local().shape[0] == tensor.shape[0]  # halves


@SPAWNS_RANKS
def test_converted_folder_equals_the_original_merge_and_loads(easyr1_step, tiny_model_dir, tmp_path, capsys):
    from transformers import Qwen2_5_VLForConditionalGeneration

    out = tmp_path / "hf"
    convert_main([str(easyr1_step), str(out)])  # the global_step folder; its actor/ is found
    assert f"written to {out}" in capsys.readouterr().out
    theirs = original.easyr1_merge(easyr1_step / "actor")
    ours = _folder_tensors(out)
    tied = "lm_head.weight" not in ours  # the tiny model ties its head to the embedding, as the 3B does
    assert set(ours) == set(theirs) - ({"lm_head.weight"} if tied else set())
    for key, tensor in ours.items():
        assert tensor.dtype == torch.bfloat16 and torch.equal(tensor, theirs[key]), key  # tensor for tensor
    loaded = Qwen2_5_VLForConditionalGeneration.from_pretrained(out, dtype=torch.bfloat16)
    trained = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model_dir, dtype=torch.float32).state_dict()
    for key, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, trained[key].bfloat16()), key  # every weight, in today's names
    assert merge_actor(easyr1_step / "actor").keys() == theirs.keys()
    assert '"transformers_version": "4.51.3"' in (easyr1_step / "actor" / "huggingface" / "config.json").read_text()


def test_names_map_as_transformers_own_mapping_does():
    from transformers.conversion_mapping import get_checkpoint_conversion_mapping

    renamings = get_checkpoint_conversion_mapping("Qwen2_5_VLForConditionalGeneration")
    old_names = ["model.layers.0.mlp.up_proj.weight", "model.embed_tokens.weight", "model.norm.weight",
                 "visual.blocks.1.attn.qkv.bias", "visual.merger.mlp.0.weight", "lm_head.weight"]  # fmt: skip
    for name in old_names:
        expected = name
        for renaming in renamings:
            expected = renaming.rename_source_key(expected)[0]
        assert current_name(name) == expected
    assert current_name("model.language_model.norm.weight") == "model.language_model.norm.weight"  # already today's


def test_a_file_holding_other_objects_is_refused_unrun(tmp_path):
    actor = tmp_path / "actor"
    actor.mkdir()
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    rank_file = actor / "model_world_size_1_rank_0.pt"
    for write in (
        lambda: torch.save({"w": Payload()}, rank_file),
        lambda: rank_file.write_bytes(pickle.dumps(Payload())),
    ):
        write()  # torch.save's zip format, and a bare pickle
        with pytest.raises(CheckpointError, match="refused to load: it holds objects other than tensors, DTensors"):
            merge_actor(actor)
        assert not marker.exists()
    (actor / "model_world_size_1_rank_0.pt").unlink()
    (actor / "model_world_size_2_rank_0.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="1 of 2 rank files missing"):
        merge_actor(actor)


@SPAWNS_RANKS
def test_a_run_starts_from_an_easyr1_checkpoint(easyr1_step, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    path = model_for_run(str(easyr1_step), run)
    assert path == str(run / "easyr1_model") and "converting it once" in capsys.readouterr().out
    stamp = (run / "easyr1_model" / "model.safetensors").stat().st_mtime_ns
    assert model_for_run(str(easyr1_step), run) == path  # a resume reuses the conversion
    assert (run / "easyr1_model" / "model.safetensors").stat().st_mtime_ns == stamp
    assert model_for_run("/models/plain", run) == "/models/plain"
