"""The reference period's traffic as chats, for pre-training the offline base model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from driftloop.errors import ConfigError
from tasks.datasets import VersionRef
from tasks.lake import Lake
from tasks.pii import Scrubber
from tasks.windows import Window, load_window

REFERENCE_DAYS = 14


def reference_chats(
    lake: Lake, ref: VersionRef, limit: int
) -> tuple[list[list[dict]], str]:
    """Scrubbed chats of the use case from the days before the dataset's window.

    A dataset whose window starts at the lake's beginning has no "before": its own
    window's traffic (all of it, not just the curated examples) stands in.
    """
    start = datetime.fromisoformat(ref.card["window"]["start"])
    end = datetime.fromisoformat(ref.card["window"]["end"])
    frame = None
    if start > datetime(1971, 1, 1, tzinfo=UTC):
        window = Window(start - timedelta(days=REFERENCE_DAYS), start)
        frame = load_window(lake, window, ref.card["model"])
    if frame is None or frame.empty:
        window = Window(start, end)
        frame = load_window(lake, window, ref.card["model"])
    if frame.empty:
        raise ConfigError(
            f"no traffic of {ref.card['model']} in the lake {lake.uri} to pre-train "
            "a base model on; pass --base with a Hugging Face id or local folder"
        )
    frame = frame.sort_values(["timestamp", "request_id"], kind="stable").tail(limit)
    scrubber = Scrubber("regex")
    chats = [
        [
            {"role": m["role"], "content": scrubber.scrub(m["content"] or "")}
            for m in messages
        ]
        + [{"role": "assistant", "content": scrubber.scrub(response or "")}]
        for messages, response in zip(frame["messages"], frame["response"], strict=True)
    ]
    return chats, window.label()
