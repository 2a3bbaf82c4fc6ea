"""A throwaway PostgreSQL 15 server on 127.0.0.1, copied from a db-synced template data dir.

Why not sqlite: three cinder services on one sqlite file give random 500s
(``database is locked``), and a SIGSTOPped service can hold its lock (full-cinder.md,
gotchas 1-2). A template copy starts in well under a second::

    with Postgres(template_datadir) as pg:            # copy, start, wait for pg_isready
        pg.create_database("s1")                      # CREATE DATABASE s1 TEMPLATE cinder
        pg.url("s1")                                  # postgresql+psycopg2://cinder@...

``initdb`` and ``postgres`` refuse to run as root, so as root they run through
``runuser -u postgres`` and the data dir is owned by postgres, in a fresh directory under
the system temp dir (pytest's and the user cache's directories are not reachable for
another user). The PID to signal is the postmaster's, from ``postmaster.pid``, not
``runuser``'s. Stopping is a fast shutdown (SIGINT), SIGKILL of what is left after 10 s.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from voltrace.devtools import processes
from voltrace.devtools.ports import free_port

BIN = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "cinder"  # the cluster's superuser is the role cinder connects as
TEMPLATE_DB = "cinder"
INSTALL_HINT = "apt-get install -y --no-install-recommends postgresql-15"


class PostgresError(RuntimeError):
    """PostgreSQL is missing or did not start (the message says why)."""


def installed() -> bool:
    return all((BIN / name).exists() for name in ("initdb", "postgres", "pg_isready", "createdb"))


def _as_postgres(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def _chown_to_postgres(path: Path) -> None:
    if os.geteuid() != 0:
        return
    user = pwd.getpwnam("postgres")
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), user.pw_uid, user.pw_gid)
    os.chown(path, user.pw_uid, user.pw_gid)


def init_cluster(datadir: Path) -> None:
    """``initdb`` an empty cluster (trust auth, superuser ``cinder``) at ``datadir``."""
    if not installed():
        raise PostgresError(f"PostgreSQL 15 is not installed ({BIN} missing): {INSTALL_HINT}")
    datadir.parent.mkdir(parents=True, exist_ok=True)
    _chown_to_postgres(datadir.parent)
    result = subprocess.run(
        _as_postgres(
            [
                str(BIN / "initdb"),
                "-D",
                str(datadir),
                "-A",
                "trust",
                "-U",
                SUPERUSER,
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ]
        ),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise PostgresError(f"initdb exited {result.returncode}: {result.stderr[-2000:]}")


class Postgres:
    """One postmaster serving a copy of ``template`` (a data dir), or ``template`` itself."""

    def __init__(
        self,
        template: Path,
        *,
        copy: bool = True,
        port: int | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.template = Path(template)
        self.copy = copy
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.root: Path | None = None
        self.datadir = self.template
        self.launcher: subprocess.Popen[bytes] | None = None
        self.postmaster: int | None = None

    @property
    def log_path(self) -> Path:
        return (self.root or self.datadir.parent) / "postgres.log"

    def url(self, database: str = TEMPLATE_DB) -> str:
        return f"postgresql+psycopg2://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @property
    def pids(self) -> list[int]:
        if self.postmaster is None or not processes.alive(self.postmaster):
            return []
        return [self.postmaster, *processes.descendants(self.postmaster)]

    def start(self) -> Postgres:
        if not installed():
            raise PostgresError(f"PostgreSQL 15 is not installed ({BIN} missing): {INSTALL_HINT}")
        if self.copy:
            self.root = Path(tempfile.mkdtemp(prefix="voltrace-pg-"))
            self.datadir = self.root / "data"
            shutil.copytree(self.template, self.datadir, symlinks=True)
            (self.datadir / "postmaster.pid").unlink(missing_ok=True)
            _chown_to_postgres(self.root)
        socket_dir = self.datadir.parent
        with open(self.log_path, "ab") as log:
            self.launcher = subprocess.Popen(
                _as_postgres(
                    [
                        str(BIN / "postgres"),
                        "-D",
                        str(self.datadir),
                        "-k",
                        str(socket_dir),
                        "-h",
                        "127.0.0.1",
                        "-p",
                        str(self.port),
                        "-c",
                        "fsync=off",
                        "-c",
                        "synchronous_commit=off",
                        "-c",
                        "full_page_writes=off",
                        "-c",
                        "max_connections=200",
                    ]
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            assert self.launcher is not None
            if self.postmaster is None:
                self.postmaster = self._postmaster_pid()
            ready = subprocess.run(
                [
                    str(BIN / "pg_isready"),
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    SUPERUSER,
                    "-d",
                    "postgres",
                ],
                check=False,
                stdin=subprocess.DEVNULL,
            )
            if ready.returncode == 0:
                self.postmaster = self.postmaster or self._postmaster_pid()
                return
            if self.launcher.poll() is not None:
                raise PostgresError(
                    f"postgres exited {self.launcher.returncode} while starting; "
                    f"{self.log_path}:\n{processes.tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                raise PostgresError(
                    f"postgres did not accept connections on 127.0.0.1:"
                    f"{self.port} within {self.startup_timeout:.0f} s; "
                    f"{self.log_path}:\n{processes.tail(self.log_path)}"
                )
            time.sleep(0.05)  # polling interval while it starts

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.datadir / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def run_sql_tool(self, tool: str, *args: str, env: Mapping[str, str] | None = None) -> None:
        """Run ``createdb``/``dropdb``/``psql`` against this server; PostgresError on failure."""
        result = subprocess.run(
            [str(BIN / tool), "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, *args],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=120,
            check=False,
            env=dict(env) if env is not None else None,
        )
        if result.returncode != 0:
            raise PostgresError(
                f"{tool} {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
            )

    def create_database(self, name: str, template: str | None = TEMPLATE_DB) -> str:
        """A new database (a copy of ``template``: cinder's synced schema); returns its URL."""
        self.run_sql_tool("createdb", *(["-T", template] if template else []), name)
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown of the postmaster (by its PID), then remove the copied data dir."""
        launcher, self.launcher = self.launcher, None
        postmaster, self.postmaster = self.postmaster or self._postmaster_pid(), None
        if postmaster is not None and processes.alive(postmaster):
            family = [postmaster, *processes.descendants(postmaster)]
            os.kill(postmaster, signal.SIGINT)
            if processes.wait_gone([postmaster], timeout=10):
                processes.kill_tree(family)
            processes.wait_gone(family, timeout=5)
        if launcher is not None:
            if launcher.poll() is None:
                processes.kill_tree([launcher.pid])
            launcher.wait()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
