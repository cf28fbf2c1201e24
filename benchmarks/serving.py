"""Serving many adapters: ``python benchmarks/serving.py [--json] [--requests 32] [--sets 8] [--ray]``.

On the embedded toy base (20 steps, one image per request, the gated method with adapter guidance,
adapter sets drawn from the starter library) ``--requests`` requests over ``--sets`` adapter sets
arrive at once and are served through the product's batching scheduler
(:class:`pipeline.batcher.RenderBatcher` over ``Studio.render_many``, what ``medley serve
--max-batch`` runs):

* sequential: ``--max-batch 1``, one request at a time (``medley serve`` without batching);
* grouped by set: each adapter set's requests in one run (a method that cannot batch mixed sets);
* heterogeneous: batches of ``--batch`` requests with different sets in one UNet pass
  (per-row coefficients, :mod:`fusion.rows`);
* shared set: the same batches with one adapter set for every row (the reference of ``per_row_cost``).

Throughput is images per second over the whole load, latency each request's time from arrival to
answer (p50 / p95). Every heterogeneous image is compared with the same request rendered alone; the
largest pixel difference is reported (``all_equal_solo``: at most one level of 255).

At SD1.5 UNet dimensions (random weights, CPU, 32x32 latents, three rank-16 LoRAs per set) the same
comparison is made on UNet passes: ``--batch`` rows with different sets in one pass against one pass
per row, and against one shared set.

``--ray``: the Ray Serve deployment's overhead per request (one replica, requests sent one at a time
through a deployment handle, against the same requests through the batcher in this process).

Prints tables; with ``--json`` the last line is a JSON object with ``hetero_speedup`` (heterogeneous
throughput / sequential, toy base), ``per_row_cost`` (heterogeneous / shared-set time, same batch),
``all_equal_solo`` and the rest of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

STARTERS = ("heart", "crescent", "arrow", "bolt", "ring", "diagonal", "vertical", "concentric", "crosshatch", "pastel",
            "dusk", "neon")
PROMPTS = ("a red {} on a blue background", "a yellow {} on a black background", "a green {} on a white background")


def adapter_sets(count: int) -> list[list[Any]]:
    """``count`` distinct sets of one shape and one style/palette starter."""
    from pipeline import Pick

    shapes, styles = STARTERS[:5], STARTERS[5:]
    return [[Pick(shapes[i % len(shapes)], 0.9, role="content"), Pick(styles[i % len(styles)], 0.8, role="style")]
            for i in range(count)]


def requests_for(count: int, sets: list[list[Any]], steps: int) -> list[Any]:
    from pipeline import RenderRequest

    return [RenderRequest(PROMPTS[i % len(PROMPTS)].format("shape"), seed=1000 + i, steps=steps,
                          picks=sets[i % len(sets)], fusion="gated") for i in range(count)]


def serve_all(studio: Any, requests: Sequence[Any], batch: int, wait_s: float) -> tuple[float, list[float], list[Any]]:
    """(seconds, per-request latency, outcomes) of ``requests`` arriving at once at a batcher."""
    from pipeline.batcher import RenderBatcher

    batcher = RenderBatcher(studio, max_batch=batch, max_wait_s=wait_s)
    try:
        started = time.perf_counter()
        futures = [batcher.submit(request) for request in requests]
        done: list[float] = []
        outcomes = []
        for future in futures:
            outcomes.append(future.result())
            done.append(time.perf_counter() - started)
        return max(done), done, outcomes
    finally:
        batcher.close()


def grouped(studio: Any, requests: Sequence[Any]) -> tuple[float, list[float], list[Any]]:
    """Each adapter set's requests in one run, sets one after another (arrival at once)."""
    order: dict[tuple[str, ...], list[int]] = {}
    for index, request in enumerate(requests):
        order.setdefault(tuple(p.name for p in request.picks), []).append(index)
    started = time.perf_counter()
    latency = [0.0] * len(requests)
    outcomes: list[Any] = [None] * len(requests)
    for indices in order.values():
        answers = studio.render_many([requests[i] for i in indices])
        now = time.perf_counter() - started
        for i, answer in zip(indices, answers, strict=True):
            latency[i], outcomes[i] = now, answer
    return max(latency), latency, outcomes


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def toy_rows(args: argparse.Namespace) -> dict[str, Any]:
    from library.catalog import Catalog
    from pipeline import Studio, load_base

    base = load_base(None, device="cpu")
    home = Path(tempfile.mkdtemp(prefix="medley-serving-"))
    studio = Studio(base, Catalog(home))
    sets = adapter_sets(args.sets)
    requests = requests_for(args.requests, sets, args.steps)
    shared = requests_for(args.requests, [sets[0]], args.steps)
    serve_all(studio, requests[: args.batch], args.batch, 0.5)  # warm-up: every adapter read, layers wrapped
    rows: dict[str, dict[str, float]] = {}
    outcomes: dict[str, list[Any]] = {}
    for name, run in (("sequential", lambda: serve_all(studio, requests, 1, 0.0)),
                      ("grouped by set", lambda: grouped(studio, requests)),
                      ("heterogeneous", lambda: serve_all(studio, requests, args.batch, 0.5)),
                      ("shared set", lambda: serve_all(studio, shared, args.batch, 0.5))):
        print(f"  toy: {name} ...", file=sys.stderr, flush=True)
        seconds, latency, answers = run()
        rows[name] = {"seconds": seconds, "images_per_s": len(requests) / seconds,
                      "p50_s": percentile(latency, 50), "p95_s": percentile(latency, 95)}
        outcomes[name] = answers
    worst = 0
    for hetero, solo in zip(outcomes["heterogeneous"], outcomes["sequential"], strict=True):
        difference = np.abs(np.asarray(hetero.images[0], dtype=int) - np.asarray(solo.images[0], dtype=int))
        worst = max(worst, int(difference.max()))
    return {"rows": rows, "max_pixel_diff": worst, "cache": studio.status()["adapter_cache"]}


