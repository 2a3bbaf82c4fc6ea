"""Per failure class: the facts in its error message, a few words on it, and the next step.

``semconv.FAILURES`` holds each class's fixed knowledge (stage, summary, generic next
step). This module holds what depends on the one create being explained: the quota
and numbers Cinder named, the endpoint and attempts, the schema field, the snapshot,
with this request's project, user and ids filled into the commands. One function per
class, registered next to its name (``_DESCRIBE`` and ``_ADVISE``); a class without one
gets the table's generic text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from voltrace.explain.model import Advice, Diagnosis
from voltrace.semconv import FAILURES

# ---------------------------------------------------------------------------
# Facts read out of error messages: the same text is in the span and the log.
# ---------------------------------------------------------------------------

_QUOTA_MESSAGES = (
    # cinder VolumeSizeExceedsAvailableQuota
    re.compile(
        r"exceeds allowed (?P<quota>[\w.-]+) quota\. Requested (?P<requested>\d+)G, "
        r"quota is (?P<limit>-?\d+)G and (?P<used>\d+)G has been consumed"
    ),
    # cinder VolumeLimitExceeded
    re.compile(
        r"Maximum number of volumes allowed \((?P<limit>\d+)\) exceeded "
        r"for quota '(?P<quota>[^']+)'"
    ),
    # cinder VolumeSizeExceedsLimit
    re.compile(
        r"Requested volume size (?P<requested>\d+)G is larger than maximum allowed "
        r"limit (?P<limit>\d+)G"
    ),
)
_CONNECT_URL = re.compile(r"(?:Unable to establish connection to|Request to) (?P<url>\S+?):? ")
_CONNECT_REASON = re.compile(r"\[Errno -?\d+\] (?P<reason>[^\"')]+)|(?P<timeout>timed out)")
_SNAPSHOT_ID = re.compile(r"Snapshot (?P<id>\S+) could not be found")
_VOLUME_TYPE = re.compile(r"Volume type (?:with name )?(?P<name>\S+) could not be found")
_CINDER_STATUS = re.compile(r"\(HTTP (?P<status>\d{3})\)")
# nova/api/validation/validators.py: "Invalid input for field/attribute size. Value: 0. ..."
_SCHEMA_FIELD = re.compile(r"Invalid input for field/attribute (?P<field>[^\s.]+)\. ")
_SCHEMA_UNEXPECTED = re.compile(r"\((?P<keys>'[^)]*') (?:was|were) unexpected\)")
_SCHEMA_REQUIRED = re.compile(r"'(?P<field>[^']+)' is a required property")

# cinder's [DEFAULT] project_id_regex: URLs with other project ids match no route (404).
_CINDER_PROJECT_ID = re.compile(r"^[0-9a-f\-]+$")

# The schema field the parse stage names, when its fault details carry it.
SCHEMA_FIELD_DETAIL = "schema.field"


def message_details(failure_class: str | None, message: str | None) -> dict[str, Any]:
    """What an error message says beyond its class (which quota, which endpoint...)."""
    details: dict[str, Any] = {}
    text = message or ""
    if failure_class == "over_quota":
        for pattern in _QUOTA_MESSAGES:
            match = pattern.search(text)
            if match:
                found = match.groupdict()
                details["quota"] = found.get("quota") or "per_volume_gigabytes"
                details.update(
                    {k: int(v) for k, v in found.items() if k != "quota" and v is not None}
                )
                break
    elif failure_class == "cinder_unreachable":
        match = _CONNECT_URL.search(text)
        if match:
            details["endpoint"] = match.group("url")
        reason = _CONNECT_REASON.search(text)
        if reason:
            details["reason"] = (reason.group("reason") or reason.group("timeout")).strip()
    elif failure_class == "snapshot_not_found":
        match = _SNAPSHOT_ID.search(text)
        if match:
            details["snapshot_id"] = match.group("id")
    elif failure_class == "cinder_not_found":
        match = _VOLUME_TYPE.search(text)
        if match:
            details["volume_type"] = match.group("name")
    elif failure_class == "schema_invalid":
        details.update(schema_details(text))
    status = _CINDER_STATUS.search(text)
    if status and failure_class and failure_class.startswith("cinder_"):
        details["cinder_status"] = int(status.group("status"))
    return details


def schema_details(message: str) -> dict[str, Any]:
    """The field Nova's schema message names, and the keys it did not expect."""
    details: dict[str, Any] = {}
    unexpected = _SCHEMA_UNEXPECTED.search(message)
    if unexpected:
        details["unexpected"] = re.findall(r"'([^']*)'", unexpected.group("keys"))
    required = _SCHEMA_REQUIRED.search(message)
    field = _SCHEMA_FIELD.search(message)
    if required and (field is None or unexpected is None):
        details["field"] = required.group("field")
        details["missing"] = True
    elif field:
        details["field"] = field.group("field")
    return details


