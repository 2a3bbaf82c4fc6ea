"""``python -m voltrace.cinder_sim``: serve a simulator until SIGTERM or SIGINT."""

import argparse
import sys

import voltrace.cinder_sim
from voltrace.cinder_sim.cli import add_cli_arguments, run_cli

parser = argparse.ArgumentParser(
    prog="cinder-sim", description=(voltrace.cinder_sim.__doc__ or "").partition("\n")[0]
)
add_cli_arguments(parser)
sys.exit(run_cli(parser.parse_args()))
