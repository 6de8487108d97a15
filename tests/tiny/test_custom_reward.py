"""The README's custom reward (examples/custom_reward.py), loaded the way a user selects it
(``reward.function=path.py:fn`` + ``reward.kwargs``) and scored by the trainer's own reward path (RewardRunner,
score_all) on rows of the synthetic set as the data pipeline serves them. tests/faults/test_safety.py uses it in a
real run too."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rewards.types import RewardInput
from rexthinker_rl.config import ConfigError, load_config
from rexthinker_rl.data.dataset import RLDataset
from rexthinker_rl.model.loading import load_processor
from rexthinker_rl.train.rewarding import RewardError, RewardRunner, probe_inputs, score_all
from tests.conftest import TINY_OVERRIDES

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "custom_reward.py"
BOX = re.compile(r'"bbox_2d": \[(\d+), (\d+), (\d+), (\d+)\]')


@pytest.fixture(scope="module")
def setup(tiny_model_dir, synthetic_data_dir):
    overrides = [
        *TINY_OVERRIDES,
        f"data.train_files={synthetic_data_dir / 'train.parquet'}",
        "reward.components=[]",
        f"reward.function={EXAMPLE}:hint_faithful_f1",
        "reward.kwargs.penalty=0.25",
    ]
    config = load_config(None, overrides)
    processor = load_processor(str(tiny_model_dir), config.data.min_pixels, config.data.max_pixels)
    dataset = RLDataset(config.data.train_files, processor, config.data)
    targets = {row["id"]: row["sft_target"] for row in pq.read_table(config.data.train_files).to_pylist()}
    runner = RewardRunner(config.reward)
    runner.check(probe_inputs(dataset))  # the trainer's pre-flight check passes
    return runner, dataset, targets


def _inputs(dataset, completions) -> list[RewardInput]:
    return [
        RewardInput(
            response=completion(dataset[i]), ground_truth=dataset[i].ground_truth, metadata=dataset[i].metadata
        )
        for i in range(len(dataset))
        for completion in completions
    ]


def _moved(text: str) -> str:
    """The completion with its answer boxes moved 2 pixels right: IoU still above 0.5, but no longer a hint box."""
    think, _, answer = text.partition("<answer>")
    return (
        think
        + "<answer>"
        + BOX.sub(lambda m: f'"bbox_2d": [{int(m[1]) + 2}, {m[2]}, {int(m[3]) + 2}, {m[4]}]', answer)
    )


def test_the_example_scores_the_trained_completions(setup):
    runner, dataset, targets = setup
    scores = score_all(runner.spec, _inputs(dataset, [lambda s: targets[s.uid]]))
    # The SFT targets answer with the right hint boxes (or the rejection): full reward, all faithful.
    assert len(scores) == len(dataset) == 64
    assert {s["overall"] for s in scores} == {1.0} and {s["faithful"] for s in scores} == {1.0}


def test_a_box_off_the_hints_is_penalised_and_garbage_scores_zero(setup):
    runner, dataset, targets = setup
    with_boxes = [i for i in range(len(dataset)) if BOX.search(targets[dataset[i].uid].partition("<answer>")[2])]
    assert 10 < len(with_boxes) < len(dataset)  # both kinds of rows are in the set
    scores = score_all(
        runner.spec, _inputs(dataset, [lambda s: _moved(targets[s.uid]), lambda s: "no idea", lambda s: ""])
    )
    moved, garbage, empty = scores[0::3], scores[1::3], scores[2::3]
    for i in range(len(dataset)):
        if i in with_boxes:  # F1 is still 1 at IoU 0.5; reward.kwargs.penalty=0.25 applies
            assert (moved[i]["overall"], moved[i]["faithful"]) == (0.25, 0.0), targets[dataset[i].uid]
        else:  # a rejection has no box to move
            assert (moved[i]["overall"], moved[i]["faithful"]) == (1.0, 1.0)
        assert garbage[i]["overall"] == empty[i]["overall"] == 0.0  # scored, never raised


def test_a_malformed_ground_truth_stops_the_run_naming_the_row(setup):
    runner, dataset, targets = setup
    sample = dataset[0]
    bad = RewardInput(response=targets[sample.uid], ground_truth="[[1, 2", metadata=sample.metadata)
    with pytest.raises(RewardError, match=rf"row {re.escape(sample.uid)} \(batch index 0\).*malformed ground truth"):
        score_all(runner.spec, [bad])


def test_a_misspelt_keyword_is_a_config_error():
    overrides = ["reward.components=[]", f"reward.function={EXAMPLE}:hint_faithful_f1", "reward.kwargs.penalti=0.5"]
    with pytest.raises(ConfigError, match="'penalti': did you mean 'penalty'"):
        RewardRunner(load_config(None, overrides).reward)


def test_the_readme_shows_the_tested_code():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    code = EXAMPLE.read_text(encoding="utf-8").split('"""\n', 1)[1].strip()  # the file after its docstring
    blocks = [block.strip() for block in re.findall(r"```python\n(.*?)```", readme, re.DOTALL)]
    assert code in blocks, "README.md's custom reward block differs from examples/custom_reward.py"
    assert len([line for line in code.splitlines() if line.strip()]) <= 12  # "in ten lines", imports included
