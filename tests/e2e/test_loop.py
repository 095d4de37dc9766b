"""The loop closes by itself through a real Prefect server, worker and MLflow server.

`driftloop up` starts the stack in a temporary home; traffic with a product launch is
simulated and ingested, a first dataset is curated from the days before the launch,
and the monitor's drift event must trigger the `improve` deployment, whose worker
curates, trains, evaluates and promotes: the champion changes with nobody asking.
Then Chromium, headless, checks what a person sees in both UIs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import _free_port, unavailable
from tests.flows.test_model_flows import TINY

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-output" / "screenshots"
DRIFTLOOP = str(Path(sys.executable).parent / "driftloop")
USE_CASE = "support-assistant"
MODEL = f"driftloop-{USE_CASE}"
# Ours and the servers' own: the test process's Prefect and MLflow wiring stays out.
_DROP = ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "PREFECT_HOME", "DRIFTLOOP_LAKE")


def run(
    args: list[str], env: dict, timeout: float = 600
) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [DRIFTLOOP, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"driftloop {' '.join(args)}:\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("stack-home")
    env = {k: v for k, v in os.environ.items() if k not in _DROP}
    env |= TINY | {
        "DRIFTLOOP_HOME": str(home),
        "DRIFTLOOP_STACK_PREFECT_PORT": str(_free_port()),
        "DRIFTLOOP_STACK_MLFLOW_PORT": str(_free_port()),
        "DRIFTLOOP_STACK_SOURCE": str(home / "logs"),
        "DRIFTLOOP_MONITOR_SAMPLE_SIZE": "300",
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
    try:
        run(["up"], env)
        state = json.loads((home / "stack" / "state.json").read_text())
        env |= {
            "PREFECT_API_URL": state["prefect_url"],
            "MLFLOW_TRACKING_URI": state["mlflow_url"],
        }
        yield {**state, "home": home, "env": env}
    finally:
        subprocess.run([DRIFTLOOP, "down"], env=env, cwd=ROOT, timeout=120)
        logs = home / "stack"
        if logs.exists():
            shutil.copytree(
                logs, ROOT / "test-output" / "stack-logs", dirs_exist_ok=True
            )


@pytest.fixture(scope="module")
def closed_loop(stack) -> dict:
    """Simulate a launch, curate the days before it, monitor; wait for `improve`."""
    env, home = stack["env"], stack["home"]
    run(
        [
            "simulate",
            "--out",
            str(home / "logs"),
            "--days",
            "5",
            "--per-day",
            "300",
            "--scenario",
            "new-topic",
            "--drift-day",
            "3",
            "--drift-share",
            "0.4",
            "--seed",
            "21",
            "--start",
            "2026-11-01",
            "--model",
            USE_CASE,
        ],
        env,
    )
    run(["ingest", "--source", str(home / "logs")], env)
    run(["curate", "--end", "2026-11-04"], env)
    verdict = json.loads(
        run(
            [
                "monitor",
                "--model",
                USE_CASE,
                "--end",
                "2026-11-05",
                "--reference-days",
                "3",
                "--json",
            ],
            env,
        ).stdout
    )
    # One use case and window: --json prints that one verdict as an object.
    assert verdict["drift"], verdict
    improve = wait_for_runs(stack["prefect_url"], "improve", count=1)
    return {"verdict": verdict, "improve": improve[0]}


def flow_runs(api: str, deployment: str) -> list[dict]:
    body = {"deployments": {"name": {"any_": [deployment]}}, "sort": "START_TIME_ASC"}
    response = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def wait_for_runs(api: str, deployment: str, count: int, limit_s: float = 900):
    """The deployment's flow runs once `count` of them have finished (or fail)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        runs = flow_runs(api, deployment)
        done = [r for r in runs if r["state"]["type"] in _FINAL]
        if len(done) >= count:
            return runs
        time.sleep(3)
    states = [r["state"]["name"] for r in flow_runs(api, deployment)]
    pytest.fail(f"{deployment}: {count} run(s) did not finish in {limit_s} s: {states}")


_FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def registry(stack):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=stack["mlflow_url"])


