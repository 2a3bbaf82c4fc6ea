"""Where nova-api 34 sends a request: its URL map, its Accept parsing and its route table.

nova serves ``/``, ``/v2``, ``/v2.1`` and the two API pipelines through
``nova/api/openstack/urlmap.py:URLMap`` (``composite:osapi_compute`` in api-paste.ini), and
inside ``/v2.1/+`` routes with ``routes`` over ``nova/api/openstack/compute/routes.py``'s
``ROUTE_LIST`` through ``ProjectMapper`` (every path also under ``/{project_id}``, where a
project id must match ``[0-9a-f-]+``). voltrace answers one route of that table (the create)
and the version documents; knowing the whole table is what lets it answer nova's own 404 for
a path nova does not route, and say clearly "out of scope" for one nova routes elsewhere.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import webob

# nova/api/openstack/wsgi.py:get_supported_content_types
SUPPORTED_CONTENT_TYPES = ("application/json", "application/vnd.openstack.compute+json")

# The apps of composite:osapi_compute, by the urlmap path that selects them.
ROOT_VERSIONS = ""  # oscomputeversions: GET / lists versions, any other path 300 choices
V21_VERSION = "/v2.1"  # oscomputeversion_v2: the v2.1 version document
V21_API = "/v2.1/+"  # openstack_compute_api_v21: the API (os-volumes is here)
LEGACY_VERSION = "/v2"  # oscomputeversion_legacy_v2
LEGACY_API = "/v2/+"  # openstack_compute_api_v21_legacy_v2_compatible
# paste.urlmap.URLMap.sort_apps: longest first, ties by the path string.
_URLMAP_ORDER = (V21_API, V21_VERSION, LEGACY_API, LEGACY_VERSION, ROOT_VERSIONS)

_MULTIPLE_SLASHES = re.compile("//+")
_DOMAIN_URL = re.compile("^(http|https)://")


@dataclass(frozen=True)
class Mapped:
    """The app nova's URLMap picked, with the SCRIPT_NAME/PATH_INFO it hands that app."""

    app: str
    script_name: str
    path_info: str
    best_content_type: str  # environ['nova.best_content_type']


def _normalize(path: str) -> str:
    """paste.urlmap.URLMap.normalize_url(path, trim=False): drop a scheme://host, fold //."""
    match = _DOMAIN_URL.search(path)
    if match:
        path = path[match.end() :]
        path = "/" + path.split("/", 1)[1] if "/" in path else ""
    return _MULTIPLE_SLASHES.sub("/", path)


def _match(path_info: str) -> tuple[str | None, str | None]:
    """nova URLMap._match: the first app whose path prefixes ``path_info``."""
    for app_url in _URLMAP_ORDER:
        if app_url.endswith("/+"):
            if path_info.startswith(app_url[:-1]) and len(path_info) >= len(app_url):
                return app_url, app_url[:-2]
            continue
        if path_info == app_url or path_info.startswith(app_url + "/"):
            return app_url, app_url
    return None, None


def map_url(environ: Mapping[str, Any]) -> Mapped | None:
    """nova/api/openstack/urlmap.py:URLMap.__call__ (no app: paste's not-found app)."""
    raw_path = str(environ.get("PATH_INFO", ""))
    path_info = _normalize(raw_path)
    supported = list(SUPPORTED_CONTENT_TYPES)
    mime_type = app = app_url = None
    munged = False  # True: PATH_INFO becomes what follows app_url; False: only SCRIPT_NAME grows

    parts = path_info.rsplit(".", 1)
    if len(parts) > 1 and "application/" + parts[1] in SUPPORTED_CONTENT_TYPES:
        mime_type = "application/" + parts[1]
    if len(path_info.split("/")) > 1:
        possible_app, possible_url = _match(path_info)
        if possible_app and possible_url:  # "" (the root) does not count here
            app, app_url, munged = possible_app, possible_url, True
    if (app_url and app_url + "/" == path_info) or path_info == "/":
        supported.append("application/atom+xml")
    if not app:
        params = parse_options_header(str(environ.get("CONTENT_TYPE", "")))[1]
        if "version" in params:
            app, app_url = _match(f"/v{params['version']}")
    if not mime_type or not app:
        accept_type, params = Accept(str(environ.get("HTTP_ACCEPT", ""))).best_match(supported)
        if accept_type and not mime_type:
            mime_type = accept_type
        if "version" in params and not app:
            app, app_url = _match(f"/v{params['version']}")
    if not app:
        app, app_url = _match(path_info)
        munged = True
    if app is None or app_url is None:
        return None
    script_name = str(environ.get("SCRIPT_NAME", "")) + app_url
    new_path = path_info[len(app_url) :] if munged else raw_path
    return Mapped(app, script_name, new_path, mime_type or "application/json")


