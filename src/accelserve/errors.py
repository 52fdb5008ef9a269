"""Error vocabulary shared by every layer.

Errors carry a machine-readable ``code`` (one of the ``ErrorCode`` values) and a message that
names the model, field, expected and received values. Only the frontends turn a code into an
HTTP or gRPC status; nothing here knows about either.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_ARGUMENT = "invalid_argument"  # HTTP 400, gRPC INVALID_ARGUMENT
    NOT_FOUND = "not_found"  # HTTP 404, gRPC NOT_FOUND
    UNAVAILABLE = "unavailable"  # HTTP 503, gRPC UNAVAILABLE
    RESOURCE_EXHAUSTED = (
        "resource_exhausted"  # HTTP 503 + Retry-After (queue full), gRPC UNAVAILABLE
    )
    TOO_LARGE = "too_large"  # HTTP 413, gRPC RESOURCE_EXHAUSTED
    UNAUTHENTICATED = "unauthenticated"  # HTTP 401, gRPC UNAUTHENTICATED
    PERMISSION_DENIED = "permission_denied"  # HTTP 403, gRPC PERMISSION_DENIED
    INTERNAL = "internal"  # HTTP 500 (only for failures inside a model; message is sanitized)


class AccelServeError(Exception):
    """Root of every error accelserve raises on purpose."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgumentError(AccelServeError):
    code = ErrorCode.INVALID_ARGUMENT


class ModelNotFoundError(AccelServeError):
    code = ErrorCode.NOT_FOUND


class UnavailableError(AccelServeError):
    code = ErrorCode.UNAVAILABLE


class QueueFullError(AccelServeError):
    """max_queue_size reached: rejected at once, HTTP 503."""

    code = ErrorCode.RESOURCE_EXHAUSTED


class QueueTimeoutError(AccelServeError):
    """The request waited in the queue past its timeout (Triton answers UNAVAILABLE too)."""

    code = ErrorCode.UNAVAILABLE


class PayloadTooLargeError(AccelServeError):
    code = ErrorCode.TOO_LARGE


class UnauthenticatedError(AccelServeError):
    code = ErrorCode.UNAUTHENTICATED


class PermissionDeniedError(AccelServeError):
    code = ErrorCode.PERMISSION_DENIED


class ModelExecutionError(AccelServeError):
    """A backend failed while running a batch; the message is safe to show a client."""

    code = ErrorCode.INTERNAL


class ModelInputError(InvalidArgumentError):
    """A backend refused the data of a batch (a token id outside the vocabulary, an index out
    of range): the client's fault, HTTP 400 / gRPC INVALID_ARGUMENT. The message names the
    input and the bad value where the backend's error lets us tell."""


class ServerFaultError(ModelExecutionError):
    """A batch failed for the server's own reasons (out of memory, the backend is closed or
    its worker died): no request is to blame, so the batch is not retried request by request."""


class ConfigError(AccelServeError):
    """A model's configuration or files are wrong; the model becomes UNAVAILABLE."""

    code = ErrorCode.INVALID_ARGUMENT


class DeviceError(AccelServeError):
    """A device string is malformed or names a device that is not on this host."""

    code = ErrorCode.INVALID_ARGUMENT
