"""Devices -> Ray resources and request limits, from configs alone."""

from __future__ import annotations

import pytest

from accelserve.config import parse_config
from accelserve.deploy.resources import replica_resources
from accelserve.errors import ConfigError


def config(text: str, name: str = "m"):
    return parse_config(f'name: "{name}"\nplatform: "onnxruntime_onnx"\n{text}')


def test_cpu_instances_become_num_cpus_and_batches_set_the_request_limits():
    cfg = config("max_batch_size: 8\ninstance_group [{ kind: KIND_CPU count: 3 }]")
    res = replica_resources([cfg])
    assert (res.num_cpus, res.num_gpus, res.resources) == (3.0, 0.0, {})
    # three instances, each a full batch of 8 running and one forming
    assert res.target_ongoing_requests == 24
    assert res.max_ongoing_requests == 48
    assert res.ray_actor_options() == {"num_cpus": 3.0}


def test_a_group_adds_its_models_cpu_instances_and_batch_slots():
    a = config("max_batch_size: 4\ninstance_group [{ kind: KIND_CPU count: 2 }]", "a")
    b = config("max_batch_size: 0", "b")  # no batching, one instance on the default device
    res = replica_resources([a, b], "cpu")
    assert res.num_cpus == 3.0
    assert res.target_ongoing_requests == 4 * 2 + 1


def test_gpu_instances_ask_for_the_gpus_they_spread_over_not_per_instance():
    cfg = config("max_batch_size: 16\ninstance_group [{ kind: KIND_GPU count: 2 gpus: [0, 1] }]")
    res = replica_resources([cfg])
    assert res.num_gpus == 2.0  # inside the replica they renumber cuda:0, cuda:1
    assert res.num_cpus == 1.0  # the replica's event loop
    assert res.target_ongoing_requests == 16 * 4
    assert res.ray_actor_options() == {"num_cpus": 1.0, "num_gpus": 2.0}


def test_kind_gpu_without_gpus_list_needs_one_gpu():
    cfg = config("max_batch_size: 8\ninstance_group [{ kind: KIND_GPU count: 3 }]")
    assert replica_resources([cfg]).num_gpus == 1.0


def test_gpu_fractions_from_the_config_parameter_add_up_within_a_group():
    text = (
        "max_batch_size: 8\ninstance_group [{ kind: KIND_GPU }]\n"
        'parameters { key: "ray_num_gpus" value { string_value: "0.25" } }'
    )
    one = replica_resources([config(text, "a")])
    two = replica_resources([config(text, "a"), config(text, "b")])
    assert (one.num_gpus, two.num_gpus) == (0.25, 0.5)


def test_default_device_cuda_places_models_without_instance_group_on_a_gpu():
    cfg = config("max_batch_size: 8")
    assert replica_resources([cfg], "cuda:0").num_gpus == 1.0
    assert replica_resources([cfg], "/device:GPU:0").num_gpus == 1.0
    assert replica_resources([cfg], "auto").num_gpus == 0.0  # ask for GPUs explicitly


def test_tpu_default_device_becomes_a_tpu_resource():
    cfg = config("max_batch_size: 8\ninstance_group [{ kind: KIND_MODEL count: 2 }]")
    res = replica_resources([cfg], "tpu:0")
    assert res.resources == {"TPU": 1.0}
    assert res.ray_actor_options()["resources"] == {"TPU": 1.0}


def test_ensembles_add_no_resources_of_their_own():
    ensemble = parse_config(
        'name: "e"\nplatform: "ensemble"\nmax_batch_size: 8\n'
        'ensemble_scheduling { step [{ model_name: "m" model_version: -1 }] }'
    )
    res = replica_resources([ensemble])
    assert (res.num_cpus, res.num_gpus, res.max_ongoing_requests) == (1.0, 0.0, 5)


def test_max_ongoing_requests_never_below_ray_serve_default():
    cfg = config("max_batch_size: 0\ninstance_group [{ kind: KIND_CPU count: 1 }]")
    assert replica_resources([cfg]).max_ongoing_requests == 5


@pytest.mark.parametrize("value", ["0", "1.5", "half", "-1"])
def test_a_bad_gpu_fraction_names_the_parameter_range_and_value(value):
    cfg = config(
        "max_batch_size: 8\n"
        f'parameters {{ key: "ray_num_gpus" value {{ string_value: "{value}" }} }}'
    )
    with pytest.raises(ConfigError) as info:
        replica_resources([cfg])
    assert "ray_num_gpus" in str(info.value) and "(0, 1]" in str(info.value)
    assert repr(value) in str(info.value)


def test_an_unknown_default_device_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"default device: expected cpu.*received 'fpga'"):
        replica_resources([config("max_batch_size: 8")], "fpga")
