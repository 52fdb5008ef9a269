"""The autoscaling policy (``deploy.autoscale``) over hand-built Serve ``AutoscalingContext``s:
alone, and wrapped in Serve's own rules (delays, bounds) as the controller runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from accelserve.deploy.autoscale import ONGOING_METRIC, front_door_policy, parse_setting
from accelserve.deploy.groups import plan_groups
from accelserve.deploy.ray import DeployOptions, deployment_options
from accelserve.errors import ConfigError

pytest.importorskip("ray.serve")

from ray.serve._private.common import DeploymentID, ReplicaID
from ray.serve.autoscaling_policy import _apply_autoscaling_config
from ray.serve.config import AutoscalingConfig, AutoscalingContext

DEPLOYMENT = DeploymentID(name="accelserve-default", app_name="accelserve")


def replica(i: int) -> ReplicaID:
    return ReplicaID(unique_id=f"r{i}", deployment_id=DEPLOYMENT)


def context(
    ongoing: list[float],
    *,
    serve_counts: float = 0.0,
    target: float = 4,
    bounds: tuple[int, int] = (1, 4),
    reported: bool = True,
    **config: float,
) -> AutoscalingContext:
    """A deployment whose running replicas report ``ongoing`` requests each (our metric),
    Serve having counted ``serve_counts`` through its own handles."""
    replicas = [replica(i) for i in range(len(ongoing))]
    settings = AutoscalingConfig(
        min_replicas=bounds[0],
        max_replicas=bounds[1],
        target_ongoing_requests=target,
        **config,
    )
    return AutoscalingContext(
        deployment_id=DEPLOYMENT,
        deployment_name=DEPLOYMENT.name,
        app_name=DEPLOYMENT.app_name,
        current_num_replicas=len(replicas),
        target_num_replicas=len(replicas),
        running_replicas=replicas,
        total_num_requests=serve_counts,
        total_queued_requests=0.0,
        aggregated_metrics=(
            {ONGOING_METRIC: dict(zip(replicas, ongoing, strict=True))} if reported else None
        ),
        raw_metrics=None,
        capacity_adjusted_min_replicas=bounds[0],
        capacity_adjusted_max_replicas=bounds[1],
        policy_state={},
        last_scale_up_time=None,
        last_scale_down_time=None,
        current_time=0.0,
        config=settings,
    )


def desired(ctx: AutoscalingContext) -> float:
    return front_door_policy(ctx)[0]


def test_more_ongoing_than_the_target_per_replica_asks_for_more_replicas() -> None:
    assert desired(context([8.0])) == 2  # one replica holding twice its target
    assert desired(context([6.0, 6.0])) == 3  # 12 requests at 4 per replica


def test_fewer_ongoing_than_the_target_asks_for_fewer_replicas() -> None:
    assert desired(context([1.0, 1.0, 2.0])) == 1  # 4 requests: one replica's worth
    assert desired(context([2.0, 3.0])) == pytest.approx(1.25)  # Serve rounds up: 2 stay


def test_the_answer_stays_within_the_bounds() -> None:
    assert desired(context([0.0, 0.0], bounds=(1, 4))) == 1
    assert desired(context([40.0], bounds=(1, 4))) == 4
    assert desired(context([0.0], bounds=(0, 4))) == 0


def test_serves_own_count_counts_when_larger_and_nothing_twice() -> None:
    # Requests queued in Serve's handles are not in any replica yet: Serve's count is larger.
    assert desired(context([4.0], serve_counts=12.0)) == 3
    # The same requests through Serve's path are in both counts: the larger one, not the sum.
    assert desired(context([8.0], serve_counts=8.0)) == 2


def test_a_replica_that_has_not_reported_counts_as_idle() -> None:
    ctx = context([8.0, 0.0])
    del ctx.aggregated_metrics[ONGOING_METRIC][replica(1)]
    assert desired(ctx) == 2
    assert desired(context([0.0], reported=False)) == 1  # no custom metric reported at all
    assert desired(context([0.0], serve_counts=8.0, reported=False)) == 2


def test_from_zero_replicas_serves_cold_start_decides() -> None:
    ctx = context([], bounds=(0, 2))
    assert front_door_policy(ctx) == (0, {})


def as_serve_runs_it(ctx: AutoscalingContext) -> int:
    """The policy wrapped in Serve's rules, as the controller calls it."""
    decision, _ = _apply_autoscaling_config(front_door_policy)(ctx)
    return int(decision)


def test_serve_scales_at_once_without_delays() -> None:
    assert as_serve_runs_it(context([9.0], upscale_delay_s=0)) == 3
    assert as_serve_runs_it(context([0.0, 0.0], downscale_delay_s=0)) == 1


def test_serve_holds_a_decision_until_its_delay_has_passed() -> None:
    # The first tick wanting more (or fewer) replicas only starts Serve's delay clock.
    assert as_serve_runs_it(context([9.0], upscale_delay_s=600)) == 1
    assert as_serve_runs_it(context([0.0, 0.0], downscale_delay_s=600)) == 2


def test_serve_accepts_the_policy_by_its_path(tmp_path: Path) -> None:
    (tmp_path / "simple" / "1").mkdir(parents=True)
    (tmp_path / "simple" / "config.pbtxt").write_text(
        'name: "simple"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
    )
    options = DeployOptions(str(tmp_path), autoscale=[1, 3])
    (group,) = plan_groups(tmp_path)
    config = AutoscalingConfig(**deployment_options(group, options)["autoscaling_config"])
    policy = config.policy.get_policy()  # the copy the controller unpickles
    assert policy(context([16.0, 8.0], target=8, bounds=(1, 3))) == (3.0, {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("upscale_delay_s", "--autoscale-setting: expected KEY=VALUE; received 'upscale_delay_s'"),
        ("smoothing=1", "expected a KEY among target_ongoing_requests, .*; received 'smoothing'"),
        ("target_ongoing_requests=0", "expected a number > 0; received '0'"),
        ("downscale_delay_s=inf", "expected a number >= 0; received 'inf'"),
    ],
)
def test_a_bad_setting_on_the_command_line_names_field_expected_and_received(
    text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_setting(text)


def test_a_setting_on_the_command_line() -> None:
    assert parse_setting(" downscale_delay_s = 2.5") == ("downscale_delay_s", 2.5)
