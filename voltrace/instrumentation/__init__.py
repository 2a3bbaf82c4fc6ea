"""voltrace's stage spans, logs and metrics inside the real OpenStack services.

``voltrace.instrumentation.nova``: nova-api's ``POST /v2.1/os-volumes`` (docs/nova-api.md).
"""
