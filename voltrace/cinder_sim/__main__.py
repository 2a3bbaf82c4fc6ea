"""``python -m voltrace.cinder_sim``: serve a simulator until SIGTERM or SIGINT."""

import sys

from voltrace.cinder_sim.cli import main

sys.exit(main())
