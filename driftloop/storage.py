"""One small interface over local folders and S3 prefixes.

boto3 is used as-is (endpoint, region and credentials from the usual AWS settings); the
interface exists so the lake and the sources read the same whether they live on a
laptop or in a bucket.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import quote, unquote, urlsplit

from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from driftloop.errors import ConfigError, StorageError
from driftloop.settings import S3Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObjectInfo:
    """An object under a store's root: its key relative to the root and its identity."""

    key: str
    size: int
    etag: str


class ObjectMissing(StorageError):
    """The object is not there (deleted since it was listed, or never written)."""


class LockHeld(StorageError):
    """Another process holds a store lock; `holder` is what it wrote about itself."""

    def __init__(self, message: str, holder: dict[str, Any]) -> None:
        super().__init__(message)
        self.holder = holder


class LockUnsupported(StorageError):
    """The store cannot provide mutual exclusion (an S3 endpoint without conditions)."""


class Lock(Protocol):
    def check(self) -> None:
        """Raise StorageError if the lock is no longer ours."""

    def release(self) -> None: ...


class Store(Protocol):
    uri: str

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...
    def open(self, key: str) -> BinaryIO: ...
    def read_bytes(self, key: str) -> bytes: ...
    def write_bytes(self, key: str, data: bytes) -> None: ...
    def delete(self, key: str) -> None: ...
    def describe(self, key: str = "") -> str: ...
    def try_lock(self, key: str, holder: dict[str, Any], lease_s: float) -> Lock:
        """Take the lock named `key` at once or raise LockHeld naming its holder."""


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
        except FileNotFoundError as exc:
            raise ObjectMissing(
                f"cannot read {self.describe(key)}: no such file"
            ) from exc
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

    def try_lock(self, key: str, holder: dict[str, Any], lease_s: float) -> Lock:
        """Take an OS lock (flock) on a file; the kernel drops it when the holder dies.

        No lease is needed: a killed holder cannot leave the lock behind. The file is
        never deleted, as unlinking a locked file would let two processes lock two
        different files of the same name.
        """
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            current = _parse_holder(os.pread(fd, 4096, 0))
            os.close(fd)
            raise LockHeld(
                f"{path} is held by {describe_holder(current)}; the OS releases it "
                "when that process exits",
                current,
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StorageError(f"cannot lock {path}: {exc.strerror}") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        return _FileLock(path, fd)


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
        self.max_attempts = settings.max_attempts

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
        return _ResumingBody(self, key)

    def get(self, key: str, **conditions: str) -> dict[str, Any]:
        """One GetObject; `conditions` are its Range, IfMatch and the like."""
        try:
            return self.client.get_object(
                Bucket=self.bucket, Key=self._key(key), **conditions
            )
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

    def try_lock(self, key: str, holder: dict[str, Any], lease_s: float) -> Lock:
        """Create a lock object with a conditional PUT; take it over once expired.

        The object holds its holder and lease; the holder renews it (a conditional
        overwrite) every third of the lease. Expiry is judged on the endpoint's clock
        (its Date header against the object's LastModified), so clock skew between
        machines does not matter. The endpoint must honour If-None-Match and If-Match
        on PUT (AWS S3, MinIO and moto do); one that ignores them is refused.
        """
        body = json.dumps({**holder, "lease_s": lease_s}).encode()
        # Someone may release or renew between our two requests: look again then.
        for _ in range(5):
            sent = time.monotonic()
            try:
                etag = self._put(key, body, IfNoneMatch="*")
            except _Precondition:
                pass
            else:
                self._refuse_unconditional(key, body)
                return _S3Lease(self, key, etag, body, sent)
            current, etag, age_s = self._lock_state(key)
            if current is None:
                continue
            if current.get("token") == holder["token"]:
                # Our own PUT landed but its answer was lost, and botocore retried it.
                return _S3Lease(self, key, etag, body, sent)
            lease = float(current.get("lease_s", 0))
            if age_s <= lease:
                raise LockHeld(
                    f"{self.describe(key)} is held by {describe_holder(current)}, "
                    f"renewed {age_s:.0f} s ago; its lease expires in "
                    f"{lease - age_s:.0f} s unless renewed",
                    current,
                )
            sent = time.monotonic()
            try:
                etag = self._put(key, body, IfMatch=etag)
            except _Precondition:
                continue
            log.warning(
                "lock=%s taken over from %s, whose lease expired %.0f s ago",
                self.describe(key),
                describe_holder(current),
                age_s - lease,
            )
            return _S3Lease(self, key, etag, body, sent)
        raise LockHeld(f"{self.describe(key)} changes hands too often to take", {})

    def _refuse_unconditional(self, key: str, body: bytes) -> None:
        """Fail if a second create of the lock we hold succeeds: no mutual exclusion."""
        try:
            self._put(key, body, IfNoneMatch="*")
        except _Precondition:
            return
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        raise LockUnsupported(
            f"cannot lock {self.describe(key)}: the endpoint ignores conditional "
            "writes (If-None-Match), so two runs could both hold the lock; use an S3 "
            "service that supports them, or set DRIFTLOOP_LAKE_LOCK_REQUIRED=false "
            "and make sure only one run writes the lake at a time"
        )

    def _put(self, key: str, body: bytes, **conditions: str) -> str:
        """A conditional PUT; raise _Precondition when the condition fails."""
        try:
            response = self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=body, **conditions
            )
        except Exception as exc:
            if _code(exc) in _PRECONDITION_CODES:
                raise _Precondition from exc
            raise _storage_error(exc, f"cannot lock {self.describe(key)}") from exc
        return response["ETag"]

    def _lock_state(self, key: str) -> tuple[dict[str, Any] | None, str, float]:
        """The lock object's holder, ETag and age in seconds on the endpoint's clock."""
        try:
            response = self.get(key)
        except ObjectMissing:
            return None, "", 0.0
        holder = _parse_holder(response["Body"].read())
        age = (_server_now(response) - response["LastModified"]).total_seconds()
        return holder, response["ETag"], age


