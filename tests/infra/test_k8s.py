"""The Kubernetes work-pool template for GPU fine-tunes, on a real Prefect API."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import PrefectHTTPStatusError
from prefect.utilities.schema_tools import ValidationError, validate
from prefect.utilities.templating import find_placeholders
from prefect.workers.base import BaseJobConfiguration

TEMPLATE = (
    Path(__file__).parents[2] / "infra" / "k8s" / "gpu-finetune-job-template.json"
)
IMAGE = "registry.example.com/driftloop-gpu:0.1.0"

pytestmark = pytest.mark.usefixtures("prefect_api")


class KubernetesJob(BaseJobConfiguration):
    """The fields prefect-kubernetes' worker reads from a job configuration."""

    namespace: str = "default"
    job_manifest: dict[str, Any]
    job_watch_timeout_seconds: int | None = None
    pod_watch_timeout_seconds: int = 60
    stream_output: bool = True


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return json.loads(TEMPLATE.read_text())


def _render(template: dict[str, Any], **job_variables: Any) -> KubernetesJob:
    """Fill the template as the worker does for a flow run with these variables."""
    return asyncio.run(
        KubernetesJob.from_template_and_values(
            template, {"image": IMAGE, **job_variables}
        )
    )


def _container(job: KubernetesJob) -> dict[str, Any]:
    return job.job_manifest["spec"]["template"]["spec"]["containers"][0]


class TestShape:
    def test_it_has_the_two_parts_a_prefect_work_pool_takes(self, template):
        assert set(template) == {"job_configuration", "variables"}
        assert template["variables"]["type"] == "object"
        assert set(template["job_configuration"]) >= {
            "command",
            "env",
            "labels",
            "name",
            "namespace",
            "job_manifest",
        }

    def test_every_variable_is_described_and_every_default_fits_its_schema(
        self, template
    ):
        for name, schema in template["variables"]["properties"].items():
            assert schema.get("description"), f"{name} has no description"
            if "default" in schema:
                validate(
                    {name: schema["default"]},
                    template["variables"],
                    ignore_required=True,
                    raise_on_error=True,
                )

    def test_the_manifest_is_the_job_the_kubernetes_worker_accepts(self, template):
        job = _render(template)
        manifest = job.job_manifest
        assert (manifest["apiVersion"], manifest["kind"]) == ("batch/v1", "Job")
        pod = manifest["spec"]["template"]["spec"]
        assert (pod["restartPolicy"], pod["parallelism"], pod["completions"]) == (
            "Never",
            1,
            1,
        )
        assert _container(job)["name"] == "prefect-job"
        assert _container(job)["image"] == IMAGE

    def test_every_variable_is_used_by_the_job_configuration(self, template):
        used = {
            p.name for p in find_placeholders(json.dumps(template["job_configuration"]))
        }
        # `env` is no placeholder: Prefect merges a deployment's env over the
        # template's env mapping (test_a_deployment_can_set_the_endpoints_...).
        assert used | {"env"} == set(template["variables"]["properties"])

    def test_an_image_is_required(self, template):
        assert template["variables"]["required"] == ["image"]
        with pytest.raises(ValidationError, match="'image' is a required property"):
            validate({}, template["variables"], raise_on_error=True)


