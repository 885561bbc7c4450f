"""The ``dealstream`` command: run the API, a worker or the whole dev stack; manage streams and keys."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import structlog

from events.config import NatsLoginRefused, NatsSettings, connect
from events.envelope import AGGREGATE_TYPES
from events.streams import StreamsNotReady, WeakeningRefused, ensure_streams, stream_configs, streams_drift
from services.imports import cli_args as imports_cli
from workers.settings import MissingSetting, Settings

log = structlog.get_logger("dealstream.cli")

BENCH_HELP = "Dealstream's figures beside this machine's raw limits, in one run"


def api_app() -> Any:
    """The API app from the environment: the factory each ``dealstream api --workers N`` process calls."""
    from services.api.app import create_app
    from services.api.header_timeout import HeaderTimeoutProtocol
    from services.config import api_settings

    process = Settings.from_env()
    process.configure_logging()  # a worker process of uvicorn's starts afresh, without the parent's configuration
    settings = api_settings(process)
    HeaderTimeoutProtocol.header_timeout = settings.config.header_timeout_seconds
    return create_app(settings)


def event_loop(wanted: str) -> str:
    """``uvloop`` (where it is installed: Linux and macOS) or ``asyncio`` if ``DEALSTREAM_EVENT_LOOP=asyncio``.

    uvloop carries the same load with about a fifth less CPU (docs/benchmark.md); the choice is process-wide, so
    that the benchmark's raw limits are measured on the loop the API and the workers run on."""
    if wanted == "uvloop":
        try:
            import uvloop
        except ImportError:
            return "asyncio"
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return wanted


def _cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from services.config import api_settings

    settings = api_settings(args.settings)
    uvicorn.run(
        "services.cli:api_app",
        factory=True,
        loop=args.event_loop,
        http="services.api.header_timeout:HeaderTimeoutProtocol",
        # The client's address is the socket's peer unless trusted_proxies says otherwise (services.api.runtime).
        proxy_headers=False,
        workers=args.workers,
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    if args.name == "intake":
        from workers.intake import main as intake

        try:
            asyncio.run(intake(args.settings.nats))
        except StreamsNotReady as exc:
            log.error("worker.refused", worker="intake", error=str(exc))
            return 3
        return 0
    if args.name == "meta":
        return _meta_fetcher(args.settings)
    from workers.registry import run_worker

    return run_worker(args.name, args.partition, config=args.settings)


def _meta_fetcher(settings: Settings) -> int:
    """``dealstream worker meta``: the Meta Lead Ads fetcher, until SIGTERM or SIGINT."""
    from services.providers.meta_graph import run_fetcher

    try:
        settings.require_database_url()
    except MissingSetting as exc:
        log.error("worker.invalid", worker="meta", error=str(exc))
        return 2

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("worker.start", worker="meta")
        await run_fetcher(settings, stop)

    asyncio.run(main())
    return 0


async def _streams(settings: NatsSettings, check_only: bool, allow_weaker: bool) -> int:
    nc, js = await connect(settings, "dealstream-cli")
    try:
        if check_only:
            drifts = await streams_drift(js, settings.naming, settings.streams)
            missing = {d.stream for d in drifts if d.field == "stream"}
            for wanted in stream_configs(settings.naming, settings.streams):
                if wanted.name is not None and wanted.name not in missing:
                    config = (await js.stream_info(wanted.name)).config
                    print(json.dumps(config.as_dict(), indent=2, sort_keys=True, default=str))
            if drifts:
                print(f"error: {StreamsNotReady(drifts)}", file=sys.stderr)
                return 1
            return 0
        try:
            configs = await ensure_streams(js, settings.naming, settings.streams, allow_weaker=allow_weaker)
        except WeakeningRefused as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        for config in configs:
            print(json.dumps(config.as_dict(), indent=2, sort_keys=True, default=str))
    finally:
        await nc.close()
    return 0


def _cmd_streams(args: argparse.Namespace) -> int:
    return asyncio.run(_streams(args.settings.nats, args.check, args.allow_weaker))


def _cmd_keys_new(args: argparse.Namespace) -> int:
    from services.auth import new_key
    from services.config import ApiKey

    key, digest = new_key()
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    try:
        msgspec.convert({"id": args.id, "sha256": digest, "scopes": scopes, "source": args.source}, ApiKey)
    except msgspec.ValidationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"# the key, shown once; give it to the client:\n# {key}\n")
    print(
        f'[[api_keys]]\nid = "{args.id}"\nsha256 = "{digest}"\nscopes = {json.dumps(scopes)}\nsource = "{args.source}"'
    )
    return 0


