"""The data plane's methods in process, over models in a dict and a fake runner."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from accelserve.dataplane import DataPlane
from accelserve.errors import (
    InvalidArgumentError,
    ModelExecutionError,
    ModelNotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnavailableError,
)
from accelserve.model import READY, UNAVAILABLE, ModelRecord
from accelserve.types import InferRequest
from tests.unit.fake_models import (
    API_KEY,
    FakeRegistry,
    runner_of,
    simple_dataplane,
    simple_version,
)


def request(rows: int = 1, outputs: list[str] | None = None) -> InferRequest:
    a = np.arange(4 * rows, dtype=np.int32).reshape(rows, 4)
    return InferRequest(inputs={"INPUT0": a, "INPUT1": a}, outputs=outputs or [], id="r1")


def test_health_follows_start_and_stop() -> None:
    dataplane = DataPlane(FakeRegistry())
    assert dataplane.live() and not dataplane.ready()
    dataplane.started = True
    assert dataplane.ready()
    dataplane.stopping = True
    assert dataplane.live() and not dataplane.ready()


def test_server_metadata() -> None:
    data = simple_dataplane().server_metadata()
    assert data["name"] == "accelserve" and data["version"]
    assert {"binary_tensor_data", "model_repository", "statistics"} <= set(data["extensions"])


def test_model_ready_and_known_model_ready() -> None:
    dataplane = simple_dataplane()
    assert dataplane.model_ready("simple") and dataplane.model_ready("simple", "1")
    for name, version in (("simple", "7"), ("broken", ""), ("nope", "")):
        assert not dataplane.model_ready(name, version)
    assert dataplane.known_model_ready("simple", "1")
    assert not dataplane.known_model_ready("simple", "7")  # a known model's unknown version
    assert not dataplane.known_model_ready("broken")
    with pytest.raises(ModelNotFoundError, match="'nope' is not found"):
        dataplane.known_model_ready("nope")
    dataplane.stopping = True
    assert not dataplane.model_ready("simple") and not dataplane.known_model_ready("simple")


def test_model_metadata_and_config() -> None:
    dataplane = simple_dataplane()
    assert dataplane.model_metadata("simple") == {
        "name": "simple",
        "versions": ["1", "2"],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [-1, 4]},
            {"name": "INPUT1", "datatype": "INT32", "shape": [-1, 4]},
        ],
        "outputs": [
            {"name": "OUTPUT0", "datatype": "INT32", "shape": [-1, 4]},
            {"name": "OUTPUT1", "datatype": "INT32", "shape": [-1, 4]},
        ],
    }
    config = dataplane.model_config("simple", "1")
    assert config["name"] == "simple" and config["max_batch_size"] == 8
    assert [i["name"] for i in config["input"]] == ["INPUT0", "INPUT1"]
    assert config["instances"] == []  # no scheduler instances behind a fake runner
    with pytest.raises(ModelNotFoundError):
        dataplane.model_metadata("nope")
    with pytest.raises(UnavailableError, match="UNAVAILABLE"):
        dataplane.model_config("broken")


def test_infer_validates_then_runs_the_version_asked_for() -> None:
    dataplane = simple_dataplane()
    response = asyncio.run(dataplane.infer("simple", "1", request(2)))
    assert (response.model_name, response.model_version, response.id) == ("simple", "1", "r1")
    assert response.outputs["OUTPUT0"].tolist() == [[0, 2, 4, 6], [8, 10, 12, 14]]
    assert list(response.outputs) == ["OUTPUT0", "OUTPUT1"]
    assert len(runner_of(dataplane, "1").requests) == 1 and not runner_of(dataplane).requests
    # the latest version by default, and only the outputs asked for
    response = asyncio.run(dataplane.infer("simple", "", request(outputs=["OUTPUT1"])))
    assert response.model_version == "2" and list(response.outputs) == ["OUTPUT1"]
    # a request the config rejects never reaches the runner
    bad = request(9)  # above max_batch_size 8
    with pytest.raises(InvalidArgumentError, match="max_batch_size"):
        asyncio.run(dataplane.infer("simple", "", bad))
    assert len(runner_of(dataplane).requests) == 1


def test_infer_errors() -> None:
    dataplane = simple_dataplane()
    with pytest.raises(ModelNotFoundError):
        asyncio.run(dataplane.infer("nope", "", request()))
    with pytest.raises(ModelNotFoundError, match="version 7"):
        asyncio.run(dataplane.infer("simple", "7", request()))
    with pytest.raises(UnavailableError, match="UNAVAILABLE"):
        asyncio.run(dataplane.infer("broken", "", request()))
    runner_of(dataplane).error = ModelExecutionError("backend failed")
    with pytest.raises(ModelExecutionError, match="backend failed"):
        asyncio.run(dataplane.infer("simple", "", request()))
    dataplane.stopping = True
    with pytest.raises(UnavailableError, match="shutting down"):
        asyncio.run(dataplane.infer("simple", "1", request()))


def test_statistics_and_version_stats() -> None:
    dataplane = simple_dataplane()
    dataplane.model("simple", "1").stats.inference_count = 3
    every = dataplane.statistics()["model_stats"]
    assert [(s["name"], s["version"]) for s in every] == [("simple", "1"), ("simple", "2")]
    assert every[0]["inference_count"] == 3 and every[0]["memory_usage"] == []
    one = dataplane.statistics("simple", "2")["model_stats"]
    assert [s["version"] for s in one] == ["2"]
    assert len(dataplane.statistics("simple")["model_stats"]) == 2
    with pytest.raises(ModelNotFoundError):
        dataplane.statistics("nope")
    with pytest.raises(UnavailableError):
        dataplane.statistics("broken")
    stats = dataplane.version_stats()
    assert [(s.name, s.version, s.inference_count) for s in stats] == [
        ("simple", "1", 3),
        ("simple", "2", 0),
    ]
    assert stats[0] is dataplane.model("simple", "1").stats  # live objects, not copies


def test_version_stats_of_models_not_ready() -> None:
    dataplane = simple_dataplane()
    registry = dataplane.repository
    assert isinstance(registry, FakeRegistry)
    registry.models["simple"].state = UNAVAILABLE  # e.g. while it reloads
    assert dataplane.version_stats() == []
    assert [s.version for s in dataplane.version_stats(ready_only=False)] == ["1", "2"]


def test_repository_index() -> None:
    dataplane = simple_dataplane()
    assert dataplane.repository_index() == [
        {"name": "broken", "version": "", "state": UNAVAILABLE},
        {"name": "simple", "version": "1", "state": READY},
        {"name": "simple", "version": "2", "state": READY},
    ]
    assert [r["name"] for r in dataplane.repository_index(ready_only=True)] == ["simple"] * 2


def test_model_control_needs_a_key_to_be_enabled() -> None:
    with pytest.raises(ValueError, match="API key"):
        DataPlane(FakeRegistry(), model_control=True)


def test_authorize_control() -> None:
    with pytest.raises(PermissionDeniedError, match="disabled"):
        simple_dataplane().authorize_control(API_KEY)
    dataplane = simple_dataplane(model_control=True)
    with pytest.raises(UnauthenticatedError, match="Bearer"):
        dataplane.authorize_control(None)
    with pytest.raises(UnauthenticatedError, match="not valid"):
        dataplane.authorize_control("wrong")
    dataplane.authorize_control(API_KEY)


def test_load_and_unload() -> None:
    dataplane = simple_dataplane(model_control=True)
    registry = dataplane.repository
    assert isinstance(registry, FakeRegistry)
    registry.loadable["extra"] = [simple_version("3", name="extra")]
    with pytest.raises(UnauthenticatedError):
        asyncio.run(dataplane.load_model("extra", "wrong"))
    assert "extra" not in registry.models  # nothing is done for a caller without the key
    asyncio.run(dataplane.load_model("extra", API_KEY))
    assert dataplane.model_ready("extra", "3")
    with pytest.raises(InvalidArgumentError, match="failed to load 'ghost': no model file"):
        asyncio.run(dataplane.load_model("ghost", API_KEY))
    asyncio.run(dataplane.unload_model("extra", API_KEY))
    assert not dataplane.model_ready("extra") and dataplane.known_model_ready("extra") is False
    with pytest.raises(ModelNotFoundError):
        asyncio.run(dataplane.unload_model("nope", API_KEY))


def test_every_failed_inference_is_counted() -> None:
    dataplane = simple_dataplane()
    stats = dataplane.model("simple", "2").stats
    with pytest.raises(InvalidArgumentError, match="max_batch_size"):
        asyncio.run(dataplane.infer("simple", "", request(9)))  # the config rejects it
    assert stats.fail_reasons == {"REJECTED": 1} and stats.fail.count == 1
    assert not runner_of(dataplane).requests
    # a frontend's decoding failure, reported under the model it names
    dataplane.record_failure("simple", "2", InvalidArgumentError("bad body"))
    assert stats.fail_reasons == {"REJECTED": 2}
    # requests that name no READY model: counted server-wide
    for name, version, error in (
        ("nope", "", ModelNotFoundError),
        ("simple", "7", ModelNotFoundError),
        ("broken", "", UnavailableError),
        ("x" * 300, "", InvalidArgumentError),
    ):
        with pytest.raises(error):
            asyncio.run(dataplane.infer(name, version, request()))
    dataplane.record_failure("", "", InvalidArgumentError("malformed message"))
    assert dataplane.failures_without_model == {"REJECTED": 4, "OTHER": 1}
    assert stats.fail_reasons == {"REJECTED": 2}
    dataplane.stopping = True
    with pytest.raises(UnavailableError, match="shutting down"):
        asyncio.run(dataplane.infer("simple", "", request()))
    assert stats.fail_reasons == {"REJECTED": 2, "OTHER": 1}


@pytest.mark.parametrize("name", ["x" * 256, "../simple", "a\\b", "a\x00b", ".hidden", ""])
def test_invalid_model_names_are_invalid_arguments_on_every_route(name: str) -> None:
    dataplane = simple_dataplane(model_control=True)
    calls = [
        lambda: dataplane.model_ready(name),
        lambda: dataplane.known_model_ready(name),
        lambda: dataplane.model(name),
        lambda: dataplane.model_metadata(name),
        lambda: dataplane.model_config(name),
        lambda: dataplane.statistics(name) if name else dataplane.model(name),
        lambda: asyncio.run(dataplane.infer(name, "", request())),
        lambda: asyncio.run(dataplane.load_model(name, API_KEY)),
        lambda: asyncio.run(dataplane.unload_model(name, API_KEY)),
    ]
    for call in calls:
        with pytest.raises(InvalidArgumentError, match="model name: expected"):
            call()
    registry = dataplane.repository
    assert isinstance(registry, FakeRegistry)
    assert set(registry.models) == {"simple", "broken"}  # nothing was loaded or unloaded


def test_a_caller_cancelled_mid_load_does_not_cancel_the_load() -> None:
    dataplane = simple_dataplane(model_control=True)
    registry = dataplane.repository
    assert isinstance(registry, FakeRegistry)
    registry.loadable["extra"] = [simple_version("3", name="extra")]
    release = asyncio.Event()
    entered = asyncio.Event()
    load = registry.load

    async def slow_load(name: str) -> ModelRecord:
        entered.set()
        await release.wait()
        return await load(name)

    registry.load = slow_load  # type: ignore[method-assign]

    async def main() -> None:
        caller = asyncio.ensure_future(dataplane.load_model("extra", API_KEY))
        await entered.wait()
        caller.cancel()  # e.g. the HTTP client went away
        with pytest.raises(asyncio.CancelledError):
            await caller
        release.set()
        for _ in range(20):  # the shielded load's remaining steps, a few loop turns
            await asyncio.sleep(0)

    asyncio.run(main())
    assert dataplane.model_ready("extra", "3")


class GatedRunner:
    """Answers once ``release`` is set; counts the requests it has been given."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0

    async def infer(self, request: InferRequest) -> dict[str, np.ndarray]:
        self.entered += 1
        await self.release.wait()
        return {"OUTPUT0": request.inputs["INPUT0"], "OUTPUT1": request.inputs["INPUT1"]}


def test_requests_in_flight_counts_admitted_requests_until_answered() -> None:
    # What a Ray replica reports to Serve's autoscaler (deploy.autoscale).
    dataplane = simple_dataplane()
    gated = GatedRunner()
    dataplane.model("simple", "1").runner = gated

    async def scenario() -> None:
        calls = [asyncio.create_task(dataplane.infer("simple", "1", request())) for _ in range(3)]
        stream = dataplane.infer_stream("simple", "1", request())
        streamed = asyncio.create_task(anext(stream))
        while gated.entered < 4:
            await asyncio.sleep(0)
        assert dataplane.requests_in_flight == 4
        with pytest.raises(InvalidArgumentError):  # refused at admission: never counted
            await dataplane.infer("simple", "1", request(9))
        assert dataplane.requests_in_flight == 4
        gated.release.set()
        await asyncio.gather(*calls)
        assert (await streamed).final
        await stream.aclose()
        assert dataplane.requests_in_flight == 0
        runner_of(dataplane).error = ModelExecutionError("backend failed")
        with pytest.raises(ModelExecutionError):
            await dataplane.infer("simple", "2", request())
        assert dataplane.requests_in_flight == 0  # a failed request is answered too

    asyncio.run(scenario())
