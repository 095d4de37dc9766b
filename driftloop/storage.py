"""One small interface over local folders and S3 prefixes.

boto3 is used as-is (endpoint, region and credentials from the usual AWS settings); the
interface exists so the lake and the sources read the same whether they live on a
laptop or in a bucket.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import quote, unquote, urlsplit

from driftloop.errors import StorageError
from driftloop.settings import S3Settings


@dataclass(frozen=True)
class ObjectInfo:
    """An object under a store's root: its key relative to the root and its identity."""

    key: str
    size: int
    etag: str


class Store(Protocol):
    uri: str

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...
    def open(self, key: str) -> BinaryIO: ...
    def read_bytes(self, key: str) -> bytes: ...
    def write_bytes(self, key: str, data: bytes) -> None: ...
    def delete(self, key: str) -> None: ...
    def describe(self, key: str = "") -> str: ...


def safe_key(key: str) -> str:
    """Return `key` if it stays under a store's root, else refuse it."""
    parts = unquote(key).replace("\\", "/").split("/")
    if "\0" in key or key.startswith("/") or ".." in parts:
        raise StorageError(
            f"key {key!r} would leave the store's root; keys must be relative paths "
            "without '..', NUL bytes or a leading '/'"
        )
    return key


class LocalStore:
    """A folder; writes go to a temporary name first, then are renamed into place."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / safe_key(key) if key else self.root

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self._path(prefix)
        if not base.exists():
            return
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in sorted(filenames):
                if name.startswith(".tmp-"):
                    continue
                path = Path(dirpath) / name
                stat = path.stat()
                key = path.relative_to(self.root).as_posix()
                yield ObjectInfo(
                    key, stat.st_size, f"{stat.st_mtime_ns:x}-{stat.st_size:x}"
                )

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except OSError as exc:
            raise StorageError(
                f"cannot read {self.describe(key)}: {exc.strerror}"
            ) from exc

    def read_bytes(self, key: str) -> bytes:
        with self.open(key) as handle:
            return handle.read()

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def describe(self, key: str = "") -> str:
        return str(self._path(key))


class S3Store:
    """An S3 prefix through boto3; every write is one whole-object PUT."""

    def __init__(self, uri: str, settings: S3Settings | None = None) -> None:
        import boto3
        from botocore.config import Config

        parts = urlsplit(uri)
        if not parts.netloc:
            raise StorageError(
                f"S3 URI {uri!r} names no bucket; expected s3://bucket/prefix"
            )
        self.bucket = parts.netloc.rsplit("@", 1)[-1]
        self.prefix = parts.path.strip("/")
        self.uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        settings = settings or S3Settings()
        config = Config(
            retries={"max_attempts": settings.max_attempts, "mode": "standard"},
            connect_timeout=settings.connect_timeout_s,
            read_timeout=settings.read_timeout_s,
            request_checksum_calculation=settings.checksums,
            response_checksum_validation=settings.checksums,
        )
        self.client = boto3.client(
            "s3", endpoint_url=settings.endpoint_url, config=config
        )

    def _key(self, key: str) -> str:
        key = safe_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        full = self._key(prefix) if prefix else self.prefix
        if full and not full.endswith("/"):
            full += "/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=full
        )
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        item["Key"][strip:], item["Size"], item["ETag"].strip('"')
                    )
        except Exception as exc:
            raise _storage_error(exc, f"cannot list {self.describe(prefix)}") from exc

    def open(self, key: str) -> BinaryIO:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))[
                "Body"
            ]
        except Exception as exc:
            raise _storage_error(exc, f"cannot read {self.describe(key)}") from exc

    def read_bytes(self, key: str) -> bytes:
        body = self.open(key)
        try:
            return body.read()
        finally:
            body.close()

    def write_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except Exception as exc:
            raise _storage_error(exc, f"cannot write {self.describe(key)}") from exc

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            raise _storage_error(exc, f"cannot delete {self.describe(key)}") from exc

    def describe(self, key: str = "") -> str:
        path = self._key(key) if key else self.prefix
        return f"s3://{self.bucket}/{quote(path, safe='/')}"


def _storage_error(exc: Exception, what: str) -> StorageError:
    """Turn a botocore failure into a message that says what to check."""
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    hints = {
        "NoSuchBucket": "the bucket does not exist; create it or fix the URI",
        "AccessDenied": "access denied; check the AWS credentials and bucket policy",
        "InvalidAccessKeyId": "the AWS access key is not known to this endpoint",
        "SignatureDoesNotMatch": "the AWS secret key does not match the access key",
        "NoSuchKey": "the object does not exist (deleted since it was listed?)",
    }
    hint = hints.get(code, f"{type(exc).__name__}: {exc}")
    return StorageError(f"{what}: {hint}")


def open_store(uri: str, s3: S3Settings | None = None) -> Store:
    """Open a folder path or an s3:// URI."""
    if uri.startswith("s3://"):
        return S3Store(uri, s3)
    if "://" in uri and not uri.startswith("file://"):
        raise StorageError(
            f"unsupported URI {uri!r}: expected a local folder, file:// or s3://bucket/prefix"
        )
    return LocalStore(uri.removeprefix("file://"))


def iter_lines(stream: BinaryIO, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """Yield a binary stream's lines without line endings, in bounded memory."""
    rest = b""
    while chunk := stream.read(chunk_size):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


class MemoryStore:
    """A store in memory: for reading log files ad hoc without writing a lake."""

    def __init__(self) -> None:
        self.uri = "memory://"
        self.objects: dict[str, bytes] = {}

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for key in sorted(self.objects):
            if key.startswith(prefix):
                data = self.objects[key]
                yield ObjectInfo(key, len(data), hashlib.sha256(data).hexdigest())

    def open(self, key: str) -> BinaryIO:
        import io

        return io.BytesIO(self.read_bytes(key))

    def read_bytes(self, key: str) -> bytes:
        try:
            return self.objects[key]
        except KeyError:
            raise StorageError(f"no object {key!r} in memory") from None

    def write_bytes(self, key: str, data: bytes) -> None:
        self.objects[safe_key(key)] = data

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    def describe(self, key: str = "") -> str:
        return f"memory://{key}"
