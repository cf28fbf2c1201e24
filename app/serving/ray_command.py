"""`medley serve --ray`: start Medley on a local (or an existing) Ray cluster and keep it running."""

from __future__ import annotations

import argparse
import sys


def run_ray(args: argparse.Namespace) -> int:
    try:
        import ray
        from ray import serve
    except ImportError:
        print("medley: --ray needs Ray Serve: pip install 'medley[serve]'", file=sys.stderr)
        return 2
    from app.serving.ray_app import build

    ray.init(address=None if not getattr(args, "ray_address", None) else args.ray_address,
             include_dashboard=False, logging_level="ERROR")
    serve.start(http_options={"host": args.host, "port": args.port})
    config = {"base": args.base, "max_batch": args.max_batch, "batch_wait_s": args.batch_wait_ms / 1000,
              "cache_bytes": None if args.cache_mb is None else int(args.cache_mb * 1024**2)}
    serve.run(build(config, args.replicas), name="medley", route_prefix="/generate")
    print(f"Medley on Ray Serve at http://{args.host}:{args.port}/generate ({args.replicas} replicas; "
          "POST JSON requests, header serve_multiplexed_model_id routes by adapter set)", flush=True)
    try:
        import threading

        threading.Event().wait()
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
        serve.shutdown()
    return 0