def _server_now(response: dict[str, Any]) -> datetime:
    """The endpoint's clock from its Date header; ours if it sent none we can read."""
    date = response["ResponseMetadata"].get("HTTPHeaders", {}).get("date", "")
    try:
        now = parsedate_to_datetime(date)
    except (TypeError, ValueError):
        return datetime.now(UTC)
    return now if now.tzinfo else now.replace(tzinfo=UTC)


def _code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "")


def _storage_error(exc: Exception, what: str) -> StorageError:
    """Turn a botocore failure into a message that says what to check."""
    code = _code(exc)
    hints = {
        "NoSuchBucket": "the bucket does not exist; create it or fix the URI",
        "AccessDenied": "access denied; check the AWS credentials and bucket policy",
        "InvalidAccessKeyId": "the AWS access key is not known to this endpoint",
        "SignatureDoesNotMatch": "the AWS secret key does not match the access key",
        "NoSuchKey": "the object does not exist (deleted since it was listed?)",
    }
    hint = hints.get(code, f"{type(exc).__name__}: {exc}")
    kind = ObjectMissing if code in ("NoSuchKey", "404") else StorageError
    return kind(f"{what}: {hint}")


class _ResumingBody(io.RawIOBase):
    """An S3 object's body that picks up where it stopped when the connection drops.

    botocore retries a request until its headers arrive; a body cut short after that
    surfaces in the middle of the caller's read loop, where a retry of the whole
    object would hand back bytes the caller already has. So the rest is asked for
    with a Range from the offset reached, pinned by If-Match to the version first
    read: an object rewritten meanwhile fails instead of splicing two versions.
    """

    def __init__(self, store: S3Store, key: str) -> None:
        self.store, self.key = store, key
        response = store.get(key)
        self._body: Any = response["Body"]
        self.etag, self.size = response["ETag"], response["ContentLength"]
        self.offset = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if self.offset >= self.size:
            return b""
        retrying = Retrying(
            retry=retry_if_exception_type(_stream_errors()),
            stop=stop_after_attempt(self.store.max_attempts),
            wait=wait_random_exponential(multiplier=0.1, max=5),
            reraise=True,
        )
        try:
            data = retrying(self._read, size)
        except _stream_errors() as exc:
            raise StorageError(
                f"cannot read {self.store.describe(self.key)}: the connection broke "
                f"at byte {self.offset:,} of {self.size:,}, "
                f"{self.store.max_attempts} times ({exc})"
            ) from exc
        self.offset += len(data)
        return data

    def _read(self, size: int | None) -> bytes:
        if self._body is None:
            self._body = self.store.get(
                self.key, Range=f"bytes={self.offset}-", IfMatch=self.etag
            )["Body"]
            log.info(
                "object=%s resumed at byte %d",
                self.store.describe(self.key),
                self.offset,
            )
        try:
            return self._body.read(None if size is None or size < 0 else size)
        except _stream_errors():
            self._body.close()
            self._body = None
            raise

    def readall(self) -> bytes:
        return self.read()

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if self._body is not None:
            self._body.close()
        super().close()


@cache
def _stream_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import (
        IncompleteReadError,
        ReadTimeoutError,
        ResponseStreamingError,
    )
    from urllib3.exceptions import ProtocolError

    return (
        ResponseStreamingError,
        IncompleteReadError,
        ReadTimeoutError,
        ProtocolError,
        ConnectionError,
    )


class _Precondition(Exception):
    """A conditional request found the object not as expected."""


_PRECONDITION_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}


def _parse_holder(raw: bytes) -> dict[str, Any]:
    try:
        holder = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def describe_holder(holder: dict[str, Any]) -> str:
    """Name a lock's holder as it recorded itself: owner, pid, purpose, run, since."""
    keys = ("owner", "pid", "purpose", "run_id", "since")
    facts = [f"{k}={holder[k]}" for k in keys if holder.get(k) is not None]
    return " ".join(facts) if facts else "an unknown holder"


