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
from typing import Any

import webob
import webob.dec
import webob.exc
from oslo_config import cfg
from oslo_middleware import request_id, sizelimit

from voltrace import semconv
from voltrace.errors import NovaFault
from voltrace.identity import ENV_CONTEXT, KeystoneContext
from voltrace.microversion import version_headers
from voltrace.pipeline import Pipeline
from voltrace.record import RequestRecord
from voltrace.stages import SUPPORTED_CONTENT_TYPES
from voltrace.state import CreateState, CreateVolumeRequest

LOG = logging.getLogger(__name__)

MAX_REQUEST_BODY_SIZE = 114688  # [oslo_middleware] max_request_body_size

# nova's ProjectMapper makes the project segment optional.
ROUTE_PATTERN = re.compile(r"^/v2\.1(?:/(?P<project_id>[^/]+))?/os-volumes$")
ROUTE_WITH_PROJECT = semconv.CREATE_ROUTE_WITH_PROJECT
ROUTE_WITHOUT_PROJECT = semconv.CREATE_ROUTE


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
        except Exception as exc:
            LOG.exception("Caught error")
            fault = NovaFault(
                500, webob.exc.HTTPInternalServerError.explanation, "internal_error", cause=exc
            )
            RequestRecord.of(req.environ).refused("wsgi", fault)
            return fault_response(fault, api_version=None)


class BodySizeLimiter(sizelimit.RequestBodySizeLimiter):
    """oslo.middleware's sizelimit, recording its refusals."""

    @webob.dec.wsgify
    def __call__(self, req: webob.Request) -> Any:
        try:
            return super().__call__(req)
        except webob.exc.HTTPRequestEntityTooLarge as refusal:
            RequestRecord.of(req.environ).refused(
                "sizelimit", NovaFault(413, refusal.explanation, "request_too_large"))
            raise


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


def success_response(ctx: CreateState, content_type: str) -> webob.Response:
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
        record = RequestRecord.of(req.environ)
        match = ROUTE_PATTERN.match(req.path_info)
        if match is None:
            record.refused("router", NovaFault(404, "no such route", "no_route"))
            return webob.exc.HTTPNotFound()
        project_id = match.group("project_id")
        if req.method != "POST":
            fault = NovaFault(405, "voltrace serves only POST on os-volumes", "no_route")
            record.refused("router", fault)
            response = fault_response(fault, api_version=None)
            response.headers["Allow"] = "POST"
            return response

        content_length = req.content_length
        request = CreateVolumeRequest(
            url=req.url,
            headers=req.headers,
            body=req.body if content_length else b"",
            content_length=content_length,
            identity=req.environ[ENV_CONTEXT],
            path_project_id=project_id,
        )
        state = self.pipeline.run(request)
        record.finished(state)
        if state.fault is not None:
            return fault_response(state.fault, state.api_version)
        return success_response(state, _best_content_type(req))


def _best_content_type(req: webob.Request) -> str:
    """nova/api/openstack/wsgi.py:Request.best_match_content_type."""
    offers = req.accept.acceptable_offers(list(SUPPORTED_CONTENT_TYPES))
    return offers[0][0] if offers else "application/json"


class RouteRecorder:
    """Outermost: records which route a request is for, before any filter may refuse it."""

    def __init__(self, application: Any) -> None:
        self.application = application

    def __call__(self, environ: dict, start_response: Any) -> Any:
        record = RequestRecord.of(environ)
        match = ROUTE_PATTERN.match(environ.get("PATH_INFO", ""))
        if match is not None:
            has_project = match.group("project_id") is not None
            record.route = ROUTE_WITH_PROJECT if has_project else ROUTE_WITHOUT_PROJECT
            record.is_create = environ.get("REQUEST_METHOD") == "POST"
        return self.application(environ, start_response)


def build_app(pipeline: Pipeline, max_request_body_size: int = MAX_REQUEST_BODY_SIZE) -> Any:
    """The WSGI application, middleware in nova's api-paste.ini order."""
    app: Any = VolumesApp(pipeline)
    app = KeystoneContext(app)
    limiter_conf = cfg.ConfigOpts()
    limiter_conf([], project="voltrace", default_config_files=[], default_config_dirs=[])
    app = BodySizeLimiter(app, limiter_conf)
    limiter_conf.set_override("max_request_body_size", max_request_body_size, "oslo_middleware")
    app = FaultWrapper(app)
    app = ComputeReqIdMiddleware(app)
    return RouteRecorder(app)
