"""Faults on demand: an HTTP proxy in front of the S3 endpoint, and killed ingest runs.

`FaultProxy` forwards every request to the real (moto) S3 server and answers the ones a
test scripted with what a troubled S3 gives: 503 SlowDown, 500 InternalError, 403
AccessDenied, a connection reset with no answer at all, a request carried out but its
answer lost to a reset, or a GET whose body stops half-way. boto3 reaches it through `endpoint_url` and is otherwise unchanged.

`ingest_process` runs the real ingest in a child process over a real lake, optionally
killed with SIGKILL at a chosen commit: the child wraps `Lake.commit`, so production
code carries no test hook.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import struct
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import urlsplit

Kind = Literal[
    "slow_down", "internal_error", "access_denied", "reset", "cut_body", "lose_answer"
]
_ERRORS = {
    "slow_down": (503, "SlowDown", "Please reduce your request rate."),
    "internal_error": (500, "InternalError", "We encountered an internal error."),
    "access_denied": (403, "AccessDenied", "Access Denied"),
}
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}
# Headers the proxy's own response writer sends; passing them on would double them.
_OWN = {"date", "server"}


@dataclass
class _Script:
    kind: Kind
    left: int
    method: str | None
    path_contains: str | None
    keep: float

    def matches(self, method: str, path: str) -> bool:
        return (
            self.left > 0
            and self.method in (None, method)
            and (self.path_contains is None or self.path_contains in path)
        )


@dataclass(frozen=True)
class Seen:
    """One request the proxy received, and how it answered (`forwarded` or a kind)."""

    method: str
    path: str
    answer: str
    range: str | None = None


class FaultProxy:
    """An HTTP proxy to `upstream` that answers scripted requests with faults."""

    def __init__(self, upstream: str, drop_headers: tuple[str, ...] = ()) -> None:
        """`drop_headers`: request headers not passed on, as an older server ignores."""
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.drop_headers = {name.lower() for name in drop_headers}
        self.seen: list[Seen] = []
        self._scripts: list[_Script] = []
        self._guard = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"

    def __enter__(self) -> FaultProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def inject(
        self,
        kind: Kind,
        times: int = 1,
        method: str | None = None,
        path_contains: str | None = None,
        keep: float = 0.5,
    ) -> None:
        """Answer the next `times` matching requests with `kind`.

        `cut_body` sends the share `keep` of the body before closing the connection.
        """
        with self._guard:
            self._scripts.append(_Script(kind, times, method, path_contains, keep))

    def answers(self) -> Counter[str]:
        """How many requests got each answer."""
        with self._guard:
            return Counter(seen.answer for seen in self.seen)

    def requests_for(self, path_contains: str) -> list[Seen]:
        with self._guard:
            return [seen for seen in self.seen if path_contains in seen.path]

    def clear(self) -> None:
        """Forget the faults still scripted: from now on, forward everything."""
        with self._guard:
            self._scripts.clear()

    def _decide(self, method: str, path: str, range_: str | None) -> _Script | None:
        with self._guard:
            for script in self._scripts:
                if script.matches(method, path):
                    script.left -= 1
                    break
            else:
                script = None
            answer = "forwarded" if script is None else script.kind
            self.seen.append(Seen(method, path, answer, range_))
            return script


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._handle()

        do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

        def _handle(self) -> None:
            body = self._request_body()
            script = proxy._decide(self.command, self.path, self.headers.get("Range"))
            if script is None:
                self._forward(body)
            elif script.kind == "reset":
                self._reset()
            elif script.kind in _ERRORS:
                self._error(*_ERRORS[script.kind])
            elif script.kind == "lose_answer":
                self._forward(body, answer=False)
            else:
                self._forward(body, keep=script.keep)

        def _request_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _reset(self) -> None:
            # SO_LINGER 0: close() sends a TCP RST, as a dropped connection does.
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            self.close_connection = True
            self.connection.close()

        def _error(self, status: int, code: str, message: str) -> None:
            xml = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{code}</Code><Message>{message}</Message>"
                "<RequestId>fault-proxy</RequestId></Error>"
            ).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(xml)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(xml)

        def _forward(self, body: bytes, keep: float = 1.0, answer: bool = True) -> None:
            upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
            try:
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in _HOP_BY_HOP | proxy.drop_headers
                }
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                payload = response.read()
                if not answer:  # done upstream; the client never hears of it
                    self._reset()
                    return
                self.send_response(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in _HOP_BY_HOP | _OWN:
                        self.send_header(key, value)
                length = response.getheader("Content-Length")
                if self.command == "HEAD":
                    self.send_header("Content-Length", length or "0")
                else:
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command == "HEAD":
                    return
                if keep < 1:
                    # Headers promise the whole body; part of it comes, then the end.
                    # (A FIN, not a reset: a reset would discard what was sent.)
                    self.wfile.write(payload[: int(len(payload) * keep)])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_WR)
                    self.close_connection = True
                    return
                self.wfile.write(payload)
            finally:
                upstream.close()

    return Handler


# The child of `ingest_process`: the real ingest, killed at commit number `kill_at`.
_INGEST = """
    import json, os, signal, sys
    from driftloop.settings import IngestSettings
    from driftloop.storage import open_store
    from tasks.ingest import ingest_objects, pending_objects
    from tasks.lake import Lake

    source_uri, lake_uri, kill_at, per_commit = sys.argv[1:5]
    kill_at, commits = int(kill_at), 0
    commit = Lake.commit

    def commit_or_die(self, entries, run_id):
        global commits
        commits += 1
        if commits == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return commit(self, entries, run_id)

    Lake.commit = commit_or_die
    source, lake = open_store(source_uri), Lake(open_store(lake_uri))
    if os.environ.get("FAULTS_WAIT_FOR_GO"):
        print("ready", flush=True)
        sys.stdin.readline()
    settings = IngestSettings(objects_per_commit=int(per_commit))
    report = ingest_objects(source, lake, pending_objects(source, lake), settings=settings)
    print(json.dumps(report.summary()), flush=True)
"""


def ingest_process(
    source: str,
    lake: str,
    kill_at: int = 0,
    objects_per_commit: int = 50,
    wait_for_go: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """Start the real ingest in a child; SIGKILL it at commit `kill_at` (0: never).

    With `wait_for_go`, the child prints `ready` once imported and waits for a line on
    stdin, so that several children can be released at the same moment.
    """
    env = {**os.environ, **(env or {})}
    if wait_for_go:
        env["FAULTS_WAIT_FOR_GO"] = "1"
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(_INGEST),
            source,
            lake,
            str(kill_at),
            str(objects_per_commit),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(process: subprocess.Popen, timeout: float = 120) -> dict:
    """Wait for an ingest child that should succeed; return its report."""
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"ingest child failed:\n{err[-3000:]}"
    return json.loads(out.strip().splitlines()[-1])
