"""Serve autoscaling that sees the front door's traffic (docs/distributed.md, Autoscaling).

The front door (``deploy.frontdoor``) sends inference straight to the replicas' own servers,
past Serve's handles and proxy, where Serve counts the ongoing requests its default policy
scales on. So each replica reports its data plane's own count (``DataPlane.requests_in_flight``:
requests admitted and not yet answered, whichever server received them: its own HTTP or gRPC
server, or Serve's path) as the custom metric ``ONGOING_METRIC`` (Serve's
``record_autoscaling_stats``), and ``front_door_policy`` scales on it.

Serve wraps a custom policy in its own rules (ray/serve/autoscaling_policy.py,
``_apply_autoscaling_config``, Ray 2.60): the up/down scaling factors, ``upscale_delay_s`` and
``downscale_delay_s``, the cold start from zero, then the min/max bounds. So the policy only
says how many replicas the load needs, as Serve's default does from its own count.

Serve imports the policy by its path where the deployment is defined and ships it to the
controller pickled by value (``AutoscalingPolicy.serialize_policy``): the policy uses only this
module's own names, so the controller needs nothing else (accelserve is importable on every
node anyway: the replicas import it).
"""

from __future__ import annotations

from typing import Any

from accelserve.errors import ConfigError

ONGOING_METRIC = "accelserve_ongoing_requests"
POLICY = "accelserve.deploy.autoscale:front_door_policy"

# Serve's AutoscalingConfig fields a user may set with --autoscale-setting KEY=VALUE (the
# bounds come from --autoscale, the policy is ours); all non-negative numbers.
SETTINGS = (
    "target_ongoing_requests",
    "upscale_delay_s",
    "downscale_delay_s",
    "look_back_period_s",
    "metrics_interval_s",
    "upscaling_factor",
    "downscaling_factor",
)


def ongoing_requests(ctx: Any) -> float:
    """The deployment's load: the replicas' own counts (each averaged over Serve's look-back
    window), or Serve's count when larger (requests still queued in Serve's handles, which
    no replica holds yet); neither counts a request twice."""
    reported = (ctx.aggregated_metrics or {}).get(ONGOING_METRIC, {})
    ours = sum(reported.get(replica, 0.0) for replica in ctx.running_replicas)
    return max(float(ours), float(ctx.total_num_requests))


def front_door_policy(ctx: Any) -> tuple[float, dict[str, Any]]:
    """Replicas for the load at ``target_ongoing_requests`` per replica, within the
    capacity-adjusted bounds (``ctx`` is Serve's ``AutoscalingContext``)."""
    if ctx.current_num_replicas == 0:
        return ctx.target_num_replicas, {}  # Serve starts from zero on its own count
    desired = ongoing_requests(ctx) / ctx.config.get_target_ongoing_requests()
    low, high = ctx.capacity_adjusted_min_replicas, ctx.capacity_adjusted_max_replicas
    return min(max(desired, float(low)), float(high)), {}


def parse_setting(text: str) -> tuple[str, float]:
    """``"upscale_delay_s=2"`` -> ``("upscale_delay_s", 2.0)`` (``--autoscale-setting``)."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ConfigError(f"--autoscale-setting: expected KEY=VALUE; received {text!r}")
    return key.strip(), check_setting(key.strip(), value.strip())


def check_setting(key: str, value: Any) -> float:
    """``value`` as the number Serve's ``AutoscalingConfig`` field ``key`` takes."""
    if key not in SETTINGS:
        raise ConfigError(
            f"--autoscale-setting: expected a KEY among {', '.join(SETTINGS)}; received {key!r}"
        )
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    positive = key not in ("upscale_delay_s", "downscale_delay_s")
    if not (number > 0 if positive else number >= 0) or number == float("inf"):
        raise ConfigError(
            f"--autoscale-setting {key}: expected a number {'> 0' if positive else '>= 0'}; "
            f"received {value!r}"
        )
    return number
