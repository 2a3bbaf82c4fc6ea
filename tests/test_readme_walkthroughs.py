"""README.md's walkthroughs, run as a reader runs them.

Each command comes from README.md itself: its fenced blocks, or the inline commands in
the prose. Each runs as a subprocess in a fresh directory: `voltrace`, `python3` and
`curl`, the same argv a shell would build, with no shell in between. The servers run in the
background, as the reader's terminals do. Then the test checks what the README says the
reader will see.

Rewrites, the fewest that let the walkthroughs run beside other tests (``rewrite`` does
them all, and they change nothing else):

* **Ports.** The README hard-codes cinder-api's 8776 and nova-api's 8774. Each becomes a
  free loopback port.
* **The default endpoint.** `voltrace serve` without `--cinder-endpoint` uses its default,
  http://127.0.0.1:8776/v3/%(project_id)s. Once 8776 has moved, serve is told the moved
  port in the same form.
* **Placeholders.** `<id>` becomes the volume id of the create's answer. `req-…`, or the
  README's example request id, becomes the id from the answer's ``x-openstack-request-id``.
* **real_cinder run.** It gets `--port` and a `--workdir` under the test's tmp dir. Its
  default work dir is a new one under /tmp, kept after exit, and would pile up run after run.
  The `grep` then reads the log path that `run` printed.

Where a walkthrough did not work as written, the test follows the corrected text proposed
to the lead for README.md (README is the lead's; the text is in the team's readme notes,
h3.md). The test takes the commands from README.md as soon as README carries them:

* "Against a real cinder-api" gives no commands past `run`. The two-terminals curl's token
  `t` gets a 400 `Malformed request url` from real cinder-api (noauth wants `user:project`).
  Until README has a block with a curl in that section, the test runs
  ``PROPOSED_REAL_CINDER``.
* "Diagnose a failed create" reads `traces.jsonl` and `nova-api.log.jsonl`, but nothing makes
  a failed create or that log. The test runs the two terminals with
  ``DIAGNOSE_SERVE_EXTRA`` added to serve, and the curl with ``"size": 1500``, as the
  proposed paragraph says.

This file replaces tests/test_two_terminals.py. Its checks now run on the walkthrough's own
processes and files: one trace across both processes, Cinder's SERVER span under nova-api's
CLIENT span, and the log's request.finished naming the same request and trace.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.support.net import free_port, listening
from tests.support.polling import poll
from voltrace.devtools.real_cinder import default_venv, venv_ready

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
README_CINDER_PORT, README_NOVA_PORT = "8776", "8774"
# The README's example request ids ("req-75644ef7-fcfa-…", "req-…"): the reader's own goes there.
REQUEST_ID_PLACEHOLDER = re.compile(
    r"req-(?:[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}|[0-9a-f-]*…)"
)

# Proposed for README's "Diagnose a failed create" (see the module docstring): the files
# its commands read, and a create the simulator refuses over its 1000 GB default quota.
DIAGNOSE_SERVE_EXTRA = ["--log-file", "nova-api.log.jsonl"]
OVER_QUOTA_SIZE = 1500

# Proposed for README's "Against a real cinder-api" (see the module docstring).
PROPOSED_REAL_CINDER = """
```
python3 -m voltrace.devtools.real_cinder build
python3 -m voltrace.devtools.real_cinder run             # terminal 1: cinder-api on 127.0.0.1:8776
voltrace serve --port 8774 --traces-file traces.jsonl    # terminal 2
curl -si -X POST http://127.0.0.1:8774/v2.1/os-volumes \\
     -H 'Content-Type: application/json' \\
     -H 'X-User-Id: alice' -H 'X-Project-Id: 0123456789abcdef0123456789abcdef' \\
     -H 'X-Roles: member' -H 'X-Auth-Token: alice:0123456789abcdef0123456789abcdef' \\
     -d '{"volume": {"size": 1, "display_name": "hello"}}'
grep req-… /tmp/voltrace-cinder-*/log/cinder-api.log      # the path `run` printed
```
"""


# -- reading the README --------------------------------------------------------------


def section(title: str, text: str | None = None) -> str:
    """The body of the ``## title`` section, its ``###`` subsections included."""
    text = README.read_text() if text is None else text
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README.md has no section '## {title}'"
    return match.group(1)


