"""Reading trace files, streamed: OTLP JSON lines, Jaeger JSON, one document or many.

Accepted inputs, in any mix over several files:

* OTLP JSON, one ``ExportTraceServiceRequest`` per line (voltrace's ``--traces-file``,
  the OpenTelemetry Collector's file exporter), or one such document;
* Jaeger JSON: ``{"data": [trace, ...]}`` (voltrace's ``--jaeger-file``, a download
  from the Jaeger UI or API), a bare list of traces, one trace, or one trace per line.

Memory stays bounded on big files. The input is read as *chunks* (a line, or one
element of a document's ``data`` / ``resourceSpans`` array, parsed incrementally), and
read twice: the first pass notes the last chunk each trace id appears in, the second
hands each trace on as soon as that chunk has been read, and forgets it. What is held
at any moment is the traces still open, which in a file written as spans end is the
exporter's batching window. (Small inputs are read once.)

A chunk that cannot be read is reported in ``problems`` and skipped; so is a span
that cannot be read; the rest still counts. Nothing in a file can make the reader
loop, recurse without bound or raise anything but :class:`TraceFileError` for a file
that cannot be read at all.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson

from voltrace.traces.jaeger import spans_from_jaeger_trace
from voltrace.traces.model import Span, Trace, TraceGrouper
from voltrace.traces.otlp import SpanError, hex_id, spans_from_otlp, spans_from_resource_spans

# Below this many bytes in all, one pass: the index is not worth a second read.
SINGLE_PASS_BYTES = 8 << 20
# A first line longer than this is one big document, parsed incrementally.
LONG_LINE_CHARS = 1 << 20
_READ_CHARS = 1 << 16
_PROBLEM_TEXT = 160  # of a reason quoting the file, in a problem line


class TraceFileError(Exception):
    """The input cannot be read as traces at all (missing, empty, another format)."""


@dataclass
class Loaded:
    traces: list[Trace]
    problems: list[str]


def read_trace_file(path: str | Path) -> Loaded:
    """Every trace of one file, with the problems met (the whole result in memory)."""
    reader = TraceReader([Path(path)])
    traces = list(reader.traces())
    return Loaded(traces, reader.problems)


@dataclass
class _Chunk:
    where: str  # path:line, for problems
    kind: str  # otlp, otlp-resource, jaeger-trace
    payload: Any


class TraceReader:
    """Traces from several files, streamed (module docstring); problems in ``problems``."""

    def __init__(
        self,
        paths: Sequence[Path],
        *,
        single_pass_bytes: int = SINGLE_PASS_BYTES,
        quiet: Iterable[Path] = (),
    ) -> None:
        self.paths = list(paths)
        # Files found in a directory: one that holds no spans at all is left out silently.
        self.quiet = set(quiet)
        self.problems: list[str] = []
        self.readable = 0  # files that held at least one readable chunk
        self.peak_open = 0  # the most traces held at once (the memory bound, in traces)
        self._single_pass = sum(_size(p) for p in self.paths) <= single_pass_bytes

    def traces(self) -> Iterator[Trace]:
        """Each trace once, as soon as no later chunk can add to it; TraceFileError when no
        file could be read at all."""
        last_chunk = None if self._single_pass else self._index()
        grouper = TraceGrouper()
        read = 0
        first_skip = ""
        for number, chunk in enumerate(self._chunks(report=True)):
            skipped: list[str] = []
            spans = _spans(chunk, skipped)
            read += len(spans)
            if skipped:
                self.problems.append(_skipped_spans(chunk.where, skipped))
                first_skip = first_skip or self.problems[-1]
            seen: set[str] = set()
            for span in spans:
                grouper.add(span)
                seen.add(span.trace_id)
            self.peak_open = max(self.peak_open, len(grouper))
            if last_chunk is not None:
                for trace_id in seen:
                    # A trace the first pass did not see (the file grew) stays open to the end.
                    if last_chunk.get(trace_id, math.inf) <= number:
                        yield grouper.pop(trace_id)
        for trace_id in list(grouper.open_ids()):
            yield grouper.pop(trace_id)
        if not self.readable:
            raise TraceFileError(self._why_nothing())
        if not read and first_skip:
            raise TraceFileError(f"no span could be read; first: {first_skip}")

    def _index(self) -> dict[str, int]:
        """trace id -> the number of the last chunk it appears in (the first pass)."""
        last: dict[str, int] = {}
        for number, chunk in enumerate(self._chunks(report=False)):
            for trace_id in _trace_ids(chunk):
                last[trace_id] = number
        return last

    def _chunks(self, *, report: bool) -> Iterator[_Chunk]:
        problems: list[str] = [] if report else _Discard()
        readable = 0
        fatal: list[str] = []
        for path in self.paths:
            before = len(problems)
            found = False
            try:
                for chunk in _file_chunks(path, problems):
                    found = True
                    yield chunk
            except TraceFileError as exc:
                if path not in self.quiet:
                    fatal.append(str(exc))
                continue
            if found:
                readable += 1
            elif len(problems) > before:
                # Every chunk of the file failed: say so once, with the first reason.
                first = problems[before]
                del problems[before:]
                if path not in self.quiet:
                    fatal.append(f"{path}: no line could be read as spans; first: {first}")
        if report:
            self.readable = readable
            self._fatal = fatal
            self.problems.extend(problems)
            if readable:
                self.problems.extend(fatal)

    def _why_nothing(self) -> str:
        fatal = getattr(self, "_fatal", [])
        if len(fatal) == 1:
            return fatal[0]
        if fatal:
            return "no input could be read as traces: " + "; ".join(fatal)
        return "no input given"


class _Discard(list[str]):
    """A problems list for the first pass: the second pass reports everything once."""

    def append(self, item: str) -> None:
        pass


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _skipped_spans(where: str, reasons: list[str]) -> str:
    first = _clip(reasons[0])
    more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
    return f"{where}: {len(reasons)} span(s) skipped: {first}{more}"


def _clip(text: str) -> str:
    return text if len(text) <= _PROBLEM_TEXT else text[: _PROBLEM_TEXT - 1] + "…"


# ---------------------------------------------------------------------------
# Chunks and their spans
# ---------------------------------------------------------------------------


def _spans(chunk: _Chunk, skipped: list[str]) -> list[Span]:
    if chunk.kind == "otlp":
        return spans_from_otlp(chunk.payload, skipped)
    if chunk.kind == "otlp-resource":
        return spans_from_resource_spans(chunk.payload, skipped)
    return spans_from_jaeger_trace(chunk.payload, skipped)


def _trace_ids(chunk: _Chunk) -> set[str]:
    """The trace ids a chunk holds, read without building its spans."""
    if chunk.kind == "jaeger-trace":
        spans = chunk.payload.get("spans") if isinstance(chunk.payload, dict) else None
        raw = [s.get("traceID") for s in spans or () if isinstance(s, dict)]
        return {i for t in raw if isinstance(t, str) if (i := _id(t.rjust(32, "0")))}
    resources = (
        [chunk.payload]
        if chunk.kind == "otlp-resource"
        else (chunk.payload.get("resourceSpans") if isinstance(chunk.payload, dict) else None)
    )
    ids: set[str] = set()
    for resource in resources if isinstance(resources, list) else ():
        scopes = resource.get("scopeSpans") if isinstance(resource, dict) else None
        for scope in scopes if isinstance(scopes, list) else ():
            spans = scope.get("spans") if isinstance(scope, dict) else None
            for span in spans if isinstance(spans, list) else ():
                trace_id = _id(span.get("traceId")) if isinstance(span, dict) else None
                if trace_id is not None:
                    ids.add(trace_id)
    return ids


def _id(value: Any) -> str | None:
    try:
        return hex_id(value, 16)
    except SpanError:
        return None


def _classify(document: Any, where: str) -> Iterator[_Chunk]:
    """The chunks of one parsed line (or whole document); ValueError says what it is instead."""
    if isinstance(document, dict) and "resourceSpans" in document:
        yield _Chunk(where, "otlp", document)
    elif isinstance(document, dict) and isinstance(document.get("data"), list):
        for trace in document["data"]:
            yield _Chunk(where, "jaeger-trace", trace)
    elif isinstance(document, dict) and "spans" in document:
        yield _Chunk(where, "jaeger-trace", document)
    elif (
        isinstance(document, list)
        and document
        and all(isinstance(t, dict) and "spans" in t for t in document)
    ):
        for trace in document:
            yield _Chunk(where, "jaeger-trace", trace)
    else:
        raise ValueError(describe_other(document))


def describe_other(document: Any) -> str:
    """Why a parsed JSON value is not spans, in words."""
    if is_log_line(document):
        return "this is a log line, not spans (read logs with --logs)"
    if isinstance(document, dict) and ("resourceMetrics" in document or "resourceLogs" in document):
        return "OTLP metrics or logs, not traces"
    if isinstance(document, dict):
        shape: Any = sorted(str(k)[:40] for k in document)[:4]
    else:
        shape = type(document).__name__
    return f"neither OTLP JSON nor Jaeger JSON (found {shape})"


def is_log_line(document: Any) -> bool:
    """A voltrace (structlog JSON) log line: an event name and a request or trace id."""
    return (
        isinstance(document, dict)
        and "event" in document
        and ("request_id" in document or "trace_id" in document)
    )


def loads(text: str) -> Any:
    """One JSON value; ValueError (with Python's message) for anything that is not one.

    orjson first (several times faster); Python's json when orjson refuses, for its
    error message and for what orjson is stricter about (lone surrogates).
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _open(path: Path) -> TextIO:
    try:
        if path.is_dir():
            raise TraceFileError(f"{path} is a directory")
        return open(path, encoding="utf-8", errors="replace")  # the caller closes it
    except OSError as exc:
        raise TraceFileError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _file_chunks(path: Path, problems: list[str]) -> Iterator[_Chunk]:
    with _open(path) as handle:
        first = _first_line(handle)
        if first is None:
            raise TraceFileError(f"{path} is empty: no spans were written to it")
        handle.seek(0)
        if _looks_like_lines(handle, first):
            handle.seek(0)
            yield from _line_chunks(path, handle, problems)
            return
        handle.seek(0)
        produced = False
        try:
            for chunk in _document_chunks(path, handle):
                produced = True
                yield chunk
        except _DocumentError as exc:
            if produced:  # a document cut short: what came before it still counts
                problems.append(f"{path}: the document ends badly, the rest skipped: {exc}")
                return
            handle.seek(0)
            yield from _line_chunks(path, handle, problems)


def _first_line(handle: TextIO) -> str | None:
    while True:
        line = handle.readline(LONG_LINE_CHARS)
        if not line:
            return None
        if line.strip():
            return line


def _looks_like_lines(handle: TextIO, first: str) -> bool:
    """One JSON value per line, rather than one (long or pretty-printed) document?"""
    if len(first) >= LONG_LINE_CHARS and not first.endswith("\n"):
        return False  # one huge line: a whole document, streamed
    try:
        loads(first)
        return True
    except ValueError:
        pass
    handle.readline(LONG_LINE_CHARS)  # the first line again; then is the next one whole?
    second = _first_line(handle)
    if second is None or len(second) >= LONG_LINE_CHARS:
        return False
    try:
        loads(second)
        return True
    except ValueError:
        return False


def _line_chunks(path: Path, handle: TextIO, problems: list[str]) -> Iterator[_Chunk]:
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            document = loads(line)
        except json.JSONDecodeError as exc:
            problems.append(
                f"{where}: not valid JSON, skipped (a truncated write?): "
                f"{exc.msg} (column {exc.colno})"
            )
            continue
        except ValueError as exc:
            problems.append(f"{where}: skipped: {exc}")
            continue
        try:
            yield from _classify(document, where)
        except ValueError as exc:
            problems.append(f"{where}: skipped: {exc}")


# ---------------------------------------------------------------------------
# One big document, parsed incrementally
# ---------------------------------------------------------------------------


class _DocumentError(ValueError):
    pass


_DECODER = json.JSONDecoder()
_WHITESPACE = " \t\r\n"


class _Stream:
    """A JSON document read a piece at a time: whitespace, punctuation and whole values."""

    def __init__(self, handle: TextIO) -> None:
        self.handle = handle
        self.buffer = ""
        self.pos = 0
        self.consumed = 0  # characters dropped from the buffer's front
        self.eof = False

    def _more(self) -> bool:
        if self.eof:
            return False
        # Doubling the read keeps a value split over many reads linear to parse.
        data = self.handle.read(max(_READ_CHARS, len(self.buffer) - self.pos))
        if not data:
            self.eof = True
            return False
        self.consumed += self.pos
        self.buffer = self.buffer[self.pos :] + data
        self.pos = 0
        return True

    def peek(self) -> str:
        """The next character that is not whitespace ("" at the end)."""
        while True:
            while self.pos < len(self.buffer) and self.buffer[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos < len(self.buffer):
                return self.buffer[self.pos]
            if not self._more():
                return ""

    def take(self, char: str) -> None:
        if self.peek() != char:
            found = self.peek() or "the end"
            raise _DocumentError(
                f"expected {char!r} at character {self.consumed + self.pos}, found {found[:1]!r}"
            )
        self.pos += 1

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError as exc:
                # Cut off by the end of what was read so far? Then read on and retry.
                cut = exc.pos >= len(self.buffer) - 1 or exc.msg.startswith("Unterminated")
                if cut and self._more():
                    continue
                raise _DocumentError(f"{exc.msg} at character {self.consumed + exc.pos}") from None
            except RecursionError:
                raise _DocumentError("JSON nested too deeply") from None
            if (
                end == len(self.buffer)
                and not isinstance(value, dict | list | str)
                and self._more()
            ):
                continue  # a number may go on in the next read
            self.pos = end
            return value

    def elements(self) -> Iterator[Any]:
        """The values of the array whose ``[`` comes next."""
        self.take("[")
        if self.peek() == "]":
            self.pos += 1
            return
        while True:
            yield self.value()
            if self.peek() == ",":
                self.pos += 1
                continue
            self.take("]")
            return


_STREAMED = {"data": "jaeger-trace", "resourceSpans": "otlp-resource"}


def _document_chunks(path: Path, handle: TextIO) -> Iterator[_Chunk]:
    stream = _Stream(handle)
    where = str(path)
    first = stream.peek()
    if first == "[":
        for trace in stream.elements():
            if not (isinstance(trace, dict) and "spans" in trace):
                raise _DocumentError(f"a list of {type(trace).__name__}, not of Jaeger traces")
            yield _Chunk(where, "jaeger-trace", trace)
        return
    if first != "{":
        raise _DocumentError("not JSON")
    stream.take("{")
    rest: dict[str, Any] = {}
    streamed = False
    while stream.peek() != "}":
        key = stream.value()
        if not isinstance(key, str):
            raise _DocumentError("an object key that is not text")
        stream.take(":")
        if key in _STREAMED and stream.peek() == "[":
            for element in stream.elements():
                streamed = True
                yield _Chunk(where, _STREAMED[key], element)
        else:
            rest[key] = stream.value()
        if stream.peek() == ",":
            stream.pos += 1
    stream.take("}")
    if not streamed:
        try:
            yield from _classify(rest, where)
        except ValueError as exc:
            raise _DocumentError(str(exc)) from None


def trace_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files named, and the ``.json``/``.jsonl`` files under directories named (sorted)."""
    found: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found.extend(
                sorted(
                    p for p in path.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl")
                )
            )
        else:
            found.append(path)
    return found


__all__ = [
    "Loaded",
    "TraceFileError",
    "TraceReader",
    "describe_other",
    "is_log_line",
    "loads",
    "read_trace_file",
    "trace_files",
]
