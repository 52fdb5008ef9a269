"""A model repository served by a Ray Serve application (docs/distributed.md).

Each group of models (``deploy.groups``; by default the whole repository) is one deployment
whose replicas each run an accelserve data plane over the group (``deploy.replica``); the
resources a replica asks for come from the group's configs (``deploy.resources``). The ingress
is a router (``deploy.router``) that sends each model's requests to its group through Serve's
handles, which (unlike Serve's HTTP proxy talking to a replica directly, measured on 2.60)
reassign a dead replica's requests; the router retries what still fails. Requests enter
through Ray Serve's HTTP proxy, or (ingress ``haproxy``, ``accelserve serve --ray``'s default)
through HAProxy straight to the replicas' own servers (``deploy.frontdoor``), Serve's proxy
then serving only the routes that need the router. Autoscaling works in both modes: the
replicas report their own requests in flight to Serve's autoscaler (``deploy.autoscale``).

``build_app`` is the application builder a Serve config names (``serve run`` / ``serve
deploy``); ``serve_config`` writes that config; ``serve_on_ray`` is ``accelserve serve --ray``.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from accelserve.deploy.autoscale import POLICY as AUTOSCALING_POLICY
from accelserve.deploy.autoscale import check_setting
from accelserve.deploy.groups import ModelGroup, deployment_name, plan_groups
from accelserve.deploy.resources import replica_resources
from accelserve.errors import ConfigError

log = logging.getLogger("accelserve.deploy")

APP_NAME = "accelserve"
ROUTER = "accelserve-router"
BUILDER = "accelserve.deploy.ray:build_app"


@dataclass
class DeployOptions:
    model_repository: str
    groups: dict[str, list[str]] = field(default_factory=dict)  # --group; empty: one group
    device: str = "auto"
    replicas: int = 1
    autoscale: list[int] | None = None  # [min, max] replicas per group
    # Serve's autoscaling settings (deploy.autoscale.SETTINGS: delays, look-back, target)
    autoscale_settings: dict[str, float] = field(default_factory=dict)
    model_control: bool = False
    api_key: str | None = None
    grpc: bool = False  # each replica also serves gRPC on its node (for the front door)
    # the replicas' HTTP servers poll this long after a response (frontends/busy_poll.py):
    # latency at low load for CPU; 0 (default): they sleep
    busy_poll_us: int = 0

    def __post_init__(self) -> None:
        self.model_repository = str(Path(self.model_repository).resolve())
        if type(self.replicas) is not int or self.replicas < 1:
            raise ConfigError(f"replicas: expected an integer >= 1; received {self.replicas!r}")
        if type(self.busy_poll_us) is not int or self.busy_poll_us < 0:
            raise ConfigError(
                f"busy_poll_us: expected an integer >= 0; received {self.busy_poll_us!r}"
            )
        if self.autoscale is not None:
            low, high = ([*list(self.autoscale), 0, 0])[:2]
            if len(self.autoscale) != 2 or not 0 <= low <= high or high < 1:
                raise ConfigError(
                    f"autoscale: expected MIN:MAX with 0 <= MIN <= MAX and MAX >= 1; "
                    f"received {self.autoscale!r}"
                )
            self.autoscale = [low, high]
        if self.autoscale_settings and self.autoscale is None:
            raise ConfigError(
                "--autoscale-setting: expected with --autoscale MIN:MAX; received "
                f"{', '.join(sorted(self.autoscale_settings))} without it"
            )
        self.autoscale_settings = {
            key: check_setting(key, value) for key, value in self.autoscale_settings.items()
        }


def parse_autoscale(text: str) -> list[int]:
    """``"1:4"`` -> ``[1, 4]``."""
    low, sep, high = text.partition(":")
    if not sep or not low.strip().isdigit() or not high.strip().isdigit():
        raise ConfigError(f"--autoscale: expected MIN:MAX (e.g. 1:4); received {text!r}")
    return [int(low), int(high)]


def deployment_options(group: ModelGroup, options: DeployOptions) -> dict[str, Any]:
    """The Serve options of one group's deployment (what the Serve config lists)."""
    resources = replica_resources(group.configs, options.device)
    result: dict[str, Any] = {
        "name": deployment_name(group.name),
        "max_ongoing_requests": resources.max_ongoing_requests,
        "ray_actor_options": resources.ray_actor_options(),
    }
    if options.autoscale is None:
        result["num_replicas"] = options.replicas
    else:
        low, high = options.autoscale
        result["autoscaling_config"] = {
            "min_replicas": low,
            "max_replicas": high,
            "target_ongoing_requests": resources.target_ongoing_requests,
            **options.autoscale_settings,
            # the replicas' own counts, which include the front door's requests
            "policy": {"policy_function": AUTOSCALING_POLICY},
        }
    return result


