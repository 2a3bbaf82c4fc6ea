"""voltrace's vocabulary: every span, attribute, log and failure-class name, in one place.

``voltrace serve``, the real-nova instrumentor (``voltrace.instrumentation.nova``),
``voltrace explain``, the dashboards and the alert rules all speak these names, so a
trace from either producer reads the same. This module is plain data with no
imports beyond the standard library: ``explain`` loads it without pulling in any
OpenStack client library.

Failure classes, the stage that owns them and the HTTP status Nova answers::

    sizelimit        request_too_large ........... 413  body > 114688 bytes
    keystonecontext  unauthenticated ............. 401  no X-User-Id
                     invalid_service_catalog ..... 500  X-Service-Catalog is not JSON
    parse            invalid_microversion ........ 400  bad version header
                     unsupported_microversion .... 406  outside 2.1..2.104
                     unsupported_media_type ...... 415
                     malformed_body .............. 400  not JSON
                     project_mismatch ............ 400  URL project != token project
                     microversion_not_found ...... 404  version > 2.35
                     schema_invalid .............. 400
    authorize        policy_denied ............... 403
    resolve_snapshot snapshot_not_found .......... 404
                     cinder_forbidden ............ 403
                     cinder_* (below) ............ 500
    call_cinder      cinder_bad_request .......... 400  (500 from resolve_snapshot)
                     cinder_forbidden ............ 403
                     over_quota .................. 403  Cinder 413
                     cinder_not_found ............ 500  e.g. unknown volume type
                     cinder_unreachable .......... 500  after connect retries
                     cinder_unauthorized ......... 500  Cinder 401
                     cinder_server_error ......... 500  Cinder 5xx / other status
                     cinder_endpoint_not_found ... 500  no volumev3 in the catalog
                     cinder_unsupported_version .. 500  endpoint is not /v3
                     cinder_bad_response ......... 500  unparseable Cinder answer
    router           no_route .................... 404/405  not POST /v2.1/os-volumes
    wsgi             internal_error .............. 500  an exception escaped (FaultWrapper)
    any stage        internal_error .............. 500  anything else
"""

from __future__ import annotations

from dataclasses import dataclass

# -- services ---------------------------------------------------------------

NOVA_API_SERVICE = "nova-api"
CINDER_API_SERVICE = "cinder-api"
INSTRUMENTATION_SCOPE = "voltrace"

# -- stages and the Nova code each mirrors ----------------------------------

STAGE_NAMES = (
    "parse",
    "authorize",
    "resolve_snapshot",
    "derive_size",
    "call_cinder",
    "translate",
)

# Answers given before the pipeline runs come from these paste filters.
MIDDLEWARE_STAGES = ("sizelimit", "keystonecontext", "router", "wsgi")

NOVA_CODE: dict[str, str] = {
    "parse": "nova/api/openstack/wsgi.py:Resource._process_stack, then @validation.schema(create)",
    "authorize": "nova/api/openstack/compute/volumes.py:VolumeController.create: "
    "context.can(BASE_POLICY_NAME)",
    "resolve_snapshot": "nova/volume/cinder.py:API.get_snapshot "
    "(GET /v3/{project_id}/snapshots/{id})",
    "derive_size": "nova/api/openstack/compute/volumes.py:VolumeController.create: "
    "size = vol.get('size')",
    "call_cinder": "nova/volume/cinder.py:API.create "
    "(POST /v3/{project_id}/volumes, then the lazy GET)",
    "translate": "nova/api/openstack/compute/volumes.py:_translate_volume_detail_view "
    "+ the Location header",
    "sizelimit": "oslo_middleware/sizelimit.py:RequestBodySizeLimiter (api-paste.ini: sizelimit)",
    "keystonecontext": "nova/api/auth.py:NovaKeystoneContext (api-paste.ini: keystonecontext)",
    "router": "nova/api/openstack/__init__.py:ProjectMapper (the API router)",
    "wsgi": "nova/api/openstack/__init__.py:FaultWrapper",
}
PIPELINE_NOVA_CODE = "nova/api/openstack/compute/volumes.py:VolumeController.create"

