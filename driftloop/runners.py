"""Where a flow's heavy tasks run: in the flow's own process, or on a Dask cluster."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from driftloop.errors import ConfigError
from driftloop.settings import DaskSettings

if TYPE_CHECKING:
    from prefect import Task
    from prefect_dask import DaskTaskRunner

log = logging.getLogger(__name__)

LOCAL = "local"


def dask_runner(settings: DaskSettings) -> DaskTaskRunner | None:
    """A DaskTaskRunner for the configured cluster; None when none is configured."""
    if not settings.address:
        return None
    from prefect_dask import DaskTaskRunner

    if settings.address == LOCAL:
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": settings.workers,
                "threads_per_worker": settings.threads_per_worker,
                "processes": settings.processes,
                "dashboard_address": None,
            }
        )
    return DaskTaskRunner(
        address=settings.address,
        client_kwargs={"timeout": settings.connect_timeout_s},
    )


def run_each(
    task: Task,
    calls: Iterable[Mapping[str, Any]],
    settings: DaskSettings | None = None,
) -> list[Any]:
    """Run `task` once per set of parameters and return the results in that order."""
    settings = settings or DaskSettings()
    runner = dask_runner(settings)
    if runner is None:
        # In-process, one call at a time: each call's inputs are built only when its
        # turn comes, so memory holds one window pair, not the whole backfill.
        return [task(**parameters) for parameters in calls]
    with runner:
        _connect(runner, settings)
        futures = [runner.submit(task, dict(parameters)) for parameters in calls]
        log.info(
            "dask address=%s task=%s submitted=%d",
            settings.address,
            task.name,
            len(futures),
        )
        return [future.result() for future in futures]


def _connect(runner: DaskTaskRunner, settings: DaskSettings) -> None:
    # The runner connects lazily on the first submit; connect now so that a wrong
    # address fails before any input is shipped, with a message that names it.
    try:
        runner.client  # noqa: B018
    except OSError as exc:
        raise ConfigError(
            f"DRIFTLOOP_DASK_ADDRESS={settings.address!r}: no Dask scheduler answered "
            f"within {settings.connect_timeout_s:g} s ({exc}). Expected empty (run "
            "in-process), 'local' (a cluster for this run) or a running scheduler's "
            "address such as tcp://dask:8786: start the scheduler or fix the address."
        ) from exc
