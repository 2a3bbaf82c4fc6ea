"""Cinder's user messages: what ``GET /v3/{p}/messages`` shows after an asynchronous failure.

cinder 29 records a message when a create fails past the API (``cinder/message/api.py``):
``event_id`` is ``VOLUME_<resource type>_<action id>_<detail id>``, ``user_message`` is
``"<action text>:<detail text>"`` (``MessagesController._build_user_message``), and
``request_id`` is the id of the request that started the work: the create's. The texts
below are ``cinder/message/message_field.py``'s, for the actions and details a volume
create can meet.
"""

from __future__ import annotations

import builtins
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

# (id, text) pairs, as in message_field.Action / message_field.Detail.
SCHEDULE_ALLOCATE_VOLUME = ("001", "schedule allocate volume")
CREATE_VOLUME_FROM_BACKEND = ("008", "create volume from backend storage")
UNKNOWN_ERROR = ("001", "An unknown error occurred.")
NO_BACKEND_AVAILABLE = ("003", "Could not find any available weighted backend.")
DRIVER_FAILED_CREATE = ("012", "Driver failed to create the volume.")

RESOURCE_VOLUME = "VOLUME"
# [DEFAULT] message_ttl: a message is guaranteed to be kept this long.
MESSAGE_TTL = timedelta(seconds=2592000)
# Columns of cinder's messages table: the only keys a 3.5+ filter may use
# (db.api._process_messages_filters answers nothing for any other key).
FILTERABLE = frozenset(
    {
        "id",
        "project_id",
        "request_id",
        "resource_type",
        "resource_uuid",
        "event_id",
        "message_level",
        "detail_id",
        "action_id",
    }
)
# Query keys common.get_pagination_params / get_sort_params take out before filtering.
NOT_FILTERS = frozenset({"limit", "marker", "offset", "sort", "sort_key", "sort_dir"})


@dataclass(frozen=True)
class UserMessage:
    id: str
    project_id: str
    request_id: str
    resource_uuid: str
    action: tuple[str, str]
    detail: tuple[str, str]
    created_at: datetime
    message_level: str = "ERROR"
    resource_type: str = RESOURCE_VOLUME

    @property
    def event_id(self) -> str:
        return f"VOLUME_{self.resource_type}_{self.action[0]}_{self.detail[0]}"

    @property
    def user_message(self) -> str:
        return f"{self.action[1]}:{self.detail[1]}"

    def column(self, name: str) -> str:
        """The value of one of cinder's message columns (see FILTERABLE)."""
        columns = {
            "id": self.id,
            "project_id": self.project_id,
            "request_id": self.request_id,
            "resource_type": self.resource_type,
            "resource_uuid": self.resource_uuid,
            "event_id": self.event_id,
            "message_level": self.message_level,
            "detail_id": self.detail[0],
            "action_id": self.action[0],
        }
        return columns[name]


class MessageStore:
    """Every message, newest first when listed (cinder sorts by created_at, id, descending)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[UserMessage] = []

    def add(self, message: UserMessage) -> None:
        with self._lock:
            self._messages.append(message)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()

    def get(self, message_id: str, project_id: str | None) -> UserMessage | None:
        """One message; ``project_id`` None means an admin, who sees every project's."""
        with self._lock:
            for message in self._messages:
                if message.id == message_id and project_id in (None, message.project_id):
                    return message
        return None

    def list(
        self, project_id: str | None, filters: dict[str, str] | None
    ) -> builtins.list[UserMessage]:
        """``message_get_all``: project-only unless admin, exact-match filters, newest first."""
        with self._lock:
            found = [m for m in self._messages if project_id in (None, m.project_id)]
        if filters:
            if not set(filters) <= FILTERABLE:
                return []
            found = [m for m in found if all(m.column(k) == v for k, v in filters.items())]
        return sorted(found, key=lambda m: (m.created_at, m.id), reverse=True)

    def for_resource(self, resource_uuid: str) -> builtins.list[UserMessage]:
        """A volume's messages, oldest first (what tests and demos read)."""
        with self._lock:
            return [m for m in self._messages if m.resource_uuid == resource_uuid]


def message_view(message: UserMessage, base_url: str, url_project: str) -> dict[str, Any]:
    """``api/v3/views/messages.py`` ``detail``, keys in cinder's order."""
    self_href = f"{base_url}/v3/{url_project}/messages/{message.id}"
    bookmark = f"{base_url}/{url_project}/messages/{message.id}"
    return {
        "id": message.id,
        "event_id": message.event_id,
        "user_message": message.user_message,
        "message_level": message.message_level,
        "created_at": _fmt(message.created_at),
        "guaranteed_until": _fmt(message.created_at + MESSAGE_TTL),
        "request_id": message.request_id,
        "links": [{"rel": "self", "href": self_href}, {"rel": "bookmark", "href": bookmark}],
        "resource_type": message.resource_type,
        "resource_uuid": message.resource_uuid,
    }


def _fmt(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f")
