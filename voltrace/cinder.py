"""Talking to Cinder the way nova/volume/cinder.py does.

The client is the real python-cinderclient on a keystoneauth session that
carries the *user's* token, rebuilt for every call as Nova does. Cinder and
keystoneauth exceptions are translated by ports of Nova's decorators, so the
exception a stage sees is the one Nova's controller would see.
"""

from __future__ import annotations

import collections
import contextvars
import copy
import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from cinderclient import client as cinder_client
from cinderclient import exceptions as cinder_exception
from keystoneauth1 import exceptions as keystone_exception
from keystoneauth1 import plugin, session
from keystoneauth1.access import service_catalog
from oslo_utils import strutils

from voltrace import errors
from voltrace.identity import NovaRequestContext

_PROXY_ENV = (
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
)

DEFAULT_ENDPOINT_TEMPLATE = "http://127.0.0.1:8776/v3/%(project_id)s"


@dataclass(frozen=True)
class CinderSettings:
    """Nova's ``[cinder]`` options that shape the client."""

    # endpoint_template; None or "" means: look volumev3 up in X-Service-Catalog.
    endpoint_template: str | None = DEFAULT_ENDPOINT_TEMPLATE
    catalog_info: str = "volumev3::publicURL"
    os_region_name: str | None = None
    http_retries: int = 3
    # keystoneauth Session timeout; Nova's default is none (wait forever).
    timeout: float | None = None
    # None keeps keystoneauth's backoff (0.5 s, 1 s, 2 s ...); demos shorten it.
    connect_retry_delay: float | None = None
    # keystoneauth's TLS session options, as nova registers them in [cinder].
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    insecure: bool = False


class ContextAuthPlugin(plugin.BaseAuthPlugin):
    """nova/context.py:_ContextAuthPlugin: the user's token and catalog, nothing else."""

    def __init__(self, auth_token: str | None, catalog: list[dict[str, Any]]) -> None:
        super().__init__()
        self.auth_token = auth_token
        self.service_catalog = service_catalog.ServiceCatalogV2(catalog)

    def get_token(self, *args: Any, **kwargs: Any) -> str | None:
        return self.auth_token

    def get_endpoint(
        self,
        session: session.Session,
        service_type: str | None = None,
        interface: str | None = None,
        region_name: str | None = None,
        service_name: str | None = None,
        **kwargs: Any,
    ) -> str | None:
        return self.service_catalog.url_for(
            service_type=service_type,
            service_name=service_name,
            interface=interface,
            region_name=region_name,
        )


def context_to_dict(context: NovaRequestContext) -> dict[str, Any]:
    """The keys nova's context.to_dict() offers an endpoint_template (no secrets)."""
    values = context.to_dict()
    values.pop("auth_token", None)
    values.update(
        project_id=context.project_id,
        user_id=context.user_id,
        tenant=context.project_id,
        user=context.user_id,
    )
    return values


@dataclass(frozen=True)
class CinderCall:
    """One HTTP exchange with Cinder, as seen from nova-api."""

    method: str
    url: str
    status: int
    request_id: str | None
    elapsed_s: float


_calls: contextvars.ContextVar[list[CinderCall] | None] = contextvars.ContextVar(
    "voltrace_cinder_calls", default=None
)


@contextmanager
def recording_calls(calls: list[CinderCall]) -> Iterator[list[CinderCall]]:
    """Append every Cinder response made in this context to ``calls``."""
    token = _calls.set(calls)
    try:
        yield calls
    finally:
        _calls.reset(token)