# The router only forwards (its limit is the groups'); it runs on the head node, which a
# cluster keeps, so that losing a worker node never loses the ingress.
ROUTER_OPTIONS: dict[str, Any] = {
    "name": ROUTER,
    "max_ongoing_requests": 4096,
    "ray_actor_options": {"num_cpus": 0, "resources": {"node:__internal_head__": 0.001}},
}


def build_app(args: dict[str, Any]) -> Any:
    """Serve's application builder: ``args`` are ``DeployOptions``' fields."""
    return application(DeployOptions(**args))


def application(options: DeployOptions) -> Any:
    from ray import serve

    from accelserve.deploy.replica import GroupReplica
    from accelserve.deploy.router import GroupRouter

    groups = plan_groups(options.model_repository, options.groups)
    if not groups:
        raise ConfigError(f"model repository '{options.model_repository}': no model found")
    bound = {}
    for group in groups:
        deployment = serve.deployment(**deployment_options(group, options))(GroupReplica)
        bound[group.name] = deployment.bind(
            options.model_repository,
            list(group.models),
            options.device,
            options.model_control,
            options.api_key,
            options.grpc,
            options.busy_poll_us,
        )
    owners = {model: group.name for group in groups for model in group.models}
    return serve.deployment(**ROUTER_OPTIONS)(GroupRouter).bind(bound, owners)


def serve_config(options: DeployOptions, host: str = "0.0.0.0", port: int = 8000) -> dict[str, Any]:
    """A Serve config (``serve run`` / ``serve deploy``) for the repository."""
    groups = plan_groups(options.model_repository, options.groups)
    deployments = [deployment_options(g, options) for g in groups] + [dict(ROUTER_OPTIONS)]
    args = {k: v for k, v in asdict(options).items() if v not in (None, {}, False)}
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": host, "port": port},
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": BUILDER,
                "args": args,
                "deployments": deployments,
            }
        ],
    }


INGRESSES = ("auto", "haproxy", "serve")


