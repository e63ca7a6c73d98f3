"""The one way the benchmark scripts report: indented JSON on stdout and, with --out, in a file."""
from __future__ import annotations

import json
from pathlib import Path


def emit(result: dict, out, default=None) -> dict:
    """Prints `result` as indented JSON and writes the same text to `out` when given (its folder
    created if needed); returns `result`."""
    text = json.dumps(result, indent=2, default=default)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
    return result
