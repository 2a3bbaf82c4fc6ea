"""Ordinary mistakes on the command line: one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voltrace", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(answer: subprocess.CompletedProcess[str], expected: str) -> None:
    assert answer.returncode != 0
    assert "Traceback" not in answer.stderr, answer.stderr
    assert expected in answer.stderr, answer.stderr
    assert "listening on" not in answer.stderr  # no banner for a server that never served


def test_serve_refuses_a_port_out_of_range() -> None:
    """--port 99999 is refused by the parser, before any banner."""
    assert_one_line_error(run("serve", "--port", "99999"), "99999 is not a port number")


def test_serve_refuses_a_busy_port_at_once() -> None:
    """A port someone else holds is named, with the reason, without gunicorn's retries."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        answer = run("serve", "--port", str(port), timeout=20)
    assert_one_line_error(answer, f"cannot listen on 127.0.0.1:{port}")
    assert "os-volumes on http" not in answer.stderr


def test_serve_refuses_a_missing_nova_conf(tmp_path: Path) -> None:
    """--config-file that does not exist is one line."""
    assert_one_line_error(
        run("serve", "--config-file", str(tmp_path / "nova.conf")), "does not exist"
    )


def test_serve_refuses_an_invalid_option_in_nova_conf(tmp_path: Path) -> None:
    """An out-of-range option in nova.conf is named, as oslo.config reports it."""
    conf = tmp_path / "nova.conf"
    conf.write_text("[cinder]\nhttp_retries = -1\n")
    assert_one_line_error(run("serve", "--config-file", str(conf)), "http_retries")


@pytest.mark.parametrize("value", ["abc", "-3"])
def test_load_refuses_bad_numbers(value: str) -> None:
    """--rate must be a positive number."""
    answer = run("load", "--rate", value, "--duration", "1s")
    assert answer.returncode == 2
    assert "Traceback" not in answer.stderr


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--fault", "volumes.create:status=abc", "status='abc': expected an integer"),
        ("--fault", "volumes.create", "must look like ROUTE:key=value"),
        ("--fault", "no.such.route:status=500", "unknown route 'no.such.route'"),
        ("--fault", "volumes.create:colour=red", "unknown fault key 'colour'"),
        ("--backend-fault", "melt", "unknown backend fault 'melt'"),
    ],
)
def test_cinder_sim_refuses_a_bad_fault(flag: str, value: str, expected: str) -> None:
    """A fault spec cinder-sim cannot use is one error line (after argparse's usage) naming
    the flag and what is wrong, exit 2, before anything listens."""
    answer = run("cinder-sim", "--port", "0", flag, value)
    assert answer.returncode == 2
    assert_one_line_error(answer, expected)
    errors = [line for line in answer.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, answer.stderr
    assert errors[0].startswith(f"voltrace cinder-sim: error: argument {flag}: "), errors
    assert "listening on" not in answer.stdout


def test_main_in_process_gives_the_callers_sigterm_handler_back(capsys):
    """voltrace.cli.main turns SIGTERM into a clean exit while it runs, and only then: a
    program (or a test run) calling it in-process keeps its own handler afterwards."""
    from voltrace.cli import main  # in-process, as a test run or an embedding program calls it

    def mine(*_: object) -> None:
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        assert main(["demo", "--list"]) == 0
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert "plain-create" in capsys.readouterr().out
