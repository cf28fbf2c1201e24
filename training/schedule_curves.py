"""Choose the gated schedule's role curves with the judge: ``python -m training.schedule_curves``.

The training-free schedule of :mod:`fusion.methods.gated` weights content and style adapters
along the sampling trajectory (``content_curve``, ``style_curve``: ``fraction=value`` points).
Its curves were first chosen without adapter guidance; guidance amplifies each adapter in the
conditional half, which moves where the two roles should speak. This script renders the training
pairs of the fusion gate (:mod:`training.composition_tuning`: never a held-out concept of the
composition benchmark), ``--seeds`` composed prompts each from seeds of its own, under every
candidate of ``CANDIDATES`` (or those named by ``--only``) with the gated method's default
adapter guidance, and prints the share of images in which the judge finds both concepts,
content and style. The winner (ties: the candidate listed first, the earlier default leading
the list) is what :data:`fusion.methods.gated.DEFAULT_CURVES` holds; the script writes nothing.

Run on 2026-12-02 (both present; 4 seeds, then the leaders with ``--seeds 8``): style-early
(the earlier default: style 0.3 -> 1 over the first 30%) 0.875 / 0.896; style-late (0 until 20%,
1 from 40%) 0.896 / 0.906; **style-late-0.1** (0 until 10%, 1 from 30%) 0.910 at 8 seeds;
style-late-sharp 0.910 (listed later); style-later 0.896; style-slow 0.875; content boosted to
1.3 over the first 30% 0.889 (with style-late 0.896), to 1.5 0.854; style rising to 1.2 late
0.861. The curves move both-present by at most ~0.02 on these pairs, about one standard error.

Cost on the toy base, 2-core CPU: about 0.35 s an image, so 10 candidates x 36 pairs x 4 seeds
take about 9 minutes.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusion.schedule import Schedule
from training.composition_tuning import Score, best_of, load_tuning, log, score_options
from training.fusion_gate import STARTER_DIR, pair_name

TUNING_OFFSET = 900  # per pair: seeds pair_seed0 + 900.. (gate 0.., validation 500.., strengths 700.., gains 800..)
MAX_SEEDS = 100  # the pair's seed block ends at 1000


@dataclass(frozen=True)
class Curves:
    name: str
    content: str  # Schedule text (fusion.schedule), e.g. "0=1,1=1"
    style: str

    @property
    def options(self) -> dict[str, Any]:
        return {"content_curve": Schedule.parse(self.content), "style_curve": Schedule.parse(self.style)}


# the default before this tuning first (a tie keeps it); the winner, style-late-0.1, is the default now
CANDIDATES: tuple[Curves, ...] = (
    Curves("style-early", "0=1,1=1", "0=0.3,0.3=1,1=1"),
    Curves("style-late", "0=1,1=1", "0=0,0.2=0,0.4=1,1=1"),
    Curves("style-late-0.1", "0=1,1=1", "0=0,0.1=0,0.3=1,1=1"),  # the default
    Curves("style-late-sharp", "0=1,1=1", "0=0,0.2=0,0.3=1,1=1"),
    Curves("style-later", "0=1,1=1", "0=0,0.3=0,0.5=1,1=1"),
    Curves("style-slow", "0=1,1=1", "0=0.3,0.5=1,1=1"),
    Curves("content-early-1.3", "0=1.3,0.3=1.3,0.5=1,1=1", "0=0.3,0.3=1,1=1"),
    Curves("content-early-1.5", "0=1.5,0.3=1.5,0.5=1,1=1", "0=0.3,0.3=1,1=1"),
    Curves("content-early-1.3+style-late", "0=1.3,0.3=1.3,0.5=1,1=1", "0=0,0.2=0,0.4=1,1=1"),
    Curves("content-early-1.3+style-slow", "0=1.3,0.3=1.3,0.5=1,1=1", "0=0.3,0.5=1,1=1"),
    Curves("content-early-1.3+style-1.2", "0=1.3,0.3=1.3,0.5=1,1=1", "0=0.3,0.3=1,0.6=1.2,1=1.2"),
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--library", type=Path, default=STARTER_DIR, help="folder of the starter adapters")
    parser.add_argument("--only", nargs="+", choices=[c.name for c in CANDIDATES], default=None,
                        help="score only these candidates")
    parser.add_argument("--seeds", type=int, default=4, help="composed prompts per training pair")
    parser.add_argument("--max-pairs", type=int, default=None, help="at most this many training pairs (spread)")
    args = parser.parse_args(argv)
    if not 0 < args.seeds <= MAX_SEEDS:
        parser.error(f"--seeds must lie in 1..{MAX_SEEDS}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    pairs, base, judge = load_tuning(args.library, args.max_pairs)
    candidates = [c for c in CANDIDATES if args.only is None or c.name in args.only]
    log(f"{len(candidates)} candidates x {len(pairs)} training pairs x {args.seeds} seeds "
        f"({len(candidates) * len(pairs) * args.seeds} images)")
    started = time.perf_counter()
    scores: dict[Curves, Score] = {}
    for number, curves in enumerate(candidates, 1):
        scores[curves] = score_options(base, judge, pairs, args.seeds, TUNING_OFFSET, curves.options)
        s = scores[curves]
        log(f"[{number}/{len(candidates)}] {curves.name}: "
            f"content {s.content:.3f} style {s.style:.3f} both {s.both:.3f}")
    chosen = best_of(scores, {c: 0.0 for c in scores})
    seconds = time.perf_counter() - started
    width = max(len(c.name) for c in candidates)
    print(f"{'curves':<{width}}{'content%':>10}{'style%':>9}{'both':>8}")
    for c, s in scores.items():
        mark = "  <- chosen" if c == chosen else ""
        print(f"{c.name:<{width}}{s.content:>10.3f}{s.style:>9.3f}{s.both:>8.3f}{mark}")
    summary = {
        "chosen": {"name": chosen.name, "content_curve": chosen.content, "style_curve": chosen.style},
        "both": round(scores[chosen].both, 4), "pairs": [pair_name(p) for p in pairs],
        "seeds_per_pair": args.seeds, "seconds": round(seconds, 1),
        "candidates": [{"name": c.name, "content_curve": c.content, "style_curve": c.style,
                        "content_share": round(s.content, 4), "style_share": round(s.style, 4),
                        "both": round(s.both, 4)} for c, s in scores.items()],
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
