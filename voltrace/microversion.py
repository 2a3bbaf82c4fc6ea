"""Compute API microversions, as nova/api/openstack/api_version_request.py parses them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple, cast

import microversion_parse

from voltrace.errors import NovaFault

API_VERSION_HEADER = "OpenStack-API-Version"
LEGACY_API_VERSION_HEADER = "X-OpenStack-Nova-API-Version"

_VERSION_RE = re.compile(r"^([1-9]\d*)\.([1-9]\d*|0)$")


class APIVersion(NamedTuple):
    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


MIN_API_VERSION = APIVersion(2, 1)
MAX_API_VERSION = APIVersion(2, 104)
# nova/api/openstack/api_version_request.py:MAX_PROXY_API_SUPPORT_VERSION
MAX_PROXY_API_SUPPORT_VERSION = APIVersion(2, 35)


def parse_version_string(text: str) -> APIVersion:
    """APIVersionRequest.__init__: 'X.Y' or a 400 fault."""
    match = _VERSION_RE.match(text)
    if match is None:
        raise NovaFault(
            400,
            f"API Version String {text} is of invalid format. Must be of format MajorNum.MinorNum.",
            "invalid_microversion",
        )
    return APIVersion(int(match.group(1)), int(match.group(2)))


def requested_version(headers: Mapping[str, str]) -> APIVersion:
    """nova/api/openstack/wsgi.py:Request.set_api_version_request (the parse half)."""
    text = microversion_parse.get_version(
        cast(Any, headers),  # any case-insensitive mapping of header names
        service_type="compute",
        legacy_headers=[LEGACY_API_VERSION_HEADER],
    )
    if text is None:
        return MIN_API_VERSION
    if text == "latest":
        return MAX_API_VERSION
    return parse_version_string(text)


def check_global_range(version: APIVersion) -> None:
    """Request.set_api_version_request (the range half): 406 outside 2.1..2.104."""
    if not MIN_API_VERSION <= version <= MAX_API_VERSION:
        raise NovaFault(
            406,
            f"Version {version} is not supported by the API. "
            f"Minimum is {MIN_API_VERSION} and maximum is {MAX_API_VERSION}.",
            "unsupported_microversion",
        )


def version_headers(version: APIVersion) -> list[tuple[str, str]]:
    """The headers Nova adds to every response once the version is known."""
    return [
        (API_VERSION_HEADER, f"compute {version}"),
        (LEGACY_API_VERSION_HEADER, str(version)),
        ("Vary", API_VERSION_HEADER),
        ("Vary", LEGACY_API_VERSION_HEADER),
    ]
