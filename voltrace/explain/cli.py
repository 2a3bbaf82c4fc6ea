"""``voltrace explain``: its options, and the run from files to what is printed.

Exit status: 0 when creates were shown, 1 when none matched (or the input holds no
create), 2 when the input cannot be read at all or the options are wrong. Lines that
cannot be read are skipped and reported on stderr; they never change the status.

``--cinder-url`` asks Cinder itself what became of a volume (``from_cinder``): alone
with ``--volume-id``, or for the creates Nova answered 200 whose trace and logs do not
say. Then 0 is a verdict shown, 1 no such volume, 2 Cinder unreachable or the token
refused (one line on stderr; the token is never printed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voltrace.explain.from_cinder import TOKEN_ENV
from voltrace.explain.from_cinder_logs import (
    CinderLogIndex,
    OsloLogFormat,
    OsloLogFormatError,
    looks_like_oslo_log,
    read_cinder_logs,
    settle,
)
from voltrace.explain.from_logs import LogFileError, LogReader
from voltrace.explain.from_trace import TraceDiagnoser
from voltrace.explain.model import Diagnosis
from voltrace.explain.render import fate_lines, format_text
from voltrace.explain.select import Selection
from voltrace.explain.summary import Summary
from voltrace.terminal import Terminal, add_color_argument, escape, quiet_when_stdout_closes
from voltrace.traces.files import (
    LONG_LINE_CHARS,
    TraceFileError,
    TraceReader,
    is_log_line,
    loads,
    trace_files,
)

JAEGER_URL_ENV = "VOLTRACE_JAEGER_URL"
MAX_WARNINGS = 50  # printed; the rest are counted

DESCRIPTION = (
    "Diagnose volume creates from trace files (OTLP JSON lines: voltrace's --traces-file, "
    "an OpenTelemetry Collector's file exporter; Jaeger JSON), voltrace's JSON logs, "
    "Cinder's own logs (cinder-scheduler.log, cinder-volume.log), or directories of them. "
    "Each create gets its outcome, the failed stage and why, where its time went, what "
    "became of the volume after Nova's answer, a waterfall and the next step. Exit "
    "status: 0 creates shown, 1 none matched, 2 unreadable input."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="trace files, log files or directories of them (*.json, *.jsonl, and "
        "Cinder's *.log); each file's kind is recognised from its lines",
    )
    parser.add_argument(
        "--logs",
        metavar="FILE",
        action="append",
        default=[],
        help="voltrace's JSON logs: diagnose from them alone, or fill in creates whose "
        "trace is missing; or Cinder's oslo.log files, for what became of the volume "
        "(repeatable)",
    )
    parser.add_argument(
        "--oslo-log-format",
        metavar="FORMAT",
        default=None,
        help="Cinder's [DEFAULT] logging_context_format_string, when the deployment "
        "changed it (default: oslo.log's, with %%(global_request_id)s, which joins "
        "Cinder's lines to nova's create)",
    )
    pick = parser.add_argument_group("which creates (default: all)")
    pick.add_argument(
        "--trace-id",
        metavar="ID",
        action="append",
        default=[],
        help="a trace id, or a prefix of 8+ digits (repeatable)",
    )
    pick.add_argument(
        "--request-id",
        metavar="REQ",
        action="append",
        default=[],
        help="the req-... id from a log line or an error answer: nova's, the "
        "global one, or Cinder's (repeatable)",
    )
    pick.add_argument("--failed", action="store_true", help="only creates that failed")
    out = parser.add_argument_group("output")
    out.add_argument(
        "--summary",
        action="store_true",
        help="one summary of all the creates chosen: counts by outcome, failed "
        "stage and class, p50/p95/p99 per stage, the slowest",
    )
    out.add_argument(
        "--slowest",
        metavar="N",
        type=_count,
        default=5,
        help="how many of the slowest creates --summary lists (default 5)",
    )
    out.add_argument(
        "--json",
        action="store_true",
        help="JSON: one object per create, a line each (with --summary, one object)",
    )
    out.add_argument("--html", metavar="OUT", help="also write a self-contained HTML report")
    out.add_argument(
        "--no-waterfall",
        dest="waterfall",
        action="store_false",
        help="leave the terminal waterfall out of the text",
    )
    out.add_argument(
        "--jaeger-url",
        metavar="URL",
        default=os.environ.get(JAEGER_URL_ENV),
        help="a Jaeger UI (e.g. http://localhost:16686): link each create's "
        f"trace in the text, JSON and HTML (env {JAEGER_URL_ENV})",
    )
    add_color_argument(out)
    cinder = parser.add_argument_group(
        "ask Cinder (when the trace and logs do not say what became of the volume)"
    )
    cinder.add_argument(
        "--cinder-url",
        metavar="URL",
        help="the project's volumev3 endpoint, e.g. http://cinder:8776/v3/PROJECT "
        "(or a %%(project_id)s template, or .../v3 with --project-id)",
    )
    cinder.add_argument(
        "--os-token",
        metavar="TOKEN",
        default=next((os.environ[n] for n in TOKEN_ENV if os.environ.get(n)), None),
        help="a Keystone token for that project (env OS_TOKEN or OS_AUTH_TOKEN); never printed",
    )
    cinder.add_argument("--volume-id", metavar="ID", help="the volume to ask about")
    cinder.add_argument("--project-id", metavar="ID", help="the project, for a template URL")
    cinder.add_argument(
        "--follow",
        action="store_true",
        help="wait until the volume settles (available or error), with a progress line",
    )
    cinder.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=float,
        default=300.0,
        help="how long --follow waits before saying what it sees (default %(default)g)",
    )


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def jaeger_link(base: str | None, trace_id: str | None) -> str | None:
    """The trace's page in a Jaeger UI."""
    if not base or not trace_id:
        return None
    return f"{base.rstrip('/')}/trace/{trace_id}"


