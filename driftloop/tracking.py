"""MLflow wiring: where runs go, how they end, and what never goes into them."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from driftloop.errors import TrackingError
from driftloop.settings import HomeSettings

log = logging.getLogger(__name__)

# Query parameters that carry secrets in presigned or token-bearing URLs.
_SECRET_PARAMS = re.compile(
    r"(signature|credential|token|secret|password|passwd|key|sig|auth)", re.IGNORECASE
)


def strip_credentials(uri: str) -> str:
    """Remove user, password and secret query parameters from a URI."""
    parts = urlsplit(uri)
    if not parts.scheme or parts.scheme == "file":
        return uri
    host = parts.netloc.rsplit("@", 1)[-1]
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in pairs if not _SECRET_PARAMS.search(k)]
    if host == parts.netloc and len(kept) == len(pairs):
        return uri  # nothing to remove: keep it as written
    # Joined by hand: urlunsplit turns sqlite:////abs/path into sqlite://abs/path.
    stripped = f"{parts.scheme}://{host}{parts.path}"
    if kept:
        stripped += f"?{urlencode(kept)}"
    return stripped + (f"#{parts.fragment}" if parts.fragment else "")


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI when set, else a SQLite store under the driftloop home."""
    return os.environ.get("MLFLOW_TRACKING_URI") or _local_store_uri()


def _local_store_uri() -> str:
    home = HomeSettings().home.expanduser().absolute()
    return f"sqlite:///{home / 'mlflow.db'}"


def client():
    """An MlflowClient on driftloop's store, whatever the process pointed MLflow at."""
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def experiment_id(name: str) -> str:
    """Return the experiment's id, creating it (with local artifacts by default)."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///") or uri.startswith("postgresql"):
        # Without a server MLflow puts artifacts in ./mlruns of whatever folder the
        # command ran from; keep them beside the store instead.
        home = HomeSettings().home.expanduser().absolute()
        location = (home / "mlartifacts" / name).as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:
        # Another process created it between our lookup and create.
        return mlflow.get_experiment_by_name(name).experiment_id


def prefect_context() -> dict[str, str]:
    """Tags that tie an MLflow run to the Prefect flow run it belongs to, if any."""
    try:
        from prefect.runtime import flow_run
    except ImportError:
        return {}
    run_id = flow_run.get_id()
    if not run_id:
        return {}
    tags = {"prefect.flow_run_id": str(run_id), "prefect.flow_run_name": flow_run.name}
    ui_url = (
        flow_run.get_flow_run_ui_url()
        if hasattr(flow_run, "get_flow_run_ui_url")
        else None
    )
    if ui_url:
        tags["prefect.flow_run_url"] = ui_url
    return tags


# Tags naming the process that owns a run, so that a later run can tell whether a
# run still RUNNING has an owner left (see `sweep_orphans`).
HOST_TAG = "driftloop.host"
PID_TAG = "driftloop.pid"
STARTED_TAG = "driftloop.pid_start"


@contextmanager
def run(
    experiment: str, run_name: str | None = None, tags: dict[str, Any] | None = None
) -> Iterator[Any]:
    """Open an MLflow run that always ends: FINISHED, FAILED, or KILLED.

    An exception ends it FAILED; Ctrl-C, SystemExit (the CLI turns SIGTERM into one)
    and Prefect's cancellation signal end it KILLED. A SIGKILL ends nothing, so each
    new run first marks KILLED the runs of its experiment whose process is gone.
    MLflow's HTTP client retries an unreachable server with backoff
    (MLFLOW_HTTP_REQUEST_MAX_RETRIES, 7 by default); after that the run is refused
    with a TrackingError before the stage has done anything.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    all_tags = {
        **prefect_context(),
        **_owner(),
        **{k: str(v) for k, v in (tags or {}).items()},
    }
    try:
        exp = experiment_id(experiment)
        sweep_orphans(exp)
        active = mlflow.start_run(experiment_id=exp, run_name=run_name, tags=all_tags)
    except MlflowException as exc:
        raise TrackingError(
            f"the MLflow tracking store {strip_credentials(tracking_uri())} refused "
            f"or did not answer a new run in experiment {experiment}: "
            f"{_first_line(exc)}. Start the server (driftloop up), fix "
            "MLFLOW_TRACKING_URI, or unset it to use the local store."
        ) from None  # MLflow's own message, in the chain, repeats the URI unredacted
    try:
        yield active
    except BaseException as exc:
        mlflow.end_run(status="KILLED" if _is_termination(exc) else "FAILED")
        raise
    mlflow.end_run(status="FINISHED")


def _is_termination(exc: BaseException) -> bool:
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return True
    # Prefect raises this in a flow's process when the run is cancelled (SIGTERM).
    return type(exc).__name__ == "TerminationSignal"


def _first_line(exc: BaseException) -> str:
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    return _USERINFO.sub(r"\1***@", line)


# user:password@ after a scheme, wherever a URI appears inside a message.
_USERINFO = re.compile(r"(\b[a-z][\w+.-]*://)[^/@\s]+@", re.IGNORECASE)


def _owner() -> dict[str, str]:
    import socket

    import psutil

    return {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(os.getpid()),
        STARTED_TAG: f"{psutil.Process().create_time():.3f}",
    }


def _owner_alive(tags: dict[str, str]) -> bool:
    """Whether the process that opened a run (on this host) still runs."""
    import psutil

    try:
        process = psutil.Process(int(tags[PID_TAG]))
        return f"{process.create_time():.3f}" == tags.get(STARTED_TAG)
    except (KeyError, ValueError, psutil.Error):
        return False


def sweep_orphans(experiment: str) -> list[str]:
    """End KILLED the RUNNING runs of this host whose process is gone; their ids.

    Runs opened on another host are left alone: from here there is no telling
    whether their process lives.
    """
    import socket

    from mlflow.entities import RunStatus

    store = client()
    host = socket.gethostname()
    orphans = [
        found
        for found in store.search_runs(
            [experiment],
            f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'",
            max_results=200,
        )
        if not _owner_alive(found.data.tags)
    ]
    for orphan in orphans:
        run_id = orphan.info.run_id
        store.set_tag(run_id, "driftloop.ended_by", "its process was gone")
        store.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
        log.warning(
            "mlflow run=%s pid=%s was still RUNNING with its process gone: now KILLED",
            run_id,
            orphan.data.tags.get(PID_TAG),
        )
    return [orphan.info.run_id for orphan in orphans]


def log_report(summary: dict[str, Any], artifact: str = "summary.json") -> None:
    """Log a stage's figures as metrics and its whole summary as a JSON artifact."""
    import mlflow

    metrics = {k: v for k, v in summary.items() if isinstance(v, int | float)}
    metrics.update({k: len(v) for k, v in summary.items() if isinstance(v, list)})
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
    mlflow.log_dict(summary, artifact)


def run_url(active: Any) -> str | None:
    """The MLflow UI address of a run, when the store is a server with a UI."""
    uri = tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return None
    info = active.info
    return f"{uri.rstrip('/')}/#/experiments/{info.experiment_id}/runs/{info.run_id}"


def run_link(run_id: str) -> str | None:
    """The MLflow UI address of a run given its id, when the store is a server."""
    if not tracking_uri().startswith(("http://", "https://")):
        return None
    return run_url(client().get_run(run_id))


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) from any names."""
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")
