"""Metric sinks behind one interface: console (one line per step), JSONL, TensorBoard, wandb."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Protocol

from rexthinker_rl.utils import atomic_write_text

CONSOLE_KEYS = (
    ("reward/overall", "reward"),
    ("actor/kl_loss", "kl"),
    ("response_length/mean", "len"),
    ("val/reward", "val"),
    ("timing/step", "s/step"),
)


def truncate_metrics(path: Path, keep_through: int) -> None:
    """Keep the steps of ``metrics.jsonl`` up to ``keep_through`` (what a resume from that checkpoint continues after):
    steps logged after it, before a crash, are run again and must not be doubled; a line torn by a crash or a full
    disk is dropped (that step is run again anyway)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record["step"] <= keep_through:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))


class Sink(Protocol):
    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class ConsoleSink:
    def __init__(self, total_steps: int) -> None:
        self.total_steps = total_steps

    def log(self, step: int, metrics: dict[str, float]) -> None:
        parts = [f"{label} {metrics[key]:.3f}" for key, label in CONSOLE_KEYS if key in metrics]
        print(f"step {step}/{self.total_steps} | " + " | ".join(parts), file=sys.stdout, flush=True)

    def close(self) -> None:
        pass


class JsonlSink:
    """Appends one JSON object per step; a resumed run continues the same file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = path.open("a", encoding="utf-8")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        record = {"step": step, "time": time.time(), **{k: _jsonable(v) for k, v in metrics.items()}}
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


class TensorBoardSink:
    def __init__(self, folder: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            if isinstance(value, int | float) and math.isfinite(value):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    def __init__(self, project: str, name: str, folder: Path, mode: str, config: dict[str, Any]) -> None:
        import wandb  # optional extra

        self.run = wandb.init(project=project, name=name, dir=str(folder), mode=mode, config=config)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLogger:
    """Fans each step's metrics out to the configured sinks."""

    def __init__(
        self,
        sinks: list[str],
        run_dir: Path,
        total_steps: int,
        project: str,
        name: str,
        wandb_mode: str = "offline",
        config: dict[str, Any] | None = None,
    ) -> None:
        factories = {
            "console": lambda: ConsoleSink(total_steps),
            "jsonl": lambda: JsonlSink(run_dir / "metrics.jsonl"),
            "tensorboard": lambda: TensorBoardSink(run_dir / "tensorboard"),
            "wandb": lambda: WandbSink(project, name, run_dir, wandb_mode, config or {}),
        }
        unknown = [s for s in sinks if s not in factories]
        if unknown:
            raise ValueError(f"logging.sinks: unknown sink(s) {unknown}; choose from {sorted(factories)}")
        self.sinks: list[Sink] = [factories[name]() for name in sinks]

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for sink in self.sinks:
            sink.log(step, metrics)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
