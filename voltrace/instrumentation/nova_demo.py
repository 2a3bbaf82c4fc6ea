"""Real nova-api 34, instrumented, for ``voltrace demo --nova real``.

The demo keeps its simulator, its scenarios, its following of each volume and its printing;
this module gives it real nova-api processes in place of ``voltrace serve``, one per server
kind a scenario asks for, each running nova's own paste pipeline with voltrace's paste filter
and appending its spans and log lines to the demo's files, and it diagnoses each create from
nova's spans (read back from that file) joined with the simulator's (in memory)::

    from voltrace.instrumentation import nova_demo

    why = nova_demo.unavailable_reason()     # None, or one line saying how to build it
    real = nova_demo.RealNovaDemo(out, cinder_endpoint=sim.endpoint_template,
                                  traces_file=out / "traces.jsonl",
                                  log_file=out / "logs.jsonl")
    if real.skip_reason(scenario.server) is None:
        url = real.url(scenario.server)      # started on first use
        # ... send the scenario's create to url, follow the volume ...
        diagnosis, traced = real.diagnose(request_id, captured)
    real.close()

The venv is ``voltrace.instrumentation.nova_venv``'s: nova 34 under its upper-constraints,
plus voltrace from this checkout (``python -m voltrace.instrumentation.nova_venv build``).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

from voltrace import semconv
from voltrace.instrumentation import nova_venv

# The demo's retry budgets, as nova's [cinder] options (nova has no connect_retry_delay:
# keystoneauth's own back-off, 0.5 s then 1 s, applies).
UNREACHABLE_RETRIES = 2
HUNG_RETRIES = 3
HUNG_TIMEOUT_S = 0.25
KINDS = ("default", "unreachable", "hung")
UNSUPPORTED = {
    "size_from_snapshot": "nova 34's schema requires size; voltrace's --size-from-snapshot "
    "has no nova equivalent",
}
TRACE_WAIT_S = 10.0


class RealNovaUnavailable(RuntimeError):
    """No real nova for this: the venv is not built (the message says how), or the kind."""


def unavailable_reason() -> str | None:
    """None when the instrumented nova venv is built; else one line: why, and how to fix it."""
    try:
        built = nova_venv.is_built()
        venv = nova_venv.venv_path()
    except nova_venv.NoSourceCheckout as exc:
        return f"--nova real needs a source checkout of voltrace: {exc}"
    if built:
        return None
    return (
        f"the real nova-api 34 venv is not built ({venv}); build it once with "
        f"`{nova_venv.BUILD_COMMAND}` (a couple of minutes), then run the demo again"
    )


class RealNovaDemo:
    """One instrumented real nova-api per server kind, started on first use, stopped by PID."""

    def __init__(
        self, workdir: Path, *, cinder_endpoint: str, traces_file: Path, log_file: Path
    ) -> None:
        why = unavailable_reason()
        if why is not None:
            raise RealNovaUnavailable(why)
        self.venv = nova_venv.venv_path()
        self.workdir = Path(workdir) / "real-nova"
        self.cinder_endpoint = cinder_endpoint
        self.traces_file = Path(traces_file)
        self.log_file = Path(log_file)
        self._novas: dict[str, Any] = {}
        # Bound but never listening: connections to it are refused, and no one else gets it.
        self._dead = socket.socket()
        self._dead.bind(("127.0.0.1", 0))

    @staticmethod
    def skip_reason(kind: str) -> str | None:
        """Why a scenario of this server kind cannot run on real nova (None: it can)."""
        if kind in UNSUPPORTED:
            return UNSUPPORTED[kind]
        if kind not in KINDS:
            return f"no real nova-api for server kind {kind!r}"
        return None

    def url(self, kind: str) -> str:
        """The nova-api for ``kind`` (default, unreachable, hung), started if need be."""
        why = self.skip_reason(kind)
        if why is not None:
            raise RealNovaUnavailable(f"{kind}: {why}")
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
        paste = nova_venv.instrumented_paste_ini(
            self.venv,
            home,
            traces_file=str(self.traces_file),
            log_file=str(self.log_file),
            # Each span is in the file when it ends: the demo reads a create's spans right
            # after its answer (whole lines, appended next to the demo's own).
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

    def nova_spans(self, request_id: str, timeout_s: float = TRACE_WAIT_S) -> list[Any] | None:
        """nova-api's spans of the trace whose SERVER span answered ``request_id``, once that
        span is in the file (it ends last), or None on timeout."""
        from voltrace.traces import read_trace_file

        deadline = time.monotonic() + timeout_s
        while True:
            if self.traces_file.exists() and self.traces_file.stat().st_size:
                for trace in read_trace_file(self.traces_file).traces:
                    if any(_answered(s, request_id) for s in trace.spans):
                        return [s for s in trace.spans if s.service == semconv.NOVA_API_SERVICE]
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)  # polling interval while nova's exporter writes, not a sync

    def diagnose(
        self, request_id: str | None, captured: Any, timeout_s: float = TRACE_WAIT_S
    ) -> tuple[Any, bool]:
        """``(Diagnosis or None, traced)`` as the demo's own ``_diagnose``: from the whole
        trace (nova's spans from the file, Cinder's from ``captured``, once every answered
        CLIENT span has its callee's SERVER span), else from the log lines."""
        from voltrace.explain.from_logs import diagnose_logs
        from voltrace.explain.from_trace import TraceDiagnoser
        from voltrace.traces import group_traces, spans_from_sdk

        if request_id is None:
            return None, False
        nova = self.nova_spans(request_id, timeout_s)
        if nova is None:  # sampled out, or lost: what the log lines say
            return diagnose_logs(self._logs(request_id, captured), waterfall=True), False
        trace_id = int(nova[0].trace_id, 16)
        deadline = time.monotonic() + timeout_s
        while True:
            # A span in both (the demo's exporter also writes Cinder's to the file) counts once.
            spans = [*nova, *spans_from_sdk(captured.trace(trace_id))]
            traces = group_traces(spans)
            if _whole(traces[0]) or time.monotonic() > deadline:
                break
            time.sleep(0.05)  # the simulator ends its SERVER span just after answering
        diagnoser = TraceDiagnoser(waterfall=True)
        found = next((d for d in diagnoser.diagnose(traces[0]) if d.request_id == request_id), None)
        return found, found is not None

    def _logs(self, request_id: str, captured: Any) -> list[dict[str, Any]]:
        """nova-api's lines of the create (from the file), and Cinder's (in memory)."""
        import json

        lines: list[dict[str, Any]] = []
        if self.log_file.exists():
            for text in self.log_file.read_text(errors="replace").splitlines():
                try:
                    lines.append(json.loads(text))
                except ValueError:
                    continue
        lines += list(captured.logs)
        return [e for e in lines if request_id in (e.get("request_id"), e.get("global_request_id"))]

    def close(self) -> None:
        for nova in self._novas.values():
            nova.stop()
        self._novas.clear()
        self._dead.close()


def _answered(span: Any, request_id: str) -> bool:
    return bool(
        span.kind == "server"
        and span.service == semconv.NOVA_API_SERVICE
        and span.attr(semconv.REQUEST_ID) == request_id
    )


def _whole(trace: Any) -> bool:
    """Every CLIENT span that got an answer has its callee's SERVER span under it."""
    for span in trace.spans:
        answered = span.kind == "client" and span.attr("http.response.status_code") is not None
        if answered and not any(c.kind == "server" for c in trace.children(span)):
            return False
    return True
