"""The `backup`, `verify` and `restore` subcommands: parse flags, call the core, print one line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from exporter.backup import BackupError, key_material, progress_bar, require_store, take_backup
from exporter.config import SettingError, resolve
from exporter.restore import restore, verify
from exporter.store import sqlite_file
from exporter.userkey import key_path

COMMANDS = ("backup", "verify", "restore")
PROG = "flakedrop-telemetry"


def add_backup_commands(commands: argparse._SubParsersAction) -> None:
    """Add backup, verify and restore to the CLI's subcommands."""
    backup = commands.add_parser(
        "backup",
        help="take a consistent backup of the store while the server runs",
        description="Copy the store (with its user-id key) into one file; --data-dir, --database-url "
        "and --user-id-key also read FLAKEDROP_TELEMETRY_<NAME>.",
    )
    backup.add_argument("--to", required=True, type=Path, metavar="FILE", help="the backup file to write")
    backup.add_argument("--data-dir", default=None, help="the server's data dir (store and key file)")
    backup.add_argument("--database-url", default=None, help="sqlite:///path or postgresql://... (pg_dump)")
    backup.add_argument("--user-id-key", default=None, help="the server's --user-id-key, if it uses one")
    backup.add_argument("--step-pages", type=int, default=1024, help="pages copied per step (default 1024)")
    backup.add_argument(
        "--pause", type=float, default=0.0, help="seconds to rest between steps, to spare a busy disk"
    )
    check = commands.add_parser("verify", help="check a backup file; exit 0 only when it is sound")
    check.add_argument("file", type=Path, metavar="FILE")
    back = commands.add_parser("restore", help="verify a backup, then write it into a data dir")
    back.add_argument("--from", dest="source", required=True, type=Path, metavar="FILE")
    back.add_argument("--data-dir", required=True, type=Path, help="the data dir to restore into")
    back.add_argument("--force", action="store_true", help="replace a store already in the data dir")


def run_backup_command(args: argparse.Namespace) -> int:
    """Run one of the commands; return 0, or 1 after printing one line on stderr."""
    try:
        if args.command == "backup":
            return _backup(args)
        if args.command == "verify":
            print(verify(args.file).summary())
            return 0
        info = restore(args.source, args.data_dir, force=args.force)
        print(f"restored {info.users} users, {info.events} events into {args.data_dir} from {args.source}")
        if not info.key_hex:
            print(
                f"{PROG}: NOTE: the backup holds only the user-id key's fingerprint ({info.fingerprint}); "
                "start the server with the same --user-id-key, or every user counts twice",
                file=sys.stderr,
            )
        return 0
    except BackupError as exc:
        print(f"{PROG}: {args.command} failed: {exc}", file=sys.stderr)
        return 1
    except SettingError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2


def _backup(args: argparse.Namespace) -> int:
    """Take one backup as the flags say."""
    config = resolve(
        {"data_dir": args.data_dir, "database_url": args.database_url, "user_id_key": args.user_id_key}
    )
    if args.step_pages < 1 or args.pause < 0:
        raise SettingError("--step-pages must be at least 1 and --pause 0 or more")
    dest: Path = args.to
    if not dest.parent.is_dir():
        raise BackupError(f"the directory {dest.parent} does not exist")
    url = config.store_url
    path = sqlite_file(url)
    if path:
        require_store(path)
    key = key_material(config.data_dir, config.user_id_key) if path else None
    if key and not key.key_hex:
        print(
            f"{PROG}: WARNING: the server uses --user-id-key, so the backup holds only its fingerprint "
            f"({key.fingerprint}); keep the key itself somewhere safe, apart from the backup",
            file=sys.stderr,
        )
    if key is None:
        take_backup(url, dest, None)
        print(
            f"{PROG}: NOTE: a pg_dump archive holds no user-id key; keep {key_path(config.data_dir)} "
            "or your --user-id-key with it",
            file=sys.stderr,
        )
        print(f"backup written to {dest} (pg_dump custom format)")
        return 0
    take_backup(
        url, dest, key, progress=progress_bar(sys.stderr), step_pages=args.step_pages, pause=args.pause
    )
    print(verify(dest).summary())
    return 0
