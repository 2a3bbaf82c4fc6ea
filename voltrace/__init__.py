"""voltrace: Nova's POST /v2.1/os-volumes as a traced pipeline, nova-api to cinder-api.

Start with ``voltrace/stages.py`` (the six stages), then ``pipeline.py`` (the
runner) and ``telemetry/observer.py`` (how spans, logs and metrics wrap it).
"""

__version__ = "0.1.0"
