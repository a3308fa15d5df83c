"""Command line: `serve` runs the server, `simulate` sends realistic demo traffic. Only this reads the environment."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from exporter import __version__
from exporter.config import SettingError, add_arguments, resolve
from exporter.errors import StoreError, StoreUnavailable


def build_parser() -> argparse.ArgumentParser:
    """Return the parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="flakedrop-telemetry",
        description="Receives FlakeDrop's opt-in usage events; serves /metrics, /stats and a dashboard.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Run the server. Every flag also reads FLAKEDROP_TELEMETRY_<NAME> from the environment.",
    )
    add_arguments(serve)
    from exporter.simulate import add_simulate_arguments

    simulate = commands.add_parser("simulate", help="send realistic demo traffic to a running server")
    add_simulate_arguments(simulate)
    from exporter.backup_cli import add_backup_commands

    add_backup_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "simulate":
        from exporter.simulate import run_simulate

        logging.basicConfig(level=logging.INFO, format="%(message)s")
        return run_simulate(args)
    if args.command in ("backup", "verify", "restore"):
        from exporter.backup_cli import run_backup_command

        return run_backup_command(args)
    try:
        config = resolve(args)
    except SettingError as exc:
        print(f"flakedrop-telemetry: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from exporter.server import serve

    try:
        return serve(config)
    except (StoreError, StoreUnavailable, OSError) as exc:  # the operator gets one line, never a traceback
        print(f"flakedrop-telemetry: cannot start: {exc}", file=sys.stderr)
        return 1