class TestGpuJob:
    def test_the_gpu_limit_comes_from_the_gpu_count_variable(self, template):
        resources = template["job_configuration"]["job_manifest"]["spec"]["template"][
            "spec"
        ]["containers"][0]["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == "{{ gpu_count }}"
        assert (
            _container(_render(template))["resources"]["limits"]["nvidia.com/gpu"] == 1
        )
        rendered = _container(_render(template, gpu_count=4))["resources"]
        assert rendered["limits"]["nvidia.com/gpu"] == 4
        assert rendered["requests"]["nvidia.com/gpu"] == 4

    def test_more_gpus_than_a_node_has_are_refused(self, template):
        with pytest.raises(ValidationError, match="9 is greater than the maximum of 8"):
            validate(
                {"image": IMAGE, "gpu_count": 9},
                template["variables"],
                raise_on_error=True,
            )

    def test_the_pod_lands_on_gpu_nodes_and_tolerates_their_taint(self, template):
        pod = _render(template).job_manifest["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {
            "key": "nvidia.com/gpu",
            "operator": "Exists",
            "effect": "NoSchedule",
        } in pod["tolerations"]
        chosen = _render(template, node_selector={"gpu": "a100"})
        assert chosen.job_manifest["spec"]["template"]["spec"]["nodeSelector"] == {
            "gpu": "a100"
        }

    def test_kubernetes_never_retries_the_job_and_deletes_it_a_day_later(
        self, template
    ):
        spec = _render(template).job_manifest["spec"]
        assert spec["backoffLimit"] == 0
        assert spec["ttlSecondsAfterFinished"] == 86400

    def test_torch_gets_a_shared_memory_volume(self, template):
        job = _render(template, shm_size="16Gi")
        volumes = {
            v["name"]: v
            for v in job.job_manifest["spec"]["template"]["spec"]["volumes"]
        }
        assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
        assert {"name": "dshm", "mountPath": "/dev/shm"} in _container(job)[
            "volumeMounts"
        ]


class TestEnvironment:
    def test_the_job_knows_the_mlflow_server_and_the_lake(self, template):
        env = _render(template).env
        assert env["MLFLOW_TRACKING_URI"].startswith("http://mlflow.")
        assert env["DRIFTLOOP_LAKE"] == "s3://driftloop-lake/lake"
        assert env["DRIFTLOOP_CHECKOUT"] == "/opt/driftloop"

    def test_unset_endpoints_are_left_out_so_defaults_apply(self, template):
        env = _render(template).env
        # The worker then sets PREFECT_API_URL to its own; boto3 goes to AWS S3.
        assert "PREFECT_API_URL" not in env
        assert "DRIFTLOOP_S3_ENDPOINT_URL" not in env

    def test_a_deployment_can_set_the_endpoints_and_add_variables(self, template):
        env = _render(
            template,
            prefect_api_url="http://prefect.driftloop:4200/api",
            s3_endpoint_url="http://minio.driftloop:9000",
            env={"DRIFTLOOP_EMBEDDING_DEVICE": "cuda"},
        ).env
        assert env["PREFECT_API_URL"] == "http://prefect.driftloop:4200/api"
        assert env["DRIFTLOOP_S3_ENDPOINT_URL"] == "http://minio.driftloop:9000"
        assert env["DRIFTLOOP_EMBEDDING_DEVICE"] == "cuda"
        assert env["MLFLOW_TRACKING_URI"].startswith("http://mlflow.")

    def test_s3_credentials_come_from_a_secret_not_from_job_variables(self, template):
        container = _container(_render(template))
        assert container["envFrom"] == [
            {"secretRef": {"name": "driftloop-s3", "optional": True}}
        ]


class TestOnPrefect:
    def test_the_prefect_api_takes_it_as_a_kubernetes_work_pool(self, template):
        name = f"driftloop-gpu-{uuid.uuid4().hex[:8]}"
        with get_client(sync_client=True) as client:
            client.create_work_pool(
                WorkPoolCreate(name=name, type="kubernetes", base_job_template=template)
            )
            stored = client.read_work_pool(name)
        assert stored.type == "kubernetes"
        assert stored.base_job_template == template

    def test_a_deployment_asking_for_more_gpus_than_allowed_is_refused(self, template):
        name = f"driftloop-gpu-{uuid.uuid4().hex[:8]}"
        with get_client(sync_client=True) as client:
            client.create_work_pool(
                WorkPoolCreate(name=name, type="kubernetes", base_job_template=template)
            )
            flow_id = client.create_flow_from_name("driftloop-gpu-check")
            with pytest.raises(
                PrefectHTTPStatusError, match="greater than the maximum"
            ):
                client.create_deployment(
                    flow_id,
                    name="too-many-gpus",
                    work_pool_name=name,
                    job_variables={"image": IMAGE, "gpu_count": 16},
                )
