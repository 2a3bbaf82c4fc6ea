"""Nova's own configuration file, read the way nova-api reads it (oslo.config).

``voltrace serve --config-file /etc/nova/nova.conf`` takes the options that shape
this endpoint from the sections nova defines them in, with nova's names,
defaults and types::

    [cinder]           catalog_info, endpoint_template, os_region_name, http_retries,
                       and keystoneauth's session options (cafile, certfile, keyfile,
                       insecure, timeout), registered by keystoneauth1 itself
    [oslo_policy]      policy_file (and the rest of oslo.policy's options)
    [oslo_middleware]  max_request_body_size, enable_proxy_headers_parsing

Everything else in the file (database, messaging, other services, ``[api]``, whose
options do not change this endpoint's answers) is ignored,
as it has nothing to do with proxying a volume create. Command-line flags win
over the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from keystoneauth1 import loading as ks_loading
from oslo_config import cfg
from oslo_middleware import http_proxy_to_wsgi, sizelimit
from oslo_policy import opts as policy_opts

from voltrace.cinder import CinderSettings

# nova/conf/cinder.py, the options this endpoint uses (same names, defaults, bounds).
CINDER_OPTS = [
    cfg.StrOpt(
        "catalog_info",
        default="volumev3::publicURL",
        regex=r"^\w+:\w*:.*$",
        help="<service_type>:<service_name>:<interface> of Cinder in the catalog",
    ),
    cfg.StrOpt(
        "endpoint_template", help="override the catalog: e.g. http://cinder:8776/v3/%%(project_id)s"
    ),
    cfg.StrOpt("os_region_name", help="region of the Cinder endpoint in the catalog"),
    cfg.IntOpt(
        "http_retries",
        default=3,
        min=0,
        help="number of times to retry a refused connection to Cinder",
    ),
]


@dataclass(frozen=True)
class NovaConf:
    """What nova.conf says about this endpoint."""

    cinder: CinderSettings
    policy_file: str | None
    max_request_body_size: int
    enable_proxy_headers_parsing: bool


class NovaConfError(ValueError):
    """nova.conf cannot be read, or an option in it is invalid (one line, for the CLI)."""


def load(path: str) -> NovaConf:
    """Parse ``path`` as nova-api would; relative policy files resolve beside it, as oslo's do."""
    if not os.path.isfile(path):
        raise NovaConfError(f"config file {path} does not exist")
    conf = cfg.ConfigOpts()
    conf.register_opts(CINDER_OPTS, group="cinder")
    ks_loading.register_session_conf_options(conf, "cinder")
    conf.register_opts(sizelimit.OPTS, group="oslo_middleware")
    conf.register_opts(http_proxy_to_wsgi.OPTS, group="oslo_middleware")
    for group, options in policy_opts.list_opts():
        conf.register_opts(options, group=group)
    try:
        conf(
            ["--config-file", path], project="nova", default_config_files=[], default_config_dirs=[]
        )
        return _read(conf, path)
    except (cfg.Error, ValueError) as exc:
        raise NovaConfError(f"{path}: {exc}") from exc


def _read(conf: cfg.ConfigOpts, path: str) -> NovaConf:
    cinder = conf.cinder
    policy_file = None
    # oslo.policy's default is policy.yaml, looked up in the config dirs; take it only
    # when the operator set it or it exists next to nova.conf.
    candidate = conf.oslo_policy.policy_file
    if candidate:
        resolved = (
            candidate
            if os.path.isabs(candidate)
            else os.path.join(os.path.dirname(os.path.abspath(path)), candidate)
        )
        explicitly_set = conf.oslo_policy.policy_file != "policy.yaml"
        if explicitly_set or os.path.exists(resolved):
            policy_file = resolved
    return NovaConf(
        cinder=CinderSettings(
            endpoint_template=cinder.endpoint_template,
            catalog_info=cinder.catalog_info,
            os_region_name=cinder.os_region_name,
            http_retries=cinder.http_retries,
            timeout=cinder.timeout,
            cafile=cinder.cafile,
            certfile=cinder.certfile,
            keyfile=cinder.keyfile,
            insecure=cinder.insecure,
        ),
        policy_file=policy_file,
        max_request_body_size=conf.oslo_middleware.max_request_body_size,
        enable_proxy_headers_parsing=conf.oslo_middleware.enable_proxy_headers_parsing,
    )
