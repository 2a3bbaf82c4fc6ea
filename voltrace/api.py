"""The HTTP face of voltrace: Nova's paste pipeline for POST /v2.1/os-volumes.

Middleware order is nova's ``api-paste.ini`` (``compute_req_id faultwrap
sizelimit authtoken keystonecontext`` then the API router), using the same
oslo.middleware pieces. ``VolumesApp`` does what nova's ``wsgi.Resource``
does around the controller: route, hand a framework-free request to the
pipeline, and serialize the result or the fault.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import webob
import webob.dec
import webob.exc
from oslo_config import cfg
from oslo_middleware import request_id, sizelimit

from voltrace.context import CreateContext, CreateVolumeRequest
from voltrace.errors import NovaFault
from voltrace.identity import ENV_CONTEXT, KeystoneContext
from voltrace.microversion import version_headers
from voltrace.pipeline import Pipeline
from voltrace.stages import SUPPORTED_CONTENT_TYPES

LOG = logging.getLogger(__name__)

MAX_REQUEST_BODY_SIZE = 114688  # [oslo_middleware] max_request_body_size

# nova's ProjectMapper makes the project segment optional.
ROUTE_PATTERN = re.compile(r"^/v2\.1(?:/(?P<project_id>[^/]+))?/os-volumes$")
ROUTE_WITH_PROJECT = "/v2.1/{project_id}/os-volumes"
ROUTE_WITHOUT_PROJECT = "/v2.1/os-volumes"

# Keys the telemetry layer reads back out of the WSGI environ.
ENV_ROUTE = "voltrace.route"
ENV_CREATE = "voltrace.create"


class ComputeReqIdMiddleware(request_id.RequestId):
    """nova/api/compute_req_id.py: also answer the id as x-compute-request-id."""

    compat_headers = ["x-compute-request-id"]


class FaultWrapper:
    """nova/api/openstack/__init__.py:FaultWrapper: an escaped exception is a bare 500."""

    def __init__(self, application: Any) -> None:
        self.application = application

    @webob.dec.wsgify
    def __call__(self, req: webob.Request) -> Any:
        try:
            return req.get_response(self.application)
        except Exception:
            LOG.exception("Caught error")
            fault = NovaFault(
                500, webob.exc.HTTPInternalServerError.explanation, "internal_error"
            )
            return fault_response(fault, api_version=None)


def fault_response(fault: NovaFault, api_version: Any) -> webob.Response:
    """nova/api/openstack/wsgi.py:Fault.__call__."""
    response = webob.Response(status=fault.status, body=json.dumps(fault.body()).encode("utf-8"))
    # Nova sets content_type then charset; webob renders both for a Fault.
    response.headers["Content-Type"] = "application/json; charset=UTF-8"
    for name, value in fault.headers.items():
        response.headers[name] = value
    if api_version is not None:
        for name, value in version_headers(api_version):
            response.headers.add(name, value)
    return response


def success_response(ctx: CreateContext, content_type: str) -> webob.Response:
    """nova/api/openstack/wsgi.py:ResponseObject.serialize with the controller's headers."""
    response = webob.Response(status=200, body=json.dumps(ctx.response_body).encode("utf-8"))
    response.headers["Content-Type"] = content_type
    # Nova builds the headers from dict(location=...), so the name stays lowercase.
    response.headers["location"] = ctx.location
    for name, value in version_headers(ctx.api_version):
        response.headers.add(name, value)
    return response


class VolumesApp:
    """Routes POST /v2.1[/{project_id}]/os-volumes into the pipeline."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    @webob.dec.wsgify
    def __call__(self, req: webob.Request) -> Any:
        match = ROUTE_PATTERN.match(req.path_info)
        if match is None:
            return webob.exc.HTTPNotFound()
        project_id = match.group("project_id")
        req.environ[ENV_ROUTE] = ROUTE_WITH_PROJECT if project_id else ROUTE_WITHOUT_PROJECT
        if req.method != "POST":
            fault = NovaFault(405, "voltrace serves only POST on os-volumes", "no_route")
            response = fault_response(fault, api_version=None)
            response.headers["Allow"] = "POST"
            return response

        content_length = req.content_length
        request = CreateVolumeRequest(
            url=req.url,
            headers=req.headers,
            body=req.body if content_length else b"",
            content_length=content_length,
            context=req.environ[ENV_CONTEXT],
            path_project_id=project_id,
        )
        ctx = self.pipeline.run(request)
        req.environ[ENV_CREATE] = ctx
        if ctx.fault is not None:
            return fault_response(ctx.fault, ctx.api_version)
        return success_response(ctx, _best_content_type(req))


def _best_content_type(req: webob.Request) -> str:
    """nova/api/openstack/wsgi.py:Request.best_match_content_type."""
    offers = req.accept.acceptable_offers(list(SUPPORTED_CONTENT_TYPES))
    return offers[0][0] if offers else "application/json"


def build_app(pipeline: Pipeline, max_request_body_size: int = MAX_REQUEST_BODY_SIZE) -> Any:
    """The WSGI application, middleware in nova's api-paste.ini order."""
    app: Any = VolumesApp(pipeline)
    app = KeystoneContext(app)
    limiter_conf = cfg.ConfigOpts()
    limiter_conf([], project="voltrace", default_config_files=[], default_config_dirs=[])
    app = sizelimit.RequestBodySizeLimiter(app, limiter_conf)
    limiter_conf.set_override("max_request_body_size", max_request_body_size, "oslo_middleware")
    app = FaultWrapper(app)
    app = ComputeReqIdMiddleware(app)
    return app


# ---------------------------------------------------------------------------
# How a request ended, for spans, logs and metrics, whatever layer answered it.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestOutcome:
    outcome: str  # success, client_error, server_error
    http_status: int
    failed_stage: str | None
    failure_class: str | None


# Answers given before the pipeline runs come from these paste filters.
_MIDDLEWARE_FAILURES = {
    413: ("sizelimit", "request_too_large"),
    401: ("keystonecontext", "unauthenticated"),
}


def request_outcome(environ: dict, http_status: int) -> RequestOutcome:
    """Classify a finished request from what the layers left in the environ."""
    ctx: CreateContext | None = environ.get(ENV_CREATE)
    if http_status < 400:
        outcome = "success"
    else:
        outcome = "server_error" if http_status >= 500 else "client_error"
    if ctx is not None and ctx.fault is not None:
        return RequestOutcome(outcome, http_status, ctx.failed_stage, ctx.fault.failure_class)
    if ctx is None and http_status in _MIDDLEWARE_FAILURES:
        stage, failure = _MIDDLEWARE_FAILURES[http_status]
        return RequestOutcome(outcome, http_status, stage, failure)
    if ctx is None and http_status == 500 and ENV_CONTEXT not in environ:
        # NovaKeystoneContext's own 500: X-Service-Catalog is not JSON.
        return RequestOutcome(outcome, http_status, "keystonecontext", "invalid_service_catalog")
    if http_status >= 500:
        return RequestOutcome(outcome, http_status, "wsgi", "internal_error")
    if http_status >= 400:
        return RequestOutcome(outcome, http_status, "router", "no_route")
    return RequestOutcome(outcome, http_status, None, None)
