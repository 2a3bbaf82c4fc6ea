"""Loaded by rotel-agent (--otlp-with-trace-processor): every span received as one JSON line.

The output path comes from ROTEL_SPANS_OUT in the agent's environment. Values are written
as JSON values, arrays and maps included (captured HTTP headers are arrays), so a scan of
this file sees everything the collector received; events and the status message too.
"""

import json
import os

OUT = os.environ["ROTEL_SPANS_OUT"]


def _value(any_value):
    if any_value is None:
        return None
    value = any_value.value
    kind = type(value).__name__
    # rotel hands arrays and maps over as its own containers of AnyValue / KeyValue.
    if kind == "ArrayValue":
        return [_value(item) for item in value]
    if kind == "KeyValueList":
        return {kv.key: _value(kv.value) for kv in value}
    if isinstance(value, bytes):
        return value.hex()
    return value


def _attributes(key_values):
    return {kv.key: _value(kv.value) for kv in key_values}


def process_spans(resource_spans):
    resource = _attributes(resource_spans.resource.attributes) if resource_spans.resource else {}
    lines = []
    for scope_spans in resource_spans.scope_spans:
        for span in scope_spans.spans:
            lines.append(
                json.dumps(
                    {
                        "resource": resource,
                        "name": span.name,
                        "start_time_unix_nano": span.start_time_unix_nano,
                        "end_time_unix_nano": span.end_time_unix_nano,
                        "kind": span.kind,
                        "trace_id": bytes(span.trace_id).hex(),
                        "span_id": bytes(span.span_id).hex(),
                        "parent_span_id": bytes(span.parent_span_id).hex(),
                        "attributes": _attributes(span.attributes),
                        "events": [
                            {
                                "name": event.name,
                                "time_unix_nano": event.time_unix_nano,
                                "attributes": _attributes(event.attributes),
                            }
                            for event in span.events
                        ],
                        "status_code": span.status.code if span.status else 0,
                        "status_message": span.status.message if span.status else "",
                    },
                    default=str,
                )
            )
    with open(OUT, "a", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))
    return resource_spans
