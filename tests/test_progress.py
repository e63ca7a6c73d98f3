"""jaxrobust.progress: a tqdm bar on a terminal, a plain line every interval in a log."""
from __future__ import annotations

import io as stdio

from tqdm import std as tqdm_std

from jaxrobust import progress


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_plain_progress_prints_once_per_interval_and_at_the_end():
    clock, out = _Clock(), stdio.StringIO()
    bar = progress.PlainProgress(total=10, desc="attack", unit="task", interval_s=20.0, file=out, clock=clock)
    for _ in range(10):
        clock.now += 7.0  # 7 s per task: lines after 21 s (3 tasks), 42 s (6), 63 s (9), and the end
        bar.update(1)
        bar.set_postfix({"tried": 2 * bar.n})
    bar.close()
    bar.close()  # a second close prints nothing
    lines = out.getvalue().splitlines()
    assert lines == [
        "attack: 3/10 task (30 %), 0.143 task/s, 21 s, tried=4",
        "attack: 6/10 task (60 %), 0.143 task/s, 42 s, tried=10",
        "attack: 9/10 task (90 %), 0.143 task/s, 63 s, tried=16",
        "attack: 10/10 task (100 %), 0.143 task/s, 70 s, tried=20",
    ]
    assert "\r" not in out.getvalue()


def test_disabled_or_empty_progress_prints_nothing():
    clock, out = _Clock(), stdio.StringIO()
    with progress.PlainProgress(total=5, disable=True, file=out, clock=clock) as bar:
        clock.now += 100.0
        bar.update(5)
    progress.PlainProgress(total=5, file=out, clock=clock).close()
    assert out.getvalue() == ""
    bar = progress.PlainProgress(total=5, leave=False, interval_s=20.0, file=out, clock=clock)
    clock.now += 30.0
    bar.update(2)  # past the interval: one line
    bar.update(3)
    bar.close()  # leave=False: no final line
    assert out.getvalue().splitlines() == ["2/5 it (40 %), 0.0667 it/s, 30 s"]


class _Stream:
    def __init__(self, tty):
        self.tty = tty

    def isatty(self):
        return self.tty


def test_tqdm_only_where_someone_watches(monkeypatch):
    assert progress.watched(_Stream(True))
    assert not progress.watched(_Stream(False))  # outside a notebook: a file or a pipe
    monkeypatch.setattr(progress, "watched", lambda stream=None: True)
    bar = progress.progress_bar(total=3, desc="x", disable=True)
    assert isinstance(bar, tqdm_std.tqdm)
    bar.close()
    monkeypatch.setattr(progress, "watched", lambda stream=None: False)
    assert isinstance(progress.progress_bar(total=3), progress.PlainProgress)