FENCE = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", re.M | re.S)


def code_blocks(text: str) -> list[str]:
    """The fenced blocks, also those indented under a list item."""
    return [textwrap.dedent(block) for block in FENCE.findall(text)]


def commands(block: str) -> list[str]:
    """A block's commands, with backslash-continued lines joined (comments kept: shlex
    drops them)."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.strip() for line in joined.splitlines() if line.strip()]


def inline_commands(text: str, prefix: str) -> list[str]:
    """The `inline code` spans of the prose that start with ``prefix``."""
    text = FENCE.sub("", text)
    return [c for c in re.findall(r"`([^`\n]+)`", text.replace("\n", " ")) if c.startswith(prefix)]


# -- running it ------------------------------------------------------------------------


@dataclass
class Reader:
    """One reader's shell: a working directory, the ports the README's were moved to, the
    placeholders filled so far, and the terminals still running."""

    cwd: Path
    ports: dict[str, int]
    fills: dict[str, str] = field(default_factory=dict)
    terminals: list[subprocess.Popen] = field(default_factory=list)
    outputs: dict[int, Path] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        # This interpreter's `voltrace` and `python3` first on PATH: what `pip install -e .`
        # put there. OTEL_* of the test run must not leak into the reader's processes.
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def rewrite(self, command: str) -> list[str]:
        """The argv of a README command, with the rewrites the module docstring lists."""
        for readme_port, port in self.ports.items():
            command = re.sub(rf"(?<![0-9]){readme_port}(?![0-9])", str(port), command)
        for placeholder, value in self.fills.items():
            command = command.replace(placeholder, value)
        if "request_id" in self.fills:
            command = REQUEST_ID_PLACEHOLDER.sub(self.fills["request_id"], command)
        argv = shlex.split(command, comments=True)
        if argv[:2] == ["voltrace", "serve"] and "--cinder-endpoint" not in argv:
            cinder = self.ports.get(README_CINDER_PORT)
            if cinder is not None:
                endpoint = f"http://127.0.0.1:{cinder}/v3/%(project_id)s"
                argv += ["--cinder-endpoint", endpoint]
        return argv

    def run(
        self, command: str, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = self.rewrite(command)
        answer = subprocess.run(
            argv,
            cwd=self.cwd,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check:
            assert answer.returncode == 0, (argv, answer.returncode, answer.stdout, answer.stderr)
        assert "Traceback" not in answer.stderr, (argv, answer.stderr)
        return answer

    def terminal(self, command: str, *extra: str) -> subprocess.Popen:
        """A long-running command in its own terminal: its own process group, its output
        in a file the test reads as the reader reads that terminal."""
        argv = [*self.rewrite(command), *extra]
        log = self.cwd / f"terminal-{len(self.terminals) + 1}.out"
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv,
                cwd=self.cwd,
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.terminals.append(process)
        self.outputs[process.pid] = log
        return process

    def output(self, process: subprocess.Popen) -> str:
        return self.outputs[process.pid].read_text(errors="replace")

    def wait_listening(self, process: subprocess.Popen, readme_port: str) -> None:
        poll(
            lambda: listening(self.ports[readme_port], process),
            60,
            f"{process.args!r} to listen",
            detail=lambda: self.output(process)[-2000:],
        )

    def ctrl_c(self, process: subprocess.Popen, timeout: float = 30) -> int:
        """SIGTERM to the terminal's process group (its gunicorn workers too), then wait."""
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        return process.wait(timeout=timeout)

    def close(self) -> None:
        for process in reversed(self.terminals):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[Reader]:
    require(bool(shutil.which("curl")), "curl is needed to run the README's curl as written")
    ports = {README_CINDER_PORT: free_port(), README_NOVA_PORT: free_port()}
    shell = Reader(tmp_path, ports)
    try:
        yield shell
    finally:
        shell.close()


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: Any


