"""Runs that write one lake take turns: each record lands once, whoever races.

Races are real processes released at the same moment; the lock itself is tested on a
folder lake (an OS file lock) and on a bucket lake (a lease object written with
conditional PUTs to the moto server).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from datetime import date
from pathlib import Path

import boto3
import numpy as np
import pytest

from driftloop.errors import StorageError
from driftloop.settings import LakeLockSettings, S3Settings
from driftloop.storage import (
    LocalStore,
    LockHeld,
    LockUnsupported,
    S3Store,
    open_store,
)
from tasks.ingest import ingest_objects, pending_objects
from tasks.lake import Entry, Lake
from tasks.simulate import SimulationConfig, simulate
from tests.reliability.faults import FaultProxy, finish, ingest_process
from tests.tasks.test_ingest import record, write_jsonl

AT_ONCE = LakeLockSettings(timeout_s=0)
# A manifest entry for an object that held no records.
NOTHING = Entry("oid", "uri", "etag", 0, 0, 0, 0, 0, [], np.empty(0, np.uint64))


@pytest.fixture(scope="module")
def traffic(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("traffic")
    simulate(
        out, SimulationConfig(days=1, per_day=4000, seed=3, start=date(2026, 11, 4))
    )
    return out


def race(*runs: tuple[str, str]) -> list[dict]:
    """Start one ingest child per (source, lake), release them together, wait."""
    children = [ingest_process(src, lake, wait_for_go=True) for src, lake in runs]
    for child in children:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
    for child in children:
        child.stdin.write("go\n")
        child.stdin.flush()
    return [finish(child) for child in children]


def assert_each_request_id_once(lake: Lake) -> list[str]:
    ids = lake.read_interactions()["request_id"].to_pylist()
    assert [i for i, n in Counter(ids).items() if n > 1] == []
    return ids


def lakes(uri: str, **settings) -> tuple[Lake, Lake]:
    """Two handles on one lake, as two runs have; the second does not wait."""
    lock = LakeLockSettings(**settings)
    return Lake(open_store(uri), lock), Lake(open_store(uri), AT_ONCE)


class TestRacingProcesses:
    def test_two_runs_over_the_same_source_at_once_land_each_record_once_between_them(
        self, traffic, tmp_path
    ):
        lake_root = str(tmp_path / "lake")
        first, second = race((str(traffic), lake_root), (str(traffic), lake_root))

        ids = assert_each_request_id_once(Lake(LocalStore(lake_root)))
        assert first["landed"] + second["landed"] == len(ids)
        assert first["objects"] + second["objects"] == 24
        assert first["duplicates"] + second["duplicates"] < len(ids) // 100

    def test_two_sources_sharing_request_ids_raced_into_one_lake_land_each_id_once(
        self, traffic, tmp_path
    ):
        copy = tmp_path / "resent"
        shutil.copytree(traffic, copy)  # the same lines under other names: a resend
        lake_root = str(tmp_path / "lake")
        first, second = race((str(traffic), lake_root), (str(copy), lake_root))

        ids = assert_each_request_id_once(Lake(LocalStore(lake_root)))
        assert first["landed"] + second["landed"] == len(ids)
        assert {first["landed"], second["landed"]} == {len(ids), 0}

    def test_two_sources_raced_into_a_bucket_lake_land_each_id_once(
        self, traffic, tmp_path, bucket
    ):
        copy = tmp_path / "resent"
        shutil.copytree(traffic, copy)
        lake_uri = f"s3://{bucket}/lake"
        first, second = race((str(traffic), lake_uri), (str(copy), lake_uri))

        ids = assert_each_request_id_once(Lake(S3Store(lake_uri)))
        assert {first["landed"], second["landed"]} == {len(ids), 0}


class TestFolderLakeLock:
    def test_a_run_finding_the_lock_held_fails_after_its_timeout_naming_the_holder(
        self, traffic, tmp_path
    ):
        holder, other = lakes(str(tmp_path / "lake"))
        source = LocalStore(traffic)
        with holder.lock("ingest", run_id="run-a"):
            started = time.monotonic()
            with pytest.raises(LockHeld) as refused:
                ingest_objects(source, other, pending_objects(source, other))
        message = str(refused.value)
        assert time.monotonic() - started < 2
        assert f"lake {other.uri} is locked by another run" in message
        assert f"pid={os.getpid()} purpose=ingest run_id=run-a" in message
        assert "DRIFTLOOP_LAKE_LOCK_TIMEOUT_S" in message
        assert refused.value.holder["run_id"] == "run-a"
        assert other.read_interactions().num_rows == 0

    def test_a_waiting_run_goes_on_once_the_holder_is_done(self, traffic, tmp_path):
        lake_root = tmp_path / "lake"
        holder = Lake(LocalStore(lake_root))
        waiter = Lake(LocalStore(lake_root), LakeLockSettings(timeout_s=30))
        source = LocalStore(traffic)
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with holder.lock("ingest"):
                held.set()
                release.wait(10)

        thread = threading.Thread(target=hold)
        thread.start()
        held.wait(10)
        threading.Timer(1.0, release.set).start()
        started = time.monotonic()
        report = ingest_objects(source, waiter, pending_objects(source, waiter))
        thread.join()

        assert time.monotonic() - started >= 0.9
        assert report.objects == 24 and report.landed > 0

    def test_the_lock_of_a_killed_process_is_released_by_the_os(self, tmp_path):
        lake_root = tmp_path / "lake"
        child = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_HOLD), str(lake_root)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout.readline().strip() == "held"
            other = Lake(LocalStore(lake_root), AT_ONCE)
            refused = pytest.raises(LockHeld, match=f"pid={child.pid} purpose=hold")
            with refused, other.lock("ingest"):
                pass
        finally:
            child.kill()
            child.wait(10)
        with Lake(LocalStore(lake_root), AT_ONCE).lock("ingest"):
            pass

    def test_the_lock_is_released_when_the_run_fails(self, tmp_path):
        holder, other = lakes(str(tmp_path / "lake"))
        with pytest.raises(RuntimeError), holder.lock("ingest"):
            raise RuntimeError("the run fails")
        with other.lock("ingest"):
            pass

    def test_compaction_waits_for_the_lock_like_ingestion(self, tmp_path):
        holder, other = lakes(str(tmp_path / "lake"))
        with holder.lock("ingest"), pytest.raises(LockHeld, match="purpose=ingest"):
            other.compact()

    def test_a_lock_file_deleted_while_held_stops_the_run_before_it_commits(
        self, tmp_path
    ):
        lake = Lake(LocalStore(tmp_path / "lake"))
        with lake.lock("ingest"):
            (tmp_path / "lake" / "_lock").unlink()
            with pytest.raises(StorageError, match="deleted or replaced while held"):
                lake.commit([NOTHING], "run")
        assert list((tmp_path / "lake").glob("_manifest/*")) == []


_HOLD = """
    import sys, time
    from driftloop.storage import LocalStore
    from tasks.lake import Entry, Lake
    with Lake(LocalStore(sys.argv[1])).lock("hold"):
        print("held", flush=True)
        time.sleep(60)