def _record_response(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    calls = _calls.get()
    if calls is not None:
        calls.append(
            CinderCall(
                method=response.request.method or "",
                url=response.request.url or "",
                status=response.status_code,
                request_id=response.headers.get("x-openstack-request-id"),
                elapsed_s=response.elapsed.total_seconds(),
            )
        )


def make_session(settings: CinderSettings, pool_size: int = 32) -> session.Session:
    """The process-wide keystoneauth session (nova caches one in ``_SESSION``)."""
    http = requests.Session()
    # requests re-reads proxy and CA-bundle settings from the environment on every
    # call (about 1 ms a call here). With no proxy variable set, read the CA bundle
    # once instead; with one set, keep requests' per-call behaviour exactly.
    verify: bool | str = True
    if not any(name in os.environ for name in _PROXY_ENV):
        http.trust_env = False
        verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    http.hooks["response"].append(_record_response)
    # A bigger pool than requests' 10 keeps connections alive under load.
    adapter = requests.adapters.HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size)
    http.mount("http://", adapter)
    http.mount("https://", adapter)
    # keystoneauth1/loading/session.py:Session.load_from_options, for [cinder]'s options.
    if settings.insecure:
        verify = False
    elif settings.cafile:
        verify = settings.cafile
    cert: str | tuple[str, str] | None = settings.certfile
    if settings.certfile and settings.keyfile:
        cert = (settings.certfile, settings.keyfile)
    return session.Session(session=http, timeout=settings.timeout, verify=verify, cert=cert)


def cinderclient(
    context: NovaRequestContext, settings: CinderSettings, ks_session: session.Session
) -> Any:
    """nova/volume/cinder.py:cinderclient: a 3.0 client bound to the user's token."""
    auth = ContextAuthPlugin(context.auth_token, getattr(context, "service_catalog", None) or [])
    service_type, service_name, interface = settings.catalog_info.split(":")
    service_parameters: dict[str, Any] = {
        "service_type": service_type,
        "interface": interface,
        "region_name": settings.os_region_name,
    }
    if service_name:
        service_parameters["service_name"] = service_name
    url: str | None
    if settings.endpoint_template:
        url = settings.endpoint_template % context_to_dict(context)
    else:
        url = ks_session.get_endpoint(auth, **service_parameters)
    version = cinder_client.get_volume_api_from_url(url)
    if version != "3":
        raise errors.UnsupportedCinderAPIVersion(version=version)
    extra: dict[str, Any] = {}
    if settings.connect_retry_delay is not None:
        extra["connect_retry_delay"] = settings.connect_retry_delay
    return cinder_client.Client(
        "3.0",
        session=ks_session,
        auth=auth,
        endpoint_override=url,
        connect_retries=settings.http_retries,
        global_request_id=context.global_id,
        **service_parameters,
        **extra,
    )


# ---------------------------------------------------------------------------
# nova/volume/cinder.py's translation decorators, ported.
# ---------------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])


def translate_cinder_exception(method: F) -> F:
    """nova/volume/cinder.py:translate_cinder_exception."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except (cinder_exception.ConnectionError, keystone_exception.ConnectionError) as exc:
            raise errors.CinderConnectionFailed(reason=str(exc)) from exc
        except (keystone_exception.BadRequest, cinder_exception.BadRequest) as exc:
            raise errors.InvalidInput(reason=str(exc)) from exc
        except (keystone_exception.Forbidden, cinder_exception.Forbidden) as exc:
            raise errors.Forbidden(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


def translate_create_exception(method: F) -> F:
    """nova/volume/cinder.py:translate_create_exception."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except (keystone_exception.NotFound, cinder_exception.NotFound) as exc:
            raise errors.NotFound(message=exc.message) from exc
        except cinder_exception.OverLimit as exc:
            raise errors.OverQuota(message=exc.message) from exc

    return translate_cinder_exception(wrapper)  # type: ignore[return-value]


def translate_snapshot_exception(method: F) -> F:
    """nova/volume/cinder.py:translate_snapshot_exception."""

    @functools.wraps(method)
    def wrapper(self: Any, context: Any, snapshot_id: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, context, snapshot_id, *args, **kwargs)
        except (keystone_exception.NotFound, cinder_exception.NotFound) as exc:
            raise errors.SnapshotNotFound(snapshot_id=snapshot_id) from exc

    return translate_cinder_exception(wrapper)  # type: ignore[return-value]


# ---------------------------------------------------------------------------
# The two calls this endpoint makes.
# ---------------------------------------------------------------------------


