"""Which failure class an exception real nova raised stands for (``voltrace.semconv.FAILURES``).

The same table as voltrace's own stages (``voltrace/stages.py``), over nova's exception
classes instead of voltrace's ports of them. nova is imported only when a hook asks, by
which time nova-api has loaded it itself.
"""

from __future__ import annotations

from typing import Any

# Nova's exceptions each parse hook watches for, and what they mean.
PARSE_CAUSES: dict[str, str] = {
    "InvalidAPIVersionString": "invalid_microversion",
    "InvalidGlobalAPIVersion": "unsupported_microversion",
    "InvalidContentType": "unsupported_media_type",
    "MalformedRequestBody": "malformed_body",
}


def _nova_exception() -> Any:
    from nova import exception

    return exception


def parse_cause(exc: BaseException) -> str | None:
    """The parse failure a ``Request.*`` / ``_get_request_content`` exception is, if any."""
    exception = _nova_exception()
    for name, failure_class in PARSE_CAUSES.items():
        if isinstance(exc, getattr(exception, name)):
            return failure_class
    return None


def controller_failure(stage: str, exc: BaseException) -> tuple[str, BaseException]:
    """What an exception leaving ``VolumeController.create`` means, no stage hook having seen it.

    Only parse has failures of its own there (the 2.35 cap and the request schema); anything
    else is a bug in that stage, whose root cause is what ``expected_errors`` turned into its
    500 (``__context__``).
    """
    exception = _nova_exception()
    if stage == "parse" and isinstance(exc, exception.VersionNotFoundForAPIMethod):
        return "microversion_not_found", exc
    if stage == "parse" and isinstance(exc, exception.ValidationError):
        return "schema_invalid", exc
    return "internal_error", root_cause(exc)


def root_cause(exc: BaseException) -> BaseException:
    """``expected_errors`` raises HTTPInternalServerError from inside ``except``: the cause."""
    import webob.exc

    if isinstance(exc, webob.exc.HTTPInternalServerError) and exc.__context__ is not None:
        return exc.__context__
    return exc


def authorize_failure(exc: BaseException) -> str:
    return (
        "policy_denied"
        if isinstance(exc, _nova_exception().PolicyNotAuthorized)
        else "internal_error"
    )


def snapshot_failure(exc: BaseException) -> str:
    if isinstance(exc, _nova_exception().SnapshotNotFound):
        return "snapshot_not_found"
    return cinder_failure(exc)


def cinder_failure(exc: BaseException) -> str:
    """nova/volume/cinder.py's translated exceptions, or cinderclient's and keystoneauth's."""
    from cinderclient import exceptions as cinder_exception
    from keystoneauth1 import exceptions as keystone_exception

    exception = _nova_exception()
    by_type: tuple[tuple[Any, str], ...] = (
        (exception.Forbidden, "cinder_forbidden"),
        (exception.CinderConnectionFailed, "cinder_unreachable"),
        (exception.InvalidInput, "cinder_bad_request"),
        (exception.NotFound, "cinder_not_found"),
        (exception.OverQuota, "over_quota"),
        (
            (exception.UnsupportedCinderAPIVersion, cinder_exception.UnsupportedVersion),
            "cinder_unsupported_version",
        ),
        (keystone_exception.EndpointNotFound, "cinder_endpoint_not_found"),
        (cinder_exception.Unauthorized, "cinder_unauthorized"),
        (cinder_exception.ClientException, "cinder_server_error"),
        (keystone_exception.ClientException, "cinder_server_error"),
        (exception.NovaException, "internal_error"),
    )
    for exc_type, name in by_type:
        if isinstance(exc, exc_type):
            return name
    # Anything else came out of reading Cinder's answer (garbage or truncated JSON).
    return "cinder_bad_response"