def _valid_jaeger_url(url: str | None) -> str | None:
    if url and not url.startswith(("http://", "https://")):
        return f"--jaeger-url {url!r} must start with http:// or https://"
    return None


@dataclass
class Inputs:
    """The files to read, by kind."""

    traces: list[Path] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    cinder_logs: list[Path] = field(default_factory=list)  # oslo.log text
    found_in_directories: set[Path] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)


def classify(paths: Sequence[str], oslo_format: OsloLogFormat | None = None) -> Inputs:
    """Trace files and log files among ``paths`` (directories walked), and problems."""
    inputs = Inputs()
    traces, logs, problems = inputs.traces, inputs.logs, inputs.problems
    for name in paths:
        found_in_dir = Path(name).is_dir()
        files = trace_files([name])
        # Cinder's logs under a directory (e.g. /var/log/cinder); other *.log files there
        # were never explain's input, and stay ignored.
        oslo_logs = (
            [p for p in sorted(Path(name).rglob("*.log")) if sniff(p, oslo_format) == "oslo"]
            if found_in_dir
            else []
        )
        if found_in_dir and not files and not oslo_logs:
            problems.append(f"{name}: no *.json, *.jsonl or Cinder *.log file in it")
        inputs.cinder_logs.extend(oslo_logs)
        for path in files:
            kind = sniff(path, oslo_format)
            if found_in_dir:
                inputs.found_in_directories.add(path)
            if kind == "logs":
                logs.append(path)
            elif kind == "oslo":
                inputs.cinder_logs.append(path)
            elif kind == "traces" or not found_in_dir:
                traces.append(path)  # the trace reader says what is wrong with it
    return inputs


