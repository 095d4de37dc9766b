"""The local server stack behind `driftloop up`: Prefect server, MLflow server, worker.

Each server runs as a child process in its own session, logging to
`<home>/stack/<name>.log`; `<home>/stack/state.json` records their addresses and
process ids, so `driftloop down` (from any shell) stops exactly what `up` started,
and every later `driftloop` command finds the servers without being told.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from driftloop.errors import DriftloopError
from driftloop.settings import HomeSettings

log = logging.getLogger(__name__)

WORK_POOL = "driftloop-local"
# No telemetry leaves a laptop: Prefect's analytics and MLflow's usage reporting off.
QUIET = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",
    # MLflow's GenAI job runner (a consumer process per queue, ~250 MB each) serves
    # nothing driftloop uses.
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
}


class StackError(DriftloopError):
    """A server of the local stack did not start, or cannot be reached."""


class StackSettings(BaseSettings):
    """Where the local stack listens and how long it may take to come up."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_STACK_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address both servers listen on.")
    prefect_port: int = Field(4200, ge=1, le=65535, description="Prefect server port.")
    mlflow_port: int = Field(5000, ge=1, le=65535, description="MLflow server port.")
    start_timeout_s: float = Field(
        240,
        gt=0,
        description="Seconds a server may take to answer its health check.",
    )
    source: str = Field(
        "",
        description="Log source the ingest deployment reads; default <home>/logs.",
    )


@dataclass
class Stack:
    """What `up` started (pids) and where everything is."""

    home: str
    prefect_url: str
    mlflow_url: str
    lake: str
    source: str
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def prefect_ui(self) -> str:
        return self.prefect_url.removesuffix("/api")

    def env(self) -> dict[str, str]:
        """The variables that point a process at this stack."""
        return {
            "PREFECT_API_URL": self.prefect_url,
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "DRIFTLOOP_HOME": self.home,
            "DRIFTLOOP_LAKE": self.lake,
            "DRIFTLOOP_SOURCE": self.source,
        }


def folder(home: Path | None = None) -> Path:
    return (home or HomeSettings().home).expanduser().absolute() / "stack"


def running(home: Path | None = None) -> Stack | None:
    """The stack `up` started under this home, if its processes are still alive."""
    state = folder(home) / "state.json"
    if not state.exists():
        return None
    stack = Stack(**json.loads(state.read_text()))
    return stack if stack.pids and all(map(_alive, stack.pids.values())) else None


def connect_env() -> None:
    """Point this process at a running local stack unless the user chose servers."""
    stack = running()
    if stack is None:
        return
    os.environ.setdefault("PREFECT_API_URL", stack.prefect_url)
    os.environ.setdefault("MLFLOW_TRACKING_URI", stack.mlflow_url)


def up(checkout: Path, say: Callable[[str], None] = log.info) -> Stack:
    """Start what is missing, deploy prefect.yaml, start a worker; wait on health."""
    settings = StackSettings()
    home = HomeSettings().home.expanduser().absolute()
    existing = running(home)
    if existing is not None:
        say("the stack is already up")
        return existing
    stack_dir = folder(home)
    stack_dir.mkdir(parents=True, exist_ok=True)
    lake = HomeSettings().lake_uri()
    lake = lake if "://" in lake else str(Path(lake).expanduser().absolute())
    source = settings.source or str(home / "logs")
    env = {**os.environ, **QUIET, "PREFECT_HOME": str(home / "prefect")}
    env["DRIFTLOOP_HOME"] = str(home)
    pids: dict[str, int] = {}
    try:
        prefect_url = _prefect(settings, env, stack_dir, pids, say)
        mlflow_url = _mlflow(settings, env, home, stack_dir, pids, say)
        stack = Stack(str(home), prefect_url, mlflow_url, lake, source, pids)
        env |= stack.env() | {"DRIFTLOOP_CHECKOUT": str(checkout)}
        _deploy(checkout, env, stack_dir, say)
        pids["worker"] = _spawn(
            [
                *_prefect_cli(),
                "worker",
                "start",
                "--pool",
                WORK_POOL,
                "--type",
                "process",
            ],
            env,
            stack_dir / "worker.log",
            cwd=checkout,
        )
    except BaseException:
        _stop(pids)
        raise
    (stack_dir / "state.json").write_text(json.dumps(asdict(stack), indent=2))
    return stack


def down(say: Callable[[str], None] = log.info) -> list[str]:
    """Stop every process `up` started; return their names."""
    state = folder() / "state.json"
    if not state.exists():
        say("no local stack is up")
        return []
    stack = Stack(**json.loads(state.read_text()))
    stopped = _stop(stack.pids)
    state.unlink()
    return stopped


