"""``dealstream import`` and ``dealstream export``: their arguments, and what each runs (imported when it runs)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any, BinaryIO

from workers.settings import MissingSetting

COMMANDS = ("import", "export")
"""Commands that print for a person: the workers' info lines stay out of their output."""


def add_parsers(sub: Any) -> None:
    """Add ``import`` and ``export`` to the ``dealstream`` subcommands ``sub``."""
    imp = sub.add_parser("import", help="import deals and leads from a CRM's CSV export")
    imp.add_argument("crm", choices=("pipedrive", "hubspot", "zendesk-sell"))
    imp.add_argument("--deals", type=Path, help="the deals export")
    imp.add_argument("--leads", type=Path, help="the leads export (Pipedrive's Leads Inbox, Sell's leads)")
    imp.add_argument("--people", type=Path, help="the people/contacts export (read and checked, not imported yet)")
    imp.add_argument("--dry-run", action="store_true", help="read and check everything, append nothing")
    imp.add_argument("--zone", default="UTC", help="the zone of times the file writes without one (Europe/Warsaw)")
    imp.add_argument(
        "--pipeline-map", action="append", default=[], metavar="NAME=ID", help="put a CRM pipeline's deals in ID"
    )
    imp.add_argument("--report", type=Path, help="write the rejected rows here: .csv, or the whole report as .json")
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    imp.set_defaults(func=run_import)

    exp = sub.add_parser("export", help="write the deals of the read models as CSV (to stdout or --out)")
    exp.add_argument("what", choices=("deals",))
    exp.add_argument("--status", choices=("open", "won", "lost"))
    exp.add_argument("--pipeline", help="one pipeline's deals")
    exp.add_argument("--bom", action="store_true", help="start with a UTF-8 byte-order mark, for Excel")
    exp.add_argument("--out", type=Path, help="the file to write (default: stdout)")
    exp.set_defaults(func=run_export)


def run_import(args: argparse.Namespace) -> int:
    """``dealstream import``: 0 when every row was taken, 1 with rejected rows, 2 on bad options."""
    from services.imports import command
    from services.imports.crms import FileKind

    kinds: tuple[FileKind, ...] = ("deals", "leads", "people")
    files = {kind: getattr(args, kind) for kind in kinds if getattr(args, kind)}
    if not files:
        print("error: name at least one file: --deals, --leads or --people", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(
            command.import_files(
                args.crm, files, args.settings.nats, args.zone, args.pipeline_map, args.dry_run, not args.quiet
            )
        )
    except (command.UsageError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.report:
        command.write_report(report, args.report)
    print(command.printed(report))
    return 1 if report.rejected else 0


async def _export(args: argparse.Namespace, url: str, out: BinaryIO) -> int:
    import psycopg

    from projections import board_export, board_store
    from projections.versions import serving_build_name
    from services.exports import deals_csv

    async with await psycopg.AsyncConnection.connect(url) as conn:
        build = await serving_build_name(conn, "board", board_store.BUILD)
        async for line in deals_csv(board_export.all_deals(conn, args.status, args.pipeline, build), args.bom):
            out.write(line)
    return 0


def run_export(args: argparse.Namespace) -> int:
    """``dealstream export deals``: the board's deals as CSV, from ``DATABASE_URL``."""
    try:
        url = args.settings.require_database_url()
    except MissingSetting as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out is None:
        return asyncio.run(_export(args, url, sys.stdout.buffer))
    with args.out.open("wb") as out:
        return asyncio.run(_export(args, url, out))