"""


class TestBucketLakeLock:
    def test_a_held_lock_is_refused_naming_the_holder_and_when_its_lease_ends(
        self, bucket
    ):
        holder, other = lakes(f"s3://{bucket}/lake", lease_s=30)
        with (
            holder.lock("ingest", run_id="run-a"),
            pytest.raises(LockHeld) as refused,
            other.lock("ingest"),
        ):
            pass
        message = str(refused.value)
        assert f"s3://{bucket}/lake/_lock is held by" in message
        assert f"pid={os.getpid()} purpose=ingest run_id=run-a" in message
        assert "its lease expires in" in message

    def test_the_lock_object_is_deleted_on_release_also_when_the_run_fails(
        self, bucket
    ):
        holder, other = lakes(f"s3://{bucket}/lake")
        with pytest.raises(RuntimeError), holder.lock("ingest"):
            raise RuntimeError("the run fails")
        listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="lake/")
        assert listed.get("KeyCount", 0) == 0
        with other.lock("ingest"):
            pass

    def test_a_stale_lock_is_taken_over_once_its_lease_has_expired(
        self, bucket, caplog
    ):
        ghost = {
            "owner": "ghost@old-host",
            "pid": 4242,
            "purpose": "ingest",
            "run_id": "ghost-run",
            "token": "ghost",
            "lease_s": 1,
        }
        boto3.client("s3").put_object(
            Bucket=bucket, Key="lake/_lock", Body=json.dumps(ghost).encode()
        )
        impatient, patient = (
            Lake(S3Store(f"s3://{bucket}/lake"), AT_ONCE),
            Lake(S3Store(f"s3://{bucket}/lake"), LakeLockSettings(timeout_s=15)),
        )
        refused = pytest.raises(LockHeld, match="owner=ghost@old-host pid=4242")
        with refused, impatient.lock("ingest"):
            pass

        started = time.monotonic()
        with caplog.at_level(logging.WARNING), patient.lock("ingest", run_id="new"):
            body = boto3.client("s3").get_object(Bucket=bucket, Key="lake/_lock")
            assert json.loads(body["Body"].read())["run_id"] == "new"
        assert time.monotonic() - started < 10
        assert "taken over from owner=ghost@old-host pid=4242" in caplog.text

    def test_a_running_holder_renews_its_lease_so_it_is_never_taken_over(self, bucket):
        holder, other = lakes(f"s3://{bucket}/lake", lease_s=2)
        with holder.lock("ingest", run_id="long"):
            time.sleep(4.2)  # over twice the lease
            with pytest.raises(LockHeld, match="run_id=long"), other.lock("ingest"):
                pass
            holder.commit([NOTHING], "long")  # still ours: committing is allowed

    def test_a_lock_whose_create_answer_was_lost_is_recognised_as_ours(
        self, s3_endpoint, bucket
    ):
        with FaultProxy(s3_endpoint) as proxy:
            store = S3Store(f"s3://{bucket}/lake", S3Settings(endpoint_url=proxy.url))
            proxy.inject("lose_answer", method="PUT", path_contains="/_lock")
            with Lake(store, AT_ONCE).lock("ingest", run_id="mine"):
                body = boto3.client("s3").get_object(Bucket=bucket, Key="lake/_lock")
                assert json.loads(body["Body"].read())["run_id"] == "mine"
            puts = [s.answer for s in proxy.requests_for("/_lock") if s.method == "PUT"]
        # The create was carried out, its answer lost; botocore's retry found it there.
        assert puts[:2] == ["lose_answer", "forwarded"]

    def test_a_renewal_whose_answer_was_lost_keeps_the_lock(self, s3_endpoint, bucket):
        with FaultProxy(s3_endpoint) as proxy:
            store = S3Store(f"s3://{bucket}/lake", S3Settings(endpoint_url=proxy.url))
            lake = Lake(store, LakeLockSettings(lease_s=3))
            with lake.lock("ingest"):
                proxy.inject("lose_answer", method="PUT", path_contains="/_lock")
                time.sleep(2.5)
                lake.commit([NOTHING], "run")
            assert proxy.answers()["lose_answer"] == 1
        assert len(list(store.list("_manifest"))) == 1

    def test_a_holder_whose_lock_was_taken_stops_before_committing(self, bucket):
        holder = Lake(S3Store(f"s3://{bucket}/lake"), LakeLockSettings(lease_s=3))
        thief = {"owner": "thief@elsewhere", "pid": 1, "token": "thief", "lease_s": 60}
        with holder.lock("ingest"):
            boto3.client("s3").put_object(
                Bucket=bucket, Key="lake/_lock", Body=json.dumps(thief).encode()
            )
            time.sleep(1.5)  # the renewal after a third of the lease finds it gone
            with pytest.raises(StorageError, match=r"lost the lock .* owner=thief"):
                holder.commit([NOTHING], "run")
        assert list(holder.store.list("_manifest")) == []
        body = boto3.client("s3").get_object(Bucket=bucket, Key="lake/_lock")["Body"]
        assert json.loads(body.read())["owner"] == "thief@elsewhere", (
            "releasing a lost lock must not delete the new holder's"
        )


class TestEndpointWithoutConditionalWrites:
    @pytest.fixture
    def lake_uri(self, s3_endpoint, bucket):
        # What an older S3-compatible server does: If-None-Match never reaches it.
        with FaultProxy(s3_endpoint, drop_headers=("If-None-Match",)) as proxy:
            yield proxy.url, f"s3://{bucket}/lake"

    def test_a_lock_that_cannot_exclude_anyone_is_refused_saying_what_to_do(
        self, lake_uri, bucket
    ):
        url, uri = lake_uri
        lake = Lake(S3Store(uri, S3Settings(endpoint_url=url)), AT_ONCE)

        with pytest.raises(LockUnsupported) as refused, lake.lock("ingest"):
            pass

        assert "the endpoint ignores conditional writes" in str(refused.value)
        assert "DRIFTLOOP_LAKE_LOCK_REQUIRED=false" in str(refused.value)
        listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="lake/")
        assert listed.get("KeyCount", 0) == 0, "the useless lock object is removed"

    def test_with_the_lock_not_required_a_run_goes_on_unlocked_with_a_warning(
        self, lake_uri, tmp_path, caplog
    ):
        url, uri = lake_uri
        settings = LakeLockSettings(timeout_s=0, required=False)
        lake = Lake(S3Store(uri, S3Settings(endpoint_url=url)), settings)
        write_jsonl(tmp_path / "src" / "a.jsonl", [record(i) for i in range(5)])
        source = LocalStore(tmp_path / "src")

        with caplog.at_level(logging.WARNING, logger="tasks.lake"):
            report = ingest_objects(source, lake, pending_objects(source, lake))

        assert report.landed == 5
        assert f"lake={uri} runs unlocked: cannot lock" in caplog.text
