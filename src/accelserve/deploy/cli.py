"""The Ray options of ``accelserve serve`` and the ``accelserve deploy ray`` command.

Ray is imported only when one of them runs (``deploy.ray`` imports it inside its functions).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from accelserve.deploy.ray import DeployOptions


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    ray = parser.add_argument_group("Ray Serve (docs/distributed.md)")
    ray.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="serve on the Ray cluster at ADDRESS ('auto': the local one) instead of here",
    )
    ray.add_argument("--replicas", type=int, default=1, help="replicas per model group (Ray)")
    ray.add_argument(
        "--autoscale", default=None, metavar="MIN:MAX", help="autoscale each group's replicas"
    )
    _autoscale_setting_argument(ray)
    ray.add_argument(
        "--ray-ingress",
        default="auto",
        choices=["auto", "haproxy", "serve"],
        help="haproxy: HAProxy on --http-port/--grpc-port straight to the replicas' own "
        "servers, Ray Serve's proxy behind it for server-wide routes; serve: Ray Serve's "
        "proxy on --http-port, no gRPC; auto (default): haproxy when its binary is found "
        "(with --autoscale too: replicas report their own request counts to the autoscaler)",
    )
    ray.add_argument(
        "--front-door-busy-poll",
        action="store_true",
        help="the front door's HAProxy polls without sleeping: lower latency at low load for "
        "a core of this host, even idle (HAProxy's busy-polling)",
    )
    _group_arguments(ray)


def _autoscale_setting_argument(parser: argparse._ActionsContainer) -> None:
    from accelserve.deploy.autoscale import SETTINGS

    parser.add_argument(
        "--autoscale-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"a Serve autoscaling setting with --autoscale (repeatable): {', '.join(SETTINGS)}",
    )


def _group_arguments(parser: argparse._ActionsContainer) -> None:
    parser.add_argument(
        "--group",
        action="append",
        default=[],
        metavar="NAME=MODEL,MODEL",
        help="serve these models in their own deployment (repeatable; the rest form 'default')",
    )


def _options(args: argparse.Namespace, **extra: Any) -> DeployOptions:
    """The deployment the command line describes (both commands share these options)."""
    from accelserve.deploy.autoscale import parse_setting
    from accelserve.deploy.groups import parse_group_specs
    from accelserve.deploy.ray import DeployOptions, parse_autoscale

    return DeployOptions(
        model_repository=args.model_repository,
        groups=parse_group_specs(args.group),
        device=args.device,
        replicas=args.replicas,
        autoscale=parse_autoscale(args.autoscale) if args.autoscale else None,
        autoscale_settings=dict(parse_setting(text) for text in args.autoscale_setting),
        **extra,
    )


def serve_on_ray(args: argparse.Namespace) -> int:
    from accelserve.deploy.ray import serve_on_ray as serve
    from accelserve.errors import AccelServeError

    try:
        options = _options(
            args,
            model_control=args.model_control_mode == "explicit",
            api_key=args.api_key,
            busy_poll_us=args.busy_poll_us or 0,  # a replica behind a balancer sleeps by default
        )
        serve(
            options,
            args.ray,
            args.host,
            args.http_port,
            ingress=args.ray_ingress,
            grpc_port=args.grpc_port,
            metrics_port=args.metrics_port or None,
            door_busy_polling=args.front_door_busy_poll,
        )
    except AccelServeError as exc:
        print(f"accelserve serve: {exc}", file=sys.stderr)
        return 2
    except ConnectionError as exc:  # ray.init found no cluster there
        print(
            f"accelserve serve: --ray {args.ray}: no Ray cluster reached ({exc})", file=sys.stderr
        )
        return 2
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    targets = parser.add_subparsers(dest="target", required=True)
    ray = targets.add_parser("ray", help="a Ray Serve config (serve run / serve deploy)")
    ray.add_argument("--model-repository", required=True, help="repository path (on every node)")
    ray.add_argument("-o", "--output", default="-", help="file to write ('-': standard output)")
    ray.add_argument("--device", default="auto", help="default device (cpu, cuda, tpu)")
    ray.add_argument("--replicas", type=int, default=1, help="replicas per model group")
    ray.add_argument("--autoscale", default=None, metavar="MIN:MAX")
    _autoscale_setting_argument(ray)
    ray.add_argument("--host", default="0.0.0.0", help="address the proxies bind")
    ray.add_argument("--http-port", type=int, default=8000)
    _group_arguments(ray)
    kube = ray.add_argument_group("KubeRay (a RayService manifest instead of a Serve config)")
    kube.add_argument("--kuberay", action="store_true", help="write a RayService manifest")
    kube.add_argument("--image", default="", help="container image with accelserve and Ray")
    kube.add_argument("--name", default="accelserve", help="the RayService's name")
    kube.add_argument(
        "--repository-claim",
        default="accelserve-models",
        help="PersistentVolumeClaim holding the repository, mounted at its path on every pod",
    )
    kube.add_argument("--replica-memory", default="4Gi", help="memory of a worker pod")


def run(args: argparse.Namespace) -> int:
    import yaml  # Ray's own dependency

    from accelserve.deploy.kuberay import KubeRayOptions, manifest_yaml, rayservice_manifest
    from accelserve.deploy.ray import serve_config
    from accelserve.errors import AccelServeError

    try:
        options = _options(args)
        if args.kuberay:
            kube = KubeRayOptions(
                image=args.image,
                name=args.name,
                repository_claim=args.repository_claim,
                replica_memory=args.replica_memory,
            )
            text = manifest_yaml(rayservice_manifest(options, kube))
        else:
            text = yaml.safe_dump(serve_config(options, args.host, args.http_port), sort_keys=False)
    except AccelServeError as exc:
        print(f"accelserve deploy ray: {exc}", file=sys.stderr)
        return 2
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
        how = "kubectl apply -f" if args.kuberay else "serve deploy"
        print(f"wrote {args.output}: {how} {args.output}", file=sys.stderr)
    return 0
