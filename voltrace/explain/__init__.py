"""Why did this volume create fail, and where did its time go? (``voltrace explain``)

Reads what voltrace (or an OpenTelemetry Collector, or Jaeger) wrote and says, per
create::

    voltrace explain voltrace-demo/ --failed                   # a directory, every file in it
    voltrace explain jaeger.json --request-id req-3f0c...      # the id from a log or an error
    voltrace explain traces.jsonl --summary                    # an incident: counts, p99, slowest
    voltrace explain traces.jsonl --json                       # one object per create
    voltrace explain traces.jsonl --html report.html           # a self-contained waterfall
    voltrace explain --logs logs.jsonl --request-id req-...    # no trace? the logs suffice
    voltrace explain traces.jsonl /var/log/cinder/             # and Cinder's own logs, past the 200
    voltrace explain --cinder-url URL --volume-id ID --follow  # neither? ask Cinder (OS_TOKEN)

A trace and the logs of the same create give the same diagnosis: the SERVER span's
``voltrace.*`` attributes and the ``request.finished`` log line carry the same outcome,
and the failing stage's span and its ``stage.<name>`` line carry the same error.

The package, in the order a create flows through it:

=======================  ==============================================================
``model.py``             ``Diagnosis`` and its parts (plain data, no spans)
``from_trace.py``        a diagnosis per create from its trace
``from_logs.py``         ... or from voltrace's JSON logs, streamed
``after_answer.py``      what became of the volume after Nova's answer (trace or logs)
``from_cinder_logs.py``  ... or from real Cinder's own oslo.log text (``*.log``)
``from_cinder.py``       ... or from Cinder itself (``--cinder-url``; loads keystoneauth1)
``timing.py``            where the time went, named (network, backoff, inside Cinder)
``advice.py``            per failure class: facts, a few words, the next step
``select.py``            which creates to show
``summary.py``           ``--summary``: many creates at once
``waterfall.py``         the waterfall's rows
``render.py``            terminal text
``html.py``              the HTML report
``cli.py``               the command
=======================  ==============================================================


It imports no OpenStack library: only ``semconv``, ``terminal`` and ``traces``
(``from_cinder`` imports keystoneauth1 inside its functions, when Cinder is asked).

Python use::

    from pathlib import Path
    from voltrace.explain import TraceDiagnoser
    from voltrace.traces import TraceReader

    diagnoser = TraceDiagnoser()
    for trace in TraceReader([Path("traces.jsonl")]).traces():
        for d in diagnoser.diagnose(trace):
            print(d.headline())
"""

from voltrace.explain.advice import advise, describe
from voltrace.explain.from_logs import LogFileError, LogReader, diagnose_logs
from voltrace.explain.from_trace import TraceDiagnoser, diagnose_create, diagnose_traces
from voltrace.explain.model import Advice, Diagnosis, Hop, StageTiming, TimeShare
from voltrace.explain.render import format_text
from voltrace.explain.select import Selection, merge, select

__all__ = [
    "Advice",
    "Diagnosis",
    "Hop",
    "LogFileError",
    "LogReader",
    "Selection",
    "StageTiming",
    "TimeShare",
    "TraceDiagnoser",
    "advise",
    "describe",
    "diagnose_create",
    "diagnose_logs",
    "diagnose_traces",
    "format_text",
    "merge",
    "select",
]
