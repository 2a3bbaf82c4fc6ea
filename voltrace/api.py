"""The HTTP face of voltrace: nova-api 34's paste composition, for the parts voltrace serves.

``composite:osapi_compute`` of nova's ``api-paste.ini`` is a URL map (``voltrace.routing``)
over five apps; voltrace builds three of them with nova's middleware in nova's order, from
the same oslo.middleware pieces:

* ``/v2.1/+`` (the API): ``cors http_proxy_to_wsgi compute_req_id faultwrap sizelimit
  authtoken keystonecontext`` then the router. The router answers the create
  (``VolumesApp``, what nova's ``wsgi.Resource`` does around ``VolumeController.create``),
  nova's own 404 for a path nova does not route, and a clear out-of-scope 404 for one it
  routes to another API;
* ``/v2.1`` and ``/`` (the version documents, unauthenticated), as nova's ``VersionsV2``
  and ``Versions`` resources answer GET and HEAD.

The legacy ``/v2`` apps, the ``300 Multiple Choices`` of other root paths and every other
nova API are out of scope (docs/nova-differences.md): ``OutOfScope`` says so.
"""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

import webob
import webob.dec
import webob.exc
from oslo_config import cfg
from oslo_middleware import cors, http_proxy_to_wsgi, request_id, sizelimit
from oslo_middleware import healthcheck as oslo_healthcheck

from voltrace import routing, semconv
from voltrace.errors import NovaFault
from voltrace.identity import ENV_CONTEXT, KeystoneContext
from voltrace.microversion import (
    MAX_API_VERSION,
    MIN_API_VERSION,
    APIVersion,
    check_global_range,
    requested_version,
    version_headers,
)
from voltrace.pipeline import Pipeline
from voltrace.record import RequestRecord
from voltrace.stages import SUPPORTED_CONTENT_TYPES
from voltrace.state import CreateState, CreateVolumeRequest

LOG = logging.getLogger(__name__)

MAX_REQUEST_BODY_SIZE = 114688  # [oslo_middleware] max_request_body_size

ROUTE_WITH_PROJECT = semconv.CREATE_ROUTE_WITH_PROJECT
ROUTE_WITHOUT_PROJECT = semconv.CREATE_ROUTE
ENV_BEST_CONTENT_TYPE = "nova.best_content_type"
OUT_OF_SCOPE_DOC = "docs/nova-differences.md"


class ComputeReqIdMiddleware(request_id.RequestId):
    """nova/api/compute_req_id.py: also answer the id as x-compute-request-id."""

    compat_headers = ["x-compute-request-id"]


class FaultWrapper:
    """nova/api/openstack/__init__.py:FaultWrapper: an escaped exception is a bare 500.

    The Fault is rendered for a fresh request, so it has no microversion headers.
    """

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
                "sizelimit", NovaFault(413, refusal.explanation, "request_too_large")
            )
            raise


def fault_response(fault: NovaFault, api_version: APIVersion | None) -> webob.Response:
    """nova/api/openstack/wsgi.py:Fault.__call__ (plus the Resource's version headers)."""
    response = webob.Response(status=fault.status, body=json.dumps(fault.body()).encode("utf-8"))
    # Nova sets content_type then charset; webob renders both for a Fault.
    response.headers["Content-Type"] = "application/json; charset=UTF-8"
    for name, value in fault.headers.items():
        response.headers[name] = value
    if api_version is not None:
        for name, value in version_headers(api_version):
            response.headers.add(name, value)
    return response


def success_response(state: CreateState, content_type: str) -> webob.Response:
    """nova/api/openstack/wsgi.py:ResponseObject.serialize with the controller's headers."""
    response = webob.Response(status=200, body=json.dumps(state.response_body).encode("utf-8"))
    response.headers["Content-Type"] = content_type
    # Nova builds the headers from dict(location=...), so the name stays lowercase.
    response.headers["location"] = state.location
    assert state.api_version is not None
    for name, value in version_headers(state.api_version):
        response.headers.add(name, value)
    return response


