"""Progress of long loops: a tqdm bar on a terminal, a plain line every ~20 s in a log.

tqdm redraws its bar with carriage returns several times a second; when stderr goes to a file
(CI, `> log 2>&1`) every redraw stays in the file, and a quick-study log is then mostly bar
frames. `progress_bar` gives tqdm where someone watches (a terminal, or a notebook, where
tqdm.auto draws a widget) and otherwise a `PlainProgress` that prints one line per interval
and one at the end. Both take the same calls: update(n), set_postfix(dict), close().
"""
from __future__ import annotations

import sys
import time

from tqdm import std as tqdm_std
from tqdm.auto import tqdm as auto_tqdm
from tqdm.autonotebook import tqdm as notebook_tqdm  # after tqdm.auto, which silences its warning

INTERVAL_S = 20.0  # seconds between plain progress lines (one every ~10-30 s in a log)


class PlainProgress:
    """tqdm's counting interface, printed as `desc: n/total unit (pct), rate, elapsed, postfix` lines.

    A line every `interval_s` seconds of updates, and one at close when `leave` (as tqdm's `leave`:
    a bar that would vanish from the terminal, such as an epoch's, leaves no final line either).
    """

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", disable: bool = False,
                 leave: bool = True, interval_s: float = INTERVAL_S, file=None, clock=time.monotonic):
        self.total, self.desc, self.unit, self.disable, self.leave = total, desc, unit, disable, leave
        self.interval_s, self.file, self.clock = interval_s, file, clock
        self.n, self.postfix = 0, {}
        self.start = self.last_print = clock()
        self.closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        if not self.disable and self.clock() - self.last_print >= self.interval_s:
            self._print()

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        self.postfix = dict(ordered_dict or {}, **kwargs)

    def close(self) -> None:
        if not self.closed and not self.disable and self.leave and self.n:
            self._print()
        self.closed = True

    def line(self) -> str:
        elapsed = self.clock() - self.start
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        percent = f" ({100.0 * self.n / self.total:.0f} %)" if self.total else ""
        rate = f", {self.n / elapsed:.3g} {self.unit}/s" if elapsed > 0 else ""
        extra = "".join(f", {k}={_short(v)}" for k, v in self.postfix.items())
        return f"{self.desc + ': ' if self.desc else ''}{count} {self.unit}{percent}{rate}, {elapsed:.0f} s{extra}"

    def _print(self) -> None:
        print(self.line(), file=self.file or sys.stderr, flush=True)
        self.last_print = self.clock()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def watched(stream=None) -> bool:
    """Whether progress output is seen live: `stream` (stderr) is a terminal, or tqdm.auto has
    picked its notebook widget (a Jupyter kernel's stderr is not a terminal)."""
    stream = stream or sys.stderr
    return notebook_tqdm is not tqdm_std.tqdm or bool(getattr(stream, "isatty", lambda: False)())


def progress_bar(total: int | None = None, desc: str = "", unit: str = "it", disable: bool = False,
                 leave: bool = True):
    """A tqdm bar when watched (see `watched`), else a PlainProgress printing every INTERVAL_S."""
    if watched():
        return auto_tqdm(total=total, desc=desc, unit=unit, disable=disable, leave=leave)
    return PlainProgress(total=total, desc=desc, unit=unit, disable=disable, leave=leave)
