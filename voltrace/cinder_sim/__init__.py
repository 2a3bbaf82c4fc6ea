"""A Cinder v3 simulator that speaks real HTTP: cinder-api, then cinder-scheduler and
cinder-volume behind it.

nova-api's ``POST /v2.1/os-volumes`` proxies to Cinder. To trace and measure that hop, and
what happens to the volume after Cinder's 202, without a full Cinder (eventlet, a
database, a message bus), this package serves the Cinder v3 calls Nova and an operator
make, with the bodies, headers and error texts of cinder 29 (OpenStack 2025.x). It runs
on the standard library's ``http.server`` with HTTP/1.1 keep-alive, so
python-cinderclient and keystoneauth talk to it exactly as they talk to a real Cinder.

Usage::

    from voltrace.cinder_sim import BackendFault, BackendSettings, CinderSimulator, Fault

    with CinderSimulator(telemetry=cinder_api_telemetry,
                         backend=BackendSettings(capacity_gb=100)) as sim:
        # point nova's [cinder] endpoint_template at sim.endpoint_template
        sim.inject(Fault("volumes.create", status=503, times=1))       # the API misbehaves
        sim.inject_backend_fault(BackendFault("driver_error"))          # the driver does
        sim.stop_service("cinder-scheduler")                            # a service is down
        ...

From the command line (:func:`add_cli_arguments` and :func:`run_cli` let another CLI
offer the same options; ``python -m voltrace.cinder_sim`` adds ``voltrace serve``'s
telemetry options: ``--traces-file``, ``--jaeger-file``, ``--log-file`` ...)::

    python -m voltrace.cinder_sim --port 8776 --traces-file cinder.jsonl \
        --capacity-gb 100 --backend-fault driver_error --service-down cinder-volume

Cinder API served (``{p}`` is a project id; ``X-Auth-Token`` is required, see below):

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
GET         ``/v3/{p}/messages`` (>= 3.3; filters >= 3.5)   ``messages.list``
GET         ``/v3/{p}/messages/{message_id}`` (>= 3.3)      ``messages.get``
GET         ``/v3/{p}/os-services[?host=&binary=]``         ``services.list``
==========  ==============================================  =================

The routes Nova calls answer at microversion 3.0 whatever is asked; the messages and
os-services routes read ``OpenStack-API-Version`` as cinder does (400 for a bad format,
406 out of 3.0-3.71, ``latest``) and echo it.

Honest where real cinder-api differs from what a fake would accept:

* **Project ids.** cinder's router only has routes for project ids matching
  ``[DEFAULT] project_id_regex`` (``[0-9a-f\\-]+``: keystone's hex ids, dashes allowed).
  Any other id (``p-member``, ``demo``, upper-case hex) matches no route: webob's bare 404
  (text/html for ``Accept: */*``, JSON for ``application/json``, else text/plain) with
  only ``x-openstack-request-id``, after the token check. ``project_id_regex=`` (CLI
  ``--project-id-regex``) changes it, as the option does in cinder.
* **Tokens.** ``auth_strategy="keystone"`` (the default) models keystonemiddleware
  having accepted the token: any non-empty ``X-Auth-Token`` is taken as a token scoped to
  the URL's project, for a project *member* (no token: keystonemiddleware's 401). Member
  views: a volume show carries ``os-vol-tenant-attr:tenant_id`` but no
  ``migration_status`` or host; messages are the project's. ``os-services`` is admin-only
  in cinder, but answers every caller here (a token's roles are never known).
  ``auth_strategy="noauth"`` is cinder 29's NoAuthMiddleware, what
  ``voltrace.devtools.real_cinder`` runs: the token is ``user:project`` (a token without
  ``:`` is both user and project); a URL project that is not the token's is
  ``400 Malformed request url`` (so ``X-Auth-Token: admin`` on ``/v3/<hex>/...`` is a
  400, and a non-hex project a 404: the failures of README's old curl); no token at all
  answers 204 with ``X-Auth-Token: admin:admin``; every caller is an admin, who sees the
  ``os-vol-host-attr:host`` and migration attributes and every project's messages.

After the 202 (``async_create.py``): the create is cast to a simulated cinder-scheduler,
which picks the backend ``cinder-sim@lvmdriver-1#lvmdriver-1`` (or finds none: capacity,
the volume type's extra specs, cinder-volume seen down, attempts exhausted) and casts to
cinder-volume, whose driver creates it, or fails and is rescheduled on the same host up
to ``scheduler_max_attempts`` (3). Status, ``host`` and the user messages
(``VOLUME_VOLUME_001_003``, ``VOLUME_VOLUME_008_012``, with the create's request id) are
cinder 29's in each case, as measured in ``../shared/full-cinder.md``. Both services run on
one background thread (:mod:`.worker`), with realistic timings (scheduling 0.1-0.2 s,
cinder-volume 0.2-0.3 s; fixed midpoints with ``deterministic=True``), configurable
through :class:`BackendSettings`, the CLI and ``/__sim__/backend``. A stopped service
keeps its casts queued until it starts again; ``os-services`` reports it ``down``
``service_down_time`` after its last heartbeat. Snapshots settle at once.

Faults on the API (:class:`Fault`) are matched by route name. Every matching fault counts
one use (``times``); their latencies add up; the first one with a ``status`` or
``action`` decides the answer:

* ``status`` alone: answer that status (with ``body`` or a cinder-shaped fault body)
  instead of doing the work;
* ``action="drop"``: close the connection without answering (the client sees a FIN);
* ``action="reset"``: close with ``SO_LINGER`` 0 so the client sees a TCP RST;
* ``action="garbage"``: do the work, then answer the success status (or ``status``)
  with a body that is not JSON;
* ``action="truncated"``: do the work, then answer the real status with the first half
  of the real JSON body (``Content-Length`` matches the half, so only the JSON is broken).

Faults behind the API: :class:`BackendFault` (``driver_error`` rescheduled,
``driver_error_no_reschedule``, ``slow_driver``), or per volume through the create's
metadata as with the real recipe's fault-injecting driver (``fault=noresched``, any other
``fault`` value, ``sleep_s=N``); ``capacity_gb``; type extra specs
(``--volume-type gold:volume_backend_name=nope``); ``stop_service``/``start_service``.

Test/demo endpoints under ``/__sim__/`` are neither recorded nor traced (``admin.py``
lists them): faults, recorded requests, reset, backend settings and faults, services,
volume type extra specs, and a volume's status timeline with its messages.

Telemetry: pass ``telemetry`` (a :class:`voltrace.telemetry.Telemetry` whose service is
``cinder-api``). The API gets one SERVER span per request, continuing the caller's W3C
``traceparent``, named ``METHOD /v3/{project_id}/...``, with child INTERNAL spans for
its steps (``validate``, ``check_quota``, ``persist``, ``lookup``,
``injected_latency``), and one ``api.request`` log line (method, path, status, route,
request ids, duration). Two siblings of that telemetry, ``cinder-scheduler`` and
``cinder-volume``, get the OSProfiler-shaped ``rpc``/``drive`` spans of each create, in
the create's trace, and their log events (names in ``async_create.py``). Passing only
``tracer_provider`` traces the API alone, as before. The global tracer provider is never
touched.

Reading the code (each module's docstring says more; a request flows top to bottom):

=====================  =============================================================
``simulator.py``       :class:`CinderSimulator`: socket, threads, faults, records
``server.py``          HTTP/1.1 plumbing (keep-alive, TCP_NODELAY, drop/reset, bodies)
``admin.py``           the ``/__sim__/`` endpoints
``app.py``             one request -> one outcome: span, faults, auth, routing, log
``routes.py``          the route table (:data:`ROUTES` are its names)
``handlers.py``        what each route does, step by step
``microversions.py``   ``OpenStack-API-Version`` for the routes that read it
``plans.py``           cinder's checks before a create reserves quota
``validation.py``      JSON-schema validation with cinder's messages (+ oslo helpers)
``schemas.py``         cinder's request schemas (data)
``state.py``           volumes, snapshots, messages, ids, deterministic mode, the lock
``quotas.py``          limits, usage and over-quota answers
``user_messages.py``   cinder's user messages: event ids, texts, the view
``async_create.py``    cinder-scheduler and cinder-volume after the 202; span and log names
``backends.py``        backend settings and faults, services and their heartbeats
``worker.py``          the background thread the two services run on
``views.py``           success bodies (volume, snapshot, versions)
``errors.py``          :class:`ApiError` and cinder's error bodies
``messages.py``        request/response types and cinder's standard headers
``tracing.py``         the SERVER span and the step spans
``faults.py``          :class:`Fault` and which faults a request meets
``cli.py``             :func:`add_cli_arguments`, :func:`run_cli`, :func:`main`
=====================  =============================================================

Only the names imported below are public; the modules are internals.
"""