def _prefect(settings, env, stack_dir: Path, pids: dict, say) -> str:
    if os.environ.get("PREFECT_API_URL"):
        url = os.environ["PREFECT_API_URL"].rstrip("/")
        say(f"using the Prefect server at {url} (PREFECT_API_URL)")
    else:
        url = f"http://{settings.host}:{settings.prefect_port}/api"
        pids["prefect"] = _spawn(
            [
                *_prefect_cli(),
                "server",
                "start",
                "--host",
                settings.host,
                "--port",
                str(settings.prefect_port),
            ],
            # The UI finds the API by these, not by --port: without them it calls
            # port 4200 whatever port the server listens on.
            {
                **env,
                "PREFECT_UI_API_URL": url,
                "PREFECT_SERVER_API_HOST": settings.host,
                "PREFECT_SERVER_API_PORT": str(settings.prefect_port),
            },
            stack_dir / "prefect.log",
        )
        say(f"starting the Prefect server on {url}")
    _wait(f"{url}/health", "Prefect server", settings, stack_dir / "prefect.log", pids)
    return url


def _mlflow(settings, env, home: Path, stack_dir: Path, pids: dict, say) -> str:
    from driftloop import tracking

    uri = tracking.tracking_uri()
    if uri.startswith(("http://", "https://")):
        say(f"using the MLflow server at {uri} (MLFLOW_TRACKING_URI)")
    else:
        url = f"http://{settings.host}:{settings.mlflow_port}"
        # The server and the embedded mode share one store, so runs made before
        # `up` (by `make demo`, say) are in the UI too; artifacts stay local files.
        pids["mlflow"] = _spawn(
            [
                str(Path(sys.executable).parent / "mlflow"),
                "server",
                "--backend-store-uri",
                uri,
                "--default-artifact-root",
                (home / "mlartifacts").as_uri(),
                "--no-serve-artifacts",
                "--host",
                settings.host,
                "--port",
                str(settings.mlflow_port),
                "--workers",
                "1",
            ],
            env,
            stack_dir / "mlflow.log",
        )
        say(f"starting the MLflow server on {url}")
        uri = url
    _wait(f"{uri}/health", "MLflow server", settings, stack_dir / "mlflow.log", pids)
    return uri


def _deploy(checkout: Path, env: dict, stack_dir: Path, say) -> None:
    if not (checkout / "prefect.yaml").exists():
        raise StackError(
            f"{checkout} has no prefect.yaml; run `driftloop up` from a driftloop "
            "checkout (or pass --checkout)"
        )
    logfile = stack_dir / "deploy.log"
    steps = [
        [*_prefect_cli(), "work-pool", "create", WORK_POOL, "--type", "process"],
        [*_prefect_cli(), "--no-prompt", "deploy", "--all"],
    ]
    with open(logfile, "ab") as out:
        for i, command in enumerate(steps):
            done = subprocess.run(
                command, cwd=checkout, env=env, stdout=out, stderr=subprocess.STDOUT
            )
            # The pool may exist from an earlier `up`; deploying must succeed.
            if done.returncode != 0 and i == len(steps) - 1:
                raise StackError(
                    f"`prefect deploy --all` failed (exit {done.returncode}); see "
                    f"{logfile}"
                )
    say(f"deployed {checkout / 'prefect.yaml'} to work pool {WORK_POOL}")


def _prefect_cli() -> list[str]:
    return [sys.executable, "-m", "prefect"]


def _spawn(
    command: list[str], env: dict, logfile: Path, cwd: Path | None = None
) -> int:
    with open(logfile, "ab") as out:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own group: `down` stops its children too
        )
    return process.pid


def _wait(url: str, what: str, settings, logfile: Path, pids: dict) -> None:
    deadline = time.monotonic() + settings.start_timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if pids and not all(map(_alive, pids.values())):
            break
        time.sleep(1)
    raise StackError(
        f"the {what} did not answer {url} within {settings.start_timeout_s:.0f} s; "
        f"see {logfile} (a port in use? set DRIFTLOOP_STACK_PREFECT_PORT or "
        "DRIFTLOOP_STACK_MLFLOW_PORT)"
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of this very process counts as gone.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == 0


def _stop(pids: dict[str, int], grace_s: float = 20) -> list[str]:
    """SIGTERM each process group, then SIGKILL what is left after the grace."""
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(map(_alive, pids.values())):
        time.sleep(0.2)
    for pid in pids.values():
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    return list(pids)