def parse_curl_i(output: str) -> HttpAnswer:
    """What `curl -si` printed: the status line, the headers, then the JSON body."""
    head, _, body = output.replace("\r\n", "\n").partition("\n\n")
    status_line, *header_lines = head.splitlines()
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return HttpAnswer(int(status_line.split()[1]), headers, json.loads(body))


def wait_for_text(path: Path, text: str, what: str) -> None:
    """Spans leave in batches (every 5 s): wait, as the reader would, until they are there."""
    poll(lambda: path.exists() and text in path.read_text(), 30, what)


def spans_in(path: Path) -> list[dict]:
    spans = []
    for line in path.read_text().splitlines():
        for resource_spans in json.loads(line)["resourceSpans"]:
            attributes = resource_spans["resource"]["attributes"]
            service = next(
                a["value"]["stringValue"] for a in attributes if a["key"] == "service.name"
            )
            for scope in resource_spans["scopeSpans"]:
                spans += [{**span, "service": service} for span in scope["spans"]]
    return spans


# -- "Two terminals and curl" -------------------------------------------------------------


@dataclass
class TwoTerminals:
    cinder: subprocess.Popen
    nova: subprocess.Popen
    create: str  # the curl that creates
    show: str  # the curl that shows the volume


def start_two_terminals(reader: Reader, *serve_extra: str) -> TwoTerminals:
    [block] = code_blocks(section("Two terminals and curl"))
    sim_cmd, serve_cmd, create, show = commands(block)
    assert sim_cmd.startswith("voltrace cinder-sim ") and "# terminal 1" in sim_cmd
    assert serve_cmd.startswith("voltrace serve ") and "# terminal 2" in serve_cmd
    assert create.startswith("curl -si -X POST") and show.startswith("curl -s http")
    cinder = reader.terminal(sim_cmd)
    nova = reader.terminal(serve_cmd, *serve_extra)
    reader.wait_listening(cinder, README_CINDER_PORT)
    reader.wait_listening(nova, README_NOVA_PORT)
    return TwoTerminals(cinder, nova, create, show)


def test_two_terminals_and_curl_as_written(reader: Reader) -> None:
    """The README's two terminals, its curl and its explain, as written: the volume is
    created and shown by Cinder, both terminals log the request id that curl -i shows, and
    explain joins both services' spans. Both processes stop cleanly on SIGTERM, and their
    spans form one trace, with Cinder's SERVER span under nova-api's CLIENT span."""
    two = start_two_terminals(reader)
    answer = parse_curl_i(reader.run(two.create).stdout)
    assert answer.status == 200, answer
    request_id = answer.headers["x-openstack-request-id"]
    assert re.fullmatch(r"req-[0-9a-f-]{36}", request_id)
    volume = answer.body["volume"]
    assert (volume["displayName"], volume["status"], volume["size"]) == ("hello", "creating", 1)
    reader.fills["<id>"] = volume["id"]

    shown = json.loads(reader.run(two.show).stdout)["volume"]
    assert (shown["id"], shown["name"]) == (volume["id"], "hello")

    # "`curl -i` shows the request id (`x-openstack-request-id`) that both terminals' log
    # lines carry".
    poll(
        lambda: all(request_id in reader.output(t) for t in (two.cinder, two.nova)),
        15,
        "the request id in both terminals",
        detail=lambda: [reader.output(t)[-1000:] for t in (two.cinder, two.nova)],
    )

    # "`voltrace explain traces.jsonl cinder.jsonl --request-id req-…` joins both services'
    # spans into one diagnosis."
    [explain] = inline_commands(section("Two terminals and curl"), "voltrace explain ")
    reader.fills["request_id"] = request_id
    wait_for_text(reader.cwd / "traces.jsonl", request_id, "nova-api's spans in traces.jsonl")
    trace_id = next(
        s["traceId"]
        for s in spans_in(reader.cwd / "traces.jsonl")
        if s["name"] == "POST /v2.1/os-volumes"
    )
    wait_for_text(reader.cwd / "cinder.jsonl", trace_id, "cinder-api's spans in cinder.jsonl")
    text = reader.run(explain).stdout
    assert request_id in text and trace_id in text
    assert "cinder-api" in text and "POST /v3/{project_id}/volumes" in text  # the other side
    assert "FAILED" not in text

    # "It shuts down cleanly on SIGTERM or SIGINT, flushing every span and log line".
    assert reader.ctrl_c(two.nova) == 0
    assert reader.ctrl_c(two.cinder) == 0
    nova_spans = spans_in(reader.cwd / "traces.jsonl")
    cinder_spans = spans_in(reader.cwd / "cinder.jsonl")
    assert {s["service"] for s in nova_spans} == {"nova-api"}
    services = {s["service"] for s in cinder_spans}
    # cinder-sim traces its asynchronous create too, as far as it got before SIGTERM.
    assert "cinder-api" in services
    assert services <= {"cinder-api", "cinder-scheduler", "cinder-volume"}
    nova_by_id = {s["spanId"]: s for s in nova_spans}
    cinder_post = next(s for s in cinder_spans if s["name"] == "POST /v3/{project_id}/volumes")
    assert cinder_post["traceId"] == trace_id
    client = nova_by_id[cinder_post["parentSpanId"]]
    assert client["name"] == "POST"
    assert nova_by_id[client["parentSpanId"]]["name"] == "call_cinder"