def serve_on_ray(
    options: DeployOptions,
    address: str,
    host: str = "127.0.0.1",
    http_port: int = 8000,
    proxy_location: str = "HeadOnly",
    ingress: str = "auto",
    grpc_port: int | None = None,
    metrics_port: int | None = None,
    door_busy_polling: bool = False,
) -> None:
    """Deploy on the cluster at ``address`` (``auto``: the local one, started if there is
    none), serve until SIGTERM or SIGINT, then delete the application. Ingress ``haproxy``
    (``auto``: when its binary is found) puts the front door on ``http_port`` (and
    ``grpc_port``) and Serve's proxy on an internal port; ``serve``: Serve's proxy on
    ``http_port``, no gRPC. The cluster's ``/metrics`` is also on ``metrics_port``.
    ``door_busy_polling``: the front door's HAProxy never sleeps (a core, for latency)."""
    from ray import serve

    from accelserve.deploy.frontdoor import haproxy_binary
    from accelserve.deploy.metrics_port import MetricsForwarder
    from accelserve.deploy.peers import remove_registry

    binary = front_door_binary(ingress, haproxy_binary)
    if binary is not None and grpc_port:
        options.grpc = True
    serve_port = _free_port(host) if binary is not None else http_port
    forwarder = None  # first: a metrics port in use fails before anything is deployed
    if metrics_port is not None:
        proxy = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        forwarder = MetricsForwarder(host, metrics_port, f"http://{proxy}:{serve_port}/metrics")
    try:
        _connect(address)
    except BaseException:
        if forwarder is not None:
            forwarder.stop()
        raise
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    door = None
    try:
        serve.start(proxy_location=proxy_location, http_options={"host": host, "port": serve_port})
        serve.run(application(options), name=APP_NAME, route_prefix="/", blocking=False)
        if binary is not None:
            door = _open_front_door(
                options, binary, host, (http_port, serve_port, grpc_port), stop, door_busy_polling
            )
        log.info("accelserve on Ray Serve: http://%s:%d", host, http_port)
        print(f"accelserve on Ray Serve: http://{host}:{http_port}", flush=True)
        while not stop.wait(1.0):
            pass
        log.info("stopping: deleting the application")
    finally:
        if forwarder is not None:
            forwarder.stop()
        try:
            if door is not None:
                door.stop()
            serve.delete(APP_NAME)
            remove_registry()
        finally:
            import ray

            ray.shutdown()


def front_door_binary(ingress: str, find: Callable[[], str | None]) -> str | None:
    """The HAProxy binary for the front door (``find`` looks for it), or None for Serve's
    proxy. ``auto`` takes HAProxy when found. Autoscaling works with either: the replicas
    report their own request counts to Serve's autoscaler (``deploy.autoscale``)."""
    if ingress not in INGRESSES:
        raise ConfigError(
            f"--ray-ingress: expected one of {', '.join(INGRESSES)}; received {ingress!r}"
        )
    if ingress == "serve":
        return None
    binary = find()
    if ingress == "haproxy" and binary is None:
        raise ConfigError("--ray-ingress haproxy: no HAProxy found (pip install 'ray[serve]')")
    return binary


def _connect(address: str) -> None:
    import ray

    if address == "auto":
        try:
            ray.init(address="auto")
        except ConnectionError:
            ray.init()
    else:
        ray.init(address=address)


def _free_port(host: str) -> int:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _open_front_door(
    options: DeployOptions,
    binary: str,
    host: str,
    ports: tuple[int, int, int | None],
    stop: threading.Event,
    busy_polling: bool = False,
) -> Any:
    """HAProxy on the HTTP port (and the gRPC one) of ``ports`` (HTTP, Serve's proxy, gRPC),
    kept in sync with the registry by a thread until ``stop``."""
    import os

    from accelserve.deploy.frontdoor import FrontDoor, Layout, RegistryWatch, keep_in_sync
    from accelserve.deploy.peers import registry

    http_port, serve_port, grpc_port = ports
    groups = plan_groups(options.model_repository, options.groups)
    names = tuple(g.name for g in groups)
    if grpc_port and len(names) > 1:
        log.warning("gRPC through the front door needs one model group; --grpc-port is off")
        grpc_port = None
    serve_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    layout = Layout(
        host=host,
        http_port=http_port,
        serve_address=f"{serve_host}:{serve_port}",
        groups=names,
        owners={model: g.name for g in groups for model in g.models},
        grpc_port=grpc_port or None,
        threads=max(1, min(4, (os.cpu_count() or 1) // 4)),
        busy_polling=busy_polling,
    )
    keys = {g: f"{APP_NAME}/{deployment_name(g)}" for g in names}
    watch = RegistryWatch(registry(), keys)
    door = FrontDoor(layout, binary)
    door.start(watch.endpoints())
    threading.Thread(
        target=keep_in_sync, args=(door, watch, stop), name="frontdoor-sync", daemon=True
    ).start()
    return door