def sd15_rows(args: argparse.Namespace) -> dict[str, float]:
    """UNet passes at SD1.5 dims: ``batch`` rows with their own sets vs one pass per row vs a shared set."""
    from diffusers import UNet2DConditionModel

    from benchmarks.fusion_speed import SD15_UNET
    from fusion import AdapterSpec, compose
    from fusion.rows import row_plan
    from fusion.testing import random_lora

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET).eval().requires_grad_(False)
    loras = [random_lora(unet, 16, seed, alpha=8) for seed in range(3 * min(args.batch, 4))]
    per_row = [[AdapterSpec(f"l{(3 * r + j) % len(loras)}", loras[(3 * r + j) % len(loras)], 0.7)
                for j in range(3)] for r in range(args.batch)]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 4, 32, 32, generator=g)
    e = torch.randn(args.batch, 77, 768, generator=g)

    def timed(call: Any, repeats: int = 2) -> float:
        call()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    with torch.inference_mode():
        def sequential() -> None:
            for row, specs in enumerate(per_row):
                with compose(unet, specs):
                    unet(x[row : row + 1], torch.tensor(500), encoder_hidden_states=e[row : row + 1])

        plan = row_plan(per_row)
        with compose(unet, plan.entries) as session:
            session.set_rows(plan.unet, plan.text)
            hetero = timed(lambda: unet(x, torch.tensor(500), encoder_hidden_states=e))
        with compose(unet, per_row[0]):
            shared = timed(lambda: unet(x, torch.tensor(500), encoder_hidden_states=e))
        one_by_one = timed(sequential, repeats=1)
    return {"sequential_s": one_by_one, "hetero_s": hetero, "shared_s": shared,
            "hetero_speedup": one_by_one / hetero, "per_row_cost": hetero / shared}


