"""Benchmarks: `make bench` runs each module's `run()` and prints one table each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any


def run_isolated(module: str, *args: str) -> tuple[dict[str, Any], float]:
    """Run `python -m module args` in a fresh process; return its JSON and peak RSS MB.

    A fresh process per method, so one method's imports and caches cannot flatter or
    burden another's memory figure.
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args], stdout=subprocess.PIPE, env=env
    )
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed with status {status}")
    return json.loads(stdout), usage.ru_maxrss / 1024
