"""Talking to a real cinder-api as its operator: plain http.client, never traced or signed.

Shared by the simple cinder-api (``real_cinder.RealCinder``) and the complete Cinder
(``cinder_stack.CinderStack``). Under ``auth_strategy = noauth`` the token is
``"<user>:<project>"`` and every caller is admin.
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from voltrace.devtools.cinder_venv import RealCinderError

#: The project admin calls run in (cinder wants project ids in URLs to match [0-9a-f-]+).
ADMIN_PROJECT = "ad" * 16


@dataclass(frozen=True)
class Profiler:
    """cinder.conf ``[profiler]``: signed requests are traced and exported over OTLP/HTTP."""

    hmac_keys: str  # comma-separated; any of them validates a request
    otlp_endpoint: str  # e.g. http://127.0.0.1:4318 (the driver posts to /v1/traces)

    def __repr__(self) -> str:
        return f"Profiler(hmac_keys=<hidden>, otlp_endpoint={self.otlp_endpoint!r})"

    @property
    def connection_string(self) -> str:
        host_port = self.otlp_endpoint.split("://", 1)[-1].rstrip("/")
        return f"otlp://{host_port}"


def cinder_environment(
    profiler: Profiler | None = None, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """cinder's environment: ours without OTEL_*/VOLTRACE_*/PYTHON* (they configure *us*)."""
    env = {
        k: v
        for k, v in (os.environ if base is None else base).items()
        if not k.startswith(("OTEL_", "VOLTRACE_", "PYTHON"))
    }
    if profiler is not None:
        # The forking cinder-api otherwise holds spans until 512 are queued.
        env["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] = "1"
    return env


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: Any


class CinderAdmin:
    """Operator calls to the cinder-api on 127.0.0.1:``port``."""

    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def endpoint_template(self) -> str:
        """Nova's ``[cinder] endpoint_template`` for this cinder-api."""
        return f"{self.url}/v3/%(project_id)s"

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        project: str = ADMIN_PROJECT,
        timeout: float = 30.0,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """One call to cinder-api as an admin of ``project`` (noauth token ``admin:project``)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            all_headers = {"X-Auth-Token": f"admin:{project}", "Accept": "application/json"}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                all_headers["Content-Type"] = "application/json"
            all_headers.update(headers or {})
            conn.request(method, path, body=data, headers=all_headers)
            raw = conn.getresponse()
            payload = raw.read()
            parsed: Any = None
            if payload:
                try:
                    parsed = json.loads(payload)
                except ValueError:
                    parsed = payload.decode(errors="replace")
            return Response(raw.status, {k.lower(): v for k, v in raw.getheaders()}, parsed)
        finally:
            conn.close()

    def _ok(self, response: Response, *expected: int) -> Any:
        if response.status not in expected:
            raise RealCinderError(f"cinder-api answered {response.status}: {response.body}")
        return response.body

    def set_quota(self, project: str, **limits: int) -> dict:
        """``PUT /v3/{project}/os-quota-sets/{project}``, e.g. ``volumes=1``."""
        body = self._ok(
            self.request(
                "PUT",
                f"/v3/{project}/os-quota-sets/{project}",
                {"quota_set": limits},
                project=project,
            ),
            200,
        )
        return body["quota_set"]

    def create_volume(self, project: str, size: int = 1, **fields: Any) -> dict:
        body = {"volume": {"size": size, **fields}}
        return self._ok(self.request("POST", f"/v3/{project}/volumes", body, project=project), 202)[
            "volume"
        ]

    def get_volume(self, project: str, volume_id: str) -> dict:
        return self._ok(
            self.request("GET", f"/v3/{project}/volumes/{volume_id}", project=project), 200
        )["volume"]

    def get_snapshot(self, project: str, snapshot_id: str) -> dict:
        return self._ok(
            self.request("GET", f"/v3/{project}/snapshots/{snapshot_id}", project=project), 200
        )["snapshot"]

    def create_volume_type(self, name: str, extra_specs: Mapping[str, str] | None = None) -> dict:
        """A public volume type, with ``extra_specs`` if given (e.g. volume_backend_name)."""
        volume_type = self._ok(
            self.request(
                "POST",
                f"/v3/{ADMIN_PROJECT}/types",
                {
                    "volume_type": {
                        "name": name,
                        **({"extra_specs": dict(extra_specs)} if extra_specs else {}),
                    }
                },
            ),
            200,
        )["volume_type"]
        return dict(volume_type)

    def reset_status(self, project: str, kind: str, item_id: str, status: str) -> None:
        """``os-reset_status`` on a volume or snapshot (``kind`` = volumes | snapshots)."""
        self._ok(
            self.request(
                "POST",
                f"/v3/{project}/{kind}/{item_id}/action",
                {"os-reset_status": {"status": status}},
                project=project,
            ),
            202,
        )

    def services(self) -> list[dict]:
        """``os-services`` at microversion 3.7: DB-only, so it answers with the scheduler down.

        From 3.49 on it makes an RPC call to the scheduler (``backend_state``) and, with the
        scheduler stopped, answers 500 after ``rpc_response_timeout``.
        """
        return list(
            self._ok(
                self.request(
                    "GET",
                    f"/v3/{ADMIN_PROJECT}/os-services",
                    headers={"OpenStack-API-Version": "volume 3.7"},
                ),
                200,
            )["services"]
        )

    def messages(self, project: str, volume_id: str) -> list[dict]:
        """User messages about one volume (3.5: ``resource_uuid`` filter; noauth lists all)."""
        body = self._ok(
            self.request(
                "GET",
                f"/v3/{project}/messages?resource_uuid={volume_id}",
                project=project,
                headers={"OpenStack-API-Version": "volume 3.5"},
            ),
            200,
        )
        return sorted(body["messages"], key=lambda m: m["created_at"])

    def pools(self) -> list[dict]:
        """``scheduler-stats/get_pools``: an RPC call to the scheduler."""
        return list(
            self._ok(
                self.request("GET", f"/v3/{ADMIN_PROJECT}/scheduler-stats/get_pools?detail=true"),
                200,
            )["pools"]
        )


class CinderEndpoint(CinderAdmin):
    """Operator calls to a cinder-api someone else started (``run``, ``run --full``)."""

    def __init__(self, port: int) -> None:
        self.port = port