# -- span names ---------------------------------------------------------------

PIPELINE_SPAN = "create_volume"
CREATE_ROUTE = "/v2.1/os-volumes"
CREATE_ROUTE_WITH_PROJECT = "/v2.1/{project_id}/os-volumes"

# -- span attributes -------------------------------------------------------------

# On every stage span.
STAGE = "voltrace.stage"
NOVA_CODE_ATTR = "voltrace.nova_code"
STAGE_SKIPPED = "voltrace.stage.skipped"
STAGE_SKIP_REASON = "voltrace.stage.skip_reason"
# How a stage span was made: "run" (voltrace serve runs the stage), "wrapped" (a
# wrapped nova function), "between_hooks" (built from two hooks' timestamps).
STAGE_TIMING = "voltrace.stage.timing"


def decision_attribute(key: str) -> str:
    """The span attribute of a stage's decision: ``voltrace.<key>``, or Cinder's own name."""
    return key if key.startswith(_FOREIGN_NAMESPACES) else f"voltrace.{key}"


_FOREIGN_NAMESPACES = ("cinder.", "openstack.")

# On the failing stage span (and error.type, the OTel convention).
ERROR_TYPE = "error.type"
FAILURE_CLASS = "voltrace.failure_class"
HTTP_STATUS = "voltrace.http_status"

# On the SERVER span of a create (and the pipeline span where noted).
OUTCOME = "voltrace.outcome"  # success, client_error, server_error
FAILED_STAGE = "voltrace.failed_stage"
REQUEST_ID = "openstack.request_id"
GLOBAL_REQUEST_ID = "openstack.global_request_id"
PROJECT_ID = "openstack.project_id"
USER_ID = "openstack.user_id"
VOLUME_ID = "voltrace.volume.id"
CINDER_REQUEST_ID = "cinder.request_id"
CINDER_CONNECT_RETRIES = "cinder.connect_retries"
# Decisions and fault details stages report (span attributes via decision_attribute).
SCHEMA_FIELD = "schema.field"  # the field Nova's schema message names
SIZE_SOURCE = "size.source"  # request | snapshot | none
CINDER_QUOTA_RESOURCE = "cinder.quota.resource"  # volumes, gigabytes, ... from Cinder's 413
# What the request was: "create" for POST os-volumes, else "other" (probes,
# version documents, unknown routes); explain and the metrics count only creates.
REQUEST_KIND = "voltrace.request.kind"

# -- log events and fields ----------------------------------------------------------

REQUEST_FINISHED = "request.finished"


def stage_event(stage: str) -> str:
    """The log event of one stage: ``stage.<name>``."""
    return f"stage.{stage}"


# The same facts sit on the SERVER span and in the request.finished log line:
# (span attribute, log field).
SUMMARY_FIELDS = (
    (REQUEST_ID, "request_id"),
    (GLOBAL_REQUEST_ID, "global_request_id"),
    (PROJECT_ID, "project_id"),
    (USER_ID, "user_id"),
    (VOLUME_ID, "volume_id"),
    (FAILED_STAGE, "failed_stage"),
    (FAILURE_CLASS, "failure_class"),
    (CINDER_REQUEST_ID, "cinder_request_id"),
)

# -- failure classes -----------------------------------------------------------------


@dataclass(frozen=True)
class FailureClass:
    """One row of the table in this module's docstring."""

    name: str
    stage: str
    summary: str
    next_step: str


def _failure_table(*rows: FailureClass) -> dict[str, FailureClass]:
    return {row.name: row for row in rows}


