"""What every benchmark writes: its figures as JSON, with the machine they came from."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def machine() -> dict:
    return {"python": platform.python_version(), "processor": platform.machine(), "cpus": os.cpu_count()}


def write_json(result: dict, out: str | Path) -> None:
    """Write `result` to `out` (parents created) and print it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2)
    out.write_text(text + "\n")
    print(text)
