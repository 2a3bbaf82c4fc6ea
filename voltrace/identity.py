"""Who is calling: the headers keystonemiddleware's auth_token sets, as Nova reads them.

Mirrors nova/api/auth.py:NovaKeystoneContext. voltrace trusts these headers,
exactly like Nova behind ``authtoken``; in production, put keystonemiddleware
in front (see the README) so nobody else can set them.
"""

from __future__ import annotations

import json
from typing import Any

import webob.dec
import webob.exc
from oslo_context import context as oslo_context

from voltrace.errors import NovaFault
from voltrace.record import RequestRecord

ENV_CONTEXT = "nova.context"

# nova/context.py:RequestContext.__init__ keeps only these catalog entries.
CATALOG_SERVICE_TYPES = (
    "image",
    "block-storage",
    "volumev3",
    "key-manager",
    "placement",
    "network",
    "accelerator",
    "sharev2",
)


def filter_catalog(catalog: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """What nova's RequestContext keeps of X-Service-Catalog."""
    return [s for s in catalog or [] if s.get("type") in CATALOG_SERVICE_TYPES]


class NovaRequestContext(oslo_context.RequestContext):
    """nova/context.py:RequestContext, the parts this endpoint uses."""

    def __init__(self, *args: Any, service_catalog: list | None = None, **kwargs: Any) -> None:
        # nova keeps an id only if it is truthy: an empty X-User-Id is no user (401), an
        # empty X-Project-Id no project (None in its messages).
        for key in ("user_id", "project_id"):
            if not kwargs.get(key):
                kwargs.pop(key, None)
        if kwargs.get("is_admin") is None:
            # nova: policy.check_is_admin, i.e. context_is_admin = role:admin (oslo.policy
            # compares roles case-insensitively).
            kwargs["is_admin"] = any(
                str(role).lower() == "admin" for role in kwargs.get("roles") or []
            )
        super().__init__(*args, **kwargs)
        self.service_catalog = filter_catalog(service_catalog)

    @property
    def global_id(self) -> str:
        """nova/context.py:RequestContext.global_id: the caller's id if valid, else ours."""
        return self.global_request_id or self.request_id


class KeystoneContext:
    """nova/api/auth.py:NovaKeystoneContext: identity headers to a context, or 401."""

    def __init__(self, application: Any) -> None:
        self.application = application

    @webob.dec.wsgify
    def __call__(self, req: webob.Request) -> Any:
        service_catalog = None
        catalog_header = req.headers.get("X_SERVICE_CATALOG")
        if catalog_header is not None:
            try:
                service_catalog = json.loads(catalog_header)
            except ValueError:
                _refuse(req, 500, "Invalid service catalog json.", "invalid_service_catalog")
                return webob.exc.HTTPInternalServerError("Invalid service catalog json.")
        ctx = NovaRequestContext.from_environ(req.environ, service_catalog=service_catalog)
        if ctx.user_id is None:
            _refuse(req, 401, webob.exc.HTTPUnauthorized.explanation, "unauthenticated")
            return webob.exc.HTTPUnauthorized()
        req.environ[ENV_CONTEXT] = ctx
        return req.get_response(self.application)


def _refuse(req: webob.Request, status: int, message: str, failure_class: str) -> None:
    RequestRecord.of(req.environ).refused(
        "keystonecontext", NovaFault(status, message, failure_class)
    )
