"""Cinder's ``OpenStack-API-Version`` header, for the routes that depend on it.

The routes Nova calls answer at the base version 3.0 whatever is asked (what Nova sends
and what the simulator's views model). The messages and os-services routes read the
header the way cinder 29's ``Request.set_api_version_request`` does, and echo the
version they answer at.
"""

from __future__ import annotations

import re

from voltrace.cinder_sim.errors import ApiError
from voltrace.cinder_sim.messages import Request
from voltrace.cinder_sim.views import MAX_API_VERSION, MIN_API_VERSION

HEADER = "OpenStack-API-Version"
_VERSION_RE = re.compile(r"^([1-9]\d*)\.([1-9]\d*|0)$")

Version = tuple[int, int]

MESSAGES = (3, 3)  # GET /messages exists
MESSAGES_PAGINATION = (3, 5)  # ... and takes filters (resource_uuid, ...)
CLUSTER_SUPPORT = (3, 7)  # os-services shows "cluster"
BACKEND_STATE_REPORT = (3, 49)  # os-services asks the scheduler (an RPC call)


class VersionError(ApiError):
    """A bad version header; ``echo`` is False when cinder adds no version headers."""

    def __init__(self, status: int, message: str, kind: str, echo: str | None) -> None:
        super().__init__(status, message, kind)
        self.echo = echo


def parse(text: str) -> Version:
    found = _VERSION_RE.match(text)
    if not found:
        raise VersionError(
            400,
            f"API Version String {text} is of invalid format. Must be of format MajorNum.MinorNum.",
            "InvalidAPIVersionString",
            echo=None,
        )
    return int(found.group(1)), int(found.group(2))


def to_text(version: Version) -> str:
    return f"{version[0]}.{version[1]}"


def requested(request: Request) -> Version:
    """The version a request asks for (3.0 without the header); VersionError if unusable."""
    header = request.header(HEADER)
    if header is None:
        return parse(MIN_API_VERSION)
    volume_version = None
    for item in header.split(","):
        if "volume" in item:
            words = item.split()
            volume_version = words[1] if len(words) == 2 else None
            break
    if volume_version is None:
        # VersionNotFoundForAPIMethod escapes to the FaultWrapper: a plain 400.
        raise VersionError(
            400,
            "API version None is not supported on this method.",
            "VersionNotFoundForAPIMethod",
            echo=None,
        )
    if volume_version == "latest":
        return parse(MAX_API_VERSION)
    version = parse(volume_version)
    if not parse(MIN_API_VERSION) <= version <= parse(MAX_API_VERSION):
        raise VersionError(
            406,
            f"Version {to_text(version)} is not supported by the API. Minimum is "
            f"{MIN_API_VERSION} and maximum is {MAX_API_VERSION}.",
            "InvalidGlobalAPIVersion",
            echo=to_text(version),
        )
    return version