# ---------------------------------------------------------------------------
# nova/api/openstack/urlmap.py's own Accept parsing (not webob's)
# ---------------------------------------------------------------------------

_QUOTED = r'"[^"\\]*(?:\\.[^"\\]*)*"'
_OPTION_PIECE = re.compile(rf";\s*([^\s;=]+|{_QUOTED})\s*(?:=\s*([^;]+|{_QUOTED}))?\s*")


def _unquote(value: str) -> str:
    if value and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value


def parse_options_header(value: str) -> tuple[str, dict[str, str | None]]:
    """urlmap.parse_options_header: ``'a/b; k=v'`` -> ``('a/b', {'k': 'v'})``."""
    if not value:
        return "", {}
    pieces = []
    for match in _OPTION_PIECE.finditer(";" + value):
        key, val = match.groups()
        pieces.append((_unquote(key), _unquote(val) if val is not None else None))
    name = pieces[0][0]
    return name, dict(pieces[1:])


def _parse_list(value: str) -> list[str]:
    result = []
    for item in urllib.request.parse_http_list(value):
        if item[:1] == item[-1:] == '"':
            item = _unquote(item[1:-1])
        result.append(item)
    return result


class Accept:
    """urlmap.Accept: nova's best match of an Accept header (q-values, masks)."""

    def __init__(self, value: str) -> None:
        self._content_types = [parse_options_header(v) for v in _parse_list(value)]

    def best_match(self, supported: list[str]) -> tuple[str | None, dict[str, Any]]:
        best_quality = -1.0
        best_content_type = None
        best_params: dict[str, Any] = {}
        best_mask = "*/*"
        for content_type in supported:
            for mask, params in self._content_types:
                try:
                    quality = float(params.get("q", 1))  # type: ignore[arg-type]
                except (ValueError, TypeError):
                    continue
                if quality < best_quality:
                    continue
                if best_quality == quality and best_mask.count("*") <= mask.count("*"):
                    continue
                if self._match_mask(mask, content_type):
                    best_quality, best_content_type = quality, content_type
                    best_params, best_mask = params, mask
        return best_content_type, best_params

    @staticmethod
    def _match_mask(mask: str, content_type: str) -> bool:
        if "*" not in mask:
            return content_type == mask
        if mask == "*/*":
            return True
        return content_type.split("/", 1)[0] == mask[:-2]


# ---------------------------------------------------------------------------
# The v2.1 router: nova/api/openstack/compute/routes.py ROUTE_LIST under ProjectMapper
# ---------------------------------------------------------------------------

