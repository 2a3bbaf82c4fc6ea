"""Real nova-api 34, instrumented, for ``voltrace demo --nova real``.

The demo keeps its simulator, its scenarios and its printing; this module gives it real
nova-api processes in place of ``voltrace serve``, one per server kind it asks for, each
running nova's own paste pipeline with the paste filter and writing its spans and log lines
into the demo's files::

    from voltrace.instrumentation.nova_demo import RealNovaDemo, RealNovaUnavailable

    try:
        real = RealNovaDemo(out, cinder_endpoint=sim.endpoint_template,
                            traces_file=out / "traces.jsonl", log_file=out / "logs.jsonl")
        url = real.url("default")          # or "unreachable", "hung"
    except RealNovaUnavailable as exc:     # venv not built (says how), or no such server
        ...
    # send the scenario's create to url, then:
    spans = real.trace(request_id)         # voltrace.traces spans of its whole trace
    real.close()
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

from voltrace.instrumentation import nova_venv

# The demo's retry budgets, as nova's [cinder] options (nova has no connect_retry_delay:
# keystoneauth's own back-off, 0.5 s then 1 s, applies).
UNREACHABLE_RETRIES = 2
HUNG_RETRIES = 3
HUNG_TIMEOUT_S = 0.25
UNSUPPORTED = {
    "size_from_snapshot": "nova 34's schema requires size; voltrace's --size-from-snapshot "
    "has no nova equivalent",
}


class RealNovaUnavailable(RuntimeError):
    """No real nova for this: the venv is not built (the message says how), or the kind."""


class RealNovaDemo:
    """One instrumented real nova-api per server kind, started on first use, stopped by PID."""

    def __init__(
        self, workdir: Path, *, cinder_endpoint: str, traces_file: Path, log_file: Path
    ) -> None:
        try:
            built = nova_venv.is_built()
            self.venv = nova_venv.venv_path()
        except nova_venv.NoSourceCheckout as exc:
            raise RealNovaUnavailable(str(exc)) from exc
        if not built:
            raise RealNovaUnavailable(
                f"the real nova-api venv is not built ({self.venv}); build it once with "
                f"`{nova_venv.BUILD_COMMAND}` (a minute or two), then run the demo again"
            )
        self.workdir = Path(workdir) / "real-nova"
        self.cinder_endpoint = cinder_endpoint
        self.traces_file = Path(traces_file)
        self.log_file = Path(log_file)
        self._novas: dict[str, Any] = {}
        # Bound but never listening: connections to it are refused, and no one else gets it.
        self._dead = socket.socket()
        self._dead.bind(("127.0.0.1", 0))

    def url(self, kind: str) -> str:
        """The nova-api for ``kind`` (default, unreachable, hung), started if need be."""
        if kind in UNSUPPORTED:
            raise RealNovaUnavailable(f"{kind}: {UNSUPPORTED[kind]}")
        if kind not in self._novas:
            self._novas[kind] = self._start(kind)
        return str(self._novas[kind].url)

    def _start(self, kind: str) -> Any:
        from voltrace.devtools.real_nova import RealNova, RealNovaError

        home = self.workdir / kind
        home.mkdir(parents=True, exist_ok=True)
        endpoint, retries, conf_extra = self.cinder_endpoint, 0, ""
        if kind == "unreachable":
            port = self._dead.getsockname()[1]
            endpoint, retries = f"http://127.0.0.1:{port}/v3/%(project_id)s", UNREACHABLE_RETRIES
        elif kind == "hung":
            retries, conf_extra = HUNG_RETRIES, f"[cinder]\ntimeout = {HUNG_TIMEOUT_S}\n"
        elif kind != "default":
            raise RealNovaUnavailable(f"no real nova-api for server kind {kind!r}")
        paste = nova_venv.instrumented_paste_ini(
            self.venv,
            home,
            traces_file=str(self.traces_file),
            log_file=str(self.log_file),
            span_processor="simple",
        )
        nova = RealNova(
            home,
            venv=self.venv,
            cinder_endpoint=endpoint,
            cinder_retries=retries,
            paste_ini=paste,
            extra_installs=nova_venv.extra_installs(),
            conf_extra=conf_extra,
        )
        try:
            return nova.start()
        except RealNovaError as exc:
            raise RealNovaUnavailable(f"real nova-api ({kind}) did not start: {exc}") from exc

    def trace(self, request_id: str, timeout_s: float = 10.0) -> list[Any] | None:
        """The spans of the trace whose nova-api SERVER span answered ``request_id``: once
        every answered CLIENT span has its callee's SERVER span under it (None on timeout)."""
        from voltrace.traces import TraceReader

        deadline = time.monotonic() + timeout_s
        while True:
            if self.traces_file.exists() and self.traces_file.stat().st_size:
                for trace in TraceReader([self.traces_file]).traces():
                    if _answered(trace, request_id) and _whole(trace):
                        return list(trace.spans)
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)  # polling interval while nova's exporter writes, not a sync

    def close(self) -> None:
        for nova in self._novas.values():
            nova.stop()
        self._novas.clear()
        self._dead.close()


def _answered(trace: Any, request_id: str) -> bool:
    return any(
        s.kind == "server" and s.attr("openstack.request_id") == request_id for s in trace.spans
    )


def _whole(trace: Any) -> bool:
    for span in trace.spans:
        answered = span.kind == "client" and span.attr("http.response.status_code") is not None
        if answered and not any(c.kind == "server" for c in trace.children(span)):
            return False
    return True
