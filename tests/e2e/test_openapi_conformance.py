"""The server against its own OpenAPI document (``GET /openapi.json``), with schemathesis.

Schemathesis reads the packaged document (which the server serves byte for byte, checked below)
and, for every operation, sends the document's examples, boundary cases (its coverage phase) and generated requests, valid and
invalid (hypothesis). A 5xx, a status the document does not list, a body or content type that
does not match it, a 405 without ``Allow``, or an invalid request accepted with 2xx fails the
test, naming the operation and a curl command that reproduces it.

The server runs ``simple`` (V2 inference) and ``minilm`` (``/v1/embeddings``), with model
control on and a key schemathesis is not given.

Run length: ``ACCELSERVE_SCHEMATHESIS_EXAMPLES`` generated cases per operation (default 12;
about 900 requests in all, most of them the coverage phase's variations of the infer examples;
about 30 s on 2 cores, server start included). A long run: ``ACCELSERVE_SCHEMATHESIS_EXAMPLES=1000 pytest tests/e2e/test_openapi_conformance.py``.

Not checked: ``positive_data_acceptance`` (a request the document allows must get 2xx): the
document describes the protocol, not each model's inputs, so a well-formed request with the
wrong shape for ``simple`` is rightly a 400.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

import accelserve.frontends
from accelserve.tools.examples.minilm import OPTIONS, SOURCE
from accelserve.tools.export.sentence_transformer import export_sentence_transformer
from tests.conftest import ServerProcess, copy_example

KEY = "openapi-test-key"
EXAMPLES_ENV = "ACCELSERVE_SCHEMATHESIS_EXAMPLES"
EXAMPLES = int(os.environ.get(EXAMPLES_ENV, "12"))


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository: Path = tmp_path_factory.mktemp("openapi") / "models"
    copy_example("simple", repository)
    export_sentence_transformer(SOURCE, repository, "minilm", OPTIONS)
    # Model control on, with a key schemathesis does not know: load and unload answer 401 to
    # every generated request, and no model goes away under the other operations' cases.
    process = ServerProcess(
        repository, "--model-control-mode", "explicit", "--load-model", "*", "--api-key", KEY
    )
    yield process
    process.stop()


# The packaged document; test_served_document_is_the_packaged_one checks that the server serves
# exactly it. (schemathesis.pytest.from_fixture, which would load it from the server, does not
# run under pytest 9: it sets Function._nodeid, which pytest 9 no longer has.)
DOCUMENT = Path(accelserve.frontends.__file__).with_name("openapi.json")
schema = schemathesis.openapi.from_path(DOCUMENT)


def test_served_document_is_the_packaged_one(api_server: ServerProcess) -> None:
    response = httpx.get(f"{api_server.base}/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == json.loads(DOCUMENT.read_text())


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=EXAMPLES_ENV not in os.environ,  # the default run: the same cases every time
)
def test_server_conforms_to_its_openapi_document(
    case: schemathesis.Case, api_server: ServerProcess
) -> None:
    case.call_and_validate(base_url=api_server.base, excluded_checks=[positive_data_acceptance])


def test_served_document_is_valid_openapi(api_server: ServerProcess) -> None:
    loaded = schemathesis.openapi.from_url(f"{api_server.base}/openapi.json")
    loaded.validate()  # against the OpenAPI 3.1 meta-schema; raises on a violation
    labels = {result.ok().label for result in loaded.get_all_operations()}  # ok(): no broken one
    assert {"POST /v2/models/{model_name}/infer", "POST /v1/embeddings"} <= labels
    broken = json.loads(DOCUMENT.read_text())
    broken["paths"]["/v2"]["get"]["responses"] = "none"  # the validation can fail
    with pytest.raises(jsonschema_rs.ValidationError):
        schemathesis.openapi.from_dict(broken).validate()


# The bugs schemathesis found, each checked on its own through the real server.


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [("PUT", "/openapi.json", "GET"), ("GET", "/v2/models/simple/infer", "POST")],
)
def test_405_has_allow(api_server: ServerProcess, method: str, path: str, allowed: str) -> None:
    response = httpx.request(method, f"{api_server.base}{path}")
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert "error" in response.json()


def test_405_has_allow_on_openai_and_metrics_routes(api_server: ServerProcess) -> None:
    response = httpx.get(f"{api_server.base}/v1/embeddings")
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.json()["error"]["code"] == "method_not_allowed"
    response = httpx.delete(f"http://127.0.0.1:{api_server.metrics_port}/metrics")
    assert response.status_code == 405 and response.headers["allow"] == "GET, HEAD"


def test_repository_index_rejects_a_ready_that_is_not_a_boolean(api_server: ServerProcess) -> None:
    response = httpx.post(f"{api_server.base}/v2/repository/index", json={"ready": {}})
    assert response.status_code == 400
    assert response.json() == {
        "error": "repository index 'ready': expected true or false; received an object"
    }
    response = httpx.post(f"{api_server.base}/v2/repository/index", json={"ready": True})
    assert (
        response.status_code == 200
        and {"name": "simple", "version": "1", "state": "READY"} in response.json()
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("user", {}, "user: expected a string; received an object"),
        ("user", 7, "user: expected a string; received an integer"),
        ("encoding_format", "", "encoding_format: expected 'float' or 'base64'; received ''"),
        ("encoding_format", False, "encoding_format: expected 'float' or 'base64'; received False"),
    ],
)
def test_embeddings_reject_mistyped_optional_fields(
    api_server: ServerProcess, field: str, value: object, message: str
) -> None:
    body = {"model": "minilm", "input": "hello", field: value}
    response = httpx.post(f"{api_server.base}/v1/embeddings", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": message,
        "type": "invalid_request_error",
        "param": field,
        "code": None,
    }
    body[field] = None  # null stays "not given"
    assert httpx.post(f"{api_server.base}/v1/embeddings", json=body).status_code == 200
