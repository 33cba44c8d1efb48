"""Progress of a long loop that shows in a terminal and in a log file alike.

tqdm draws a bar on a terminal but, as the recipes run their stages with output piped to logs (`... | tee log`,
run_jobs' log files), it disables itself there and a 5-minute stage prints nothing. On a pipe this logs one INFO
line every `interval` seconds instead, the way ESPnet's trainer reports every `log_interval` batches: done/total,
rate, elapsed time and an estimate of the time left.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Callable, Optional

from tqdm import tqdm


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class Progress:
    """`update(n)` as tqdm's; on a terminal it is tqdm, elsewhere interval log lines (see the module docstring)."""

    def __init__(self, total: int, desc: str, unit: str = "it", interval: float = 30.0,
                 tty: Optional[bool] = None, clock: Callable[[], float] = time.monotonic,
                 logger: logging.Logger = logging.getLogger(__name__)) -> None:
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.clock, self.logger = clock, logger
        self.done = 0
        self.start = self.last_log = clock()
        self.bar = tqdm(total=total, desc=desc, unit=unit) if self.tty else None

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            if note:
                self.bar.set_postfix_str(note)
            return
        now = self.clock()
        if now - self.last_log >= self.interval:
            self.last_log = now
            self.logger.info(self.line(now, note))

    def line(self, now: float, note: str = "", finished: bool = False) -> str:
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        text = (f"{self.desc}: {self.done}/{self.total} {self.unit} ({100 * self.done / max(self.total, 1):.0f} %), "
                f"{rate:.2f} {self.unit}/s, {format_seconds(elapsed)} elapsed")
        if finished:
            return text + ", done"
        left = format_seconds((self.total - self.done) / rate) if rate > 0 else "?"
        text += f", about {left} left"
        return f"{text}; {note}" if note else text

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.done:
            self.logger.info(self.line(self.clock(), finished=True))

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
