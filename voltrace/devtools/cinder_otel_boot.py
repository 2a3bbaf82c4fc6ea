"""Runs inside cinder's services, never in voltrace: W3C-native tracing without OSProfiler.

``python cinder_otel_boot.py {api,scheduler,volume} --config-file cinder.conf`` imports
``cinder.cmd.<service>`` first (it monkey-patches eventlet at import time, so the span
processor's thread created afterwards is green like everything else), then installs an
OpenTelemetry SDK exporting OTLP/HTTP (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_SERVICE_NAME``
from the environment), instruments oslo.messaging and taskflow (PyPI
``opentelemetry-instrumentation-oslo-messaging`` / ``-taskflow`` 0.13.x), and runs the
service's own ``main()``.

cinder-api has no W3C instrumentation of its own: ``wsgi_filter_factory`` is a paste
filter (put first in the API pipeline) that opens the SERVER span from the caller's
``traceparent``, so the casts the API sends carry the caller's trace.
"""

import importlib
import sys


def _install_sdk():
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.oslo_messaging import OsloMessagingInstrumentor
    from opentelemetry.instrumentation.taskflow import TaskflowInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create())  # OTEL_SERVICE_NAME names it
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    OsloMessagingInstrumentor().instrument()
    TaskflowInstrumentor().instrument()


def wsgi_filter_factory(global_conf, **local_conf):
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware


def main():
    service, args = sys.argv[1], sys.argv[2:]
    command = importlib.import_module(f"cinder.cmd.{service}")
    _install_sdk()
    sys.argv = [f"cinder-{service}", *args]
    return command.main()


if __name__ == "__main__":
    sys.exit(main())