FAILURES: dict[str, FailureClass] = _failure_table(
    FailureClass(
        "request_too_large",
        "sizelimit",
        "request body larger than 114688 bytes",
        "Shrink the request body; [oslo_middleware] max_request_body_size caps it.",
    ),
    FailureClass(
        "unauthenticated",
        "keystonecontext",
        "no user identity on the request",
        "Put keystonemiddleware auth_token in front, or send X-User-Id/X-Project-Id.",
    ),
    FailureClass(
        "invalid_service_catalog",
        "keystonecontext",
        "X-Service-Catalog is not valid JSON",
        "Whatever sets X-Service-Catalog (keystonemiddleware) sends a broken catalog.",
    ),
    FailureClass(
        "invalid_microversion",
        "parse",
        "microversion header is not MajorNum.MinorNum",
        "Send 'OpenStack-API-Version: compute 2.35' (or omit it for 2.1).",
    ),
    FailureClass(
        "unsupported_microversion",
        "parse",
        "microversion outside 2.1..2.104",
        "Ask for a microversion between 2.1 and 2.35 for os-volumes.",
    ),
    FailureClass(
        "unsupported_media_type",
        "parse",
        "Content-Type is not JSON",
        "Send 'Content-Type: application/json'.",
    ),
    FailureClass(
        "malformed_body",
        "parse",
        "request body is not valid JSON",
        "Check the JSON the client sends (quoting, UTF-8, trailing commas).",
    ),
    FailureClass(
        "project_mismatch",
        "parse",
        "project id in the URL differs from the token's",
        "Use the token's project id in the URL, or drop it: POST /v2.1/os-volumes.",
    ),
    FailureClass(
        "microversion_not_found",
        "parse",
        "os-volumes is a proxy API removed after 2.35",
        "Request microversion <= 2.35, or create the volume through Cinder's API directly.",
    ),
    FailureClass(
        "schema_invalid",
        "parse",
        "request body fails Nova's schema",
        "Fix the field named in Nova's message.",
    ),
    FailureClass(
        "policy_denied",
        "authorize",
        "policy os_compute_api:os-volumes:create denied",
        "The caller needs role member (or admin) on the project: "
        "openstack role assignment list --user USER --project PROJECT --names",
    ),
    FailureClass(
        "snapshot_not_found",
        "resolve_snapshot",
        "Cinder has no such snapshot",
        "Check the snapshot exists in the caller's project: openstack volume snapshot show ID",
    ),
    FailureClass(
        "cinder_forbidden",
        "call_cinder",
        "Cinder answered 403",
        "Cinder's policy refused the caller; read Cinder's message and its policy file.",
    ),
    FailureClass(
        "cinder_bad_request",
        "call_cinder",
        "Cinder rejected the request (400)",
        "Read Cinder's message: size, availability zone or metadata were refused.",
    ),
    FailureClass(
        "over_quota",
        "call_cinder",
        "Cinder quota exceeded (413)",
        "Check the project's volume quota: openstack quota show --volume PROJECT; "
        "cinder quota-usage PROJECT",
    ),
    FailureClass(
        "cinder_not_found",
        "call_cinder",
        "Cinder answered 404 (e.g. unknown volume type)",
        "Check the volume type exists: openstack volume type list",
    ),
    FailureClass(
        "cinder_unreachable",
        "call_cinder",
        "no connection to cinder-api",
        "Check cinder-api is up and the endpoint is right: openstack endpoint list "
        "--service volumev3; curl the endpoint from the nova-api host.",
    ),
    FailureClass(
        "cinder_unauthorized",
        "call_cinder",
        "Cinder refused the user's token (401)",
        "The token expired or Cinder's keystonemiddleware cannot validate it.",
    ),
    FailureClass(
        "cinder_server_error",
        "call_cinder",
        "Cinder answered 5xx",
        "Look up Cinder's request id in cinder-api's log for the traceback.",
    ),
    FailureClass(
        "cinder_endpoint_not_found",
        "call_cinder",
        "no volumev3 endpoint in the catalog",
        "Register the endpoint (openstack endpoint list --service volumev3) "
        "or set [cinder] endpoint_template.",
    ),
    FailureClass(
        "cinder_unsupported_version",
        "call_cinder",
        "Cinder endpoint is not the v3 API",
        "Point the endpoint at .../v3/%(project_id)s.",
    ),
    FailureClass(
        "cinder_bad_response",
        "call_cinder",
        "Cinder's answer could not be read",
        "Something between nova-api and cinder-api mangles responses (proxy, LB); "
        "curl the endpoint and check the body.",
    ),
    FailureClass(
        "no_route",
        "router",
        "not POST /v2.1[/{project_id}]/os-volumes",
        "voltrace serves only the volume create; check the method and URL.",
    ),
    FailureClass(
        "internal_error",
        "any",
        "unexpected error inside nova-api",
        "Search nova-api's log for the request id; this is a bug or a misconfiguration.",
    ),
)


