"""What a model name may be: one check, run by the data plane on every route that takes a name
(and by the repository before it touches the file system).

A model name is a directory name in the repository, so it must be one path component that the
file system can hold: at most 255 bytes in UTF-8 (Linux's NAME_MAX; longer names made
``load`` fail with "File name too long"), no path separator ('/' or '\\'), no NUL or other
control character, and no leading '.' ('.', '..' and hidden directories are never models; the
repository scan skips them too). A name that breaks a rule is the client's fault:
``InvalidArgumentError`` (HTTP 400, gRPC INVALID_ARGUMENT) naming the rule and the name.
"""

from __future__ import annotations

from accelserve.errors import InvalidArgumentError

MAX_NAME_BYTES = 255
_SHOWN_CHARS = 64  # of a long name in a message


def check_model_name(name: str) -> None:
    """Raise ``InvalidArgumentError`` unless ``name`` can be a model's directory name."""
    problem = _problem(name)
    if problem:
        shown = name if len(name) <= _SHOWN_CHARS else name[:_SHOWN_CHARS] + "..."
        raise InvalidArgumentError(f"model name: expected {problem}; received {shown!r}")


def _problem(name: str) -> str:
    if not name:
        return "a non-empty name"
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        return f"at most {MAX_NAME_BYTES} bytes in UTF-8, not {size}"
    if "/" in name or "\\" in name:
        return "no path separator ('/' or '\\')"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "no NUL or other control character"
    if name.startswith("."):
        return "a name that does not start with '.'"
    return ""
