"""The Cinder API paths the simulator serves, and which route a request is for.

A route's name is what faults match on (``Fault("volumes.create", ...)``); its template
is also the SERVER span's name and ``http.route``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# The route names, in the order the manual and the CLI help list them.
ROUTES = (
    "versions",
    "volumes.create",
    "volumes.get",
    "snapshots.create",
    "snapshots.get",
    "quotas.get",
    "quotas.update",
    "quotas.defaults",
    "messages.list",
    "messages.get",
    "services.list",
)


@dataclass(frozen=True)
class Route:
    name: str  # one of ROUTES; faults match on it
    method: str
    template: str  # also the span name and http.route
    success: int  # the status a good answer has (a "garbage" fault reuses it)
    needs_token: bool = True
    # Reads OpenStack-API-Version (and echoes it); the others always answer at 3.0.
    versioned: bool = False


# Tried in order, first match wins (so ".../defaults" comes before ".../{target}").
ROUTE_TABLE = (
    Route("versions", "GET", "/", 300, needs_token=False),
    Route("versions", "GET", "/v3/", 200),
    Route("versions", "GET", "/v3", 200),
    Route("volumes.create", "POST", "/v3/{project_id}/volumes", 202),
    Route("volumes.get", "GET", "/v3/{project_id}/volumes/{volume_id}", 200),
    Route("snapshots.create", "POST", "/v3/{project_id}/snapshots", 202),
    Route("snapshots.get", "GET", "/v3/{project_id}/snapshots/{snapshot_id}", 200),
    # Real cinder serves this as ``show`` of a project literally named "defaults", which
    # equals the defaults unless someone set quotas for that project.
    Route("quotas.defaults", "GET", "/v3/{project_id}/os-quota-sets/defaults", 200),
    Route(
        "quotas.defaults",
        "GET",
        "/v3/{project_id}/os-quota-sets/{target_project_id}/defaults",
        200,
    ),
    Route("quotas.get", "GET", "/v3/{project_id}/os-quota-sets/{target_project_id}", 200),
    Route("quotas.update", "PUT", "/v3/{project_id}/os-quota-sets/{target_project_id}", 200),
    Route("messages.list", "GET", "/v3/{project_id}/messages", 200, versioned=True),
    Route("messages.get", "GET", "/v3/{project_id}/messages/{message_id}", 200, versioned=True),
    Route("services.list", "GET", "/v3/{project_id}/os-services", 200, versioned=True),
)


def _compile_template(template: str) -> re.Pattern[str]:
    """``/v3/{project_id}/volumes`` -> a regex with one named group per placeholder."""
    pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    return re.compile(f"^{pattern}$")


_COMPILED_ROUTES = tuple((route, _compile_template(route.template)) for route in ROUTE_TABLE)


@dataclass
class Match:
    route: Route | None  # None: no route for this method (or path)
    params: dict[str, str]  # the path's parameters, even when the method is wrong
    template: str | None = None  # the path template, even when the method is wrong
    allowed: list[str] = field(default_factory=list)  # methods the path does accept


def match_route(method: str, path: str) -> Match:
    allowed: list[str] = []
    template = None
    params: dict[str, str] = {}
    for route, regex in _COMPILED_ROUTES:
        found = regex.match(path)
        if not found:
            continue
        if route.method == method:
            return Match(route, found.groupdict(), route.template)
        allowed.append(route.method)
        if template is None:
            template, params = route.template, found.groupdict()
    return Match(None, params, template, sorted(set(allowed)))