def first_line(text: str, limit: int = 120) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


# ---------------------------------------------------------------------------
# A few words on the failure
# ---------------------------------------------------------------------------


def _describe_over_quota(d: Diagnosis) -> str | None:
    facts = d.details
    if "quota" not in facts:
        return None
    numbers = []
    if "requested" in facts:
        numbers.append(f"{facts['requested']}G asked")
    if "limit" in facts:
        unit = "" if str(facts["quota"]).startswith("volumes") else "G"
        numbers.append(f"limit {facts['limit']}{unit}")
    if "used" in facts:
        numbers.append(f"{facts['used']}G used")
    extra = f" ({', '.join(numbers)})" if numbers else ""
    return f"Cinder quota '{facts['quota']}' exceeded{extra}"


def _describe_unreachable(d: Diagnosis) -> str | None:
    facts = d.details
    target = facts.get("endpoint", "cinder-api")
    timeouts = facts.get("read_timeouts")
    if timeouts:
        accepted = facts.get("cinder_accepted")
        seen = f"; Cinder's spans show {accepted} accepted" if accepted else ""
        return (
            f"Cinder did not answer in time: {timeouts} POST(s) to {target} ended in a "
            f"read timeout{seen}"
        )
    attempts = f" after {facts['attempts']} attempts" if "attempts" in facts else ""
    reason = f" ({facts['reason']})" if "reason" in facts else ""
    return f"no connection to {target}{attempts}{reason}"


def _describe_snapshot(d: Diagnosis) -> str | None:
    snapshot = d.details.get("snapshot_id")
    return f"Cinder has no snapshot {snapshot}" if snapshot else None


def _describe_cinder_not_found(d: Diagnosis) -> str | None:
    volume_type = d.details.get("volume_type")
    if volume_type:
        return f"Cinder has no volume type '{volume_type}'"
    if d.project_id and not _CINDER_PROJECT_ID.match(d.project_id):
        return f"Cinder routes no URL for project id '{d.project_id}' (not hex)"
    return None


def _describe_server_error(d: Diagnosis) -> str | None:
    status = d.details.get("cinder_status")
    return f"Cinder answered {status}" if status else None


def _describe_message(d: Diagnosis) -> str | None:
    return first_line(d.error_message) if d.error_message else None


_DESCRIBE: dict[str, Callable[[Diagnosis], str | None]] = {
    "over_quota": _describe_over_quota,
    "cinder_unreachable": _describe_unreachable,
    "snapshot_not_found": _describe_snapshot,
    "cinder_not_found": _describe_cinder_not_found,
    "cinder_server_error": _describe_server_error,
    "schema_invalid": _describe_message,
    "cinder_bad_request": _describe_message,
}


def describe(d: Diagnosis) -> str:
    """A few words on this failure, with its own numbers."""
    special = _DESCRIBE.get(d.failure_class or "")
    said = special(d) if special is not None else None
    if said:
        return said
    return d.summary or (first_line(d.error_message) if d.error_message else "unknown failure")


# ---------------------------------------------------------------------------
# The next step
# ---------------------------------------------------------------------------

_COMMAND_WORDS = ("openstack ", "cinder ", "curl ", "grep ", "journalctl ", "nova ")


def split_commands(text: str) -> Advice:
    """A table text like ``Check X: openstack a; cinder b`` as prose plus its commands."""
    prose, colon, rest = text.partition(": ")
    if colon:
        parts = [p.strip().rstrip(".") for p in rest.split(";")]
        if parts and all(p.startswith(_COMMAND_WORDS) for p in parts):
            return Advice(prose + ":", parts)
    return Advice(text)


