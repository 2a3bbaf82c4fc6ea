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
        # Decisions by the inputs Nova's default rules read; see authorize().
        self._decisions: dict[tuple, bool] = {}
        # Load now, so a broken operator file fails at startup, not per request.
        self._enforcer.load_rules()
        if not policy_file:
            # Nothing on disk to watch: stop oslo.policy searching for policy.yaml on every
            # request (it re-checks files so that operators' edits apply without restart).
            self._enforcer.use_conf = False

    def authorize(self, context: oslo_context.RequestContext) -> None:
        """nova/context.py:RequestContext.can with target {'project_id': context.project_id}."""
        key = self._decision_key(context)
        if key is not None and key in self._decisions:
            if self._decisions[key]:
                return
            denied = PolicyNotAuthorized(action=CREATE_RULE)
            raise NovaFault(403, denied.format_message(), "policy_denied", cause=denied)
        try:
            self._enforce(context)
        except NovaFault:
            self._remember(key, False)
            raise
        self._remember(key, True)

    def _decision_key(self, context: oslo_context.RequestContext) -> tuple | None:
        """What the default rules depend on, when nothing else can change the answer.

        oslo.policy costs ~0.4 ms a call here (it inspects check signatures each time).
        With no policy file the rules are fixed, and the target is always the caller's
        own project, so the decision is a function of the roles and the token's scope.
        An operator's file may read anything, so then every call goes to oslo.policy.
        """
        if self.policy_file:
            return None
        roles = tuple(sorted({role.lower() for role in context.roles or ()}))
        return (roles, context.system_scope, context.domain_id, context.project_id is None)

    def _remember(self, key: tuple | None, allowed: bool) -> None:
        if key is None:
            return
        if len(self._decisions) >= 1024:  # bounded: role sets are few, but never trusted
            self._decisions.clear()
        self._decisions[key] = allowed

    def _enforce(self, context: oslo_context.RequestContext) -> None:
        target = {"project_id": context.project_id, "user_id": context.user_id}
        try:
            self._enforcer.authorize(
                CREATE_RULE,
                target,
                context,
                do_raise=True,
                exc=PolicyNotAuthorized,
                action=CREATE_RULE,
            )
        except policy.InvalidScope as exc:
            denied = PolicyNotAuthorized(action=CREATE_RULE)
            raise NovaFault(403, denied.format_message(), "policy_denied", cause=denied) from exc
        except PolicyNotAuthorized as denied:
            raise NovaFault(403, denied.format_message(), "policy_denied", cause=denied) from denied
