"""Flow `ingest`: land new log objects from a folder or S3 prefix in the lake."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from driftloop import tracking
from driftloop.progress import progress
from driftloop.settings import HomeSettings
from driftloop.storage import ObjectInfo, Store, open_store
from tasks.ingest import IngestReport, ingest_objects, pending_objects
from tasks.lake import Lake
from tasks.records import load_mapping


class IngestParams(BaseModel):
    """Where to read logs from and which lake to land them in."""

    source: str = Field(
        description="Folder or s3://bucket/prefix of .jsonl, .jsonl.gz, .parquet logs."
    )
    lake: str = Field(
        default_factory=lambda: HomeSettings().lake_uri(),
        description="Lake folder or s3://bucket/prefix.",
    )
    mapping: str | None = Field(
        None, description="JSON file mapping schema fields to the source's field names."
    )


@task(cache_policy=NO_CACHE)
def plan(source: Store, lake: Lake) -> list[ObjectInfo]:
    """List the source objects not yet committed to the lake."""
    objects = pending_objects(source, lake)
    get_run_logger().info("source=%s pending_objects=%d", source.uri, len(objects))
    return objects


@task(cache_policy=NO_CACHE)
def land(
    source: Store, lake: Lake, objects: list[ObjectInfo], mapping: str | None
) -> IngestReport:
    """Land each pending object, with a progress bar and a Prefect progress artifact."""
    fields = load_mapping(mapping) if mapping else None
    with progress("ingest objects", total=len(objects)) as bar:
        report = ingest_objects(
            source, lake, objects, fields, on_object=lambda _: bar.advance()
        )
    logger = get_run_logger()
    for key, error in report.errors.items():
        logger.warning("object=%s failed and will be retried next run: %s", key, error)
    return report


@flow(name="ingest")
def ingest(params: IngestParams) -> dict:
    """Land new log objects in the lake, each record exactly once."""
    source = open_store(params.source)
    lake = Lake(open_store(params.lake))
    tags = {"source": tracking.strip_credentials(source.uri), "lake": lake.uri}
    with tracking.run("driftloop-ingest", tags=tags):
        objects = plan(source, lake)
        report = land(source, lake, objects, params.mapping)
        tracking.log_report(report.summary())
    get_run_logger().info(
        "source=%s objects=%d read=%d landed=%d quarantined=%d duplicates=%d failed=%d",
        source.uri,
        report.objects,
        report.read,
        report.landed,
        report.quarantined,
        report.duplicates,
        len(report.failed_objects),
    )
    return report.summary()
