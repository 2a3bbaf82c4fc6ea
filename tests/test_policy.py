"""os_compute_api:os-volumes:create through oslo.policy (spec §3)."""

from __future__ import annotations

import pytest

from tests.conftest import member_headers

DENIED = {
    "forbidden": {
        "code": 403,
        "message": "Policy doesn't allow os_compute_api:os-volumes:create to be performed.",
    }
}


@pytest.mark.parametrize("roles", ["member", "admin", "Member", "reader,member"])
def test_member_or_admin_may_create(nova, roles):
    """Nova's default: member of the project, or admin."""
    assert nova.create({"size": 1}, headers=member_headers(roles=roles)).status == 200


@pytest.mark.parametrize("roles", ["reader", "", "service", "observer"])
def test_other_roles_are_denied(nova, roles):
    """Nova does not expand implied roles: a reader alone is refused."""
    response = nova.create({"size": 1}, headers=member_headers(roles=roles))
    assert response.status == 403
    assert response.json() == DENIED
    assert nova.sim.recorded == []


def test_system_scoped_token_is_denied(nova):
    """scope_types=['project']: a system-scoped admin gets 403."""
    headers = {**member_headers(roles="admin"), "OpenStack-System-Scope": "all"}
    assert nova.create({"size": 1}, headers=headers).status == 403


def test_operator_policy_file_overrides_the_default(start_nova, tmp_path):
    """--policy-file replaces the rule exactly as in Nova."""
    policy = tmp_path / "policy.yaml"
    policy.write_text('"os_compute_api:os-volumes:create": "role:reader"\n')
    nova = start_nova(policy_file=str(policy))
    assert nova.create({"size": 1}, headers=member_headers(roles="reader")).status == 200
    assert nova.create({"size": 1}, headers=member_headers(roles="member")).status == 403


def test_cached_decisions_follow_the_roles(nova):
    """Remembered decisions never leak between callers with different roles or scopes."""
    for _ in range(2):
        assert nova.create({"size": 1}, headers=member_headers(roles="reader")).status == 403
        assert nova.create({"size": 1}, headers=member_headers(roles="member")).status == 200
        system = {**member_headers(roles="member"), "OpenStack-System-Scope": "all"}
        assert nova.create({"size": 1}, headers=system).status == 403