def best_content_type(req: webob.Request) -> str:
    """nova/api/openstack/wsgi.py:Request.best_match_content_type (the URL map sets it)."""
    if ENV_BEST_CONTENT_TYPE not in req.environ:
        offers = req.accept.acceptable_offers(list(SUPPORTED_CONTENT_TYPES))
        req.environ[ENV_BEST_CONTENT_TYPE] = offers[0][0] if offers else "application/json"
    return str(req.environ[ENV_BEST_CONTENT_TYPE])


class OutOfScope:
    """What voltrace answers where nova would run an API voltrace does not serve."""

    def __init__(self, what: str) -> None:
        self.what = what

    @webob.dec.wsgify
    def __call__(self, req: webob.Request) -> Any:
        return out_of_scope(req, self.what)


def out_of_scope(req: webob.Request, what: str) -> webob.Response:
    message = (
        f"voltrace serves only POST /v2.1[/{{project_id}}]/os-volumes and GET of the "
        f"version documents / and /v2.1/; nova 34 would answer this request with "
        f"{what}, which is out of scope (see {OUT_OF_SCOPE_DOC})"
    )
    fault = NovaFault(404, message, "no_route")
    RequestRecord.of(req.environ).refused("router", fault)
    return fault_response(fault, api_version=None)


class Router:
    """nova/api/wsgi.py:Router over ROUTE_LIST: the create, nova's own 404, or out of scope."""

    def __init__(self, create: VolumesApp) -> None:
        self.create = create

    @webob.dec.wsgify
    def __call__(self, req: webob.Request) -> Any:
        method = routing.routing_method(req.environ)  # may raise, as in nova: FaultWrapper
        route = routing.match_route(method, req.path_info)
        if route is None:
            RequestRecord.of(req.environ).refused(
                "router", NovaFault(404, webob.exc.HTTPNotFound.explanation, "no_route")
            )
            return webob.exc.HTTPNotFound()
        if method != req.method:
            return out_of_scope(req, f"the route of a `_method={method}` override")
        if not route.is_create:
            return out_of_scope(req, f"its {method} {route.template} API")
        return self.create(req, route.project_id)