def sniff(path: Path, oslo_format: OsloLogFormat | None = None) -> str:
    """ "logs" (voltrace's JSON), "oslo" (Cinder's oslo.log text), "traces", or "other"
    (JSON that is neither), from the first line."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            line = ""
            while not line.strip():
                line = handle.readline(LONG_LINE_CHARS)
                if not line:
                    return "traces"  # empty: the trace reader reports it
    except OSError:
        return "traces"
    try:
        first = loads(line)
    except ValueError:
        # Not JSON: Cinder's text log, or something the trace reader will reject.
        return "oslo" if looks_like_oslo_log(line.rstrip("\r\n"), oslo_format) else "traces"
    if is_log_line(first):
        return "logs"
    if isinstance(first, dict) and (
        "resourceSpans" in first or "data" in first or "spans" in first
    ):
        return "traces"
    if isinstance(first, list) and first and isinstance(first[0], dict) and "spans" in first[0]:
        return "traces"
    return "other"


class _Run:
    """One explain run: read, diagnose, choose, keep what the output needs."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.selection = Selection(args.trace_id, args.request_id, args.failed)
        self.summary = Summary(slowest_n=args.slowest) if args.summary else None
        self.keep_rows = not args.summary and (
            bool(args.html) or (not args.json and args.waterfall)
        )
        self.chosen: list[Diagnosis] = []
        self.total = 0  # creates read, chosen or not
        self.shown = 0  # creates chosen
        self.problems: list[str] = []
        self.other_requests = 0
        self.cinder_logs: CinderLogIndex | None = None

    def take(self, d: Diagnosis) -> None:
        if self.cinder_logs is not None:
            settle(d, self.cinder_logs)
        self.total += 1
        d.link = jaeger_link(self.args.jaeger_url, d.trace_id)
        if not self.selection.matches(d):
            return
        self.shown += 1
        if self.summary is not None:
            self.summary.add(d)
        else:
            self.chosen.append(d)

    def read(self, inputs: Inputs, oslo_format: OsloLogFormat | None = None) -> None:
        trace_paths, log_paths = inputs.traces, inputs.logs
        seen: set[str | None] = set()
        if inputs.cinder_logs:
            # Read first, whole: a create's fate comes after nova's answer, in other files.
            self.cinder_logs = read_cinder_logs(inputs.cinder_logs, oslo_format)
            self.problems.extend(self.cinder_logs.problems)
        if trace_paths:
            reader = TraceReader(trace_paths, quiet=inputs.found_in_directories)
            diagnoser = TraceDiagnoser(waterfall=self.keep_rows)
            try:
                for trace in reader.traces():
                    for d in diagnoser.diagnose(trace):
                        seen.add(d.request_id)
                        self.take(d)
            finally:
                self.problems.extend(reader.problems)
                self.problems.extend(diagnoser.problems)
                self.other_requests += diagnoser.other_requests
        if log_paths:
            logs = LogReader(log_paths, waterfall=self.keep_rows)
            try:
                for d in logs.diagnoses():
                    if trace_paths and d.request_id in seen:
                        continue
                    if trace_paths:
                        d.notes.append(
                            "no trace of this request in the trace files; diagnosed from the logs"
                        )
                    self.take(d)
            finally:
                self.problems.extend(logs.problems)
                self.other_requests += logs.other_requests


