"""`medley serve`: start the web app (Generate, Library, Train). Parsing and printing only."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def parse_auth(text: str | None) -> tuple[str, str] | None:
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError("--auth takes USER:PASSWORD")
    return user, password


def add_serve_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve",
        help="start the web app (Generate, Library and Train tabs)",
        description="Start Medley's web app. It binds 127.0.0.1 unless --host says otherwise; "
                    "use --auth when other machines can reach it.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--base", default=None, help="diffusers folder, .safetensors checkpoint or cached hub id "
                        "(default: the embedded toy base)")
    parser.add_argument("--library", type=Path, default=None, help="a folder of LoRA files to scan in place at start")
    parser.add_argument("--auth", type=parse_auth, default=None, metavar="USER:PASSWORD",
                        help="require this login (recommended with --host 0.0.0.0)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="generations run at once (default 1; they share one base)")
    parser.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from app.web.services import MedleyServices, WebConfig

    if args.host not in LOCAL_HOSTS and args.auth is None:
        print(f"medley: warning: serving on {args.host} without --auth: anyone who can reach this machine "
              "can generate, import and train", file=sys.stderr)
    if args.concurrency < 1:
        print("medley: --concurrency must be at least 1", file=sys.stderr)
        return 2
    services = MedleyServices(WebConfig(base=args.base, library=args.library, device=args.device))
    try:
        base = services.base  # load now: a bad --base fails here, not on the first request
        report = services.scan_library_folder()
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as error:
        print(f"medley: {error}", file=sys.stderr)
        return 2
    print(f"base: {base.name} ({base.family}, {base.attention})")
    if report is not None:
        print(f"library: {report.folder}: {len(report.added)} added, {report.unchanged} unchanged, "
              f"{len(report.problems)} refused")
    from app.web.app import LaunchOptions, launch

    _, url = launch(services, LaunchOptions(host=args.host, port=args.port, auth=args.auth,
                                            generation_concurrency=args.concurrency,
                                            prevent_thread_lock=True, quiet=True))
    print(f"Medley is running at {url}  (Ctrl+C to stop)", flush=True)
    try:
        wait_forever()
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
    return 0


def wait_forever() -> None:
    threading.Event().wait()