class _FileLock:
    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd

    def check(self) -> None:
        # Deleting the file would let a second process lock a new one of that name.
        try:
            same = os.stat(self.path).st_ino == os.fstat(self.fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            raise StorageError(
                f"lock file {self.path} was deleted or replaced while held; another "
                "run may be writing; this run stops before committing, run it again"
            )

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


class _S3Lease:
    """A held S3 lock object, renewed in a thread until released.

    The holder counts its lease from before each renewal was sent, and gives it up
    after two thirds of it without a renewal: the last third is margin for a commit in
    flight and for the endpoint's one-second timestamps, so no other run can take the
    lock over while this one still believes it holds it.
    """

    def __init__(
        self, store: S3Store, key: str, etag: str, body: bytes, sent: float
    ) -> None:
        self.store, self.key, self.etag, self.body = store, key, etag, body
        held = json.loads(body)
        self.token, self.lease_s = held["token"], held["lease_s"]
        self.renewed = sent
        self.lost: str | None = None
        self._released = threading.Event()
        self._thread = threading.Thread(
            target=self._renew_until_released, name="lake-lock-lease", daemon=True
        )
        self._thread.start()

    def _renew_until_released(self) -> None:
        while not self._released.wait(self.lease_s / 3) and self.lost is None:
            try:
                self._renew()
            except StorageError as exc:
                log.warning(
                    "lock=%s not renewed: %s", self.store.describe(self.key), exc
                )

    def _renew(self) -> None:
        sent = time.monotonic()
        try:
            self.etag = self.store._put(self.key, self.body, IfMatch=self.etag)
            self.renewed = sent
            return
        except _Precondition:
            current, etag, _ = self.store._lock_state(self.key)
        if current is not None and current.get("token") == self.token:
            self.etag, self.renewed = etag, sent  # our renewal landed, its answer lost
        else:
            self.lost = f"taken over by {describe_holder(current or {})}"

    def check(self) -> None:
        where = self.store.describe(self.key)
        unrenewed = time.monotonic() - self.renewed
        if self.lost is None and unrenewed > self.lease_s * 2 / 3:
            self.lost = (
                f"not renewed for {unrenewed:.0f} s of its {self.lease_s:.0f} s lease"
            )
        if self.lost is not None:
            raise StorageError(
                f"lost the lock {where}: {self.lost}; this run stops before committing "
                "so that two runs never commit at once; run it again"
            )

    def release(self) -> None:
        self._released.set()
        self._thread.join()
        if self.lost is not None:
            return
        try:
            self.store.client.delete_object(
                Bucket=self.store.bucket,
                Key=self.store._key(self.key),
                IfMatch=self.etag,
            )
        except Exception as exc:
            # Left behind, it expires after its lease; the next run waits that long.
            if _code(exc) not in _PRECONDITION_CODES | {"NoSuchKey"}:
                log.warning(
                    "lock=%s not released, expires in %.0f s: %s",
                    self.store.describe(self.key),
                    self.lease_s,
                    exc,
                )


def refuse_credentials(uri: str) -> str:
    """Return `uri`, or refuse it when it carries a user or password.

    Credentials in a store URI would be written wherever the URI is (Prefect's flow
    run parameters, logs), and boto3 would not even use them: they belong in the
    environment, a profile or an instance role.
    """
    parts = urlsplit(uri)
    if parts.scheme and "@" in parts.netloc:
        shown = f"{parts.scheme}://***@{parts.netloc.rsplit('@', 1)[-1]}{parts.path}"
        raise ConfigError(
            f"{shown} carries credentials in the URI, where they would be logged, and "
            "they are not used: drop them and set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or an instance role instead"
        )
    return uri


def open_store(uri: str, s3: S3Settings | None = None) -> Store:
    """Open a folder path or an s3:// URI."""
    refuse_credentials(uri)
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
        self.locks: dict[str, dict[str, Any]] = {}
        self._guard = threading.Lock()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for key in sorted(self.objects):
            if key.startswith(prefix):
                data = self.objects[key]
                yield ObjectInfo(key, len(data), hashlib.sha256(data).hexdigest())

    def open(self, key: str) -> BinaryIO:
        return io.BytesIO(self.read_bytes(key))

    def read_bytes(self, key: str) -> bytes:
        try:
            return self.objects[key]
        except KeyError:
            raise ObjectMissing(f"no object {key!r} in memory") from None

    def write_bytes(self, key: str, data: bytes) -> None:
        self.objects[safe_key(key)] = data

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    def describe(self, key: str = "") -> str:
        return f"memory://{key}"

    def try_lock(self, key: str, holder: dict[str, Any], lease_s: float) -> Lock:
        """A lock within this process: a memory store is never shared beyond it."""
        with self._guard:
            if key in self.locks:
                current = self.locks[key]
                raise LockHeld(
                    f"memory://{key} is held by {describe_holder(current)}", current
                )
            self.locks[key] = holder
        return _MemoryLock(self, key)


@dataclass
class _MemoryLock:
    store: MemoryStore
    key: str

    def check(self) -> None:
        pass

    def release(self) -> None:
        with self.store._guard:
            self.store.locks.pop(self.key, None)
