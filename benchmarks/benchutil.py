"""What the benchmark scripts share (they run as ``python benchmarks/<script>.py``, so this folder is on sys.path)."""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

PIXELS = 112 * 112  # the synthetic set's 112 px images: 16 image tokens
REPO = Path(__file__).resolve().parents[1]


def prepare_model(model: str, work: Path) -> Path:
    """``work/model``: a link to ``--model``'s folder when one is given, else the tiny model built there (seed 0)."""
    target = work / "model"
    if model:
        os.symlink(Path(model).resolve(), target)
    else:
        from rexthinker_rl.model.tiny import build_tiny_model

        build_tiny_model(target, seed=0)
    return target


@contextlib.contextmanager
def like_model_dir(model: str, like: str, layers: int, vision_layers: int) -> Iterator[str]:
    """``model`` when given, else a random model of ``like``'s shape with ``layers`` text and ``vision_layers`` vision
    blocks, built in a temporary folder that lasts as long as the ``with`` block."""
    if model:
        yield model
        return
    from rexthinker_rl.model.shapes import build_shaped_model

    with tempfile.TemporaryDirectory() as tmp:
        yield str(build_shaped_model(Path(tmp) / "model", like, layers, vision_layers))


def tiny_overrides(model_dir, train_file, run_dir, prompts: int, group: int, max_tokens: int, steps: int) -> list[str]:
    """configs/grpo_tiny.yaml at a benchmark's sizes: every row in one micro-batch, every group trained on (no online
    filtering), no KL reference (nor the KL curve's), no validation, no checkpoint before the end, a fresh run folder."""
    rows = prompts * group
    return [
        f"model.path={model_dir}",
        f"data.train_files={train_file}",
        "data.val_files=''",
        f"data.rollout_batch_size={prompts}",
        f"data.max_response_length={max_tokens}",
        f"data.min_pixels={PIXELS}",
        f"data.max_pixels={PIXELS}",
        f"rollout.n={group}",
        f"actor.global_batch_size={prompts}",
        f"actor.micro_batch_size_per_device_for_update={rows}",
        f"actor.micro_batch_size_per_device_for_experience={rows}",
        "algorithm.online_filtering=false",
        "algorithm.kl_mode=none",
        "logging.kl_to_ref_freq=0",
        f"trainer.total_steps={steps}",
        "trainer.val_before_train=false",
        "trainer.val_freq=-1",
        f"trainer.output_dir={run_dir}",
        "trainer.resume=none",
        "checkpoint.save_freq=-1",  # the trainer still saves once after the last step, outside the timings
    ]


def run_clocked(config) -> tuple[list[float], list[dict], list[float]]:
    """Our trainer, unchanged, run to the end: the periods between step ends (the first includes start-up), the
    history of its steps, and the wall-clock times (``time.time``) at which training began and the last step ended
    (the window a memory peak is taken over: start-up and the final checkpoint are outside it)."""
    from rexthinker_rl.train.trainer import GRPOTrainer

    ends: list[float] = []
    walls: list[float] = []

    class ClockedTrainer(GRPOTrainer):
        """Our trainer, unchanged, with the wall-clock time at the end of every step recorded."""

        def train_step(self, step: int) -> dict[str, float]:
            metrics = super().train_step(step)
            ends.append(time.perf_counter())
            walls.append(time.time())
            return metrics

    trainer = ClockedTrainer(config)
    ends.append(time.perf_counter())
    walls.append(time.time())
    try:
        trainer.fit()
    finally:
        trainer.shutdown()
    periods = [later - earlier for earlier, later in zip(ends, ends[1:], strict=False)]
    return periods, [h for h in trainer.history if "timing/step" in h], [walls[0], walls[-1]]


SIDES = ("leftmost", "rightmost", "topmost", "bottommost")


def synthetic_kind(referring: str, rejection: bool) -> str:
    """What a synthetic-set prompt asks: rejection (nothing matches), position ("the leftmost circle"), multi ("all
    red circles") or colour ("the red circle")."""
    if rejection:
        return "rejection"
    if any(side in referring for side in SIDES):
        return "position"
    return "multi" if referring.startswith("all ") else "colour"


def hash_reward(inputs, **_) -> list[dict]:
    """A reward with contrast for a random model (which never earns the box or format reward, so every group would be
    all-equal): a fixed function of the response text in [0, 1), the same on every side of a benchmark."""
    import zlib

    return [{"overall": zlib.crc32(item["response"].encode()) % 1000 / 1000} for item in inputs]


class TreeMemory:
    """Peak memory of a process and all its descendants (Ray's GCS, raylet and workers, vLLM's engine), sampled every
    ``period`` seconds on a thread: the peak of the summed PSS (shared pages split between the processes that map
    them, so a side of several processes is not counted twice) and of the summed RSS."""

    def __init__(self, pid: int, period: float = 0.25):
        import threading

        import psutil

        self.root = psutil.Process(pid)
        self.period = period
        self.samples: list[tuple[float, int, int]] = []  # (time.time(), summed PSS, summed RSS)
        self.by_process: dict[str, int] = {}  # "<pid> <name>": its own peak PSS
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        while not self._stop.is_set():
            pss = rss = 0
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return  # the side has ended
            for process in processes:
                try:
                    info = process.memory_full_info()
                except psutil.Error:
                    continue  # ended between the listing and the reading
                pss, rss = pss + info.pss, rss + info.rss
                key = f"{process.pid} {_process_name(process)}"
                self.by_process[key] = max(self.by_process.get(key, 0), info.pss)
            self.samples.append((time.time(), pss, rss))
            self._stop.wait(self.period)

    def stop(self, window: tuple[float, float] | None = None) -> dict:
        """The peaks over ``window`` (wall-clock start, end: the training steps) if given and sampled, else over the
        whole run."""
        self._stop.set()
        self._thread.join()
        inside = [(pss, rss) for when, pss, rss in self.samples if window and window[0] <= when <= window[1]]
        chosen = inside or [(pss, rss) for _, pss, rss in self.samples] or [(0, 0)]
        peak_pss, peak_rss = max(pss for pss, _ in chosen), max(rss for _, rss in chosen)
        largest = sorted(self.by_process.items(), key=lambda item: -item[1])[:6]
        return {
            "peak_pss_gb": peak_pss / 2**30,
            "peak_rss_gb": peak_rss / 2**30,
            "largest_processes_gb": {name: round(pss / 2**30, 2) for name, pss in largest},
        }


def _process_name(process) -> str:
    """A Ray worker's title (``ray::ActorWorker``), else the executable's name."""
    try:
        line = process.cmdline()
    except Exception:  # noqa: BLE001 - ended, or not ours to read
        return "?"
    if not line:
        return "?"
    if line[0].startswith("ray::"):  # the title names the running method too: ray::ActorWorker.update
        return line[0].split()[0].split(".")[0]
    return Path(line[0]).name


def cpu_flags() -> str:
    """The vector extensions that decide CPU matmul speed (bf16 is slow without AVX-512: docs/performance.md)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "cpu flags unknown"
    have = [name for name in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {name}" in flags]
    return "+".join(have) or "no avx2"


def machine() -> str:
    """The machine a result was measured on: its architecture, cores and vector extensions (they decide CPU speed, and
    the float summation order that moves the tiny demo's SFT start: docs/tiny-demo.md)."""
    return f"{platform.machine()}, {os.cpu_count()} cores, {cpu_flags()}"
