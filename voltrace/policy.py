"""Nova's policy for this endpoint, enforced by oslo.policy.

Mirrors nova/policies/base.py and nova/policies/volumes.py; an operator's
policy file (``--policy-file``) overrides the defaults exactly as in Nova.
"""

from __future__ import annotations

from oslo_config import cfg
from oslo_context import context as oslo_context
from oslo_policy import policy

from voltrace.errors import NovaFault, PolicyNotAuthorized

CREATE_RULE = "os_compute_api:os-volumes:create"
DEPRECATED_RULE = "os_compute_api:os-volumes"

_DEFAULTS = [
    policy.RuleDefault("context_is_admin", "role:admin"),
    policy.RuleDefault("admin_or_owner", "is_admin:True or project_id:%(project_id)s"),
    policy.RuleDefault("project_member_api", "role:member and project_id:%(project_id)s"),
    policy.RuleDefault(
        "project_member_or_admin", "rule:project_member_api or rule:context_is_admin"
    ),
    policy.DocumentedRuleDefault(
        name=CREATE_RULE,
        check_str="rule:project_member_or_admin",
        description="Create volume. This API is a proxy call to the Volume service.",
        operations=[
            {"method": "POST", "path": "/os-volumes"},
        ],
        scope_types=["project"],
        deprecated_rule=policy.DeprecatedRule(
            DEPRECATED_RULE,
            "rule:admin_or_owner",
            deprecated_reason="Nova API policies are introducing new default roles",
            deprecated_since="22.0.0",
        ),
    ),
]


class VolumePolicy:
    """A private oslo.policy Enforcer holding Nova's defaults for os-volumes."""

    def __init__(self, policy_file: str | None = None) -> None:
        conf = cfg.ConfigOpts()
        conf([], project="voltrace", default_config_files=[], default_config_dirs=[])
        # oslo.policy 6 defaults, as Nova runs them: new defaults, scope always enforced.
        self._enforcer = policy.Enforcer(conf, policy_file=policy_file)
        self._enforcer.register_defaults(_DEFAULTS)
        self.policy_file = policy_file
        # Load now, so a broken operator file fails at startup, not per request.
        self._enforcer.load_rules()
        if not policy_file:
            # Nothing on disk to watch: stop oslo.policy searching for policy.yaml on every
            # request (it re-checks files so that operators' edits apply without restart).
            self._enforcer.use_conf = False

    def authorize(self, context: oslo_context.RequestContext) -> None:
        """nova/context.py:RequestContext.can with target {'project_id': context.project_id}."""
        target = {"project_id": context.project_id, "user_id": context.user_id}
        try:
            self._enforcer.authorize(
                CREATE_RULE, target, context, do_raise=True,
                exc=PolicyNotAuthorized, action=CREATE_RULE,
            )
        except policy.InvalidScope as exc:
            denied = PolicyNotAuthorized(action=CREATE_RULE)
            raise NovaFault(403, denied.format_message(), "policy_denied", cause=denied) from exc
        except PolicyNotAuthorized as denied:
            raise NovaFault(403, denied.format_message(), "policy_denied", cause=denied) from denied
