"""Show long work as it goes: a terminal bar and a Prefect progress artifact."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

log = logging.getLogger(__name__)


class Tracker:
    """Advance both displays; the Prefect artifact is updated at most once a second."""

    def __init__(self, bar: Progress, task: int, artifact_id, total: int) -> None:
        self._bar, self._task, self._artifact, self._total = (
            bar,
            task,
            artifact_id,
            total,
        )
        self._done = 0
        self._last_push = 0.0

    def advance(self, n: int = 1) -> None:
        self._done += n
        self._bar.advance(self._task, n)
        now = time.monotonic()
        if self._artifact is not None and (
            now - self._last_push > 1 or self._done >= self._total
        ):
            self._push()
            self._last_push = now

    def _push(self) -> None:
        from prefect.artifacts import update_progress_artifact

        share = 100.0 * self._done / self._total if self._total else 100.0
        update_progress_artifact(self._artifact, progress=min(share, 100.0))


def _prefect_artifact(description: str):
    """Create a progress artifact when running inside a Prefect flow or task run."""
    try:
        from prefect.artifacts import create_progress_artifact
        from prefect.context import FlowRunContext, TaskRunContext
    except ImportError:
        return None
    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return None
    return create_progress_artifact(progress=0.0, description=description)


@contextmanager
def progress(description: str, total: int) -> Iterator[Tracker]:
    """Track `total` units of work under `description`."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    console = Console(stderr=True)
    with Progress(
        *columns, console=console, transient=True, disable=not console.is_terminal
    ) as bar:
        task = bar.add_task(description, total=total)
        tracker = Tracker(bar, task, _prefect_artifact(description), total)
        yield tracker
        if tracker._artifact is not None:
            tracker._push()
