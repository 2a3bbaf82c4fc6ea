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

from voltrace.cinder import filter_catalog

ENV_CONTEXT = "nova.context"


class NovaRequestContext(oslo_context.RequestContext):
    """nova/context.py:RequestContext, the parts this endpoint uses."""

    def __init__(self, *args: Any, service_catalog: list | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.service_catalog = filter_catalog(service_catalog)

    @property
    def global_id(self) -> str:
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
                return webob.exc.HTTPInternalServerError("Invalid service catalog json.")
        ctx = NovaRequestContext.from_environ(req.environ, service_catalog=service_catalog)
        if ctx.user_id is None:
            return webob.exc.HTTPUnauthorized()
        req.environ[ENV_CONTEXT] = ctx
        return req.get_response(self.application)
