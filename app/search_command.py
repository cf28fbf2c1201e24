"""`medley search`: which library adapters fit a prompt, and the plan Medley would compose."""

from __future__ import annotations

import argparse
import json
import sys


def add_search_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "search",
        help="rank library adapters for a prompt and show the composed plan",
        description="Rank the library's adapters for PROMPT (description embeddings in FAISS plus exact trigger and "
                    "name matches) and show the plan `medley generate --auto` would use.",
    )
    parser.add_argument("prompt", metavar="PROMPT")
    parser.add_argument("--k", type=int, default=5, help="how many adapters to list (default 5)")
    parser.add_argument("--base", default=None, help="only adapters for this base: sd1, sd2, sdxl, toy")
    parser.add_argument("--json", action="store_true", help="print {results, plan} as one JSON document")
    parser.set_defaults(run=_run_search)


def _run_search(args: argparse.Namespace) -> int:
    from library.catalog import open_catalog
    from retrieval import Retriever

    if args.k < 1:
        print("medley: --k must be at least 1", file=sys.stderr)
        return 2
    if not args.prompt.strip():
        print("medley: the prompt is empty", file=sys.stderr)
        return 2
    with open_catalog() as catalog:
        retriever = Retriever(catalog.list())
    results = retriever.search(args.prompt, k=args.k, base=args.base)
    plan = retriever.plan(args.prompt, base=args.base)
    if args.json:
        print(json.dumps({
            "results": [{"name": r.name, "id": r.id, "score": round(r.score, 4), "similarity": round(r.similarity, 4),
                         "kind": r.kind, "base": r.base, "triggers": list(r.triggers), "reasons": list(r.reasons)}
                        for r in results],
            "plan": plan.to_dict(),
        }))
        return 0
    if not results:
        print("no adapters in the library (import some with `medley library import FILE`)")
        return 0
    print(f"{'#':>2}  {'adapter':<20}{'score':>7}  {'kind':<8}{'base':<8}triggers")
    for rank, r in enumerate(results, 1):
        print(f"{rank:>2}  {r.name:<20}{r.score:>7.3f}  {r.kind:<8}{r.base:<8}{', '.join(r.triggers)}")
    print()
    if plan.adapters:
        print(f"plan: {plan.final_prompt}")
        for concept in plan.concepts:
            for adapter in concept.adapters:
                reasons = "; ".join(adapter.reasons)
                print(f"  {concept.text!r}: {adapter.name} weight {adapter.weight:.2f} ({reasons})")
    else:
        print("plan: no adapter clears the threshold; the base alone draws this prompt")
    return 0
