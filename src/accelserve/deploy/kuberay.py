"""``accelserve deploy ray --kuberay``: a RayService manifest (KubeRay's ``ray.io/v1``) that runs
the repository's Serve application (``deploy.ray.serve_config``) on a Ray cluster KubeRay
creates on Kubernetes.

The cluster is a head pod (Serve's controller, its HTTP proxy and accelserve's router; no
model replicas: ``num-cpus: "0"``) and one worker group per model group, each pod sized for one
replica of its group (the CPUs, GPUs and TPU chips ``deploy.resources`` asks of Ray), as many
pods as replicas (``--autoscale``: KubeRay's autoscaler between MIN and MAX). The repository must
be on storage every node reads, at the same path: every pod mounts a PersistentVolumeClaim
(``ReadOnlyMany``, e.g. NFS or a cloud file store) at the repository's path. The image must have
accelserve installed, with the Ray version the manifest names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from accelserve.deploy.groups import ModelGroup, deployment_name, plan_groups
from accelserve.deploy.ray import DeployOptions, serve_config
from accelserve.deploy.resources import replica_resources
from accelserve.errors import ConfigError

API_VERSION = "ray.io/v1"
SERVE_PORT = 8000
VOLUME = "model-repository"


@dataclass(frozen=True)
class KubeRayOptions:
    image: str  # a Ray image with accelserve installed
    name: str = "accelserve"
    repository_claim: str = "accelserve-models"  # PersistentVolumeClaim holding the repository
    head_cpus: str = "2"
    head_memory: str = "4Gi"
    replica_memory: str = "4Gi"  # per worker pod (one replica)

    def __post_init__(self) -> None:
        if not self.image.strip():
            raise ConfigError(
                "--image: expected a container image with accelserve and Ray installed; received ''"
            )
        if not self.name or not self.name.replace("-", "").isalnum() or not self.name.islower():
            raise ConfigError(
                f"--name: expected a Kubernetes name (lower-case letters, digits, '-'); "
                f"received {self.name!r}"
            )


def rayservice_manifest(options: DeployOptions, kube: KubeRayOptions) -> dict[str, Any]:
    """The RayService of ``options``' repository (a dict, for ``yaml.safe_dump``)."""
    import yaml  # Ray's own dependency

    serve = serve_config(options, "0.0.0.0", SERVE_PORT)
    groups = plan_groups(options.model_repository, options.groups)
    workers = [_worker_group(g, options, kube) for g in groups]
    cluster: dict[str, Any] = {
        "rayVersion": _ray_version(),
        "headGroupSpec": {
            # No replica on the head: it keeps Serve's controller, proxy and the router.
            "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
            "template": _pod(
                "ray-head",
                kube,
                options,
                {"cpu": kube.head_cpus, "memory": kube.head_memory},
                [
                    {"containerPort": 6379, "name": "gcs-server"},
                    {"containerPort": 8265, "name": "dashboard"},
                    {"containerPort": SERVE_PORT, "name": "serve"},
                ],
            ),
        },
        "workerGroupSpecs": workers,
    }
    if options.autoscale is not None:
        cluster["enableInTreeAutoscaling"] = True
    return {
        "apiVersion": API_VERSION,
        "kind": "RayService",
        "metadata": {"name": kube.name},
        "spec": {
            "serveConfigV2": yaml.safe_dump(serve, sort_keys=False),
            "rayClusterConfig": cluster,
        },
    }


def _worker_group(
    group: ModelGroup, options: DeployOptions, kube: KubeRayOptions
) -> dict[str, Any]:
    """One pod per replica of ``group``, sized for what the replica asks of Ray."""
    needs = replica_resources(group.configs, options.device)
    resources: dict[str, str] = {
        "cpu": str(max(1, math.ceil(needs.num_cpus))),
        "memory": kube.replica_memory,
    }
    if needs.num_gpus:
        resources["nvidia.com/gpu"] = str(math.ceil(needs.num_gpus))
    if needs.resources.get("TPU"):
        resources["google.com/tpu"] = str(math.ceil(needs.resources["TPU"]))
    if options.autoscale is None:
        low = high = replicas = options.replicas
    else:
        low, high = options.autoscale
        replicas = max(low, 1)
    return {
        "groupName": deployment_name(group.name),
        "replicas": replicas,
        "minReplicas": low,
        "maxReplicas": high,
        "rayStartParams": {},
        "template": _pod("ray-worker", kube, options, resources, []),
    }


def _pod(
    container: str,
    kube: KubeRayOptions,
    options: DeployOptions,
    resources: dict[str, str],
    ports: list[dict[str, Any]],
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": container,
        "image": kube.image,
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "volumeMounts": [{"name": VOLUME, "mountPath": options.model_repository, "readOnly": True}],
    }
    if ports:
        spec["ports"] = ports
    volume = {
        "name": VOLUME,
        "persistentVolumeClaim": {"claimName": kube.repository_claim, "readOnly": True},
    }
    return {"spec": {"containers": [spec], "volumes": [volume]}}


def _ray_version() -> str:
    try:
        return version("ray")
    except PackageNotFoundError:  # writing the manifest needs no Ray; the image has its own
        return "2.60.0"


def manifest_yaml(manifest: dict[str, Any]) -> str:
    """The manifest as YAML, the embedded Serve config as a readable ``|`` block."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump(manifest, Dumper=Dumper, sort_keys=False)
