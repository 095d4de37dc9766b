"""The golden sets: hand-kept JSONL examples per use case, versioned with the code.

One file per dataset name, `evals/golden/<name>.jsonl`, one chat per line:
`{"id": ..., "topic": ..., "messages": [..., {"role": "assistant", ...}]}`. People edit
these files; curation keeps every near copy of them out of training, and evaluation
scores against them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from driftloop.errors import ConfigError

GOLDEN_DIR = Path(__file__).parent / "golden"


def golden_dir() -> Path:
    """DRIFTLOOP_GOLDEN_DIR when set, else the sets shipped in `evals/golden/`."""
    return Path(os.environ.get("DRIFTLOOP_GOLDEN_DIR") or GOLDEN_DIR)


def golden_path(name: str) -> Path:
    return golden_dir() / f"{name}.jsonl"


def load_golden(name: str) -> list[dict[str, Any]]:
    """The golden examples of a dataset name; none when it has no file yet."""
    path = golden_path(name)
    if not path.is_file():
        return []
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
            messages = example["messages"]
            roles = [m["role"] for m in messages]
            ok = roles[-1] == "assistant" and "user" in roles
        except (ValueError, KeyError, TypeError, IndexError):
            ok = False
        if not ok:
            raise ConfigError(
                f"golden set {path} line {number} is not a chat: expected "
                '{"id": ..., "messages": [{"role": "user", ...}, ..., '
                '{"role": "assistant", ...}]}'
            )
        example.setdefault("id", f"{name}-{number}")
        examples.append(example)
    return examples


def prompt_of(example: dict[str, Any]) -> str:
    """The last user turn of a golden example."""
    return next(
        m["content"] for m in reversed(example["messages"]) if m["role"] == "user"
    )


def digest(name: str) -> str:
    """A short hash of a golden file's bytes: part of every dataset's configuration."""
    path = golden_path(name)
    data = path.read_bytes() if path.is_file() else b""
    return hashlib.sha256(data).hexdigest()[:12]
