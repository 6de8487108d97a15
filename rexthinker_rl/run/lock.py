"""One live run per run folder: the trainer holds an ``flock`` on ``<trainer.output_dir>/.run.lock`` for its lifetime.

Two trainers writing one folder would mix their metrics, rollouts and checkpoints; the second is refused with one line
naming the holder (its pid, host and start time, written into the lock file). The kernel drops an ``flock`` when its
process ends however it ends, so a crashed or killed run's folder is free at once: its successor takes it over and
says so in one line (the holder it names never released the lock file, which a clean exit empties). Nothing waits:
a held folder is refused at once.

An ``flock`` is per host on most network file systems: two hosts sharing one folder over NFS are not kept apart.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rexthinker_rl.run.outputs import OutputError

LOCK_FILE = ".run.lock"


def _holder(text: str) -> str:
    """The holder a lock file names, for a message ("pid 4711 on host-a, started 2026-12-04 10:00:00")."""
    try:
        record = json.loads(text)
        return f"pid {record['pid']} on {record['host']}, started {record['started']}"
    except (ValueError, KeyError, TypeError):
        return "a holder it does not name"


@dataclass
class RunLock:
    path: Path
    descriptor: int
    created_folder: bool  # the folder was made for this run: a start that fails removes it again if still empty

    @classmethod
    def acquire(cls, run_dir: Path, key: str = "trainer.output_dir") -> RunLock:
        """Hold ``run_dir``'s lock (making the folder if needed); OutputError when a live run holds it."""
        created = not run_dir.exists()
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / LOCK_FILE
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(path.read_text(errors="replace"))
            os.close(descriptor)
            raise OutputError(
                f"{key}={run_dir} is in use by another run ({holder}): two runs in one folder would mix their "
                f"metrics and checkpoints; wait for it to end, or choose another {key}"
            ) from None
        previous = os.pread(descriptor, 4096, 0).decode(errors="replace").strip()
        if previous:  # its holder ended without emptying it: it crashed or was killed (the kernel freed the lock)
            print(
                f"taking over {run_dir} from a run that ended without releasing it ({_holder(previous)})",
                file=sys.stderr,
                flush=True,
            )
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(record).encode(), 0)
        os.fsync(descriptor)
        return cls(path, descriptor, created)

    def release(self, started: bool = True) -> None:
        """Empty the lock file (a clean end) and let go. ``started=False``: the run never began; a folder made for it
        that holds nothing else is removed again."""
        if self.descriptor < 0:
            return
        os.ftruncate(self.descriptor, 0)
        if not started and self.created_folder and [p.name for p in self.path.parent.iterdir()] == [LOCK_FILE]:
            self.path.unlink()
            self.path.parent.rmdir()
        os.close(self.descriptor)  # closing the last descriptor drops the flock
        self.descriptor = -1
