"""The real nova-api 34 fixture: nova's own paste pipeline answers, and reaches the simulator."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from tests.conftest import NOVA_CINDER_CREATE_KEYS
from tests.support import real_nova as support
from tests.support.real_nova import RealNovaService, nova_venv

real_nova = support.real_nova  # the session fixture, used here

HEADERS = {
    "X-User-Id": "u-1",
    "X-Project-Id": "abc123",
    "X-Roles": "member",
    "X-Auth-Token": "tok-nova",
    "Content-Type": "application/json",
}


def test_create_reaches_the_simulator_with_novas_eleven_keys(real_nova: RealNovaService) -> None:
    """POST /v2.1/os-volumes: 200 from nova, and Cinder got nova's 11-key body + lazy GET."""
    real_nova.sim.reset()
    answer = real_nova.nova.request(
        "POST", "/v2.1/os-volumes", json.dumps({"volume": {"size": 1}}).encode(), HEADERS
    )
    assert answer.status == 200, answer.body
    volume = json.loads(answer.body)["volume"]
    assert volume["size"] == 1 and volume["attachments"] == [{}]
    post, get = real_nova.sim.requests()
    assert (post["method"], post["path"]) == ("POST", "/v3/abc123/volumes")
    assert list(json.loads(post["body"])["volume"]) == NOVA_CINDER_CREATE_KEYS
    assert post["headers"]["X-Auth-Token"] == "tok-nova"
    assert (get["method"], get["path"]) == ("GET", f"/v3/abc123/volumes/{volume['id']}")


def test_version_documents_are_served_unauthenticated(real_nova: RealNovaService) -> None:
    """GET / lists v2.0 and v2.1; GET /v2.1/ describes v2.1 up to 2.104; no identity needed."""
    root = real_nova.nova.request("GET", "/")
    assert root.status == 200
    assert [v["id"] for v in json.loads(root.body)["versions"]] == ["v2.0", "v2.1"]
    v21 = real_nova.nova.request("GET", "/v2.1/")
    assert v21.status == 200
    assert json.loads(v21.body)["version"]["version"] == "2.104"


def test_schema_error_is_novas_400(real_nova: RealNovaService) -> None:
    """size 0 fails nova's schema with nova's exact message, and Cinder is never called."""
    real_nova.sim.reset()
    answer = real_nova.nova.request(
        "POST", "/v2.1/os-volumes", json.dumps({"volume": {"size": 0}}).encode(), HEADERS
    )
    assert answer.status == 400
    assert json.loads(answer.body) == {
        "badRequest": {
            "code": 400,
            "message": "Invalid input for field/attribute size. Value: 0. "
            "0 is less than the minimum of 1",
        }
    }
    assert real_nova.sim.requests() == []


def test_run_on_a_busy_port_fails_with_one_line() -> None:
    """`real_nova run` on a port already taken exits non-zero and says so in one line."""
    nova_venv()  # skips locally when there is no venv (run would build it)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "voltrace.devtools.real_nova", "run", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0]
    assert "serving" not in result.stderr and "on http" not in result.stderr
