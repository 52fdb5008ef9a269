"""The frontends' shared error tables, bearer-token rule and method check."""

from __future__ import annotations

import grpc
import pytest

from accelserve.errors import (
    AccelServeError,
    ErrorCode,
    InvalidArgumentError,
    PayloadTooLargeError,
)
from accelserve.frontends.errors import (
    GRPC_STATUS,
    HTTP_STATUS,
    MethodNotAllowedError,
    bearer_token,
    expect_method,
    http_status,
)


def test_every_error_code_has_a_status_on_each_transport() -> None:
    assert set(HTTP_STATUS) == set(GRPC_STATUS) == set(ErrorCode)
    for name in GRPC_STATUS.values():
        assert isinstance(grpc.StatusCode[name], grpc.StatusCode)


def test_http_status() -> None:
    assert http_status(PayloadTooLargeError("x")) == 413
    assert http_status(MethodNotAllowedError("x")) == 405
    assert http_status(InvalidArgumentError("x")) == 400
    assert http_status(AccelServeError("x")) == 500


@pytest.mark.parametrize(
    ("value", "token"),
    [
        (None, None),
        ("Bearer abc", "abc"),
        (b"Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("BEARER abc", "abc"),
        ("Bearer", None),
        ("Bearer   ", None),
        ("Basic abc", None),
        ("abc", None),
        ("", None),
    ],
)
def test_bearer_token(value: str | bytes | None, token: str | None) -> None:
    assert bearer_token(value) == token


def test_expect_method() -> None:
    expect_method("GET", "GET", "/v2")
    expect_method("HEAD", ("GET", "HEAD"), "/metrics")
    with pytest.raises(MethodNotAllowedError) as info:
        expect_method("POST", "GET", "/v2/health/live")
    assert info.value.message == "method POST is not allowed on /v2/health/live; expected GET"
    with pytest.raises(MethodNotAllowedError, match=r"expected GET or HEAD$"):
        expect_method("PUT", ("GET", "HEAD"), "/metrics")


def test_openai_errors_carry_retry_after_on_503_only() -> None:
    from accelserve.frontends.openai import OpenAIError

    status, headers, _ = OpenAIError(503, "busy", None, None, "server_error").response()
    assert status == 503 and (b"retry-after", b"1") in headers
    status, headers, _ = OpenAIError(400, "bad").response()
    assert status == 400 and all(name != b"retry-after" for name, _ in headers)
