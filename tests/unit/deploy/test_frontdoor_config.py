"""The front door's HAProxy configuration, rendered from a registry snapshot and the groups
(``deploy.frontdoor``), and checked by the real HAProxy binary where one is installed."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from accelserve.deploy.frontdoor import (
    Endpoint,
    Layout,
    backend_name,
    haproxy_binary,
    render_config,
    render_model_map,
)
from accelserve.deploy.peers import PeerRegistry

ONE = Layout(
    host="127.0.0.1",
    http_port=8000,
    serve_address="127.0.0.1:9000",
    groups=("default",),
    owners={"simple": "default", "minilm": "default"},
    grpc_port=8001,
)
TWO = Layout(
    host="127.0.0.1",
    http_port=8000,
    serve_address="127.0.0.1:9000",
    groups=("default", "text"),
    owners={"simple": "default", "minilm": "text", "bad name": "text"},
    grpc_port=8001,
)


def lines(text: str, section: str) -> list[str]:
    """The lines of one section (``backend group_0``)."""
    blocks = text.split("\n\n")
    (block,) = [b for b in blocks if b.startswith(section + "\n")]
    return [line.strip() for line in block.splitlines()[1:]]


def test_the_model_map_names_each_models_group_backend() -> None:
    assert render_model_map(TWO) == "minilm group_1\nsimple group_0\n"
    assert backend_name(TWO.groups, "text") == "group_1"


def test_each_group_balances_over_its_replicas_http_servers() -> None:
    endpoints = {
        "default": [Endpoint("10.0.0.1:4001", "10.0.0.1:5001"), Endpoint("10.0.0.2:4002")],
        "text": [Endpoint("10.0.0.3:4003")],
    }
    text = render_config(TWO, endpoints, "/d/models.map", "/d/sock")
    group_0 = lines(text, "backend group_0")
    assert "option httpchk GET /v2/health/ready" in group_0
    assert [line.split()[:3] for line in group_0 if line.startswith("server")] == [
        ["server", "r0", "10.0.0.1:4001"],
        ["server", "r1", "10.0.0.2:4002"],
    ]
    assert [line.split()[2] for line in lines(text, "backend group_1") if "server" in line] == [
        "10.0.0.3:4003"
    ]
    assert lines(text, "backend serve") == ["server serve 127.0.0.1:9000"]


def test_requests_are_retried_on_another_replica_from_a_buffered_copy() -> None:
    defaults = lines(render_config(ONE, {}, "/m", "/s"), "defaults")
    assert "option http-buffer-request" in defaults
    assert "option redispatch 1" in defaults
    (retry,) = [line for line in defaults if line.startswith("retry-on")]
    assert {"conn-failure", "empty-response"} <= set(retry.split()[1:])


def test_model_routes_use_the_map_and_everything_else_goes_to_serve() -> None:
    front = lines(render_config(TWO, {}, "/d/models.map", "/d/sock"), "frontend http")
    assert "bind 127.0.0.1:8000" in front
    assert "default_backend serve" in front
    assert any("map(/d/models.map,serve)" in line for line in front)
    # A group with no healthy replica falls back to Ray's path (the router), not a 503.
    assert "use_backend group_1 if { var(txn.backend) -m str group_1 } { nbsrv(group_1) gt 0 }" in (
        front
    )
    # /v1/embeddings names its model in the body: with several groups, the router decides.
    assert not any("/v1/embeddings" in line for line in front)
    one = lines(render_config(ONE, {}, "/m", "/s"), "frontend http")
    assert any("/v1/embeddings" in line and "group_0" in line for line in one)


def test_grpc_goes_over_http2_to_the_replicas_grpc_servers_with_one_group_only() -> None:
    endpoints = {"default": [Endpoint("h:1", "h:2"), Endpoint("h:3", None)]}
    text = render_config(ONE, endpoints, "/m", "/s")
    assert "bind 127.0.0.1:8001 proto h2" in lines(text, "frontend grpc")
    servers = [line for line in lines(text, "backend grpc") if line.startswith("server")]
    assert [s.split()[2] for s in servers] == ["h:2"]
    assert all("proto h2" in s for s in servers)
    assert "frontend grpc" not in render_config(TWO, {"default": endpoints["default"]}, "/m", "/s")


def test_ipv6_hosts_are_bracketed() -> None:
    layout = Layout("::1", 8000, "[::1]:9000", ("default",), {"simple": "default"})
    assert "bind [::1]:8000" in lines(render_config(layout, {}, "/m", "/s"), "frontend http")


def test_the_registry_lists_each_replicas_http_and_grpc_address() -> None:
    registry = PeerRegistry()
    registry.add("app/g", "r1", "http://h:1", "h:2")
    registry.add("app/g", "r2", "http://h:3")
    registry.add("app/other", "r3", "http://h:4", "h:5")
    assert registry.endpoints(["app/g"]) == {
        "app/g": [{"http": "http://h:1", "grpc": "h:2"}, {"http": "http://h:3"}]
    }
    registry.remove_url("http://h:1")
    assert registry.endpoints(["app/g", "app/none"]) == {
        "app/g": [{"http": "http://h:3"}],
        "app/none": [],
    }
    assert registry.urls(["app/other"]) == ["http://h:4"]


def test_busy_polling_is_asked_of_haproxy_only_when_wanted() -> None:
    assert "busy-polling" not in lines(render_config(ONE, {}, "/m", "/s"), "global")
    polling = dataclasses.replace(ONE, busy_polling=True)
    assert "busy-polling" in lines(render_config(polling, {}, "/m", "/s"), "global")


@pytest.mark.parametrize(
    "layout",
    [ONE, TWO, dataclasses.replace(ONE, busy_polling=True)],
    ids=["one group", "two groups", "busy polling"],
)
def test_haproxy_accepts_the_configuration(layout: Layout, tmp_path: Path) -> None:
    binary = haproxy_binary()
    if binary is None:
        pytest.skip("no HAProxy binary (ray[serve] not installed)")
    map_path = tmp_path / "models.map"
    map_path.write_text(render_model_map(layout))
    endpoints = {g: [Endpoint("127.0.0.1:4001", "127.0.0.1:5001")] for g in layout.groups}
    config = tmp_path / "haproxy.cfg"
    config.write_text(render_config(layout, endpoints, str(map_path), str(tmp_path / "sock")))
    result = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
