"""Serve nova-api 34's own paste pipeline on 127.0.0.1: runs inside nova's venv, never ours.

``voltrace.devtools.real_nova`` starts this file with the venv's python::

    <venv>/bin/python nova_host.py --config-file nova.conf --paste api-paste.ini \\
        --port 8774 --ready-file ready.json

It does what ``nova/wsgi/osapi_compute.py`` does (threading monkey-patch, nova's config,
``paste.deploy.loadapp(..., name="osapi_compute")``) minus the service record in the
database, which the API paths never read. The socket is bound *before* the app loads, so a
busy port fails at once; the ready file (pid and port) is written only once the app is
loaded and the socket is accepting.

Under a real WSGI server, :func:`wsgi_app` is the same app as an application factory, e.g.
gunicorn's ``'nova_host:wsgi_app()'`` with ``$NOVA_HOST_CONFIG_FILE`` and ``$NOVA_HOST_PASTE``
naming nova.conf and api-paste.ini (and this file's folder on ``PYTHONPATH``).

Also the home of :func:`trusted_identity_filter_factory`, the one stand-in in the pipeline:
it takes keystonemiddleware ``authtoken``'s place and trusts the identity headers
(X-User-Id, X-Project-Id, X-Roles, X-Service-Catalog, X-Auth-Token, ...) that authtoken would
have set from a validated token, since there is no Keystone here.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socketserver
import sys
from typing import Any
from wsgiref import simple_server

# oslo_middleware.cors re-parses config for project "nova" with the program name from
# argv[0]; a script called host.py made it read /etc/host.conf. Name the program as nova does.
PROG = "nova-api-os-compute"


def trusted_identity_filter_factory(global_conf: dict, **local_conf: str) -> Any:
    """Paste filter factory: authtoken's stand-in, passing identity headers through as set."""

    def trusted_identity(app: Any) -> Any:
        # keystonemiddleware leaves the X-* identity headers in the environ for
        # NovaKeystoneContext, which builds the RequestContext from them; trusting what the
        # client sent is exactly what authtoken's output looks like to the rest of nova.
        return app

    return trusted_identity


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, simple_server.WSGIServer):
    daemon_threads = True
    # A port held by another process must fail, not be shared.
    allow_reuse_address = False


class _QuietHandler(simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


CONFIG_ENV = "NOVA_HOST_CONFIG_FILE"
PASTE_ENV = "NOVA_HOST_PASTE"


def load_app(config_file: str, paste: str) -> Any:
    """What nova/wsgi/osapi_compute.py does, minus the service record: nova's paste app."""
    sys.argv = [PROG]
    from nova import monkey_patch

    monkey_patch.patch(backend="threading")

    from nova import config
    from oslo_log import log as logging
    from paste import deploy

    conf = config.CONF
    config.parse_args([PROG, "--config-file", config_file], default_config_files=[], prog=PROG)
    logging.setup(conf, "nova")
    return deploy.loadapp(f"config:{os.path.abspath(paste)}", name="osapi_compute")


def wsgi_app() -> Any:
    """An application factory for WSGI servers: nova's app from ``$NOVA_HOST_CONFIG_FILE``
    and ``$NOVA_HOST_PASTE`` (loaded where the server calls it: the master under gunicorn's
    ``--preload``, each worker otherwise)."""
    return load_app(os.environ[CONFIG_ENV], os.environ[PASTE_ENV])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--paste", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ready-file", required=True)
    args = parser.parse_args(argv)

    try:
        server = _ThreadingWSGIServer(("127.0.0.1", args.port), _QuietHandler)
    except OSError as exc:
        print(
            f"nova_host: cannot listen on 127.0.0.1:{args.port}: {exc.strerror}",
            file=sys.stderr,
            flush=True,
        )
        return 3

    server.set_app(load_app(args.config_file, args.paste))

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    partial = f"{args.ready_file}.{os.getpid()}"
    with open(partial, "w") as ready:
        json.dump({"pid": os.getpid(), "port": server.server_address[1]}, ready)
    os.replace(partial, args.ready_file)
    print(
        f"nova_host: nova-api serving on http://127.0.0.1:{args.port}", file=sys.stderr, flush=True
    )
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