@quiet_when_stdout_closes
def run(args: argparse.Namespace) -> int:
    """``voltrace explain`` (exit status in the module docstring)."""
    bad_url = _valid_jaeger_url(args.jaeger_url)
    if bad_url:
        return _fail(bad_url)
    if args.cinder_url and not args.paths and not args.logs:
        return _ask_cinder_alone(args)
    if not args.paths and not args.logs:
        return _fail("give trace files, log files or directories (PATH), --logs FILE, or both")
    try:
        oslo_format = OsloLogFormat(args.oslo_log_format) if args.oslo_log_format else None
    except OsloLogFormatError as exc:
        return _fail(f"--oslo-log-format: {exc}")
    inputs = classify(args.paths, oslo_format)
    for name in args.logs:
        path = Path(name)
        (inputs.cinder_logs if sniff(path, oslo_format) == "oslo" else inputs.logs).append(path)
    if inputs.cinder_logs and not inputs.traces and not inputs.logs:
        return _cinder_logs_alone(args, inputs, oslo_format)
    state = _Run(args)
    state.problems.extend(inputs.problems)
    try:
        state.read(inputs, oslo_format)
    except (TraceFileError, LogFileError) as exc:
        _warn_all(state.problems)
        return _fail(str(exc))
    _warn_all(state.problems)
    if state.other_requests:
        _warn(
            f"{state.other_requests} other request(s) (probes, version documents, other "
            "routes) are not volume creates: not counted"
        )
    source = " ".join([*args.paths, *args.logs])
    if not state.shown:
        if state.total == 0:
            print(f"voltrace explain: no volume create in {escape(source)}", file=sys.stderr)
        else:
            print(
                f"voltrace explain: none of the {state.total} create(s) in {escape(source)} "
                f"matches {escape(state.selection.describe())}",
                file=sys.stderr,
            )
        return 1
    term = Terminal.for_stream(sys.stdout, args.color)
    if state.summary is not None:
        if args.json:
            print(json.dumps(state.summary.to_json(), separators=(",", ":")))
        else:
            print("\n".join(state.summary.render(term)))
        return 0
    chosen = sorted(state.chosen, key=lambda d: d.started_ns)
    if args.cinder_url:
        failed = _ask_cinder_for(args, chosen)
        if failed is not None:
            return failed
    if args.json:
        for d in chosen:
            print(json.dumps(d.to_json(), separators=(",", ":")))
    else:
        print("\n\n".join(format_text(d, term, waterfall=args.waterfall) for d in chosen))
        failed = sum(d.failed for d in chosen)
        print(f"\n{len(chosen)} create(s), {failed} failed, of {state.total} in the input.")
    if args.html:
        from voltrace.explain.html import write_html

        try:
            write_html(args.html, chosen, title=f"voltrace explain {source}")
        except OSError as exc:
            return _fail(f"cannot write {args.html}: {exc.strerror or exc}")
        print(f"voltrace explain: wrote {escape(args.html)}", file=sys.stderr)
    return 0


def _cinder_logs_alone(
    args: argparse.Namespace, inputs: Inputs, oslo_format: OsloLogFormat | None
) -> int:
    """Only Cinder's logs: what became of each create they name (nova's request id is
    their global request id), without nova's side."""
    index = read_cinder_logs(inputs.cinder_logs, oslo_format)
    ignored = [
        option
        for option, given in (
            ("--summary", args.summary),
            ("--html", args.html),
            ("--cinder-url", args.cinder_url),
            ("--trace-id", args.trace_id),
        )
        if given
    ]
    if ignored:
        inputs.problems.append(
            f"{', '.join(ignored)}: not with Cinder's logs alone (they hold no trace, no "
            "stage and no project); give nova's side too (a trace or voltrace's JSON logs)"
        )
    _warn_all([*inputs.problems, *index.problems])
    wanted = set(args.request_id)
    shown = 0
    term = Terminal.for_stream(sys.stdout, args.color)
    blocks = []
    for request_id in index.request_ids():
        fate = index.after_answer(request_id)
        if fate is None or not index.creates[request_id].is_create:
            continue
        if wanted and wanted.isdisjoint({request_id, fate.cinder_request_id}):
            continue
        if args.failed and fate.outcome != "error":
            continue
        shown += 1
        if args.json:
            print(
                json.dumps(
                    {"request_id": request_id, "verdict": fate.sentence(), **fate.to_json()},
                    separators=(",", ":"),
                )
            )
        else:
            blocks.append(
                "\n".join(
                    [
                        f"{escape(request_id)}" + term.paint("  (from Cinder's logs)", "2"),
                        *fate_lines(fate, term, request_id=request_id),
                    ]
                )
            )
    if not shown:
        source = " ".join([*args.paths, *args.logs])
        print(f"voltrace explain: no volume create in {escape(source)}", file=sys.stderr)
        return 1
    if blocks:
        print("\n\n".join(blocks))
    return 0


