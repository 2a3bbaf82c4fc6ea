"""The request body schema and Nova's way of validating it.

Mirrors nova/api/openstack/compute/schemas/volumes.py:create and
nova/api/validation/validators.py:_SchemaValidator.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import jsonschema.exceptions

from voltrace.errors import NovaException, NovaFault

CREATE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "volume": {
            "type": "object",
            "properties": {
                "volume_type": {"type": "string"},
                "metadata": {"type": "object", "properties": {}, "additionalProperties": True},
                "snapshot_id": {"type": "string"},
                "size": {"type": ["integer", "string"], "pattern": "^[0-9]+$", "minimum": 1},
                "availability_zone": {"type": "string"},
                "display_name": {"type": "string"},
                "display_description": {"type": "string"},
            },
            "required": ["size"],
            "additionalProperties": False,
        },
    },
    "required": ["volume"],
    "additionalProperties": False,
}


def create_schema(*, size_from_snapshot: bool = False) -> dict[str, Any]:
    """Nova 34's schema, or the seed's older one where ``size`` is optional."""
    schema = copy.deepcopy(CREATE)
    if size_from_snapshot:
        schema["properties"]["volume"]["required"] = []
    return schema


def _number_from_str(instance: Any) -> int | float | None:
    try:
        return int(instance)
    except (ValueError, TypeError):
        try:
            return float(instance)
        except (ValueError, TypeError):
            return None


_draft = jsonschema.Draft202012Validator


def _validate_minimum(validator, minimum, instance, schema):
    # Nova compares strings after int()/float(), so "0" fails and the message shows 0.
    number = _number_from_str(instance)
    if number is None:
        return
    yield from _draft.VALIDATORS["minimum"](validator, minimum, number, schema)


def _validate_maximum(validator, maximum, instance, schema):
    number = _number_from_str(instance)
    if number is None:
        return
    yield from _draft.VALIDATORS["maximum"](validator, maximum, number, schema)


_NovaValidator = jsonschema.validators.extend(
    _draft, {"minimum": _validate_minimum, "maximum": _validate_maximum}
)


class SchemaValidationError(NovaException):
    """nova/exception.py:ValidationError, what nova's _SchemaValidator raises: its text is
    the message the client gets (cheap and safe to print, unlike jsonschema's own error,
    whose str() pretty-prints the whole instance however deep it is)."""

    msg_fmt = "%(detail)s"
    nova_class = "nova.exception.ValidationError"


class BodyValidator:
    """nova/api/validation/validators.py:_SchemaValidator.validate."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self._validator = _NovaValidator(schema, format_checker=jsonschema.FormatChecker())

    def validate(self, body: Any) -> None:
        try:
            # jsonschema's Validator.validate (what nova calls) raises the first error
            # iter_errors yields and looks no further: not best_match. Stopping there is
            # also what keeps size=inf a type error (minimum would int() it).
            error = next(iter(self._validator.iter_errors(body)), None)
        except TypeError as exc:
            raise NovaFault(
                400, str(exc), "schema_invalid", cause=SchemaValidationError(detail=str(exc))
            ) from exc
        if error is None:
            return
        if len(error.path) > 0:
            detail = (
                f"Invalid input for field/attribute {error.path.pop()}. "
                f"Value: {error.instance}. {error.message}"
            )
        else:
            detail = error.message
        cause = SchemaValidationError(detail=detail)
        cause.__cause__ = error
        raise NovaFault(400, detail, "schema_invalid", cause=cause)
