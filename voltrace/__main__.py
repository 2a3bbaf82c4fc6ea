"""``python -m voltrace``: the same as the ``voltrace`` command."""

from voltrace.cli import main

raise SystemExit(main())
