"""When neither the trace nor the logs say what became of a volume: ask Cinder itself.

Three reads, with the token the user gives (``--os-token``, or ``OS_TOKEN`` /
``OS_AUTH_TOKEN``), through a keystoneauth session as voltrace's own Cinder calls are made:

* ``GET /v3/{p}/volumes/{id}``: the status, and the host (``os-vol-host-attr:host``, shown
  to admins only);
* ``GET /v3/{p}/messages?resource_uuid={id}`` at microversion 3.5 (messages exist from
  3.3, the filter needs 3.5): Cinder's user messages, whose event ids say where it failed;
* ``GET /v3/{p}/os-services`` at 3.7: each service's ``state`` up/down and its last
  heartbeat (``updated_at``). 3.7 rather than 3.49+, which would make the API call the
  scheduler over RPC and answer 500 when the scheduler is the service that is down.

From those: available; error with its failure (no valid backend, driver error and its
attempts); stuck in ``creating`` because the service it waits on is down, and since when;
or still creating with every service up. ``follow`` polls until the volume settles.

The token is never printed or logged: errors name the URL and the status, nothing else.
keystoneauth1 is imported only here, and only when Cinder is asked, so ``voltrace
explain`` on files still loads no OpenStack client library.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from voltrace import semconv
from voltrace.explain.after_answer import AfterAnswer, classify_messages, explain

TOKEN_ENV = ("OS_TOKEN", "OS_AUTH_TOKEN")
HOST_ATTRIBUTE = "os-vol-host-attr:host"
SETTLED = ("available", "error")


class CinderError(Exception):
    """Cinder cannot be asked (unreachable, the token refused, a bad answer): one line."""


class VolumeNotFound(CinderError):
    """Cinder has no such volume in the project."""


@dataclass
class CinderAnswer:
    """What Cinder said about one volume, and the verdict made from it."""

    volume_id: str
    volume: dict[str, Any]
    messages: list[dict[str, Any]]
    services: list[dict[str, Any]] | None  # None: os-services was not readable
    found: AfterAnswer
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "volume_id": self.volume_id,
            "status": self.volume.get("status"),
            "host": self.volume.get(HOST_ATTRIBUTE),
            "verdict": self.found.sentence(),
            "after_answer": self.found.to_json(),
            "services": self.services,
            "notes": self.notes,
        }


def endpoint_for(url: str, project_id: str | None) -> str:
    """The project's volumev3 endpoint from ``--cinder-url`` (``…/v3/{project}``, a
    ``%(project_id)s`` template, or ``…/v3`` with ``--project-id``)."""
    if not url.startswith(("http://", "https://")):
        raise CinderError(f"--cinder-url {url!r} must start with http:// or https://")
    url = url.rstrip("/")
    if "%(project_id)s" in url or "%(tenant_id)s" in url:
        if not project_id:
            raise CinderError("--cinder-url is a template: give --project-id too")
        return url.replace("%(project_id)s", project_id).replace("%(tenant_id)s", project_id)
    if url.endswith("/v3"):
        if not project_id:
            raise CinderError("--cinder-url ends at /v3: add the project id, or --project-id")
        return f"{url}/{project_id}"
    if "/v3/" not in url + "/":
        raise CinderError(f"--cinder-url {url!r} is not a Cinder v3 endpoint (…/v3/PROJECT)")
    return url


class CinderReader:
    """The three reads, on one keystoneauth session carrying the user's token."""

    def __init__(self, endpoint: str, token: str, *, timeout_s: float = 10.0) -> None:
        from keystoneauth1 import session as ks_session
        from keystoneauth1 import token_endpoint

        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._session = ks_session.Session(
            auth=token_endpoint.Token(endpoint, token), timeout=timeout_s
        )

    def get(self, path: str, microversion: str | None = None) -> tuple[int, Any]:
        from keystoneauth1 import exceptions as ks_exc

        headers = {"Accept": "application/json"}
        if microversion:
            headers["OpenStack-API-Version"] = f"volume {microversion}"
        url = self.endpoint + path
        try:
            response = self._session.get(url, headers=headers, raise_exc=False)
        except (ks_exc.ConnectFailure, ks_exc.ConnectTimeout) as exc:
            raise CinderError(f"cannot reach Cinder at {self.endpoint}: {_reason(exc)}") from None
        except ks_exc.RequestTimeout:
            raise CinderError(
                f"Cinder at {self.endpoint} did not answer GET {path} within {self.timeout_s:g} s"
            ) from None
        except ks_exc.ClientException as exc:
            raise CinderError(f"cannot ask Cinder at {self.endpoint}: {_reason(exc)}") from None
        if response.status_code == 401:
            raise CinderError(
                f"Cinder at {self.endpoint} refused the token (401 Unauthorized): give a valid "
                f"one with --os-token or {TOKEN_ENV[0]}"
            )
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = None
        return response.status_code, body

    def ask(self, volume_id: str, *, now: datetime | None = None) -> CinderAnswer:
        status, body = self.get(f"/volumes/{quote(volume_id, safe='')}")
        if status == 404:
            raise VolumeNotFound(f"Cinder at {self.endpoint} has no volume {volume_id}")
        volume = (body or {}).get("volume") if isinstance(body, dict) else None
        if status != 200 or not isinstance(volume, dict):
            raise CinderError(f"Cinder answered {status} to GET /volumes/{volume_id}")
        notes: list[str] = []
        status, body = self.get(
            f"/messages?resource_uuid={quote(volume_id, safe='')}",
            semconv.MESSAGES_MICROVERSION,
        )
        messages: list[dict[str, Any]] = []
        if status == 200 and isinstance(body, dict):
            messages = [m for m in body.get("messages", []) if isinstance(m, dict)]
            # Under noauth (and for admins elsewhere) the filter is what keeps others out.
            messages = [m for m in messages if m.get("resource_uuid") in (None, volume_id)]
        else:
            notes.append(f"user messages not readable (GET /messages answered {status})")
        status, body = self.get("/os-services", semconv.SERVICES_MICROVERSION)
        services: list[dict[str, Any]] | None = None
        if status == 200 and isinstance(body, dict):
            services = [s for s in body.get("services", []) if isinstance(s, dict)]
        else:
            notes.append(
                f"service states not readable (GET /os-services answered {status}; "
                "it is admin-only in Cinder's default policy)"
            )
        found = diagnose(volume, messages, services, now=now)
        return CinderAnswer(volume_id, volume, messages, services, found, notes)

    def follow(
        self,
        volume_id: str,
        timeout_s: float,
        progress: Callable[[str, float], None],
        *,
        first_delay_s: float = 0.2,
        max_delay_s: float = 2.0,
    ) -> tuple[CinderAnswer, bool]:
        """Poll the volume until it settles or ``timeout_s``; (the answer, settled?)."""
        started = time.monotonic()
        delay = first_delay_s
        while True:
            status, body = self.get(f"/volumes/{quote(volume_id, safe='')}")
            if status == 404:
                raise VolumeNotFound(f"Cinder at {self.endpoint} has no volume {volume_id}")
            current = ((body or {}).get("volume") or {}).get("status") if status == 200 else None
            waited = time.monotonic() - started
            if current in SETTLED:
                return self.ask(volume_id), True
            if waited >= timeout_s:
                return self.ask(volume_id), False
            progress(str(current or f"HTTP {status}"), waited)
            time.sleep(min(delay, max(0.0, timeout_s - waited)))
            delay = min(delay * 2, max_delay_s)