def _cinder_reader(args: argparse.Namespace, project_id: str | None) -> Any:
    from voltrace.explain.from_cinder import CinderReader, endpoint_for

    if not args.os_token:
        raise _CinderOptionError(
            "--cinder-url needs a token: --os-token TOKEN, or OS_TOKEN / OS_AUTH_TOKEN "
            "(e.g. export OS_TOKEN=$(openstack token issue -f value -c id))"
        )
    if args.timeout <= 0:
        raise _CinderOptionError("--timeout must be more than 0 seconds")
    return CinderReader(endpoint_for(args.cinder_url, project_id or args.project_id), args.os_token)


class _CinderOptionError(Exception):
    pass


def _progress(volume_id: str, timeout_s: float) -> Any:
    """One line on stderr, rewritten in place on a TTY, a line per change otherwise."""
    tty = sys.stderr.isatty()
    last = [""]

    def show(status: str, waited_s: float) -> None:
        line = (
            f"voltrace explain: waiting for volume {volume_id}: {status}, "
            f"{waited_s:.1f} s of {timeout_s:g} s"
        )
        if tty:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        elif status != last[0]:
            print(line, file=sys.stderr, flush=True)
        last[0] = status

    return show


def _ask_cinder_alone(args: argparse.Namespace) -> int:
    """``--cinder-url`` with ``--volume-id`` and no files: Cinder's view, and the verdict."""
    from voltrace.explain.from_cinder import CinderError, VolumeNotFound, render_text

    if not args.volume_id:
        return _fail("--cinder-url without trace or log files needs --volume-id")
    try:
        reader = _cinder_reader(args, None)
        if args.follow:
            answer, settled = reader.follow(
                args.volume_id, args.timeout, _progress(args.volume_id, args.timeout)
            )
            if sys.stderr.isatty():
                print(file=sys.stderr)
            if not settled:
                answer.notes.append(f"still {answer.volume.get('status')} after {args.timeout:g} s")
        else:
            answer = reader.ask(args.volume_id)
    except VolumeNotFound as exc:
        print(f"voltrace explain: {escape(str(exc))}", file=sys.stderr)
        return 1
    except (CinderError, _CinderOptionError) as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(answer.to_json(), separators=(",", ":")))
    else:
        print("\n".join(escape(line) for line in render_text(answer)))
    return 0


def _ask_cinder_for(args: argparse.Namespace, chosen: list[Diagnosis]) -> int | None:
    """Fill in the fate of each create Nova answered 200 whose files do not hold it."""
    from voltrace.explain.from_cinder import CinderError, VolumeNotFound

    for d in chosen:
        fate = d.after_answer
        # Settled, and the files are sure of it: nothing to ask.
        if (
            d.failed
            or not d.volume_id
            or (fate is not None and fate.outcome != "stuck" and fate.certain)
        ):
            continue
        if args.volume_id and d.volume_id != args.volume_id:
            continue
        try:
            reader = _cinder_reader(args, d.project_id)
            if args.follow:
                answer, _ = reader.follow(
                    d.volume_id, args.timeout, _progress(d.volume_id, args.timeout)
                )
            else:
                answer = reader.ask(d.volume_id)
        except VolumeNotFound as exc:
            d.notes.append(f"asked Cinder: {exc}")
            continue
        except (CinderError, _CinderOptionError) as exc:
            return _fail(str(exc))
        d.after_answer = answer.found
        d.notes.append("what became of the volume: asked Cinder (the files do not say)")
    return None


def _warn(text: str) -> None:
    print(f"voltrace explain: warning: {escape(text)}", file=sys.stderr)


def _warn_all(problems: list[str]) -> None:
    for problem in problems[:MAX_WARNINGS]:
        _warn(problem)
    if len(problems) > MAX_WARNINGS:
        _warn(f"... and {len(problems) - MAX_WARNINGS} more problem(s) like these")


def _fail(message: str) -> int:
    print(f"voltrace explain: {escape(message)}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m voltrace.explain``: the same as ``voltrace explain``."""
    parser = argparse.ArgumentParser(prog="voltrace explain")
    add_arguments(parser)
    return int(run(parser.parse_args(argv)))
