"""Folders and S3 prefixes behave alike behind one interface."""

from __future__ import annotations

import io

import boto3
import pytest

from driftloop.errors import StorageError
from driftloop.storage import LocalStore, S3Store, iter_lines, open_store, safe_key


class TestKeys:
    @pytest.mark.parametrize(
        "key", ["../etc/passwd", "a/../../b", "/abs", "a/%2e%2e/b", "a\0b"]
    )
    def test_a_key_that_would_leave_the_root_is_refused(self, key):
        with pytest.raises(StorageError, match="would leave the store's root"):
            safe_key(key)

    def test_a_local_store_refuses_to_write_outside_its_root(self, tmp_path):
        store = LocalStore(tmp_path / "root")
        with pytest.raises(StorageError):
            store.write_bytes("../escaped.txt", b"x")
        assert not (tmp_path / "escaped.txt").exists()

    def test_an_unknown_scheme_is_refused_with_the_accepted_ones(self):
        with pytest.raises(
            StorageError, match="expected a local folder, file:// or s3://"
        ):
            open_store("gs://bucket/logs")


class TestLocalStore:
    def test_a_write_is_atomic_and_leaves_no_temporary_file(self, tmp_path):
        store = LocalStore(tmp_path)
        store.write_bytes("a/b.bin", b"payload")
        assert store.read_bytes("a/b.bin") == b"payload"
        assert [info.key for info in store.list()] == ["a/b.bin"]

    def test_the_etag_changes_when_the_file_changes(self, tmp_path):
        store = LocalStore(tmp_path)
        store.write_bytes("x", b"1")
        before = next(store.list()).etag
        store.write_bytes("x", b"22")
        assert next(store.list()).etag != before


class TestS3Store:
    def test_listing_pages_past_a_thousand_keys(self, bucket):
        client = boto3.client("s3")
        for i in range(1005):
            client.put_object(Bucket=bucket, Key=f"logs/{i:05d}.jsonl", Body=b"{}")
        keys = [info.key for info in S3Store(f"s3://{bucket}/logs").list()]
        assert len(keys) == 1005
        assert keys[0] == "00000.jsonl"

    @pytest.mark.parametrize(
        "key", ["with space.jsonl", "hash#1.jsonl", "plus+1.jsonl", "café/ü.jsonl"]
    )
    def test_awkward_keys_round_trip(self, bucket, key):
        store = S3Store(f"s3://{bucket}/p")
        store.write_bytes(key, b"data")
        assert [info.key for info in store.list()] == [key]
        assert store.read_bytes(key) == b"data"

    def test_a_missing_bucket_says_so(self, s3_endpoint):
        with pytest.raises(StorageError, match="the bucket does not exist"):
            list(S3Store("s3://definitely-missing-bucket/x").list())

    def test_an_s3_uri_without_a_bucket_is_refused(self):
        with pytest.raises(StorageError, match="names no bucket"):
            S3Store("s3:///logs")

    def test_credentials_in_the_uri_are_not_kept_in_its_description(self, bucket):
        store = S3Store(f"s3://AKIA:secret@{bucket}/logs")
        assert store.describe("a.jsonl") == f"s3://{bucket}/logs/a.jsonl"


def test_lines_are_split_across_chunk_boundaries():
    data = b"alpha\nbeta\r\ngamma\n\ndelta"
    assert list(iter_lines(io.BytesIO(data), chunk_size=3)) == [
        b"alpha",
        b"beta\r",
        b"gamma",
        b"",
        b"delta",
    ]