def _reason(exc: Exception) -> str:
    """keystoneauth's message names the URL and the cause; the first line is enough."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "Connection refused" in text:
        return "connection refused"
    return text


def _when(text: Any) -> datetime | None:
    """Cinder's naive-UTC timestamps (``2026-12-02T01:02:03.000000``)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def _shown(stamp: datetime) -> str:
    return stamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def diagnose(
    volume: dict[str, Any],
    messages: list[dict[str, Any]],
    services: list[dict[str, Any]] | None,
    *,
    now: datetime | None = None,
) -> AfterAnswer:
    """The verdict from Cinder's own view of the volume."""
    now = now or datetime.now(UTC)
    status = str(volume.get("status") or "unknown")
    host = volume.get(HOST_ATTRIBUTE)
    found = AfterAnswer(outcome=status, source="cinder", status=status, host=host or None)
    ordered = sorted(messages, key=lambda m: str(m.get("created_at") or ""))
    found.messages = [
        {"event_id": str(m.get("event_id", "")), "user_message": str(m.get("user_message", ""))}
        for m in ordered
    ]
    found.cinder_request_id = next(
        (str(m["request_id"]) for m in ordered if m.get("request_id")), None
    )
    if status == "error":
        failure, attempts, _, event_ids = classify_messages(ordered)
        found.failure = None if failure == "unknown" else failure
        found.attempts = attempts or None
        if failure == semconv.NO_VALID_BACKEND:
            found.failed_service = semconv.SCHEDULER_SERVICE
        elif failure == semconv.DRIVER_ERROR:
            found.failed_service = semconv.VOLUME_SERVICE
            if event_ids[-1] == semconv.NO_VALID_BACKEND_EVENT:
                # The scheduler's last word after the driver's failures: out of attempts.
                found.cause = "max_attempts_exceeded"
    elif status == "creating":
        created = _when(volume.get("created_at"))
        if created is not None:
            found.creating_for_s = max(0.0, (now - created).total_seconds())
        _waiting_on(found, services or [], now)
    return explain(found)


