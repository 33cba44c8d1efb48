"""Long stages report progress in log files too (tqdm disables itself there)."""
from __future__ import annotations

import logging

from espnet_bertkd.utils.progress import Progress, format_seconds


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_logs_rate_and_time_left_at_intervals(caplog):
    clock = Clock()
    caplog.set_level(logging.INFO)
    progress = Progress(100, "teacher MLM", unit="step", interval=30.0, tty=False, clock=clock)
    for _ in range(10):  # 10 steps in 20 s: under the interval, nothing logged
        clock.now += 2.0
        progress.update(1)
    assert caplog.messages == []
    for _ in range(5):  # 15 steps in 30 s
        clock.now += 2.0
        progress.update(1, note="loss 4.2")
    assert caplog.messages == [
        "teacher MLM: 15/100 step (15 %), 0.50 step/s, 0m30s elapsed, about 2m50s left; loss 4.2"]
    progress.close()
    assert caplog.messages[-1] == "teacher MLM: 15/100 step (15 %), 0.50 step/s, 0m30s elapsed, done"


def test_terminal_gets_a_bar_and_no_log_lines(caplog):
    caplog.set_level(logging.INFO)
    with Progress(3, "x", tty=True, clock=Clock()) as progress:
        progress.update(3)
        assert progress.bar is not None and progress.bar.n == 3
    assert caplog.messages == []


def test_format_seconds():
    assert format_seconds(59.6) == "1m00s" and format_seconds(3725) == "1h02m05s"
