"""A Cinder v3 API simulator that speaks real HTTP.

nova-api's ``POST /v2.1/os-volumes`` proxies to Cinder. To trace and measure that hop
without a full cinder-api (eventlet, a database, a message bus), this package serves the
handful of Cinder v3 calls Nova makes, with the bodies, headers and error texts that
cinder 29 (OpenStack 2025.x) sends at microversion 3.0. It runs on the standard
library's ``http.server`` with HTTP/1.1 keep-alive, so python-cinderclient and
keystoneauth talk to it exactly as they talk to a real Cinder.

Usage::

    from voltrace.cinder_sim import CinderSimulator, Fault

    with CinderSimulator(deterministic=True) as sim:
        # point nova's [cinder] endpoint_template at sim.endpoint_template
        sim.inject(Fault("volumes.create", status=503, times=1))
        ...
        assert sim.recorded[0].headers["X-OpenStack-Request-ID"].startswith("req-")

From the command line (:func:`add_cli_arguments` and :func:`run_cli` let another CLI
offer the same options)::

    python -m voltrace.cinder_sim --port 8776 --fault volumes.create:latency_ms=300

Cinder API served (``{p}`` is any project id; ``X-Auth-Token`` is required but never
validated, as if keystonemiddleware had accepted every token):

==========  ==============================================  =================
method      path                                            route name
==========  ==============================================  =================
GET         ``/`` (300, no token needed), ``/v3/``          ``versions``
POST        ``/v3/{p}/volumes``                             ``volumes.create``
GET         ``/v3/{p}/volumes/{volume_id}``                 ``volumes.get``
POST        ``/v3/{p}/snapshots``                           ``snapshots.create``
GET         ``/v3/{p}/snapshots/{snapshot_id}``             ``snapshots.get``
GET         ``/v3/{p}/os-quota-sets/{target}[?usage=true]`` ``quotas.get``
PUT         ``/v3/{p}/os-quota-sets/{target}``              ``quotas.update``
GET         ``/v3/{p}/os-quota-sets/{target}/defaults``     ``quotas.defaults``
GET         ``/v3/{p}/os-quota-sets/defaults``              ``quotas.defaults``
==========  ==============================================  =================

The simulated caller is a project member (not an admin), which is what Nova's user token
usually is: a volume show carries ``os-vol-tenant-attr:tenant_id`` but no
``migration_status``; a snapshot show carries the ``os-extended-snapshot-attributes:*``
keys (cinder shows those to project readers). A new volume or snapshot answers
``creating`` and is ``available`` by the time anyone asks again (an instant scheduler).

Faults (:class:`Fault`) are matched by route name. Every matching fault counts one use
(``times``); their latencies add up; the first one with a ``status`` or ``action``
decides the answer:

* ``status`` alone: answer that status (with ``body`` or a cinder-shaped fault body)
  instead of doing the work;
* ``action="drop"``: close the connection without answering (the client sees a FIN);
* ``action="reset"``: close with ``SO_LINGER`` 0 so the client sees a TCP RST;
* ``action="garbage"``: do the work, then answer the success status (or ``status``)
  with a body that is not JSON;
* ``action="truncated"``: do the work, then answer the real status with the first half
  of the real JSON body (``Content-Length`` matches the half, so only the JSON is broken).

Test/demo endpoints under ``/__sim__/`` are neither recorded nor traced:
``GET|POST|DELETE /__sim__/faults`` (POST a Fault as JSON, or ``{"spec": "ROUTE:..."}``),
``GET|DELETE /__sim__/requests`` and ``POST /__sim__/reset``.

Tracing: pass ``tracer_provider`` (whose Resource says ``service.name=cinder-api``) to get
one SERVER span per Cinder request, continuing the caller's W3C ``traceparent``, named
``METHOD /v3/{project_id}/...``, with child INTERNAL spans for the simulator's steps
(``validate``, ``check_quota``, ``persist``, ``lookup``, ``injected_latency``). Without a
provider a no-op tracer is used. The global tracer provider is never touched.

Reading the code (each module's docstring says more; a request flows top to bottom):

==================  ================================================================
``simulator.py``    :class:`CinderSimulator`: socket, thread, faults, recorded requests
``server.py``       HTTP/1.1 plumbing (keep-alive, TCP_NODELAY, drop/reset, bodies)
``admin.py``        the ``/__sim__/`` endpoints
``app.py``          one request -> one outcome: span, faults, token check, dispatch
``routes.py``       the route table (:data:`ROUTES` are its names)
``handlers.py``     what each route does, step by step
``plans.py``        cinder's checks before a create reserves quota
``validation.py``   JSON-schema validation with cinder's messages (+ oslo helpers)
``schemas.py``      cinder's request schemas (data)
``state.py``        volumes, snapshots, ids, deterministic mode, the lock
``quotas.py``       limits, usage and over-quota answers
``views.py``        success bodies (volume, snapshot, versions)
``errors.py``       :class:`ApiError` and cinder's error bodies
``messages.py``     request/response types and cinder's standard headers
``tracing.py``      the SERVER span and the step spans
``faults.py``       :class:`Fault` and which faults a request meets
``cli.py``          :func:`add_cli_arguments`, :func:`run_cli` (``__main__.py`` uses them)
==================  ================================================================

Only the names imported below are public; the modules are internals.
"""

from voltrace.cinder_sim.cli import add_cli_arguments, run_cli
from voltrace.cinder_sim.faults import FAULT_ACTIONS, Fault
from voltrace.cinder_sim.messages import RecordedRequest
from voltrace.cinder_sim.routes import ROUTES
from voltrace.cinder_sim.simulator import CinderSimulator

# Importable as before, but not part of ``import *`` (they never were).
from voltrace.cinder_sim.state import DETERMINISTIC_TIME as DETERMINISTIC_TIME
from voltrace.cinder_sim.views import API_VERSION_UPDATED as API_VERSION_UPDATED
from voltrace.cinder_sim.views import MAX_API_VERSION as MAX_API_VERSION
from voltrace.cinder_sim.views import MIN_API_VERSION as MIN_API_VERSION
from voltrace.cinder_sim.views import SIMULATED_USER_ID as SIMULATED_USER_ID

__all__ = [
    "FAULT_ACTIONS",
    "ROUTES",
    "CinderSimulator",
    "Fault",
    "RecordedRequest",
    "add_cli_arguments",
    "run_cli",
]
