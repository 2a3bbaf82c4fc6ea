"""Reading traces back: OTLP JSON, Jaeger JSON and SDK spans into one small span model.

``voltrace explain``, ``voltrace demo`` and the benchmarks all work on this model,
whoever wrote the spans::

    reader = TraceReader([Path("traces.jsonl")])   # streamed, several files allowed
    for trace in reader.traces():                   # each trace once, when complete
        ...
    for problem in reader.problems:                 # a truncated line, an unknown shape
        print(problem)

==============  ============================================================
``model.py``    ``Span``, ``Event``, ``Trace`` (walks that cannot loop)
``otlp.py``     OTLP JSON: the project's one reader of it
``jaeger.py``   Jaeger JSON
``sdk.py``      OpenTelemetry SDK spans, read in memory
``files.py``    files and directories, streamed in bounded memory
==============  ============================================================
"""

from voltrace.traces.files import Loaded, TraceFileError, TraceReader, read_trace_file, trace_files
from voltrace.traces.jaeger import spans_from_jaeger_trace
from voltrace.traces.model import Event, Span, Trace, group_traces
from voltrace.traces.otlp import spans_from_otlp
from voltrace.traces.sdk import spans_from_sdk

__all__ = [
    "Event",
    "Loaded",
    "Span",
    "Trace",
    "TraceFileError",
    "TraceReader",
    "group_traces",
    "read_trace_file",
    "spans_from_jaeger_trace",
    "spans_from_otlp",
    "spans_from_sdk",
    "trace_files",
]