class VolumesApp:
    """nova's Resource around VolumeController.create: the pipeline, then the answer."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def __call__(self, req: webob.Request, project_id: str | None) -> webob.Response:
        record = RequestRecord.of(req.environ)
        request = CreateVolumeRequest(
            url=req.url,
            headers=req.headers,
            body=req.body,
            content_length=req.content_length,
            identity=req.environ[ENV_CONTEXT],
            path_project_id=project_id,
        )
        state = self.pipeline.run(request)
        record.finished(state)
        if state.fault is not None:
            # An UncaughtFault renders as FaultWrapper's bare 500; nova's Request keeps its
            # microversion in the environ, so FaultWrapper's Fault still carries the headers.
            return fault_response(state.fault, state.api_version)
        return success_response(state, best_content_type(req))


# ---------------------------------------------------------------------------
# The version documents: nova/api/openstack/compute/versions.py
# ---------------------------------------------------------------------------

DOCS_URL = "http://docs.openstack.org/"
VERSIONS: dict[str, dict[str, Any]] = {
    "v2.0": {
        "id": "v2.0",
        "status": "DEPRECATED",
        "version": "",
        "min_version": "",
        "updated": "2025-07-04T12:00:00Z",
        "links": [{"rel": "describedby", "type": "text/html", "href": DOCS_URL}],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2"}
        ],
    },
    "v2.1": {
        "id": "v2.1",
        "status": "CURRENT",
        "version": str(MAX_API_VERSION),
        "min_version": str(MIN_API_VERSION),
        "updated": "2013-07-23T11:33:21Z",
        "links": [{"rel": "describedby", "type": "text/html", "href": DOCS_URL}],
        "media-types": [
            {
                "base": "application/json",
                "type": "application/vnd.openstack.compute+json;version=2.1",
            }
        ],
    },
}


def _url_join(*parts: str) -> str:
    """nova/api/openstack/common.py:url_join."""
    clean = [part.strip("/") for part in parts if part]
    if not parts[-1]:
        clean.append("")
    return "/".join(clean)


def _href(prefix: str, version_id: str, path: str = "") -> str:
    """views/versions.py:ViewBuilder.generate_href."""
    return _url_join(prefix, "v2.1" if version_id.startswith("v2.1") else "v2", path)


def versions_document(req: webob.Request) -> dict[str, Any]:
    """Versions.index (GET /): every version with its self link."""
    prefix = req.application_url
    return {
        "versions": [
            {key: version[key] for key in ("id", "status", "version", "min_version", "updated")}
            | {"links": [{"rel": "self", "href": _href(prefix, version["id"])}]}
            for version in (VERSIONS[name] for name in sorted(VERSIONS))
        ]
    }


def v21_document(req: webob.Request) -> dict[str, Any]:
    """VersionsV2.index (GET /v2.1/): the v2.1 version, self link first."""
    version = copy.deepcopy(VERSIONS["v2.1"])
    version["links"].insert(0, {"rel": "self", "href": req.application_url.rstrip("/") + "/"})
    return {"version": version}


class VersionsApp:
    """nova's Versions / VersionsV2 Resources for GET and HEAD; other methods out of scope."""

    def __init__(self, v21: bool) -> None:
        self.v21 = v21  # VersionsV2: microversion headers in and out

    @webob.dec.wsgify
    def __call__(self, req: webob.Request) -> Any:
        if req.method not in ("GET", "HEAD"):
            return out_of_scope(req, f"the version document for {req.method}")
        if not self.v21 and req.path_info != "/":
            return out_of_scope(req, "300 Multiple Choices (Versions.multi)")
        api_version = None
        if self.v21:
            try:
                api_version = requested_version(req.headers)
                check_global_range(api_version)
            except NovaFault as refusal:
                if refusal.status == 406:  # nova has already taken the version it refuses
                    return fault_response(refusal, api_version=_echoed_version(req))
                return fault_response(refusal, api_version=None)
        content_type = req.headers.get("Content-Type", "").split(";", 1)[0]
        if (
            content_type
            and content_type != "text/plain"
            and content_type not in SUPPORTED_CONTENT_TYPES
        ):
            unsupported = NovaFault(415, "Unsupported Content-Type", "unsupported_media_type")
            return fault_response(unsupported, api_version)
        accept = best_content_type(req)
        if req.body:
            try:
                req.body.decode("utf-8")  # nova logs the body as text first
            except UnicodeDecodeError as exc:
                # FaultWrapper's 500; nova's Request kept its microversion in the environ.
                escaped = NovaFault(
                    500, webob.exc.HTTPInternalServerError.explanation, "internal_error", cause=exc
                )
                RequestRecord.of(req.environ).refused("wsgi", escaped)
                return fault_response(escaped, api_version)
        try:
            req.GET.dict_of_lists()
        except UnicodeDecodeError:
            bad_query = NovaFault(400, "Query string is not UTF-8 encoded", "invalid_query")
            return fault_response(bad_query, api_version)
        document = v21_document(req) if self.v21 else versions_document(req)
        response = webob.Response(body=json.dumps(document).encode("utf-8"))
        response.headers["Content-Type"] = accept
        if api_version is not None:
            for name, value in version_headers(api_version):
                response.headers.add(name, value)
        return response


def _echoed_version(req: webob.Request) -> APIVersion | None:
    try:
        return requested_version(req.headers)
    except NovaFault:
        return None


# ---------------------------------------------------------------------------
# The URL map and the pipelines
# ---------------------------------------------------------------------------


class URLMap:
    """nova/api/openstack/urlmap.py:URLMap over the apps of composite:osapi_compute."""

    def __init__(self, apps: dict[str, Any]) -> None:
        self.apps = apps

    def __call__(self, environ: dict, start_response: Any) -> Any:
        mapped = routing.map_url(environ)
        assert mapped is not None  # "/" maps every path that starts with "/"
        environ["SCRIPT_NAME"] = mapped.script_name
        environ["PATH_INFO"] = mapped.path_info
        environ[ENV_BEST_CONTENT_TYPE] = mapped.best_content_type
        return self.apps[mapped.app](environ, start_response)