# -- "Diagnose a failed create" -----------------------------------------------------------


def test_diagnose_a_failed_create_as_written(reader: Reader) -> None:
    """A create refused over quota, diagnosed with each explain command of the section:
    from the trace, from the logs alone, and --failed over both. Then step 4's --html and
    --json (with every field the README lists), and the exit statuses it promises."""
    two = start_two_terminals(reader, *DIAGNOSE_SERVE_EXTRA)
    over_quota = two.create.replace('"size": 1,', f'"size": {OVER_QUOTA_SIZE},')
    assert over_quota != two.create
    answer = parse_curl_i(reader.run(over_quota).stdout)
    assert answer.status == 403, answer
    request_id = answer.headers["x-openstack-request-id"]
    reader.fills["request_id"] = request_id
    wait_for_text(reader.cwd / "traces.jsonl", request_id, "the failed create's trace")
    poll(
        lambda: "request.finished" in (reader.cwd / "nova-api.log.jsonl").read_text(),
        15,
        "the failed create's log lines",
    )

    # "the same `req-…` id is on every log line of that create and on its server span".
    logs = [
        json.loads(line) for line in (reader.cwd / "nova-api.log.jsonl").read_text().splitlines()
    ]
    [finished] = [e for e in logs if e["event"] == "request.finished"]
    [server] = [
        s for s in spans_in(reader.cwd / "traces.jsonl") if s["name"] == "POST /v2.1/os-volumes"
    ]
    assert (finished["request_id"], finished["trace_id"]) == (request_id, server["traceId"])
    assert all(e.get("request_id") == request_id for e in logs if e.get("trace_id"))

    text = section("Diagnose a failed create")
    explains = [
        c
        for block in code_blocks(text)
        for c in commands(block)
        if c.startswith("voltrace explain")
    ]
    assert len(explains) == 3, explains
    from_trace, from_logs, failed = explains
    for command, source in ((from_trace, "(from the trace)"), (from_logs, "(from the logs)")):
        out = reader.run(command).stdout
        first = out.splitlines()[0]
        assert first.startswith(f"FAILED {request_id}") and first.endswith(source), first
        assert "failed stage  call_cinder: over_quota" in out
        assert f"{OVER_QUOTA_SIZE}G asked, limit" in out
        assert "openstack quota show --volume 0123456789abcdef0123456789abcdef" in out
    out = reader.run(failed).stdout
    assert f"FAILED {request_id}" in out

    # Step 4: --html writes one page; --json has every field the README names.
    reader.run(f"{from_trace} --html report.html")
    page = (reader.cwd / "report.html").read_text()
    assert request_id in page and "<script" not in page
    [listed] = re.findall(
        r"`--json` prints one object per create \((.*?)\)", text.replace("\n", " "), re.S
    )
    fields = re.findall(r"`(\w+)`", listed)
    assert len(fields) >= 10, listed
    [line] = reader.run(f"{from_trace} --json").stdout.splitlines()
    diagnosis = json.loads(line)
    assert set(fields) <= set(diagnosis), set(fields) - set(diagnosis)
    assert (diagnosis["request_id"], diagnosis["failure_class"]) == (request_id, "over_quota")

    # "`explain` exits 0 when it showed creates, 1 when none matched, 2 when the input
    # cannot be read at all."
    reader.fills["request_id"] = "req-00000000-0000-0000-0000-000000000000"
    assert reader.run(from_trace, check=False).returncode == 1
    missing = reader.run("voltrace explain no-such-traces.jsonl", check=False)
    assert missing.returncode == 2 and missing.stderr.strip()
    assert reader.ctrl_c(two.nova) == 0 and reader.ctrl_c(two.cinder) == 0


