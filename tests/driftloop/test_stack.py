"""The local stack's bookkeeping: what `up` recorded, what `down` stops, who connects.

Starting the servers for real is the end-to-end test's job (tests/e2e); these cover
the refusals and the state file without starting any server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict

import pytest

from driftloop import stack
from driftloop.stack import Stack, StackError, StackSettings
from tests.conftest import _free_port


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DRIFTLOOP_HOME", str(tmp_path))
    for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
        # Set, then delete: monkeypatch then restores the variable at teardown
        # however connect_env left it (a bare delenv of an unset one records nothing,
        # and the fake stack's address leaked into later tests' subprocesses).
        monkeypatch.setenv(name, "unset")
        monkeypatch.delenv(name)
    return tmp_path


def _record(home, pids: dict[str, int]) -> Stack:
    recorded = Stack(
        home=str(home),
        prefect_url="http://127.0.0.1:4999/api",
        mlflow_url="http://127.0.0.1:5999",
        lake=str(home / "lake"),
        source=str(home / "logs"),
        pids=pids,
    )
    (home / "stack").mkdir(exist_ok=True)
    (home / "stack" / "state.json").write_text(json.dumps(asdict(recorded)))
    return recorded


def test_down_with_nothing_up_says_so_and_stops_nothing(home):
    said = []
    assert stack.down(say=said.append) == []
    assert said == ["no local stack is up"]


def test_a_stack_whose_processes_died_is_not_running_and_nobody_connects(
    home, monkeypatch
):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _record(home, {"prefect": gone.pid})
    assert stack.running(home) is None
    stack.connect_env()
    assert "PREFECT_API_URL" not in os.environ


def test_a_running_stack_is_what_later_commands_connect_to(home, monkeypatch):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        recorded = _record(home, {"prefect": sleeper.pid})
        assert stack.running(home) == recorded
        stack.connect_env()
        assert os.environ["PREFECT_API_URL"] == recorded.prefect_url
        assert os.environ["MLFLOW_TRACKING_URI"] == recorded.mlflow_url
    finally:
        sleeper.kill()
        sleeper.wait()


def test_servers_the_user_chose_win_over_the_local_stack(home, monkeypatch):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    monkeypatch.setenv("PREFECT_API_URL", "http://prefect.team:4200/api")
    try:
        _record(home, {"prefect": sleeper.pid})
        stack.connect_env()
        assert os.environ["PREFECT_API_URL"] == "http://prefect.team:4200/api"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_down_stops_the_recorded_process_group_and_forgets_the_stack(home):
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        start_new_session=True,
    )
    _record(home, {"prefect": sleeper.pid})
    assert stack.down(say=lambda _: None) == ["prefect"]
    # `down` reaped it (it is this process's child), so ask the kernel instead.
    with pytest.raises(ProcessLookupError):
        os.kill(sleeper.pid, 0)
    assert not (home / "stack" / "state.json").exists()


def test_a_server_that_never_answers_is_a_clear_error_naming_its_log(home):
    port = _free_port()
    settings = StackSettings(start_timeout_s=1)
    with pytest.raises(StackError, match=r"did not answer .*prefect\.log"):
        stack._wait(
            f"http://127.0.0.1:{port}/api/health",
            "Prefect server",
            settings,
            home / "prefect.log",
            {},
        )


def test_deploying_from_a_folder_without_prefect_yaml_is_refused(home):
    with pytest.raises(StackError, match=r"has no prefect\.yaml"):
        stack._deploy(home, {}, home, say=lambda _: None)