def _waiting_on(found: AfterAnswer, services: list[dict[str, Any]], now: datetime) -> None:
    """Stuck when the service the create waits on is down: the scheduler until the volume
    has a host, then that host's cinder-volume (any down one when the host is hidden)."""

    def down(binary: str) -> list[dict[str, Any]]:
        return [s for s in services if s.get("binary") == binary and s.get("state") == "down"]

    service_host = found.host.split("#", 1)[0] if found.host else None
    scheduler_down = down(semconv.SCHEDULER_SERVICE)
    volume_down = [s for s in down(semconv.VOLUME_SERVICE) if service_host in (None, s.get("host"))]
    if found.host is None and scheduler_down:
        stopped, found.failed_service = scheduler_down[0], semconv.SCHEDULER_SERVICE
    elif volume_down:
        stopped, found.failed_service = volume_down[0], semconv.VOLUME_SERVICE
        found.host = found.host or str(stopped.get("host") or "") or None
    else:
        found.outcome = "creating"
        return
    found.outcome = "stuck"
    since = _when(stopped.get("updated_at"))
    if since is not None:
        found.down_since = _shown(since)
        found.down_for_s = max(0.0, (now - since).total_seconds())
    else:
        found.down_since = "an unknown time (no heartbeat recorded)"


def render_text(answer: CinderAnswer, width: int = 100) -> list[str]:
    """The answer as labelled lines (commands each whole on a line of their own)."""
    found, volume = answer.found, answer.volume
    label = 14

    def row(name: str, text: str) -> str:
        return f"{name:<{label}}{text}"

    host = volume.get(HOST_ATTRIBUTE)
    lines = [
        row("volume", answer.volume_id),
        row("status", f"{volume.get('status')}" + (f" on {host}" if host else "")),
        row("verdict", found.sentence()),
    ]
    if found.cinder_request_id:
        lines.append(row("request id", f"cinder {found.cinder_request_id}"))
    if found.attempts is not None:
        lines.append(row("attempts", f"{found.attempts} (reschedules: {found.attempts - 1})"))
    for said in found.messages:
        lines.append(row("user message", f"{said['event_id']}: {said['user_message']}"))
    for service in answer.services or []:
        lines.append(
            row(
                "service",
                f"{service.get('binary')} on {service.get('host')}: {service.get('state')} "
                f"(last heartbeat {service.get('updated_at') or '?'})",
            )
        )
    for note in answer.notes:
        lines.append(row("note", note))
    if found.advice is not None:
        lines.append(row("next step", found.advice.text))
        lines.extend(" " * label + "  " + command for command in found.advice.commands)
    return lines
