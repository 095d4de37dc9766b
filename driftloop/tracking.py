"""MLflow wiring: where runs go, how they end, and what never goes into them."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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
    query = urlencode(
        [(k, v) for k, v in parse_qsl(parts.query) if not _SECRET_PARAMS.search(k)]
    )
    return urlunsplit((parts.scheme, host, parts.path, query, parts.fragment))


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


@contextmanager
def run(
    experiment: str, run_name: str | None = None, tags: dict[str, Any] | None = None
) -> Iterator[Any]:
    """Open an MLflow run that always ends: FINISHED, FAILED, or KILLED."""
    import mlflow

    exp = experiment_id(experiment)
    all_tags = {**prefect_context(), **{k: str(v) for k, v in (tags or {}).items()}}
    active = mlflow.start_run(experiment_id=exp, run_name=run_name, tags=all_tags)
    try:
        yield active
    except (KeyboardInterrupt, SystemExit):
        mlflow.end_run(status="KILLED")
        raise
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run(status="FINISHED")


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
