"""The one way the benchmark scripts report: indented JSON on stdout and, with --out, in a file."""
from __future__ import annotations

import json


def emit(result: dict, out: str | None, default=None) -> dict:
    """Prints `result` as indented JSON and writes the same text to `out` when given; returns it."""
    text = json.dumps(result, indent=2, default=default)
    print(text)
    if out:
        with open(out, "w") as handle:
            handle.write(text + "\n")
    return result
