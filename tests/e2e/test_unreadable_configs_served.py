"""A config.pbtxt the reader rejects makes that model UNAVAILABLE with the reason; the server
starts and serves the others (before, a config that was not UTF-8 stopped the whole server at
startup with a bare UnicodeDecodeError)."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import ServerProcess, copy_example


def test_unreadable_configs_are_unavailable_and_the_rest_serves(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    copy_example("simple", repository)
    for name, raw in {
        "latin1": b'name: "latin1"\nplatform: "caf\xe9"\n',
        "bad_escape": b'name: "bad_escape"\nplatform: "onnx\\{runtime"\n',
    }.items():
        (repository / name / "1").mkdir(parents=True)
        (repository / name / "config.pbtxt").write_bytes(raw)
    server = ServerProcess(repository)
    try:
        index = httpx.post(f"{server.base}/v2/repository/index").json()
        rows = {row["name"]: row for row in index}
        assert rows["latin1"]["state"] == "UNAVAILABLE"
        assert rows["latin1"]["reason"] == (
            "latin1/config.pbtxt: expected UTF-8 text; byte 29 is 0xe9, which is not valid "
            "UTF-8 there"
        )
        assert rows["bad_escape"]["state"] == "UNAVAILABLE"
        assert "line 2: invalid escape sequence '\\\\{'" in rows["bad_escape"]["reason"]
        assert rows["simple"]["state"] == "READY"
        assert httpx.get(f"{server.base}/v2/models/simple/ready").status_code == 200
    finally:
        server.stop()