def ray_overhead(args: argparse.Namespace) -> dict[str, float]:
    import ray
    from ray import serve

    from app.serving.ray_app import build
    from app.serving.wire import adapter_set_id

    home = Path(tempfile.mkdtemp(prefix="medley-serving-ray-"))
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="ERROR",
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}})
    try:
        serve.start(http_options={"location": "NoServer"})
        handle = serve.run(build({"home": str(home), "max_batch": 1, "threads": torch.get_num_threads()}),
                           name="medley-bench", route_prefix=None)
        bodies = [{"prompt": "a red circle on a blue background", "seed": i, "steps": args.steps,
                   "picks": [{"name": "heart", "weight": 0.8}]} for i in range(8)]

        def call(body: dict[str, Any]) -> float:
            started = time.perf_counter()
            answer = handle.options(method_name="render_json",
                                    multiplexed_model_id=adapter_set_id(body)).remote(body).result()
            assert "images" in answer, answer
            return time.perf_counter() - started

        call(bodies[0])
        through_ray = statistics.median(call(body) for body in bodies)
    finally:
        serve.shutdown()
        ray.shutdown()
    from library.catalog import Catalog
    from pipeline import Pick, RenderRequest, Studio, load_base

    os.environ["MEDLEY_HOME"] = str(home)
    studio = Studio(load_base(None, device="cpu"), Catalog(home))
    request = RenderRequest("a red circle on a blue background", seed=0, steps=args.steps, picks=[Pick("heart", 0.8)])
    studio.render(request)
    direct = []
    for _ in range(8):
        started = time.perf_counter()
        studio.render(request)
        direct.append(time.perf_counter() - started)
    in_process = statistics.median(direct)
    return {"ray_s": through_ray, "in_process_s": in_process, "overhead_ms": (through_ray - in_process) * 1e3}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--sets", type=int, default=8, help="distinct adapter sets among the requests")
    parser.add_argument("--batch", type=int, default=8, help="requests per heterogeneous batch")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--skip-sd15", action="store_true")
    parser.add_argument("--ray", action="store_true", help="also measure the Ray Serve deployment's overhead")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if min(args.requests, args.sets, args.batch, args.steps) < 1:
        parser.error("--requests, --sets, --batch and --steps must be at least 1")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; {args.requests} requests over "
          f"{args.sets} adapter sets, {args.steps} steps, batches of {args.batch}")
    toy = toy_rows(args)
    base = toy["rows"]["sequential"]
    print(f"\ntoy base{'':<14}{'s':>8}{'img/s':>8}{'p50 s':>8}{'p95 s':>8}{'x seq':>8}")
    for name, row in toy["rows"].items():
        print(f"  {name:<20}{row['seconds']:>8.2f}{row['images_per_s']:>8.2f}{row['p50_s']:>8.2f}"
              f"{row['p95_s']:>8.2f}{row['images_per_s'] / base['images_per_s']:>8.2f}")
    hetero, shared = toy["rows"]["heterogeneous"], toy["rows"]["shared set"]
    print(f"  per-row adapters cost {hetero['seconds'] / shared['seconds']:.3f}x one shared set; largest pixel "
          f"difference from the solo render: {toy['max_pixel_diff']}; adapter cache {toy['cache']}")
    summary: dict[str, Any] = {
        "hetero_speedup": round(hetero["images_per_s"] / base["images_per_s"], 3),
        "grouped_speedup": round(toy["rows"]["grouped by set"]["images_per_s"] / base["images_per_s"], 3),
        "per_row_cost": round(hetero["seconds"] / shared["seconds"], 3),
        "all_equal_solo": toy["max_pixel_diff"] <= 1,
        "max_pixel_diff": toy["max_pixel_diff"],
        "toy": {name: {k: round(v, 4) for k, v in row.items()} for name, row in toy["rows"].items()},
        "requests": args.requests, "sets": args.sets, "batch": args.batch, "steps": args.steps,
    }
    if not args.skip_sd15:
        print("  sd15: UNet passes ...", file=sys.stderr, flush=True)
        sd15 = sd15_rows(args)
        print(f"\nSD1.5 UNet (32x32 latent, {args.batch} rows, 3 rank-16 LoRAs each): one pass per row "
              f"{sd15['sequential_s']:.2f} s, one heterogeneous pass {sd15['hetero_s']:.2f} s "
              f"({sd15['hetero_speedup']:.2f}x), one shared set {sd15['shared_s']:.2f} s "
              f"(per-row cost {sd15['per_row_cost']:.3f}x)")
        summary["sd15"] = {k: round(v, 4) for k, v in sd15.items()}
    if args.ray:
        print("  ray: deployment overhead ...", file=sys.stderr, flush=True)
        ray = ray_overhead(args)
        print(f"\nRay Serve (1 replica, deployment handle): {ray['ray_s']:.3f} s a request against "
              f"{ray['in_process_s']:.3f} s in process: {ray['overhead_ms']:.0f} ms overhead")
        summary["ray"] = {k: round(v, 4) for k, v in ray.items()}
    print("\ntargets: heterogeneous >= 2x sequential on the toy base; per-row cost <= 1.10x")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
