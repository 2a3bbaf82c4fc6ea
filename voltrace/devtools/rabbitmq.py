"""Debian's RabbitMQ as plain processes we own, on 127.0.0.1 (see shared/full-cinder.md §2).

One instance is one directory and three ports (AMQP, a private epmd, Erlang
distribution). Nothing of the system broker is used: not ``/usr/sbin/rabbitmq-server``
(it ``su``s to user rabbitmq and logs to /var/log), not the system epmd, not the real
``$HOME`` (the Erlang cookie goes to the instance's own). Vhosts are created at boot
from a definitions file, because ``rabbitmqctl add_vhost`` costs about 2 s a call::

    with RabbitMQ(workdir, vhosts=["s1", "s2"]) as broker:
        broker.transport_url("s1")   # rabbit://guest:guest@127.0.0.1:PORT/s1

Stopping SIGKILLs the broker's ``sh`` wrapper, ``beam.smp`` and all their descendants
(``erl_child_setup`` and ``inet_gethost`` sit in process groups of their own), then
epmd: the directory is throwaway, so there is nothing to stop gracefully for.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from voltrace.devtools import processes
from voltrace.devtools.ports import free_port, port_in_use

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
EPMD = Path("/usr/bin/epmd")
INSTALL_HINT = "apt-get install -y --no-install-recommends rabbitmq-server"


class RabbitMQError(RuntimeError):
    """The broker is not installed or did not start (the message says why)."""


def installed() -> bool:
    return SERVER.exists() and EPMD.exists()


class RabbitMQ:
    """One broker: ``workdir`` holds its mnesia, logs, config and cookie."""

    def __init__(
        self,
        workdir: Path,
        *,
        vhosts: Sequence[str] = (),
        name: str = "voltrace",
        port: int | None = None,
        startup_timeout: float = 90.0,
    ) -> None:
        self.workdir = Path(workdir).absolute()
        self.name = name
        self.vhosts = ["/", *[v for v in vhosts if v != "/"]]
        self.port = port or free_port()
        self.epmd_port = free_port()
        self.dist_port = free_port()
        self.startup_timeout = startup_timeout
        self.log_path = self.workdir / "log" / "server.out"
        self.server: subprocess.Popen[bytes] | None = None
        self.epmd: subprocess.Popen[bytes] | None = None
        self._launched_at = 0.0

    def transport_url(self, vhost: str = "/") -> str:
        if vhost not in self.vhosts:
            raise RabbitMQError(f"vhost {vhost!r} was not created at boot ({self.vhosts})")
        path = "" if vhost == "/" else vhost
        return f"rabbit://guest:guest@127.0.0.1:{self.port}/{path}"

    @property
    def pids(self) -> list[int]:
        """The broker's processes right now (for memory figures and leak checks)."""
        roots = [p.pid for p in (self.server, self.epmd) if p is not None]
        return [
            pid
            for root in roots
            if processes.alive(root)
            for pid in (root, *processes.descendants(root))
        ]

    def _environment(self) -> dict[str, str]:
        d = self.workdir
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RABBITMQ_", "ERL_", "PYTHON", "OTEL_"))
        }
        env.update(
            HOME=str(d / "home"),  # .erlang.cookie goes here, not to the real $HOME
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_NODENAME=f"{self.name}@localhost",
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(d / "mnesia"),
            RABBITMQ_LOG_BASE=str(d / "log"),
            RABBITMQ_CONFIG_FILE=str(d / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(d / "enabled_plugins"),
            RABBITMQ_CONF_ENV_FILE=str(d / "rabbitmq-env.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(d / "advanced.config"),
            RABBITMQ_PID_FILE=str(d / "rabbit.pid"),
            # Our own epmd, so erl does not spawn a detached `epmd -daemon` that outlives us.
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=(
                "-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}"
            ),
            RABBITMQ_CTL_ERL_ARGS="-start_epmd false",
        )
        return env

    def _write_config(self) -> None:
        d = self.workdir
        for sub in ("home", "mnesia", "log"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "rabbitmq-env.conf").write_text("")
        (d / "enabled_plugins").write_text("[].\n")
        definitions = {
            "users": [{"name": "guest", "password": "guest", "tags": ["administrator"]}],
            "vhosts": [{"name": v} for v in self.vhosts],
            "permissions": [
                {"user": "guest", "vhost": v, "configure": ".*", "write": ".*", "read": ".*"}
                for v in self.vhosts
            ],
        }
        (d / "definitions.json").write_text(json.dumps(definitions))
        (d / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "log.console = false\n"
            "log.file.level = warning\n"
            "disk_free_limit.absolute = 50MB\n"
            f"load_definitions = {d / 'definitions.json'}\n"
        )

    def start(self) -> RabbitMQ:
        """Launch and wait until the AMQP port accepts (about 10 s: beam's boot steps)."""
        self.launch()
        try:
            self.wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def launch(self) -> RabbitMQ:
        """Start epmd and the broker without waiting (prepare other things meanwhile)."""
        if not installed():
            raise RabbitMQError(f"RabbitMQ is not installed ({SERVER} missing): {INSTALL_HINT}")
        self._write_config()
        env = self._environment()
        self._launched_at = time.monotonic()
        with open(self.workdir / "log" / "epmd.out", "ab") as out:
            self.epmd = subprocess.Popen(
                [str(EPMD), "-address", "127.0.0.1", "-port", str(self.epmd_port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        with open(self.log_path, "ab") as out:
            self.server = subprocess.Popen(
                [str(SERVER)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                cwd=self.workdir,
            )
        return self

    def wait_until_ready(self) -> None:
        """Poll the AMQP port; RabbitMQError (with the log's tail) if the broker dies or hangs."""
        started = self._launched_at
        # The AMQP listener opens last in boot: once it accepts, vhosts and users exist.
        while not port_in_use(self.port):
            assert self.server is not None
            if self.server.poll() is not None:
                raise RabbitMQError(
                    f"rabbitmq-server exited {self.server.returncode} while booting; "
                    f"{self.log_path}:\n{processes.tail(self.log_path)}"
                )
            if time.monotonic() - started > self.startup_timeout:
                raise RabbitMQError(
                    f"RabbitMQ did not listen on 127.0.0.1:{self.port} within "
                    f"{self.startup_timeout:.0f} s; {self.log_path}:\n"
                    f"{processes.tail(self.log_path)}"
                )
            time.sleep(0.1)  # polling interval while beam boots

    def stop(self) -> None:
        """SIGKILL the broker's whole tree, then its epmd; reap both."""
        launched = [p for p in (self.server, self.epmd) if p is not None]
        self.server = self.epmd = None
        signalled = processes.kill_tree([p.pid for p in launched])
        for process in launched:
            process.wait()
        left = processes.wait_gone(signalled, timeout=5)
        if left:
            raise RabbitMQError(f"RabbitMQ processes survived SIGKILL: {left}")

    def __enter__(self) -> RabbitMQ:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