# -- "Against a real cinder-api" ----------------------------------------------------------


def real_cinder_block() -> tuple[str, bool]:
    """README's block for the section, once it has one with a curl; else the proposed one."""
    for block in code_blocks(section("Against a real cinder-api")):
        if "curl " in block:
            return block, True
    [block] = code_blocks(PROPOSED_REAL_CINDER)
    return block, False


def test_against_a_real_cinder_api_as_written(reader: Reader) -> None:
    """build (a no-op once cached), run, serve, curl: a real cinder-api 29 creates the
    volume, and its log carries voltrace's request id where the README says."""
    require(venv_ready(default_venv()), "the cached cinder venv (real_cinder build) is needed")
    block, from_readme = real_cinder_block()
    build, run, serve, create, grep = commands(block)
    prose = section("Against a real cinder-api")
    # The prose names the same tool either way.
    assert "python3 -m voltrace.devtools.real_cinder build" in prose
    assert build.startswith("python3 -m voltrace.devtools.real_cinder build")
    assert run.startswith("python3 -m voltrace.devtools.real_cinder run")

    reader.run(build, timeout=600)
    cinder = reader.terminal(
        run,
        "--port",
        str(reader.ports[README_CINDER_PORT]),
        "--workdir",
        str(reader.cwd / "cinder"),
    )
    reader.wait_listening(cinder, README_CINDER_PORT)
    banner = poll(
        lambda: re.search(r"^log: (\S+cinder-api\.log)", reader.output(cinder), re.M),
        30,
        "run to print its log path",
    )
    port = reader.ports[README_CINDER_PORT]
    assert f"cinder-api 29.0.0 on http://127.0.0.1:{port} (noauth: token 'user:project')" in (
        reader.output(cinder)
    )
    nova = reader.terminal(serve)
    reader.wait_listening(nova, README_NOVA_PORT)

    answer = parse_curl_i(reader.run(create).stdout)
    assert answer.status == 200, (answer, from_readme)
    volume = answer.body["volume"]
    assert (volume["status"], volume["displayName"]) == ("creating", "hello")
    request_id = answer.headers["x-openstack-request-id"]
    reader.fills["request_id"] = request_id
    log = banner.group(1)
    reader.fills["/tmp/voltrace-cinder-*/log/cinder-api.log"] = log
    assert log.startswith(str(reader.cwd / "cinder"))
    lines = reader.run(grep).stdout.splitlines()
    # cinder-api's context: [global request id (voltrace's), its own, user, project, ...]
    assert any(
        re.search(rf"\[{request_id} req-[0-9a-f-]+ alice 0123456789abcdef0123456789abcdef ", line)
        and "POST" in line
        for line in lines
    ), lines[:5]
    assert reader.ctrl_c(nova) == 0
    assert reader.ctrl_c(cinder, timeout=60) == 0
