"""The request body schema and Nova's message format (spec §2), over real HTTP."""

from __future__ import annotations

import json

import pytest

from tests.conftest import member_headers

INVALID = [
    (
        {"volume": {"size": 0}},
        "Invalid input for field/attribute size. Value: 0. 0 is less than the minimum of 1",
    ),
    (
        {"volume": {"size": "0"}},
        "Invalid input for field/attribute size. Value: 0. 0 is less than the minimum of 1",
    ),
    (
        {"volume": {"size": "#$%"}},
        "Invalid input for field/attribute size. Value: #$%. '#$%' does not match '^[0-9]+$'",
    ),
    (
        {"volume": {"size": ""}},
        "Invalid input for field/attribute size. Value: . '' does not match '^[0-9]+$'",
    ),
    (
        {"volume": {"size": 1.5}},
        "Invalid input for field/attribute size. "
        "Value: 1.5. 1.5 is not of type 'integer', 'string'",
    ),
    (
        {"volume": {"size": True}},
        "Invalid input for field/attribute size. "
        "Value: True. True is not of type 'integer', 'string'",
    ),
    (
        {"volume": {"size": None}},
        "Invalid input for field/attribute size. "
        "Value: None. None is not of type 'integer', 'string'",
    ),
    (
        {"volume": {"display_name": "x"}},
        "Invalid input for field/attribute volume. Value: {'display_name': 'x'}. "
        "'size' is a required property",
    ),
    (
        {"volume": {"size": 1, "foo": "bar"}},
        "Invalid input for field/attribute volume. Value: {'size': 1, 'foo': 'bar'}. "
        "Additional properties are not allowed ('foo' was unexpected)",
    ),
    ({}, "'volume' is a required property"),
    (
        {"volume": {"size": 1}, "extra": 1},
        "Additional properties are not allowed ('extra' was unexpected)",
    ),
    ([{"size": 1}], "[{'size': 1}] is not of type 'object'"),
    (
        {"volume": {"size": 1, "metadata": "x"}},
        "Invalid input for field/attribute metadata. Value: x. 'x' is not of type 'object'",
    ),
    (
        {"volume": {"size": 1, "display_name": 1}},
        "Invalid input for field/attribute display_name. Value: 1. 1 is not of type 'string'",
    ),
    # best_match picks one error among several:
    (
        {"volume": {"display_name": "x", "foo": 1}},
        "Invalid input for field/attribute volume. Value: {'display_name': 'x', 'foo': 1}. "
        "'size' is a required property",
    ),
    (
        {"volume": {"size": 0, "display_name": 1}},
        "Invalid input for field/attribute size. Value: 0. 0 is less than the minimum of 1",
    ),
]


@pytest.mark.parametrize("body, message", INVALID, ids=[m[:40] for _, m in INVALID])
def test_invalid_bodies_are_400_with_novas_message(nova, body, message):
    """Each invalid body gets Nova's one best-match message, and nothing reaches Cinder."""
    response = nova.create(raw_body=json.dumps(body).encode())
    assert response.status == 400
    assert response.json() == {"badRequest": {"code": 400, "message": message}}
    assert response.header("Content-Type") == "application/json; charset=UTF-8"
    assert nova.sim.recorded == []


@pytest.mark.parametrize("size", [1, "1", "01", 1.0, 2])
def test_size_goes_to_cinder_exactly_as_given(nova, size):
    """Nova passes size through untouched: "01" stays "01", 1.0 stays 1.0.

    (Cinder 29 itself refuses "01" and 1.0; what matters here is what Nova sent.)
    """
    nova.create({"size": size})
    sent = nova.sim.recorded[0].json()["volume"]["size"]
    assert sent == size and type(sent) is type(size)


def test_unchecked_fields_pass_through(nova):
    """Nova checks no lengths, no UUID format and no metadata value types."""
    headers = member_headers()
    volume = {
        "size": 1,
        "display_description": "d" * 300,
        "availability_zone": "nova",
        "metadata": {"k": 1, "n": None},
    }
    nova.create(volume, headers=headers)
    sent = nova.sim.recorded[0].json()["volume"]
    assert sent["description"] == "d" * 300
    assert sent["metadata"] == {"k": 1, "n": None}


def test_policy_runs_after_the_schema(nova):
    """A reader with an invalid body gets the schema's 400, not the policy's 403."""
    headers = member_headers(roles="reader")
    assert nova.create({"size": 0}, headers=headers).status == 400
    assert nova.create({"size": 1}, headers=headers).status == 403
