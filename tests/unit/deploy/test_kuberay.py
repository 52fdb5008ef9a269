"""``accelserve deploy ray --kuberay``: the RayService manifest parses and has what KubeRay's
``ray.io/v1`` RayService requires (serveConfigV2 as a string; rayClusterConfig with a head
group's template and rayStartParams, and worker groups with groupName, minReplicas,
maxReplicas, rayStartParams and a pod template), sized from the models' configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from accelserve.cli import main
from accelserve.deploy.kuberay import KubeRayOptions, manifest_yaml, rayservice_manifest
from accelserve.deploy.ray import DeployOptions
from accelserve.errors import ConfigError

CPU_MODEL = (
    'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
    "instance_group [{{ kind: KIND_CPU count: 3 }}]\n"
)
GPU_MODEL = (
    'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
    "instance_group [{{ kind: KIND_GPU count: 2 gpus: [0, 1] }}]\n"
)


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    for name, config in (("text", CPU_MODEL), ("vision", GPU_MODEL)):
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(config.format(name=name))
    return root


def manifest(options: DeployOptions, **kube: Any) -> dict[str, Any]:
    """The manifest as KubeRay reads it: through YAML."""
    kube = {"image": "registry.example/accelserve:1.0", **kube}
    parsed: dict[str, Any] = yaml.safe_load(
        manifest_yaml(rayservice_manifest(options, KubeRayOptions(**kube)))
    )
    return parsed


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = pod["template"]["spec"]["containers"]
    assert found and all(c["name"] and c["image"] for c in found)
    return found


def test_a_rayservice_with_the_serve_config_and_a_worker_group_per_model_group(
    repository: Path,
) -> None:
    options = DeployOptions(str(repository), groups={"gpu": ["vision"]}, replicas=2)
    result = manifest(options, name="models", repository_claim="shared-models")
    assert result["apiVersion"] == "ray.io/v1"
    assert result["kind"] == "RayService"
    assert result["metadata"] == {"name": "models"}
    spec = result["spec"]
    assert isinstance(spec["serveConfigV2"], str)  # KubeRay takes the Serve config as text
    serve = yaml.safe_load(spec["serveConfigV2"])
    (app,) = serve["applications"]
    assert app["import_path"] == "accelserve.deploy.ray:build_app"
    assert app["args"]["model_repository"] == str(repository.resolve())
    assert serve["http_options"]["port"] == 8000
    cluster = spec["rayClusterConfig"]
    assert cluster["rayVersion"].count(".") == 2
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # replicas go to the workers
    (head_container,) = containers(head)
    assert head_container["image"] == "registry.example/accelserve:1.0"
    assert {"containerPort": 8000, "name": "serve"} in head_container["ports"]
    workers = {w["groupName"]: w for w in cluster["workerGroupSpecs"]}
    assert sorted(workers) == ["accelserve-default", "accelserve-gpu"]
    for worker in workers.values():
        assert (worker["replicas"], worker["minReplicas"], worker["maxReplicas"]) == (2, 2, 2)
        assert worker["rayStartParams"] == {}
    (text,) = containers(workers["accelserve-default"])
    assert text["resources"]["limits"] == {"cpu": "3", "memory": "4Gi"}  # 3 CPU instances
    (vision,) = containers(workers["accelserve-gpu"])
    assert vision["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert vision["resources"]["requests"] == vision["resources"]["limits"]
    assert "enableInTreeAutoscaling" not in cluster


def test_every_pod_mounts_the_repository_at_its_path(repository: Path) -> None:
    cluster = manifest(DeployOptions(str(repository)))["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        (volume,) = pod["volumes"]
        assert volume["persistentVolumeClaim"] == {
            "claimName": "accelserve-models",
            "readOnly": True,
        }
        (container,) = pod["containers"]
        assert container["volumeMounts"] == [
            {"name": volume["name"], "mountPath": str(repository.resolve()), "readOnly": True}
        ]


def test_autoscaling_gives_worker_bounds_and_kuberays_autoscaler(repository: Path) -> None:
    options = DeployOptions(str(repository), autoscale=[0, 4])
    cluster = manifest(options)["spec"]["rayClusterConfig"]
    (worker,) = cluster["workerGroupSpecs"]
    assert (worker["replicas"], worker["minReplicas"], worker["maxReplicas"]) == (1, 0, 4)
    assert cluster["enableInTreeAutoscaling"] is True
    serve = yaml.safe_load(manifest(options)["spec"]["serveConfigV2"])
    deployment = serve["applications"][0]["deployments"][0]
    assert deployment["autoscaling_config"]["max_replicas"] == 4


def test_tpu_models_ask_for_tpu_chips(tmp_path: Path) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "config.pbtxt").write_text('name: "m"\nplatform: "jax"\nmax_batch_size: 4\n')
    cluster = manifest(DeployOptions(str(tmp_path), device="tpu:0"))["spec"]["rayClusterConfig"]
    (worker,) = cluster["workerGroupSpecs"]
    (container,) = containers(worker)
    assert container["resources"]["limits"]["google.com/tpu"] == "1"


@pytest.mark.parametrize(
    ("kube", "message"),
    [
        ({"image": " "}, "--image: expected a container image with accelserve and Ray installed"),
        ({"name": "My_Service"}, "--name: expected a Kubernetes name"),
    ],
)
def test_bad_options_are_clear_errors(repository: Path, kube: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        manifest(DeployOptions(str(repository)), **kube)
    assert "received" in str(info.value)


def test_the_command_writes_the_manifest(
    repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "rayservice.yaml"
    command = ["deploy", "ray", "--model-repository", str(repository), "--kuberay"]
    assert main([*command, "--image", "me/accelserve:1", "-o", str(output)]) == 0
    assert "kubectl apply -f" in capsys.readouterr().err
    written = yaml.safe_load(output.read_text())
    assert written["kind"] == "RayService"
    assert main(command) == 2
    assert "--image: expected a container image" in capsys.readouterr().err