def _advise_over_quota(d: Diagnosis) -> Advice | None:
    facts = d.details
    project = d.project_id or "PROJECT"
    quota = facts.get("quota")
    checks = [f"openstack quota show --volume {project}", f"cinder quota-usage {project}"]
    if quota == "per_volume_gigabytes":
        return Advice(
            f"One volume may be at most {facts.get('limit', 'N')}G in project {project} "
            "(per_volume_gigabytes). Ask for less, or raise it; check:",
            [f"cinder quota-update --per-volume-gigabytes N {project}", *checks],
        )
    if quota:
        kind, _, volume_type = str(quota).partition("_")
        option = f"--{kind} N" + (f" --volume-type {volume_type}" if volume_type else "")
        return Advice(
            f"Project {project} is out of its '{quota}' volume quota. Check it, then delete "
            "unused volumes, ask for less, or raise it:",
            [*checks, f"openstack quota set {option} {project}"],
        )
    generic = FAILURES["over_quota"].next_step
    return Advice(f"{generic} (Cinder said: {first_line(d.error_message or '')})")


def _advise_unreachable(d: Diagnosis) -> Advice | None:
    facts = d.details
    if facts.get("read_timeouts"):
        return _advise_read_timeouts(d)
    endpoint = facts.get("endpoint")
    parts = urlsplit(str(endpoint)) if endpoint else None
    base = f"{parts.scheme}://{parts.netloc}/" if parts and parts.netloc else "ENDPOINT"
    tried = f"nova-api tried {endpoint}" if endpoint else "nova-api could not reach Cinder"
    if "attempts" in facts:
        retries = facts.get("connect_retries")
        budget = f", [cinder] http_retries={retries}" if retries is not None else ""
        tried += f" {facts['attempts']} times (1 + {facts['attempts'] - 1} retries{budget})"
    elif facts.get("connect_retries") is not None:
        tried += f" with [cinder] http_retries={facts['connect_retries']}"
    reason = f" and got '{facts['reason']}'" if "reason" in facts else ""
    return Advice(
        f"{tried}{reason}. Check cinder-api is up and registered where nova looks "
        "(from the nova-api host):",
        ["openstack endpoint list --service volumev3", f"curl -sS {base}"],
    )


def _advise_read_timeouts(d: Diagnosis) -> Advice:
    """A read timeout made keystoneauth send the create again: volumes may exist."""
    facts = d.details
    sent = int(facts.get("posts") or facts["read_timeouts"])
    project = d.project_id or "PROJECT"
    accepted = facts.get("cinder_accepted")
    proof = (
        f" Cinder's own spans show it accepted {accepted} of them"
        f" ({', '.join(facts.get('cinder_accepted_ids', []))})."
        if accepted
        else ""
    )
    timeout = facts.get("timeout_s")
    limit = f" (read timeout {timeout:g} s)" if isinstance(timeout, int | float) else ""
    commands = [f"openstack volume list --project {project} --long"]
    name = facts.get("volume_name")
    if name:
        commands.insert(0, f"openstack volume list --project {project} --name {name}")
    ids = d.global_request_id or d.request_id
    if ids:
        commands.append(f"grep {ids} /var/log/cinder/cinder-api.log")
    return Advice(
        f"The create was sent {sent} times; Cinder may hold up to {sent} volumes.{proof} "
        f"Each POST got no answer in time{limit}, and keystoneauth retried it as a connection "
        "failure, as Nova does. Before the user retries, find the volumes these POSTs made "
        "(and delete the extras), then see why cinder-api is slow (its log, its workers, "
        "its database):",
        commands,
    )


def _advise_snapshot(d: Diagnosis) -> Advice | None:
    snapshot = d.details.get("snapshot_id")
    if not snapshot:
        return None
    project = d.project_id or "PROJECT"
    return Advice(
        f"Check the snapshot exists and belongs to project {project}:",
        [f"openstack volume snapshot show {snapshot}"],
    )


def _advise_policy(d: Diagnosis) -> Advice | None:
    user, project = d.user_id or "USER", d.project_id or "PROJECT"
    return Advice(
        f"User {user} lacks a role os_compute_api:os-volumes:create accepts on "
        f"project {project} (member or admin):",
        [f"openstack role assignment list --user {user} --project {project} --names"],
    )


