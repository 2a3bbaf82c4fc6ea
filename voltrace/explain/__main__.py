"""``python -m voltrace.explain``: the same as ``voltrace explain``."""

from voltrace.explain.cli import main

raise SystemExit(main())