def _cmd_users(args: argparse.Namespace) -> int:
    from services import users_cli

    url = _database_url(args.settings)
    if url is None:
        return 2
    if args.users_command == "add":
        return asyncio.run(users_cli.add(args.settings.nats, url, args.name, args.role, args.team, args.password_stdin))
    return asyncio.run(users_cli.reset(args.settings.nats, url, args.name, args.password_stdin))


async def _projections(args: argparse.Namespace) -> int:
    import psycopg

    from projections.versions import builds, switch

    url = _database_url(args.settings)
    if url is None:
        return 2
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        if args.switch:
            name, build = args.switch
            try:
                before = await switch(conn, name, build)
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            print(f"{name}: readers now use {build} (was {before.build if before else 'nothing'})")
            return 0
        print(f"{'projection':<12} {'build':<28} {'serving':<8} checkpoints")
        for name, build, serving, checkpoints in await builds(conn):
            shards = ", ".join(f"{k}: {v}" for k, v in sorted(checkpoints.items()))
            print(f"{name:<12} {build:<28} {'yes' if serving else '':<8} {shards}")
    return 0


def _cmd_projections(args: argparse.Namespace) -> int:
    return asyncio.run(_projections(args))


def _cmd_history(args: argparse.Namespace) -> int:
    from services import audit_cli

    return asyncio.run(
        audit_cli.history(args.aggregate, args.id, args.format, args.raw, args.as_of, args.settings.nats)
    )


def _cmd_board(args: argparse.Namespace) -> int:
    from services import audit_cli

    return asyncio.run(audit_cli.board_then(args.at, args.since, args.pipeline, args.owner, args.settings.nats))


def _cmd_audit(args: argparse.Namespace) -> int:
    from services import audit_cli

    if args.audit_command == "verify":
        return audit_cli.verify(args.stream, args.public_key, args.anchors, args.settings.nats)
    if args.audit_command == "keygen":
        return audit_cli.keygen(args.out)
    if args.audit_command == "anchor":
        return audit_cli.anchor(args.key, args.stream, args.every, args.keep, args.settings.nats)
    if args.audit_command == "anchors":
        return audit_cli.anchors(args.out, args.stream, args.settings.nats)
    if args.audit_command == "export":
        return audit_cli.export(args.key, args.out, args.settings.nats)
    return audit_cli.check(args.file, args.public_key, args.anchors)


def _database_url(settings: Settings) -> str | None:
    try:
        return settings.require_database_url()
    except MissingSetting as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _label(prefix: str) -> str:
    import datetime as dt

    return f"{prefix}{dt.datetime.now(dt.UTC):%Y%m%d%H%M%S}"


def _cmd_rebuild(args: argparse.Namespace) -> int:
    from workers.rebuild import progress_bar, rebuild
    from workers.registry import RulesUnknown, like_serving

    url = _database_url(args.settings)
    if url is None:
        return 2
    try:
        projection, rules = asyncio.run(like_serving(args.name, _label("r"), url, args.settings))
    except RulesUnknown as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    made_from = f" from its recorded {rules.describe()}" if rules else ""
    print(f"rebuilding {args.name} into {projection.build}{made_from}; the serving build answers meanwhile")
    with progress_bar() as shown:
        took_over = asyncio.run(rebuild(projection, args.settings.nats, url, shown, rules=rules))
    print(f"{projection.build} {'now serves; the workers follow it' if took_over else 'did not take over'}")
    return 0 if took_over else 1


def _cmd_verify(args: argparse.Namespace) -> int:
    from workers.rebuild import progress_bar, verify
    from workers.registry import RulesUnknown, like_serving

    url = _database_url(args.settings)
    if url is None:
        return 2
    try:
        shadow, rules = asyncio.run(like_serving(args.name, _label("v"), url, args.settings))
        if rules is not None:
            print(f"rebuilding {args.name} from the serving build's recorded {rules.describe()}")
        with progress_bar() as shown:
            result = asyncio.run(verify(shadow, args.settings.nats, url, shown, rules=rules))
    except (RuntimeError, RulesUnknown) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2
    print(f"compared {result.live} with a rebuild from the log at sequence {result.sequence}:")
    for t in result.tables:
        verdict = (
            "same"
            if not (t.only_live or t.only_rebuilt)
            else f"{t.only_live} rows only live, {t.only_rebuilt} only rebuilt"
        )
        print(f"  {t.table:<16} {t.live_rows:>9} rows  {verdict}")
        for row in t.sample_only_live:
            print(f"    live only:    {row}")
        for row in t.sample_only_rebuilt:
            print(f"    rebuilt only: {row}")
    return 0 if result.same else 1