# (path template, methods), generated from nova 34.0.0's ROUTE_LIST (redirects left out).
NOVA_ROUTES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("/", ("GET",)),
    ("/versions/{id}", ("GET",)),
    ("/extensions", ("GET",)),
    ("/extensions/{id}", ("GET",)),
    ("/flavors", ("GET", "POST")),
    ("/flavors/detail", ("GET",)),
    ("/flavors/{id}", ("DELETE", "GET", "PUT")),
    ("/flavors/{id}/action", ("POST",)),
    ("/flavors/{flavor_id}/os-extra_specs", ("GET", "POST")),
    ("/flavors/{flavor_id}/os-extra_specs/{id}", ("DELETE", "GET", "PUT")),
    ("/flavors/{flavor_id}/os-flavor-access", ("GET",)),
    ("/images", ("GET",)),
    ("/images/detail", ("GET",)),
    ("/images/{id}", ("DELETE", "GET")),
    ("/images/{image_id}/metadata", ("GET", "POST", "PUT")),
    ("/images/{image_id}/metadata/{id}", ("DELETE", "GET", "PUT")),
    ("/limits", ("GET",)),
    ("/os-agents", ("GET", "POST")),
    ("/os-agents/{id}", ("DELETE", "PUT")),
    ("/os-aggregates", ("GET", "POST")),
    ("/os-aggregates/{id}", ("DELETE", "GET", "PUT")),
    ("/os-aggregates/{id}/action", ("POST",)),
    ("/os-aggregates/{id}/images", ("POST",)),
    ("/os-assisted-volume-snapshots", ("POST",)),
    ("/os-assisted-volume-snapshots/{id}", ("DELETE",)),
    ("/os-availability-zone", ("GET",)),
    ("/os-availability-zone/detail", ("GET",)),
    ("/os-baremetal-nodes", ("GET", "POST")),
    ("/os-baremetal-nodes/{id}", ("DELETE", "GET")),
    ("/os-baremetal-nodes/{id}/action", ("POST",)),
    ("/os-cells", ("GET", "POST")),
    ("/os-cells/capacities", ("GET",)),
    ("/os-cells/detail", ("GET",)),
    ("/os-cells/info", ("GET",)),
    ("/os-cells/sync_instances", ("POST",)),
    ("/os-cells/{id}", ("DELETE", "GET", "PUT")),
    ("/os-cells/{id}/capacities", ("GET",)),
    ("/os-certificates", ("POST",)),
    ("/os-certificates/{id}", ("GET",)),
    ("/os-cloudpipe", ("GET", "POST")),
    ("/os-cloudpipe/{id}", ("PUT",)),
    ("/os-console-auth-tokens/{id}", ("GET",)),
    ("/os-fixed-ips/{id}", ("GET",)),
    ("/os-fixed-ips/{id}/action", ("POST",)),
    ("/os-floating-ip-dns", ("GET",)),
    ("/os-floating-ip-dns/{id}", ("DELETE", "PUT")),
    ("/os-floating-ip-dns/{domain_id}/entries/{id}", ("DELETE", "GET", "PUT")),
    ("/os-floating-ip-pools", ("GET",)),
    ("/os-floating-ips", ("GET", "POST")),
    ("/os-floating-ips/{id}", ("DELETE", "GET")),
    ("/os-floating-ips-bulk", ("GET", "POST")),
    ("/os-floating-ips-bulk/{id}", ("GET", "PUT")),
    ("/os-fping", ("GET",)),
    ("/os-fping/{id}", ("GET",)),
    ("/os-hosts", ("GET",)),
    ("/os-hosts/{id}", ("GET", "PUT")),
    ("/os-hosts/{id}/reboot", ("GET",)),
    ("/os-hosts/{id}/shutdown", ("GET",)),
    ("/os-hosts/{id}/startup", ("GET",)),
    ("/os-hypervisors", ("GET",)),
    ("/os-hypervisors/detail", ("GET",)),
    ("/os-hypervisors/statistics", ("GET",)),
    ("/os-hypervisors/{id}", ("GET",)),
    ("/os-hypervisors/{id}/search", ("GET",)),
    ("/os-hypervisors/{id}/servers", ("GET",)),
    ("/os-hypervisors/{id}/uptime", ("GET",)),
    ("/os-instance_usage_audit_log", ("GET",)),
    ("/os-instance_usage_audit_log/{id}", ("GET",)),
    ("/os-keypairs", ("GET", "POST")),
    ("/os-keypairs/{id}", ("DELETE", "GET")),
    ("/os-migrations", ("GET",)),
    ("/os-networks", ("GET", "POST")),
    ("/os-networks/add", ("POST",)),
    ("/os-networks/{id}", ("DELETE", "GET")),
    ("/os-networks/{id}/action", ("POST",)),
    ("/os-quota-class-sets/{id}", ("GET", "PUT")),
    ("/os-quota-sets/{id}", ("DELETE", "GET", "PUT")),
    ("/os-quota-sets/{id}/detail", ("GET",)),
    ("/os-quota-sets/{id}/defaults", ("GET",)),
    ("/os-security-group-default-rules", ("GET", "POST")),
    ("/os-security-group-default-rules/{id}", ("DELETE", "GET")),
    ("/os-security-group-rules", ("POST",)),
    ("/os-security-group-rules/{id}", ("DELETE",)),
    ("/os-security-groups", ("GET", "POST")),
    ("/os-security-groups/{id}", ("DELETE", "GET", "PUT")),
    ("/os-server-external-events", ("POST",)),
    ("/os-server-groups", ("GET", "POST")),
    ("/os-server-groups/{id}", ("DELETE", "GET")),
    ("/os-services", ("GET",)),
    ("/os-services/{id}", ("DELETE", "PUT")),
    ("/os-simple-tenant-usage", ("GET",)),
    ("/os-simple-tenant-usage/{id}", ("GET",)),
    ("/os-snapshots", ("GET", "POST")),
    ("/os-snapshots/detail", ("GET",)),
    ("/os-snapshots/{id}", ("DELETE", "GET")),
    ("/os-tenant-networks", ("GET", "POST")),
    ("/os-tenant-networks/{id}", ("DELETE", "GET")),
    ("/os-volumes", ("GET", "POST")),
    ("/os-volumes/detail", ("GET",)),
    ("/os-volumes/{id}", ("DELETE", "GET")),
    ("/os-volumes_boot", ("GET", "POST")),
    ("/os-volumes_boot/detail", ("GET",)),
    ("/os-volumes_boot/{id}", ("DELETE", "GET", "PUT")),
    ("/os-volumes_boot/{id}/action", ("POST",)),
    ("/servers", ("GET", "POST")),
    ("/servers/detail", ("GET",)),
    ("/servers/{id}", ("DELETE", "GET", "PUT")),
    ("/servers/{id}/action", ("POST",)),
    ("/servers/{server_id}/consoles", ("GET", "POST")),
    ("/servers/{server_id}/consoles/{id}", ("DELETE", "GET")),
    ("/servers/{server_id}/diagnostics", ("GET",)),
    ("/servers/{server_id}/ips", ("GET",)),
    ("/servers/{server_id}/ips/{id}", ("GET",)),
    ("/servers/{server_id}/metadata", ("GET", "POST", "PUT")),
    ("/servers/{server_id}/metadata/{id}", ("DELETE", "GET", "PUT")),
    ("/servers/{server_id}/migrations", ("GET",)),
    ("/servers/{server_id}/migrations/{id}", ("DELETE", "GET")),
    ("/servers/{server_id}/migrations/{id}/action", ("POST",)),
    ("/servers/{server_id}/os-instance-actions", ("GET",)),
    ("/servers/{server_id}/os-instance-actions/{id}", ("GET",)),
    ("/servers/{server_id}/os-interface", ("GET", "POST")),
    ("/servers/{server_id}/os-interface/{id}", ("DELETE", "GET")),
    ("/servers/{server_id}/os-server-password", ("DELETE", "GET")),
    ("/servers/{server_id}/os-virtual-interfaces", ("GET",)),
    ("/servers/{server_id}/os-volume_attachments", ("GET", "POST")),
    ("/servers/{server_id}/os-volume_attachments/{id}", ("DELETE", "GET", "PUT")),
    ("/servers/{server_id}/remote-consoles", ("POST",)),
    ("/servers/{server_id}/os-security-groups", ("GET",)),
    ("/servers/{server_id}/shares", ("GET", "POST")),
    ("/servers/{server_id}/shares/{id}", ("DELETE", "GET")),
    ("/servers/{server_id}/tags", ("DELETE", "GET", "PUT")),
    ("/servers/{server_id}/tags/{id}", ("DELETE", "GET", "PUT")),
    ("/servers/{server_id}/topology", ("GET",)),
)

