"""Training progress for people: one stderr line with step, loss, speed and ETA."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from training.lora_trainer import TrainingProgress


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def describe(progress: TrainingProgress, label: str = "") -> str:
    prefix = f"{label}: " if label else ""
    return (f"{prefix}step {progress.step}/{progress.total}  loss {progress.loss:.4f}  "
            f"{progress.seconds_per_step:.2f} s/step  eta {format_seconds(progress.eta_seconds)}")


class ProgressPrinter:
    """A callback for :meth:`LoraTrainer.train`: rewrites one line on a terminal, else prints a
    line every ``every_seconds`` (and at the last step)."""

    def __init__(self, label: str = "", stream: TextIO | None = None, every_seconds: float = 10.0) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.every_seconds = every_seconds
        self.last = 0.0
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def __call__(self, progress: TrainingProgress) -> None:
        line = describe(progress, self.label)
        done = progress.step >= progress.total
        if self.tty:
            self.stream.write("\r" + line.ljust(100) + ("\n" if done else ""))
            self.stream.flush()
            return
        now = time.monotonic()
        if done or now - self.last >= self.every_seconds:
            self.last = now
            print(line, file=self.stream, flush=True)

    def message(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r" + " " * 100 + "\r")
        print(f"{self.label}: {text}" if self.label else text, file=self.stream, flush=True)
