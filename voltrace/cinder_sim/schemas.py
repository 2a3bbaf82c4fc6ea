"""cinder 29's JSON schemas for the request bodies the simulator accepts (data only).

Copied from cinder/api/schemas/*.py and cinder/api/validation/parameter_types.py;
``validation.py`` checks bodies against them. The ``format`` names are cinder's and are
implemented in ``validation.py`` too.
"""

from __future__ import annotations

from typing import Any

DB_MAX_INT = 0x7FFFFFFF  # cinder.common.constants.DB_MAX_INT

_NULLABLE_NAME = {"type": ["string", "null"], "minLength": 0, "maxLength": 255}
_OPTIONAL_UUID = {"oneOf": [{"type": "null"}, {"type": "string", "format": "uuid"}]}
_METADATA = {
    "type": ["object", "null"],
    "patternProperties": {"^[a-zA-Z0-9-_:. /]{1,255}$": {"type": "string", "maxLength": 255}},
    "additionalProperties": False,
}
_BOOLEAN = {
    "type": ["boolean", "string"],
    "enum": [True, "True", "TRUE", "true", "1", "ON", "On", "on", "YES", "Yes", "yes", "y", "t",
             False, "False", "FALSE", "false", "0", "OFF", "Off", "off", "NO", "No", "no", "n",
             "f"],
}  # fmt: skip

# cinder/api/schemas/volumes.py ``create`` (microversions 3.0 - 3.12).
VOLUME_CREATE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "volume": {
            "type": "object",
            "properties": {
                "name": {"type": ["string", "null"],
                         "format": "name_non_mandatory_remove_white_spaces"},
                "description": {"type": ["string", "null"],
                                "format": "description_non_mandatory_remove_white_spaces"},
                "display_name": {"type": ["string", "null"],
                                 "format": "name_non_mandatory_remove_white_spaces"},
                "display_description": {
                    "type": ["string", "null"],
                    "format": "description_non_mandatory_remove_white_spaces"},
                "volume_type": _NULLABLE_NAME,
                "metadata": _METADATA,
                "snapshot_id": _OPTIONAL_UUID,
                "source_volid": _OPTIONAL_UUID,
                "consistencygroup_id": _OPTIONAL_UUID,
                "size": {"type": ["integer", "string", "null"], "pattern": "^[0-9]+$",
                         "minimum": 1, "maximum": DB_MAX_INT},
                "availability_zone": {"type": ["string", "null"], "minLength": 1,
                                      "maxLength": 255},
                "multiattach": {"oneOf": [{"type": "null"}, _BOOLEAN]},
                "image_id": {"type": ["string", "null"], "minLength": 0, "maxLength": 255},
                "imageRef": {"type": ["string", "null"], "minLength": 0, "maxLength": 255},
            },
            "additionalProperties": True,
        },
        "OS-SCH-HNT:scheduler_hints": {"type": ["object", "null"]},
    },
    "required": ["volume"],
    "additionalProperties": False,
}  # fmt: skip

# cinder/api/schemas/snapshots.py ``create`` (the description pattern is left out).
SNAPSHOT_CREATE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "snapshot": {
            "type": "object",
            "properties": {
                "name": _NULLABLE_NAME,
                "display_name": _NULLABLE_NAME,
                "description": {"type": ["string", "null"], "minLength": 0, "maxLength": 255},
                "volume_id": {"oneOf": [{"type": "string", "format": "uuid"},
                                        {"type": "null"}]},
                "force": _BOOLEAN,
                "metadata": _METADATA,
            },
            "required": ["volume_id"],
            "additionalProperties": False,
        },
    },
    "required": ["snapshot"],
    "additionalProperties": False,
}  # fmt: skip

# cinder/api/schemas/quotas.py ``update``; the key check is done in code (it needs the
# configured volume types, see Quotas.check_changes).
QUOTA_UPDATE: dict[str, Any] = {
    "type": "object",
    "properties": {"quota_set": {"type": "object", "minProperties": 1}},
    "required": ["quota_set"],
    "additionalProperties": False,
}
