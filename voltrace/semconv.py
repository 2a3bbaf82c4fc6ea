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