# -- after Nova's answer: cinder-scheduler, cinder-volume and the volume's fate ---------
#
# Spoken by the simulator (voltrace.cinder_sim.async_create), the volume follower
# (voltrace.follow), explain (voltrace.explain.after_answer, .from_cinder) and the demo.
# The OSProfiler names are those a real cinder 29 writes (../shared/full-cinder.md).

SCHEDULER_SERVICE = "cinder-scheduler"
VOLUME_SERVICE = "cinder-volume"
# A real cinder under OSProfiler names its services "cinder-<binary>".
OSPROFILER_SCHEDULER_SERVICE = "cinder-cinder-scheduler"
OSPROFILER_VOLUME_SERVICE = "cinder-cinder-volume"
SCHEDULER_SERVICES = (SCHEDULER_SERVICE, OSPROFILER_SCHEDULER_SERVICE)
VOLUME_SERVICES = (VOLUME_SERVICE, OSPROFILER_VOLUME_SERVICE)

# Span names and attributes, OSProfiler's shape.
RPC_SPAN = "rpc"  # trace_cls("rpc") on every manager
DRIVE_SPAN = "drive"  # trace_cls("driver"), the name mangled by osprofiler's rstrip("-start")
OSPROFILER_METHOD = "name"  # the traced method
OSPROFILER_ERROR = "error"  # True where the method raised ...
OSPROFILER_ERROR_EVENT = "log"  # ... with this event ...
OSPROFILER_ERROR_KIND = "error.kind"  # ... naming the exception class ...
OSPROFILER_ERROR_MESSAGE = "message"  # ... and its message
OSPROFILER_KWARGS = "kwargs"  # the traced method's keyword arguments, as text (repr)
OSPROFILER_HTTP_METHOD = "http.method"  # on WSGI_<METHOD>_<path> spans (cinder-api)
OSPROFILER_HTTP_PATH = "http.path"

# What the simulator adds (cinder.*): what happened, on the span where it happened.
CINDER_VOLUME_ID = "cinder.volume_id"
CINDER_HOST = "cinder.host"  # host@backend#pool the volume was scheduled to
# On cinder-api's SERVER span of a create that was cast: the service it was cast to.
CINDER_CAST_TO = "cinder.create.cast_to"
SCHEDULER_ATTEMPT = "cinder.scheduler.attempt"
SCHEDULER_MAX_ATTEMPTS = "cinder.scheduler.max_attempts"
CINDER_VOLUME_STATUS = "cinder.volume.status"
SCHEDULER_RESULT = "cinder.scheduler.result"  # "scheduled" or "no_valid_backend"
SCHEDULER_REASON = "cinder.scheduler.reason"
SCHEDULER_FILTERED_BY = "cinder.scheduler.filtered_by"
VOLUME_RESCHEDULED = "cinder.volume.rescheduled"
# On the span that settled the volume (and in the create.settled log line):
CREATE_OUTCOME = "cinder.create.outcome"  # ASYNC_OUTCOMES
CREATE_FAILURE = "cinder.create.failure"  # ASYNC_FAILURES
CREATE_CAUSE = "cinder.create.cause"  # ASYNC_CAUSES
CREATE_ATTEMPTS = "cinder.create.attempts"
# The event on the span where cinder recorded a user message, and its attributes.
USER_MESSAGE_EVENT = "cinder.user_message"
MESSAGE_ID = "cinder.message.id"
MESSAGE_EVENT_ID = "cinder.message.event_id"
MESSAGE_TEXT = "cinder.message.user_message"
MESSAGE_LEVEL = "cinder.message.level"

