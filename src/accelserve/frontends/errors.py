"""What every frontend shares about errors and requests: one ``ErrorCode`` -> status table per
transport, the bearer-token rule and the HTTP method check.

No web or RPC framework is imported here, so an HTTP-only server never loads grpc: the gRPC
table holds ``grpc.StatusCode`` member names, which ``frontends.grpc`` resolves once.
"""

from __future__ import annotations

from accelserve.errors import AccelServeError, ErrorCode, InvalidArgumentError
from accelserve.frontends.http_limits import RETRY_AFTER

HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.INTERNAL: 500,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.RESOURCE_EXHAUSTED: 503,  # queue full: Triton answers 503 too
}
GRPC_STATUS: dict[ErrorCode, str] = {  # grpc.StatusCode member names
    ErrorCode.INVALID_ARGUMENT: "INVALID_ARGUMENT",
    ErrorCode.NOT_FOUND: "NOT_FOUND",
    ErrorCode.UNAVAILABLE: "UNAVAILABLE",
    # Queue full: the server is overloaded for now, UNAVAILABLE as Triton answers (a client
    # retries UNAVAILABLE; RESOURCE_EXHAUSTED reads as a quota that will not pass).
    ErrorCode.RESOURCE_EXHAUSTED: "UNAVAILABLE",
    ErrorCode.TOO_LARGE: "RESOURCE_EXHAUSTED",
    ErrorCode.UNAUTHENTICATED: "UNAUTHENTICATED",
    ErrorCode.PERMISSION_DENIED: "PERMISSION_DENIED",
    ErrorCode.INTERNAL: "INTERNAL",
}


class MethodNotAllowedError(InvalidArgumentError):
    """A known route asked with the wrong HTTP method: 405 over HTTP (an HTTP notion, so it
    lives with the frontends), INVALID_ARGUMENT anywhere else. ``allowed``: the route's
    methods, which a 405 must list in its ``Allow`` header (RFC 9110, 15.5.6)."""

    def __init__(self, message: str, allowed: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.allowed = allowed

    def allow_header(self) -> list[tuple[bytes, bytes]]:
        """The ``Allow`` header of the 405, as a response header list."""
        return [(b"allow", ", ".join(self.allowed).encode())]


def http_status(exc: AccelServeError) -> int:
    """The HTTP status code of an error (500 for a code the table lacks)."""
    if isinstance(exc, MethodNotAllowedError):
        return 405
    return HTTP_STATUS.get(exc.code, 500)


def bearer_token(value: str | bytes | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header or gRPC metadata value; None when
    the value is absent, uses another scheme or carries no key."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    scheme, _, token = text.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def error_headers(exc: AccelServeError) -> list[tuple[bytes, bytes]]:
    """The headers an error's HTTP answer must carry: a 405's ``Allow``; a 503's
    ``Retry-After`` (overloaded or not ready: a state that passes, so say when to retry)."""
    if isinstance(exc, MethodNotAllowedError):
        return exc.allow_header()
    return [RETRY_AFTER] if http_status(exc) == 503 else []


def expect_method(method: str, allowed: str | tuple[str, ...], path: str) -> None:
    """Raise ``MethodNotAllowedError`` (405) unless ``method`` is ``allowed`` (one method or
    several); ``path`` names the route in the message."""
    methods = (allowed,) if isinstance(allowed, str) else allowed
    if method not in methods:
        raise MethodNotAllowedError(
            f"method {method} is not allowed on {path}; expected {' or '.join(methods)}", methods
        )