class RouteRecorder:
    """Outermost: records which route a request is for, before any filter may refuse it."""

    def __init__(self, application: Any) -> None:
        self.application = application

    def __call__(self, environ: dict, start_response: Any) -> Any:
        try:
            self._record(environ)
        except Exception:  # naming the route never changes an answer
            LOG.debug("could not name the route", exc_info=True)
        return self.application(environ, start_response)

    @staticmethod
    def _record(environ: dict) -> None:
        mapped = routing.map_url(environ)
        if mapped is None or mapped.app != routing.V21_API:
            return
        method = str(environ.get("REQUEST_METHOD", ""))
        route = routing.match_route(method, mapped.path_info)
        if route is not None and route.is_create:
            record = RequestRecord.of(environ)
            record.route = ROUTE_WITH_PROJECT if route.project_id else ROUTE_WITHOUT_PROJECT
            record.is_create = True


def _oslo_conf() -> cfg.ConfigOpts:
    """An empty, private oslo.config (no files read), as nova.conf would configure them."""
    conf = cfg.ConfigOpts()
    conf([], project="voltrace", default_config_files=[], default_config_dirs=[])
    return conf


def build_app(
    pipeline: Pipeline,
    max_request_body_size: int = MAX_REQUEST_BODY_SIZE,
    enable_proxy_headers_parsing: bool = False,
    healthcheck: bool = False,
) -> Any:
    """The WSGI application: nova's URL map, each app with its middleware in nova's order.

    ``healthcheck`` mounts oslo.middleware's ``/healthcheck`` (what operators add to
    api-paste.ini's URL map for load balancers; nova 34's shipped file has none).

    ``enable_proxy_headers_parsing`` is oslo's ``[oslo_middleware]`` option of that name
    (off by default, as in nova): only then do X-Forwarded-Proto / Forwarded change the URL.
    """
    conf = _oslo_conf()
    cors_filter = cors.CORS  # no allowed_origin: preflights get a bare 200, as in nova

    def proxied(app: Any) -> Any:
        wrapped = http_proxy_to_wsgi.HTTPProxyToWSGI(app, conf)
        conf.set_override(
            "enable_proxy_headers_parsing", enable_proxy_headers_parsing, "oslo_middleware"
        )
        return wrapped

    api: Any = Router(VolumesApp(pipeline))
    api = KeystoneContext(api)
    api = BodySizeLimiter(api, conf)
    conf.set_override("max_request_body_size", max_request_body_size, "oslo_middleware")
    api = ComputeReqIdMiddleware(FaultWrapper(api))
    api = cors_filter(proxied(api), conf)

    v21_version = cors_filter(
        ComputeReqIdMiddleware(FaultWrapper(proxied(VersionsApp(True)))), conf
    )
    root = cors_filter(FaultWrapper(proxied(VersionsApp(False))), conf)
    legacy = cors_filter(
        ComputeReqIdMiddleware(FaultWrapper(OutOfScope("the legacy /v2 API"))), conf
    )
    app: Any = URLMap(
        {
            routing.V21_API: api,
            routing.V21_VERSION: v21_version,
            routing.ROOT_VERSIONS: root,
            routing.LEGACY_API: legacy,
            routing.LEGACY_VERSION: legacy,
        }
    )
    if healthcheck:
        app = WithHealthcheck(app, oslo_healthcheck.Healthcheck(None, {"backends": ""}))
    return RouteRecorder(app)


class WithHealthcheck:
    """``/healthcheck: healthcheck`` in the URL map: oslo.middleware's probe, no auth."""

    PATH = "/healthcheck"

    def __init__(self, application: Any, probe: Any) -> None:
        self.application = application
        self.probe = probe

    def __call__(self, environ: dict, start_response: Any) -> Any:
        if environ.get("PATH_INFO") == self.PATH:
            return self.probe(environ, start_response)
        return self.application(environ, start_response)