# Outcome classes. explain also says "stuck" (a service it waits on is down) and
# "creating" (still in progress, nothing down); the follower says "stuck_creating" and
# "unknown".
ASYNC_OUTCOMES = ("available", "error")
NO_VALID_BACKEND = "no_valid_backend"
DRIVER_ERROR = "driver_error"
ASYNC_FAILURES = (NO_VALID_BACKEND, DRIVER_ERROR)
ASYNC_CAUSES = (
    "capacity",  # CapacityFilter: not enough free space
    "capabilities",  # CapabilitiesFilter: the type's extra specs match no backend
    "volume_service_down",  # the scheduler saw cinder-volume down
    "max_attempts_exceeded",  # driver failures, rescheduled scheduler_max_attempts times
    "reschedule_disabled",  # a driver failure with scheduler_max_attempts = 1
    "not_reschedulable",  # a driver failure cinder never reschedules
)

# Cinder's user-message event ids (cinder/message/message_field.py).
NO_VALID_BACKEND_EVENT = "VOLUME_VOLUME_001_003"
DRIVER_FAILED_EVENT = "VOLUME_VOLUME_008_012"
# Microversions: messages exist from 3.3, the resource_uuid filter needs 3.5; os-services
# at <= 3.48 is DB-only (3.49+ makes an RPC call to the scheduler, 500 when it is down).
MESSAGES_MICROVERSION = "3.5"
SERVICES_MICROVERSION = "3.7"

# Log events of the simulated cinder-api, cinder-scheduler and cinder-volume.
LOG_CREATE_ISSUED = "api.volume_create_issued"  # cinder-api cast the create
LOG_CAST_DROPPED = "rpc.cast_dropped"
LOG_BACKEND_SELECTED = "scheduler.backend_selected"
LOG_FILTER_REJECTED = "scheduler.filter_rejected"
LOG_SERVICE_DOWN = "scheduler.volume_service_down"
LOG_PREVIOUS_ATTEMPT = "scheduler.previous_attempt_failed"
LOG_NO_VALID_BACKEND = "scheduler.no_valid_backend"
LOG_CREATE_STARTED = "volume.create_started"
LOG_DRIVER_FAILED = "volume.driver_failed"
LOG_RESCHEDULED = "volume.rescheduled"
LOG_CREATE_FAILED = "volume.create_failed"
LOG_CREATED = "volume.created"
LOG_MESSAGE_CREATED = "message.created"
LOG_SETTLED = "create.settled"  # one per create that settles: its whole outcome
LOG_SERVICE_STOPPED = "service.stopped"
LOG_SERVICE_STARTED = "service.started"

# The volume follower (voltrace serve --follow-volumes): its span, log event, metrics
# and attributes.
FOLLOW_SPAN = "follow_volume"
FOLLOW_SETTLED_EVENT = "volume.settled"
FOLLOW_SETTLE_DURATION = "voltrace.volume.settle.duration"
FOLLOW_ASYNC_OUTCOMES = "voltrace.volume.async_outcomes"
FOLLOW_CREATING = "voltrace.volumes.creating"
FOLLOWS_DROPPED = "voltrace.volume.follows_dropped"
FOLLOW_STATUS = "voltrace.volume.status"
FOLLOW_OUTCOME = "voltrace.volume.outcome"
FOLLOW_FAILURE_CLASS = "voltrace.volume.failure_class"
FOLLOW_ATTEMPTS = "voltrace.volume.attempts"
FOLLOW_USER_MESSAGE = "voltrace.volume.user_message"
FOLLOW_EVENT_IDS = "voltrace.volume.event_ids"
FOLLOW_POLLS = "voltrace.volume.polls"
# stuck_creating: the service the create waits on that os-services shows down, and since.
FOLLOW_WAITING_ON = "voltrace.volume.waiting_on"
FOLLOW_DOWN_SINCE = "voltrace.volume.down_since"