from voltrace.cinder_sim.backends import BACKEND_FAULT_KINDS, BackendFault, BackendSettings, Timing
from voltrace.cinder_sim.cli import add_cli_arguments, run_cli
from voltrace.cinder_sim.faults import FAULT_ACTIONS, Fault
from voltrace.cinder_sim.messages import RecordedRequest
from voltrace.cinder_sim.routes import ROUTES
from voltrace.cinder_sim.simulator import CinderSimulator

# Importable as before, but not part of ``import *`` (they never were).
from voltrace.cinder_sim.state import DETERMINISTIC_TIME as DETERMINISTIC_TIME
from voltrace.cinder_sim.state import SIMULATED_USER_ID as SIMULATED_USER_ID
from voltrace.cinder_sim.views import API_VERSION_UPDATED as API_VERSION_UPDATED
from voltrace.cinder_sim.views import MAX_API_VERSION as MAX_API_VERSION
from voltrace.cinder_sim.views import MIN_API_VERSION as MIN_API_VERSION

__all__ = [
    "BACKEND_FAULT_KINDS",
    "FAULT_ACTIONS",
    "ROUTES",
    "BackendFault",
    "BackendSettings",
    "CinderSimulator",
    "Fault",
    "RecordedRequest",
    "Timing",
    "add_cli_arguments",
    "run_cli",
]
