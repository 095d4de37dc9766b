"""Settings, one class per concern, read from `DRIFTLOOP_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class HomeSettings(BaseSettings):
    """Where the embedded (laptop) mode keeps its state."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_", extra="ignore")

    home: Path = Field(
        Path(".driftloop"),
        description="Folder for local state: the default lake, MLflow store, caches.",
    )
    lake: str = Field(
        "",
        description="Lake URI, a folder or s3://bucket/prefix; default <home>/lake.",
    )

    def lake_uri(self) -> str:
        return self.lake or str(self.home / "lake")


class S3Settings(BaseSettings):
    """How boto3 reaches S3; credentials and region come from the usual AWS settings."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_S3_", extra="ignore")

    endpoint_url: str | None = Field(
        None,
        description="S3-compatible endpoint; unset: AWS_ENDPOINT_URL or AWS itself.",
    )
    checksums: Literal["when_supported", "when_required"] | None = Field(
        None,
        description=(
            "Request checksum behaviour. Several S3-compatible stores reject boto3's "
            "default checksums: set when_required for them. Unset: boto3's default."
        ),
    )
    max_attempts: int = Field(
        8,
        ge=1,
        le=20,
        description="Attempts per request, with backoff, on throttling, 5xx, resets.",
    )
    connect_timeout_s: float = Field(
        10, gt=0, description="Connection timeout in seconds."
    )
    read_timeout_s: float = Field(60, gt=0, description="Read timeout in seconds.")


class IngestSettings(BaseSettings):
    """Tuning for ingestion; the defaults suit hourly log files."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_INGEST_", extra="ignore")

    rows_per_part: int = Field(
        200_000,
        ge=1_000,
        description="Rows buffered before a part is written; bounds memory per object.",
    )
    objects_per_commit: int = Field(
        50,
        ge=1,
        description="Objects landed between manifest commits; a crash redoes these.",
    )


class LakeLockSettings(BaseSettings):
    """How runs that write the lake's manifest (ingest, compaction) take turns."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_LAKE_LOCK_", extra="ignore")

    timeout_s: float = Field(
        300,
        ge=0,
        le=86_400,
        description=(
            "Seconds a run waits for another run's lock before failing with the "
            "holder's name; 0 fails at once."
        ),
    )
    lease_s: float = Field(
        60,
        ge=1,
        le=3_600,
        description=(
            "S3 lakes: seconds a lock outlives its holder's last renewal (renewed "
            "every third of it); a killed run's lock is taken over after this."
        ),
    )
    required: bool = Field(
        True,
        description=(
            "false: on an S3 endpoint without conditional writes, run unlocked (with a "
            "warning) instead of refusing; only one run may then write at a time."
        ),
    )


class DaskSettings(BaseSettings):
    """Where the monitor's comparisons run: in the flow's process or on Dask."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_DASK_", extra="ignore")

    address: str = Field(
        "",
        description=(
            "Empty: compare in the flow's own process, one use case and window after "
            "another. local: start a Dask LocalCluster for the flow run. Otherwise "
            "the address of a running Dask scheduler, e.g. tcp://dask:8786, whose "
            "workers have driftloop installed and the same MLflow and S3 settings."
        ),
    )
    workers: int = Field(1, ge=1, le=64, description="Workers of a local cluster.")
    threads_per_worker: int = Field(
        2, ge=1, le=64, description="Threads of each local worker; comparisons each."
    )
    processes: bool = Field(
        False,
        description=(
            "Run local workers as processes rather than threads of the flow's "
            "process. Threads share one loaded embedding model, and torch and NumPy "
            "release the GIL in the heavy parts; processes load the model once each."
        ),
    )
    connect_timeout_s: float = Field(
        30, gt=0, description="Seconds to wait for a remote scheduler to answer."
    )