CREATE_TEMPLATE = "/os-volumes"
_PROJECT = "(?P<project_id>[0-9a-f-]+)"


def _compile(template: str) -> re.Pattern[str]:
    body = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    return re.compile(f"^(?:/{_PROJECT})?{body}$")


_COMPILED = tuple((template, methods, _compile(template)) for template, methods in NOVA_ROUTES)


@dataclass(frozen=True)
class Route:
    """What nova's router matched: a template of ROUTE_LIST and the URL's project id."""

    method: str
    template: str
    project_id: str | None

    @property
    def is_create(self) -> bool:
        return self.method == "POST" and self.template == CREATE_TEMPLATE


def match_route(method: str, path_info: str) -> Route | None:
    """routes.Mapper.routematch as ProjectMapper builds it: first match in ROUTE_LIST order."""
    for template, methods, pattern in _COMPILED:
        found = pattern.match(path_info)
        if found and method in methods:
            return Route(method, template, found.group("project_id"))
    return None


def routing_method(environ: dict[str, Any]) -> str:
    """routes.middleware.RoutesMiddleware: ``?_method=`` or a form's ``_method`` overrides.

    Reading a form body can raise (e.g. multipart without a boundary); nova lets that
    reach FaultWrapper, and so does this.
    """
    method = str(environ.get("REQUEST_METHOD", ""))
    if "_method" in environ.get("QUERY_STRING", ""):
        req = webob.Request(environ)
        req.errors = "ignore"
        try:
            override = req.GET.get("_method")
        except UnicodeDecodeError:
            override = None
        return override.upper() if override else method
    if method == "POST" and _is_form_post(environ):
        req = webob.Request(environ)
        req.errors = "ignore"
        try:
            override = req.POST.get("_method")
        except UnicodeDecodeError:
            override = None
        return override.upper() if override else method
    return method


def _is_form_post(environ: Mapping[str, Any]) -> bool:
    content_type = str(environ.get("CONTENT_TYPE", "")).lower()
    content_type = content_type.split(";", 1)[0]
    return content_type in ("application/x-www-form-urlencoded", "multipart/form-data")
