"""Request body validation with cinder's wording (cinder/api/validation/*.py).

:func:`validate` checks a decoded body against one of the schemas in ``schemas.py`` and
raises cinder's 400 for the first error. Also here: the small oslo helpers cinder's
checks use (``is_uuid_like``, ``bool_from_string``, ...).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jsonschema

from voltrace.cinder_sim import schemas
from voltrace.cinder_sim.errors import INTERNAL_ERROR, ApiError, invalid_input

# oslo_utils.strutils TRUE_STRINGS / FALSE_STRINGS
_TRUE_STRINGS = ("1", "t", "true", "on", "y", "yes")
_FALSE_STRINGS = ("0", "f", "false", "off", "n", "no")


def is_uuid_like(value: Any) -> bool:
    """oslo_utils.uuidutils.is_uuid_like: any spelling ``uuid.UUID`` accepts."""
    try:
        canonical = str(value).replace("urn:", "").replace("uuid:", "").strip("{}")
        return str(uuid.UUID(value)).replace("-", "") == canonical.replace("-", "").lower()
    except (TypeError, ValueError, AttributeError):
        return False


def is_valid_boolstr(value: Any) -> bool:
    return str(value).strip().lower() in _TRUE_STRINGS + _FALSE_STRINGS


def bool_from_string(value: Any) -> bool:
    return str(value).strip().lower() in _TRUE_STRINGS


def is_int_like(value: Any) -> bool:
    try:
        return str(int(value)) == str(value)
    except (TypeError, ValueError):
        return False


def parse_json_body(raw: bytes) -> Any:
    if not raw:
        # cinder 29's schema decorator reads kwargs['body'] before anything checks it is
        # there; the KeyError surfaces as an unexplained 500. Reproduced on purpose.
        raise ApiError(500, INTERNAL_ERROR, "KeyError")
    try:
        return json.loads(raw)
    except ValueError:
        raise ApiError(400, "Malformed request body", "MalformedRequestBody") from None


# ---- cinder's formats and its string-aware bounds ---------------------------------------


def _check_name_length(value: Any, entity: str) -> bool:
    """cinder's ``*_non_mandatory_remove_white_spaces`` formats: <= 255 after strip."""
    if not isinstance(value, str) or not value:
        return True
    length = len(value.strip())
    if length > 255:
        # Raised inside the format checker, so it escapes jsonschema as InvalidInput.
        raise invalid_input(f"{entity} has {length} characters, more than 255.")
    return True


_FORMATS: dict[str, Callable[[Any], bool]] = {
    "uuid": is_uuid_like,
    "name_non_mandatory_remove_white_spaces": lambda v: _check_name_length(v, "name"),
    "description_non_mandatory_remove_white_spaces": (
        lambda v: _check_name_length(v, "description")
    ),
}


def _number_from_str(value: Any) -> float | None:
    """How cinder's minimum/maximum read a value: numeric strings count (``"0"`` < 1)."""
    try:
        return int(value)
    except (ValueError, TypeError):
        try:
            return float(value)
        except (ValueError, TypeError):
            return None


def _string_aware(keyword: str) -> Callable[..., Iterator[jsonschema.ValidationError]]:
    original = jsonschema.Draft4Validator.VALIDATORS[keyword]

    def check(validator: Any, bound: Any, instance: Any, schema: Any) -> Iterator[Any]:
        number = _number_from_str(instance)
        if number is not None:
            yield from original(validator, bound, number, schema)

    return check


_FORMAT_CHECKER = jsonschema.FormatChecker(formats=())
for _name, _check in _FORMATS.items():
    _FORMAT_CHECKER.checks(_name)(_check)
_CinderValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator,
    {"minimum": _string_aware("minimum"), "maximum": _string_aware("maximum")},
)


class Schema:
    """One body schema, compiled once, validated by jsonschema as cinder does."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self._validator = _CinderValidator(schema, format_checker=_FORMAT_CHECKER)

    def validate(self, body: Any) -> None:
        """Validate like cinder's ``_SchemaValidator``: first error, cinder's wording."""
        try:
            self._validator.validate(body)
        except jsonschema.ValidationError as exc:
            if len(exc.path) > 0:
                detail = (
                    f"Invalid input for field/attribute {exc.path.pop()}. "
                    f"Value: {exc.instance}. {exc.message}"
                )
            else:
                detail = exc.message
            raise ApiError(400, detail, "ValidationError") from None


VOLUME_CREATE = Schema(schemas.VOLUME_CREATE)
SNAPSHOT_CREATE = Schema(schemas.SNAPSHOT_CREATE)
QUOTA_UPDATE = Schema(schemas.QUOTA_UPDATE)
