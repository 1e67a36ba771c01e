"""The command line: run the honeypot, show or check config, replay a transcript."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from muscipula import config as configmod
from muscipula.net.listeners import BindError

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="muscipula",
        description="A multi-protocol honeypot: answers FTP, HTTP(S), MySQL, MSSQL, SIP, SMB, "
                    "the RPC endpoint mapper and TFTP like the real products and records "
                    "everything.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the honeypot (embedded default config if no --config)",
                         description="Bind every enabled service, then serve until SIGINT/SIGTERM.")
    run.add_argument("--config", metavar="FILE", help="YAML merged over the embedded default")
    run.add_argument("--state-dir", metavar="DIR",
                     help="database, captured files, transcripts and generated secrets")
    run.add_argument("--listen", metavar="ADDR", action="append",
                     help="address to listen on (repeatable; replaces listen.addresses)")
    run.add_argument("--port-offset", metavar="N", type=int, default=0,
                     help="add N to every configured port (non-root trials, tests)")
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    cfg = sub.add_parser("config", help="show the effective config or check a file")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = cfg_sub.add_parser("show", help="print the effective config (default merged with FILE)")
    show.add_argument("--config", metavar="FILE")
    check = cfg_sub.add_parser("check", help="validate FILE; exit 2 with the reasons if invalid")
    check.add_argument("file", metavar="FILE")

    rep = sub.add_parser("replay", help="play a transcript's client side against a server",
                         description="Send the recorded client bytes to HOST:PORT with the "
                                     "recorded pauses and print what the server answers.")
    rep.add_argument("file", metavar="FILE")
    rep.add_argument("--host", required=True)
    rep.add_argument("--port", required=True, type=int)
    rep.add_argument("--timeout", type=float, default=5.0,
                     help="seconds to wait for answers after the last send")
    rep.add_argument("--fast", action="store_true", help="do not keep the recorded pauses")
    rep.add_argument("--connection", type=int, metavar="ID",
                     help="which connection of a day's transcript file (default: the first)")
    tree = sub.add_parser("tree", help="print recorded attacks, one connection tree each",
                          description="Read the logsql database and print each connection "
                                      "with its children and everything recorded for them.")
    tree.add_argument("--db", metavar="FILE",
                      help="logsql database (default: the state directory's)")
    tree.add_argument("--config", metavar="FILE", help="to find the state directory")
    tree.add_argument("--connection", type=int, metavar="ID")
    tree.add_argument("--remote-host", metavar="ADDR")
    tree.add_argument("--protocol", metavar="NAME", help="as in connections: smbd, httpd...")
    tree.add_argument("--since", type=float, metavar="UNIXTIME")
    tree.add_argument("--until", type=float, metavar="UNIXTIME")
    tree.add_argument("--limit", type=int, default=50, help="newest N root connections")
    return p


def _tree(args: argparse.Namespace) -> int:
    from muscipula.tree import Filter, render

    if args.db:
        path = Path(args.db)
    else:
        try:
            cfg = configmod.load(args.config)
        except configmod.ConfigError as exc:
            print(exc, file=sys.stderr)
            return EXIT_CONFIG
        path = cfg.state_dir() / cfg.sinks.logsql.file
    if not path.is_file():
        print(f"muscipula: no database at {path}", file=sys.stderr)
        return 1
    f = Filter(args.connection, args.remote_host, args.protocol, args.since, args.until,
               max(args.limit, 1))
    for line in render(path, f):
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "config":
        return _config(args)
    if args.command == "tree":
        return _tree(args)
    if args.command == "replay":
        from muscipula.replay import replay

        return replay(Path(args.file), args.host, args.port, args.timeout, args.fast,
                      args.connection)
    return _run(args)


def _config(args: argparse.Namespace) -> int:
    try:
        if args.config_command == "check":
            configmod.load(args.file)
            print(f"{args.file}: ok")
        else:
            print(configmod.dump(configmod.load(args.config)), end="")
    except configmod.ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    return 0


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    extra: dict = {}
    if args.state_dir:
        extra["paths"] = {"state_dir": args.state_dir}
    try:
        if args.listen:
            configmod.Listen(addresses=args.listen)
        cfg = configmod.load(args.config, extra)
    except configmod.ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    except ValueError as exc:
        print(f"--listen: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if not -65535 < args.port_offset < 65535:
        print("--port-offset: must be between -65534 and 65534", file=sys.stderr)
        return EXIT_CONFIG

    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass

    from muscipula.engine import Engine

    engine = Engine(cfg, cfg.state_dir(), args.port_offset, args.listen)
    try:
        bound = engine.bind_all()
    except BindError as exc:
        print(f"muscipula: {exc}", file=sys.stderr)
        return 1
    return asyncio.run(_serve(engine, bound))


async def _serve(engine, bound) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await engine.start(bound)
    except BindError as exc:
        print(f"muscipula: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"muscipula: state directory {engine.state_dir}: {exc.strerror or exc}"
              f"{': ' + exc.filename if exc.filename else ''}", file=sys.stderr)
        return 1
    ready = engine.state_dir / "ready"
    ready.write_text(str(os.getpid()))
    logging.getLogger("muscipula").info("ready")
    await stop.wait()
    logging.getLogger("muscipula").info("stopping")
    ready.unlink(missing_ok=True)
    await engine.stop()
    return 0