def _from_checkout(module: str, command: str) -> ModuleType:
    """A module of the checkout's ``bench/`` or ``devstack/``: neither ships in the wheel, so neither is imported
    until its command runs."""
    package = module.partition(".")[0]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != package:
            raise
    # An editable install maps only the shipped packages: the checkout's root holds the others.
    root = Path(__file__).resolve().parents[1]
    if not (root / package / "__init__.py").is_file():
        raise SystemExit(
            f"dealstream {command}: needs a checkout of Dealstream (its {package}/ package is not part of the "
            "installed wheel); run it from the repository, e.g. .venv/bin/dealstream " + command
        )
    sys.path.append(str(root))
    return importlib.import_module(module)


def _cmd_dev(args: argparse.Namespace) -> int:
    run_dev = _from_checkout("devstack.stack", "dev").run_dev

    return int(
        run_dev(
            data_dir=args.data_dir,
            api_port=args.port,
            nats_port=args.nats_port,
            monitor_port=args.nats_monitor_port,
            pg_port=args.pg_port,
            settings=args.settings,
        )
    )


def _cmd_bench(args: argparse.Namespace) -> int:
    bench = _from_checkout("bench.run", "bench")
    parser = argparse.ArgumentParser(prog="dealstream bench", description=BENCH_HELP)
    bench.add_arguments(parser)
    options = parser.parse_args(args.bench_argv)
    return int(bench.run(options))


