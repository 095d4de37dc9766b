"""A real PostgreSQL server, started from the Debian binaries once per session."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import unavailable

# initdb refuses to run as root; as root the server runs as this system user.
SERVER_USER = "driftloop-pg"
SUPERUSER = "postgres"
_INSTALL = "apt-get install postgresql (or put initdb and pg_ctl on PATH)"


@dataclass(frozen=True)
class Postgres:
    """Where the test server listens; every database trusts its superuser."""

    host: str
    port: int
    bindir: Path  # the server's binaries, psql among them

    def url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        """A SQLAlchemy URL for `database`; the driver named, as infra/ names it."""
        return f"{driver}://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create a database unless it exists; return its SQLAlchemy URL."""
        import psycopg

        # CREATE DATABASE cannot run inside a transaction.
        with psycopg.connect(self._dsn("postgres"), autocommit=True) as conn:
            found = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if found is None:
                conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def query(self, database: str, sql: str, *params: object) -> list[tuple]:
        """Run one read-only statement and return its rows."""
        import psycopg

        with psycopg.connect(self._dsn(database)) as conn:
            return conn.execute(sql, params or None).fetchall()

    def _dsn(self, database: str) -> str:
        return self.url(database, driver="postgresql")


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server on 127.0.0.1 and a free port, in a temporary folder."""
    bindir = _server_binaries()
    if bindir is None:
        unavailable(
            "PostgreSQL server binaries (initdb, pg_ctl) not found in "
            f"/usr/lib/postgresql/*/bin or on PATH: {_INSTALL}"
        )
    run_as = _server_account()
    root = Path(tempfile.mkdtemp(prefix="driftloop-pg-"))
    if run_as:
        shutil.chown(root, user=run_as)
    data, port = root / "data", _free_port()
    _run(
        run_as,
        bindir / "initdb",
        "-D",
        str(data),
        "-U",
        SUPERUSER,
        "--auth=trust",
        "--encoding=UTF8",
        "--no-sync",
    )
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={root} "
        # A throwaway server: durability buys nothing and costs seconds.
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
        "-c max_connections=200"
    )
    pg_ctl = bindir / "pg_ctl"
    log = root / "server.log"
    try:
        _run(
            run_as,
            pg_ctl,
            "-D",
            str(data),
            "-l",
            str(log),
            "-o",
            options,
            "-w",
            "start",
        )
    except RuntimeError as exc:
        told = log.read_text() if log.exists() else "(no server log)"
        raise RuntimeError(f"{exc}\nserver log:\n{told}") from None
    try:
        yield Postgres("127.0.0.1", port, bindir)
    finally:
        _run(run_as, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _server_binaries() -> Path | None:
    """The newest Debian PostgreSQL bin folder, else the one initdb is in on PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parts[-3]),
    )
    initdb = found[-1] if found else shutil.which("initdb")
    if initdb is None or not (Path(initdb).parent / "pg_ctl").exists():
        return None
    return Path(initdb).parent


def _server_account() -> str | None:
    """The user the server runs as when the tests run as root; None otherwise."""
    if os.geteuid() != 0:
        return None
    for tool in ("useradd", "runuser"):
        if shutil.which(tool) is None:
            unavailable(
                f"the tests run as root and initdb refuses root, but {tool} is missing "
                f"to run PostgreSQL as user {SERVER_USER}: install util-linux and "
                "passwd, or run the tests as another user"
            )
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        account = ["--system", "--no-create-home", "--shell", "/bin/false"]
        subprocess.run(
            ["useradd", *account, SERVER_USER],
            check=True,
            capture_output=True,
        )
    return SERVER_USER


def _run(run_as: str | None, *command: str | Path) -> None:
    argv = [str(part) for part in command]
    if run_as:
        argv = ["runuser", "-u", run_as, "--", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
