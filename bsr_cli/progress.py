"""Progress of a long run on stderr: one rule for every command (upscale, eval, profile --latency, download).

On a terminal: a rich bar with elapsed time and ETA, cleared when the run ends. Otherwise (a log file, CI, a
pipe): quiet for the first ``every`` seconds, so short runs print nothing, then one plain line per ``every``
seconds with what is done, the elapsed time and the ETA::

    bsr eval: ebsr-light Set14 x4 6/14 (43 %), 0m12s elapsed, ETA 0m16s

The ETA is linear in the fraction done of the first (overall) task; a caller may report fractions
(``update(task, 2.5)``) when one item has sub-steps (tiles of an image).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

DEFAULT_EVERY_S = float(os.environ.get("BSR_PROGRESS_EVERY", "10"))


def format_duration(seconds: float) -> str:
    """``75.2`` -> ``1m15s``; ``3725`` -> ``1h02m05s``."""
    s = int(round(max(0.0, seconds)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def eta_seconds(done: float, total: float | None, elapsed: float) -> float | None:
    """Seconds left if the rest goes at the pace so far; None while nothing is done or the total is unknown."""
    if not total or done <= 0:
        return None
    return elapsed * (total - done) / done


@dataclass
class _Task:
    label: str
    total: float | None
    done: float = 0.0
    visible: bool = True


class Progress:
    """Tasks with a done/total count, shown as a rich bar on a terminal or as periodic log lines otherwise.

    Use as a context manager; ``add`` returns a task id for ``update``/``advance``. ``enabled=False`` (e.g.
    with --json on a terminal) shows nothing. ``stream`` and ``clock`` are for tests.
    """

    def __init__(self, prefix: str, enabled: bool = True, every: float = DEFAULT_EVERY_S, stream=None,
                 clock=time.monotonic, terminal: bool | None = None):
        self.prefix = prefix
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.every = every
        self.tasks: list[_Task] = []
        is_tty = terminal if terminal is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        self.mode = "off" if not enabled else ("bar" if is_tty else "log")
        self._bar = None
        self._ids: list[int] = []
        self._start = self._last = 0.0

    def __enter__(self) -> "Progress":
        self._start = self._last = self.clock()
        if self.mode == "bar":
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                     console=Console(file=self.stream), transient=True)
            self._bar.__enter__()
            for t in self.tasks:
                self._ids.append(self._bar.add_task(t.label, total=t.total, visible=t.visible))
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None

    def add(self, label: str, total: float | None = None, visible: bool = True) -> int:
        self.tasks.append(_Task(label, total, 0.0, visible))
        if self._bar is not None:
            self._ids.append(self._bar.add_task(label, total=total, visible=visible))
        return len(self.tasks) - 1

    def update(self, task: int, done: float, total: float | None = None, label: str | None = None,
               visible: bool | None = None) -> None:
        t = self.tasks[task]
        t.done = done
        t.total = total if total is not None else t.total
        t.label = label if label is not None else t.label
        t.visible = visible if visible is not None else t.visible
        if self._bar is not None:
            self._bar.update(self._ids[task], completed=done, total=t.total, description=t.label, visible=t.visible)
        elif self.mode == "log" and task == 0:  # lines follow the overall task; sub-tasks ride along
            self._maybe_log()

    def advance(self, task: int, n: float = 1.0) -> None:
        self.update(task, self.tasks[task].done + n)

    def line(self) -> str:
        """The log line for the current state (first task = overall, others shown in parentheses)."""
        elapsed = self.clock() - self._start
        head, *rest = self.tasks
        pct = f" ({100 * head.done / head.total:.0f} %)" if head.total else ""
        count = f"{int(head.done)}/{int(head.total)}" if head.total else f"{int(head.done)}"
        sub = [f"{t.label} {int(t.done)}/{int(t.total)}" for t in rest if t.visible and t.total]
        eta = eta_seconds(head.done, head.total, elapsed)
        eta_txt = f", ETA {format_duration(eta)}" if eta is not None else ""
        sub_txt = f" ({'; '.join(sub)})" if sub else ""
        return (f"{self.prefix}: {head.label} {count}{pct}{sub_txt}, {format_duration(elapsed)} elapsed"
                f"{eta_txt}")

    def _maybe_log(self) -> None:
        now = self.clock()
        if not self.tasks or now - self._last < self.every:
            return
        self._last = now
        print(self.line(), file=self.stream, flush=True)
