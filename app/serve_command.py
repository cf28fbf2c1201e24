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
    parser.add_argument("--max-batch", type=int, default=1, metavar="IMAGES",
                        help="batch requests that arrive together into one UNet pass, up to this many images "
                             "(default 1: one request at a time)")
    parser.add_argument("--batch-wait-ms", type=float, default=50.0,
                        help="how long a request waits for others to batch with (default 50 ms)")
    parser.add_argument("--cache-mb", type=float, default=None,
                        help="memory budget of the adapter cache in MiB (default: keep every adapter used)")
    parser.add_argument("--ray", action="store_true",
                        help="serve on Ray Serve (pip install 'medley[serve]'): replicas, each with a base and an "
                             "adapter cache, routed by adapter set; see docs/serving.md")
    parser.add_argument("--replicas", type=int, default=1, help="with --ray: replicas to start (default 1)")
    parser.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from app.web.services import MedleyServices, WebConfig

    if args.host not in LOCAL_HOSTS and args.auth is None:
        print(f"medley: warning: serving on {args.host} without --auth: anyone who can reach this machine "
              "can generate, import and train", file=sys.stderr)
    if args.concurrency < 1 or args.max_batch < 1 or args.replicas < 1:
        print("medley: --concurrency, --max-batch and --replicas must be at least 1", file=sys.stderr)
        return 2
    if not 0 <= args.batch_wait_ms <= 10_000 or (args.cache_mb is not None and args.cache_mb < 0):
        print("medley: --batch-wait-ms must lie in 0..10000 and --cache-mb be >= 0", file=sys.stderr)
        return 2
    if args.ray:
        from app.serving.ray_command import run_ray

        return run_ray(args)
    cache = None if args.cache_mb is None else int(args.cache_mb * 1024**2)
    services = MedleyServices(WebConfig(base=args.base, library=args.library, device=args.device,
                                        batch_requests=args.max_batch, batch_wait_s=args.batch_wait_ms / 1000,
                                        cache_bytes=cache))
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
                                            generation_concurrency=max(args.concurrency, args.max_batch),
                                            prevent_thread_lock=True, quiet=True))
    print(f"Medley is running at {url}  (Ctrl+C to stop)", flush=True)
    try:
        wait_forever()
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
    return 0


def wait_forever() -> None:
    threading.Event().wait()