class TestClosedLoop:
    def test_the_drift_event_starts_one_improve_run_that_completes(
        self, stack, closed_loop
    ):
        runs = flow_runs(stack["prefect_url"], "improve")
        assert len(runs) == 1
        assert closed_loop["improve"]["state"]["type"] == "COMPLETED"
        params = closed_loop["improve"]["parameters"]["params"]
        assert params["use_case"] == USE_CASE
        assert params["monitor_run"] == closed_loop["verdict"]["mlflow_run_id"]

    def test_the_champion_changes_to_an_adapter_without_anyone_asking(
        self, stack, closed_loop
    ):
        client = registry(stack)
        champion = client.get_model_version_by_alias(MODEL, "champion")
        previous = client.get_model_version_by_alias(MODEL, "previous-champion")
        assert champion.tags["kind"] == "adapter"
        assert previous.tags["kind"] == "base"
        assert champion.tags["monitor_run"] == closed_loop["verdict"]["mlflow_run_id"]

    def test_the_training_run_links_to_its_prefect_flow_run(self, stack, closed_loop):
        client = registry(stack)
        champion = client.get_model_version_by_alias(MODEL, "champion")
        tags = client.get_run(champion.run_id).data.tags
        flow_run = httpx.get(
            f"{stack['prefect_url']}/flow_runs/{tags['prefect.flow_run_id']}"
        ).json()
        assert flow_run["name"] == tags["prefect.flow_run_name"]
        assert tags["prefect.flow_run_url"].startswith(stack["prefect_url"][:-4])

    def test_the_improve_run_links_to_its_mlflow_runs_in_its_artifact(
        self, stack, closed_loop
    ):
        body = {"flow_runs": {"id": {"any_": [closed_loop["improve"]["id"]]}}}
        response = httpx.post(
            f"{stack['prefect_url']}/artifacts/filter", json=body, timeout=30
        )
        response.raise_for_status()
        (artifact,) = [a for a in response.json() if a["key"] == f"improve-{USE_CASE}"]
        assert "promoted" in artifact["data"]
        assert f"{stack['mlflow_url']}/#/experiments/" in artifact["data"]

    def test_a_repeated_drift_event_is_debounced_per_use_case(self, stack, closed_loop):
        # Drift persists, so the next hourly window emits again: that must start
        # nothing for 6 hours. Another use case's drift is counted apart and does.
        for model in (USE_CASE, "sales-assistant"):
            emit_drift(stack["prefect_url"], model)
        runs = wait_for_runs(stack["prefect_url"], "improve", count=2)
        time.sleep(10)  # time for a wrongly started third run to appear
        runs = flow_runs(stack["prefect_url"], "improve")
        assert [r["parameters"]["params"]["use_case"] for r in runs] == [
            USE_CASE,
            "sales-assistant",
        ]
        # The stack has no sales-assistant logs: that run is skipped, not failed.
        assert runs[1]["state"]["type"] == "COMPLETED"

    def test_a_repeated_manual_trigger_with_one_idempotency_key_starts_one_run(
        self, stack, closed_loop
    ):
        before = len(flow_runs(stack["prefect_url"], "improve"))
        args = ["improve", "--model", USE_CASE, "--deployment", "--json"]
        key = ["--idempotency-key", "manual-1"]
        first = json.loads(run([*args, *key], stack["env"]).stdout)
        second = json.loads(run([*args, *key], stack["env"]).stdout)
        assert first["created"] is True
        assert second["created"] is False
        assert second["flow_run_id"] == first["flow_run_id"]
        runs = wait_for_runs(stack["prefect_url"], "improve", count=before + 1)
        assert len(runs) == before + 1
        # Nothing new arrived since the first run: curation says so and nothing moves.
        assert runs[-1]["state"]["type"] == "COMPLETED"


def emit_drift(api: str, model: str) -> None:
    """Post a drift event for a use case to the server, as the monitor flow emits it."""
    import uuid
    from datetime import UTC, datetime

    event = {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": "driftloop.drift.detected",
        "resource": {"prefect.resource.id": f"driftloop.model.{model}"},
        "payload": {"model": model, "mlflow_run_id": "latest", "verdict": "drift"},
    }
    httpx.post(f"{api}/events", json=[event], timeout=30).raise_for_status()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        unavailable("Debian's chromium is not installed: apt-get install chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


class TestUserInterfaces:
    def test_the_prefect_ui_lists_the_deployments_and_a_completed_improve_run(
        self, stack, closed_loop, browser
    ):
        SHOTS.mkdir(parents=True, exist_ok=True)
        ui = stack["prefect_url"].removesuffix("/api")
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{ui}/deployments")
        for name in ("ingest", "monitor", "improve", "evaluate", "canary-check"):
            page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
        page.screenshot(path=SHOTS / "prefect-deployments.png", full_page=True)
        page.goto(f"{ui}/runs/flow-run/{closed_loop['improve']['id']}")
        page.get_by_text(closed_loop["improve"]["name"]).first.wait_for(timeout=60_000)
        page.get_by_text("Completed").first.wait_for(timeout=60_000)
        page.screenshot(path=SHOTS / "prefect-improve-run.png", full_page=True)
        # Its artifact tells the outcome and links to the MLflow runs.
        page.get_by_text("Artifacts", exact=True).first.click()
        page.get_by_text(f"improve-{USE_CASE}").first.wait_for(timeout=60_000)
        page.screenshot(path=SHOTS / "prefect-improve-artifacts.png", full_page=True)

    def test_the_mlflow_ui_shows_the_registered_model_with_its_champion(
        self, stack, closed_loop, browser
    ):
        SHOTS.mkdir(parents=True, exist_ok=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{stack['mlflow_url']}/#/models/{MODEL}")
        page.get_by_text(MODEL).first.wait_for(timeout=60_000)
        page.get_by_text("champion").first.wait_for(timeout=60_000)
        page.screenshot(path=SHOTS / "mlflow-model.png", full_page=True)