def _advise_cinder_not_found(d: Diagnosis) -> Advice | None:
    volume_type = d.details.get("volume_type")
    if not volume_type:
        if d.project_id and not _CINDER_PROJECT_ID.match(d.project_id):
            return Advice(
                f"Cinder found no route for project '{d.project_id}': cinder-api "
                "routes only project ids matching [DEFAULT] project_id_regex (hex "
                "digits and dashes, as keystone makes them), so this is the URL, "
                "not the volume. Use the project's real (keystone) id:",
                ["openstack project show PROJECT -f value -c id"],
            )
        return None
    return Advice(
        f"Cinder has no volume type '{volume_type}': ask for an existing type, or create it:",
        ["openstack volume type list", f"openstack volume type create {volume_type}"],
    )


def _advise_cinder_log(d: Diagnosis) -> Advice | None:
    if not d.cinder_request_id:
        return None
    return Advice(
        "Cinder's own log has the traceback under its request id:",
        [
            f"grep {d.cinder_request_id} /var/log/cinder/cinder-api.log",
            f"journalctl -u cinder-api | grep {d.cinder_request_id}",
        ],
    )


# What each field of Nova's os-volumes schema accepts.
_SCHEMA_FIELDS = {
    "size": "an integer of at least 1 (GB), or digits as a string",
    "volume_type": "a string: the name or id of a volume type",
    "availability_zone": "a string",
    "snapshot_id": "a string: the id of a snapshot",
    "display_name": "a string",
    "display_description": "a string",
    "metadata": "an object of string keys and values",
    "volume": "an object with size and, optionally, volume_type, metadata, snapshot_id, "
    "availability_zone, display_name, display_description",
}


def _advise_schema(d: Diagnosis) -> Advice | None:
    field = d.details.get("field")
    unexpected = d.details.get("unexpected")
    said = first_line(d.error_message or "", 200)
    if unexpected:
        keys = ", ".join(f"'{k}'" for k in unexpected)
        return Advice(
            f"Remove {keys} from the request's {field or 'volume'}: Nova's schema "
            f"allows no other keys there ({_SCHEMA_FIELDS.get('volume')}). "
            f"Nova said: {said}"
        )
    if field and d.details.get("missing"):
        return Advice(
            f"Add '{field}' to the request body: Nova's schema requires it. Nova said: {said}"
        )
    if field:
        wants = _SCHEMA_FIELDS.get(str(field))
        accepts = f" It must be {wants}." if wants else ""
        return Advice(f"Fix field '{field}' of the request body.{accepts} Nova said: {said}")
    return Advice(f"{FAILURES['schema_invalid'].next_step} The message: {said}")


def _advise_with_message(d: Diagnosis) -> Advice | None:
    if not d.error_message:
        return None
    failure = FAILURES.get(d.failure_class or "")
    generic = failure.next_step if failure else ""
    return Advice(f"{generic} The message: {first_line(d.error_message, 200)}")


def _advise_internal(d: Diagnosis) -> Advice | None:
    if not d.request_id:
        return None
    return Advice(
        "This is a bug or a misconfiguration; nova-api's log has the traceback:",
        [f"grep {d.request_id} /var/log/nova/nova-api.log"],
    )


_ADVISE: dict[str, Callable[[Diagnosis], Advice | None]] = {
    "over_quota": _advise_over_quota,
    "cinder_unreachable": _advise_unreachable,
    "snapshot_not_found": _advise_snapshot,
    "policy_denied": _advise_policy,
    "cinder_not_found": _advise_cinder_not_found,
    "cinder_server_error": _advise_cinder_log,
    "cinder_bad_response": _advise_cinder_log,
    "schema_invalid": _advise_schema,
    "cinder_bad_request": _advise_with_message,
    "cinder_forbidden": _advise_with_message,
    "internal_error": _advise_internal,
}

# Checked by the tests: every class advised on is one semconv knows.
ADVISED_CLASSES = frozenset(_ADVISE) | frozenset(_DESCRIBE)


def advise(d: Diagnosis) -> Advice | None:
    """The SRE's next step for this failure, with this request's ids filled in."""
    if not d.failed:
        return None
    special = _ADVISE.get(d.failure_class or "")
    advice = special(d) if special is not None else None
    if advice is not None:
        return advice
    failure = FAILURES.get(d.failure_class or "")
    if failure is None:
        return Advice("Search nova-api's log for the request id.")
    return split_commands(failure.next_step)


def explain(d: Diagnosis) -> Diagnosis:
    """Fill in ``description`` and ``advice`` (for a failure)."""
    if d.failed:
        d.description = describe(d)
        d.advice = advise(d)
    return d