class VolumeAPI:
    """nova/volume/cinder.py:API, the create and get_snapshot methods."""

    def __init__(self, settings: CinderSettings | None = None) -> None:
        self.settings = settings or CinderSettings()
        self.session = make_session(self.settings)

    def client(self, context: NovaRequestContext) -> Any:
        return cinderclient(context, self.settings, self.session)

    @translate_snapshot_exception
    def get_snapshot(self, context: NovaRequestContext, snapshot_id: str) -> dict:
        """nova/volume/cinder.py:API.get_snapshot."""
        item = self.client(context).volume_snapshots.get(snapshot_id)
        return untranslate_snapshot_summary_view(item)

    @translate_create_exception
    def create(
        self,
        context: NovaRequestContext,
        size: Any,
        name: str | None,
        description: str | None,
        snapshot: dict | None = None,
        image_id: str | None = None,
        volume_type: str | None = None,
        metadata: dict | None = None,
        availability_zone: str | None = None,
    ) -> dict:
        """nova/volume/cinder.py:API.create (POST, then the lazy GET)."""
        client = self.client(context)
        snapshot_id = snapshot["id"] if snapshot is not None else None
        item = client.volumes.create(
            size,
            snapshot_id=snapshot_id,
            volume_type=volume_type,
            user_id=context.user_id,
            project_id=context.project_id,
            availability_zone=availability_zone,
            metadata=metadata,
            imageRef=image_id,
            name=name,
            description=description,
        )
        return untranslate_volume_summary_view(item)


def untranslate_snapshot_summary_view(snapshot: Any) -> dict:
    """nova/volume/cinder.py:_untranslate_snapshot_summary_view."""
    return {
        "id": snapshot.id,
        "status": snapshot.status,
        "progress": snapshot.progress,
        "size": snapshot.size,
        "created_at": snapshot.created_at,
        "display_name": snapshot.name,
        "display_description": snapshot.description,
        "volume_id": snapshot.volume_id,
        "project_id": snapshot.project_id,
        "volume_size": snapshot.size,
    }


def untranslate_volume_summary_view(vol: Any) -> dict:
    """nova/volume/cinder.py:_untranslate_volume_summary_view.

    ``vol`` is cinderclient's not-yet-loaded Resource: the first attribute the
    POST answer lacks (``volume_image_metadata`` against a 3.0 Cinder) makes
    cinderclient GET the volume. That lazy GET is Nova's, so it is kept.
    """
    d: dict[str, Any] = {}
    d["id"] = vol.id
    d["status"] = vol.status
    d["size"] = vol.size
    d["availability_zone"] = vol.availability_zone
    d["created_at"] = vol.created_at
    d["attach_time"] = ""
    d["mountpoint"] = ""
    d["multiattach"] = getattr(vol, "multiattach", False)
    if vol.attachments:
        d["attachments"] = collections.OrderedDict()
        for attachment in vol.attachments:
            a = {
                attachment["server_id"]: {
                    "attachment_id": attachment.get("attachment_id"),
                    "mountpoint": attachment.get("device"),
                }
            }
            d["attachments"].update(a.items())
        d["attach_status"] = "attached"
    else:
        d["attach_status"] = "detached"
    d["display_name"] = vol.name
    d["display_description"] = vol.description
    d["volume_type_id"] = vol.volume_type
    d["snapshot_id"] = vol.snapshot_id
    d["bootable"] = strutils.bool_from_string(vol.bootable)
    d["volume_metadata"] = {}
    for key, value in vol.metadata.items():
        d["volume_metadata"][key] = value
    if hasattr(vol, "volume_image_metadata"):
        d["volume_image_metadata"] = copy.deepcopy(vol.volume_image_metadata)
    if hasattr(vol, "shared_targets"):
        d["shared_targets"] = vol.shared_targets
        d["service_uuid"] = vol.service_uuid
    if hasattr(vol, "migration_status"):
        d["migration_status"] = vol.migration_status
    return d