def _stream_name(text: str) -> str:
    from events.subjects import STREAM_NAME

    if not STREAM_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a stream name ({STREAM_NAME.pattern})")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dealstream", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    api = sub.add_parser("api", help="run the HTTP API (uvicorn)")
    api.add_argument("--host")
    api.add_argument("--port", type=int)
    api.add_argument("--workers", type=int, default=1, help="API processes sharing the port (default 1)")
    api.set_defaults(func=_cmd_api)

    worker = sub.add_parser("worker", help="run one worker process, e.g. 'dealstream worker board'")
    worker.add_argument("name")
    worker.add_argument("--partition", default="0/1", help="k/N: this process takes partitions p with p %% N == k")
    worker.set_defaults(func=_cmd_worker)

    streams = sub.add_parser(
        "streams", help="as the NATS administrator: create or update the streams and print their configuration"
    )
    streams.add_argument(
        "--check", action="store_true", help="change nothing: print the streams and exit 1 naming any drift"
    )
    streams.add_argument(
        "--allow-weaker", action="store_true", help="allow lowering replicas or loosening deny_delete/deny_purge"
    )
    streams.set_defaults(func=_cmd_streams)

    keys = sub.add_parser("keys", help="API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    new = keys_sub.add_parser("new", help="make a key and print the config lines holding its hash")
    new.add_argument("--id", required=True)
    new.add_argument("--scopes", required=True, help="comma-separated, e.g. leads:capture")
    new.add_argument("--source", default="api", help="web_form for a web form's key")
    new.set_defaults(func=_cmd_keys_new)

    projections = sub.add_parser("projections", help="list every read-model build; --switch NAME BUILD by hand")
    projections.add_argument(
        "--switch", nargs=2, metavar=("NAME", "BUILD"), help="point readers of NAME at BUILD (e.g. scores scores_v102)"
    )
    projections.set_defaults(func=_cmd_projections)

    rb = sub.add_parser("rebuild", help="replay the log into fresh tables; switch over when caught up")
    rb.add_argument("name")
    rb.set_defaults(func=_cmd_rebuild)
    vf = sub.add_parser("verify", help="rebuild beside the live read model and compare them row by row")
    vf.add_argument("name")
    vf.set_defaults(func=_cmd_verify)

    hist = sub.add_parser("history", help="every event of a lead or deal, in log order")
    hist.add_argument("aggregate", choices=list(AGGREGATE_TYPES))
    hist.add_argument("id")
    hist.add_argument("--format", choices=["table", "jsonl", "csv"], default="table")
    hist.add_argument("--raw", action="store_true", help="jsonl: include what the source sent")
    hist.add_argument("--as-of", help="only events with business time up to this moment (with offset)")
    hist.set_defaults(func=_cmd_history)

    brd = sub.add_parser("board", help="the board as it stood at a past moment, replayed from the log")
    brd.add_argument("--at", required=True, help="e.g. 2026-09-30T23:59:59+02:00 (business time)")
    brd.add_argument("--since", help="slipped deals: expected to close on or after this date (a quarter's start)")
    brd.add_argument("--pipeline")
    brd.add_argument("--owner")
    brd.set_defaults(func=_cmd_board)

    audit = sub.add_parser("audit", help="tamper evidence: hash chains, signed anchors and exports")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    public_key_help = "the company's public key (base64), as the auditor got it; never the one in a file"
    a_verify = audit_sub.add_parser("verify", help="check every aggregate's hash chain, and the last anchor with a key")
    a_verify.add_argument("--stream", type=_stream_name, help="another stream (e.g. a copy) instead of the event log")
    a_verify.add_argument("--public-key", help=public_key_help + "; checks the log against its last anchor")
    a_verify.add_argument("--anchors", help="anchors the auditor kept ('audit anchors --out'), besides the stored ones")
    a_keygen = audit_sub.add_parser("keygen", help="make an Ed25519 signing key for anchors and exports")
    a_keygen.add_argument("--out", required=True)
    a_anchor = audit_sub.add_parser("anchor", help="sign the log's chain heads now and keep them outside the log")
    a_anchor.add_argument("--key", required=True, help="the signing key (PEM) from 'audit keygen'")
    a_anchor.add_argument("--stream", type=_stream_name, help="another stream instead of the event log")
    a_anchor.add_argument("--every", type=float, help="keep running: one anchor every this many seconds")
    a_anchor.add_argument("--keep", help="the job's own file of its anchors: read before the first, appended to")
    a_anchors = audit_sub.add_parser("anchors", help="write every kept anchor to a file (JSON lines)")
    a_anchors.add_argument("--out", required=True)
    a_anchors.add_argument("--stream", type=_stream_name, help="another stream instead of the event log")
    a_export = audit_sub.add_parser("export", help="JSON lines of the whole log, its anchors and signed chain heads")
    a_export.add_argument("--key", required=True, help="the signing key (PEM) from 'audit keygen'")
    a_export.add_argument("--out", required=True)
    a_check = audit_sub.add_parser("check", help="check an export offline: chains, anchors and signatures")
    a_check.add_argument("file")
    a_check.add_argument("--public-key", help=public_key_help + " (required)")
    a_check.add_argument("--anchors", help="anchors the auditor kept, checked besides those in the export")
    audit.set_defaults(func=_cmd_audit)

    imports_cli.add_parsers(sub)

    dev = sub.add_parser("dev", help="run everything on this machine: nats-server, PostgreSQL, API, workers")
    dev.add_argument("--data-dir", default=".dealstream", help="where NATS and PostgreSQL keep their data")
    dev.add_argument("--port", type=int, default=8080, help="API port (each port: a free one if it is taken)")
    dev.add_argument("--nats-port", type=int, default=4333)
    dev.add_argument("--nats-monitor-port", type=int, default=8333)
    dev.add_argument("--pg-port", type=int, default=54329, help="the private PostgreSQL's (without DATABASE_URL)")
    dev.set_defaults(func=_cmd_dev)

    users = sub.add_parser("users", help="people who sign in: add one, set a password")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    u_add = users_sub.add_parser("add", help="add a user; prints a one-time password (or reads one from stdin)")
    u_add.add_argument("name", help="the username: also the name their leads and deals are owned by")
    u_add.add_argument("--role", required=True, choices=["rep", "manager", "admin", "auditor"])
    u_add.add_argument("--team", help="their team (default: the rules file's team that lists them)")
    u_add.add_argument("--password-stdin", action="store_true", help="read the password from stdin's first line")
    u_pw = users_sub.add_parser("password", help="set a user's password (one-time, or from stdin); sessions end")
    u_pw.add_argument("name")
    u_pw.add_argument("--password-stdin", action="store_true", help="read the password from stdin's first line")
    users.set_defaults(func=_cmd_users)

    # Its options are the bench package's, read when it runs (dealstream bench -h lists them).
    bench = sub.add_parser("bench", help=BENCH_HELP, add_help=False)
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.bench_argv = rest
    # Commands that print for a person keep the workers' info lines out of their output.
    talks = args.command in {"bench", "rebuild", "verify", "history", "board", "audit", "projections", "users"}
    talks = talks or args.command in imports_cli.COMMANDS
    try:
        args.settings = Settings.from_env()
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    args.settings.configure_logging(level="warning" if talks else None)
    args.event_loop = event_loop(args.settings.event_loop)
    try:
        code: int = args.func(args)
        sys.stdout.flush()
    except NatsLoginRefused as refused:
        print(f"dealstream {args.command}: {refused}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return _reader_gone()
    return code


def _reader_gone() -> int:
    """Exit quietly when the reader of stdout left (``| head``), as Unix tools do: 128 + SIGPIPE."""
    # Python would flush stdout again at exit and print a second BrokenPipeError: point it at /dev/null.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
