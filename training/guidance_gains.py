"""Choose the gated method's adapter-guidance gains with the judge: ``python -m training.guidance_gains``.

Adapter guidance (:mod:`fusion.guidance`) runs each role's adapters in the unconditional half of
classifier-free guidance at a gain ``u`` (1: as every loader does; 0: the adapter acts in the
conditional half only, so guidance amplifies it like the prompt). This script renders the
training pairs of the fusion gate (:mod:`training.composition_tuning`: never a held-out concept
of the composition benchmark), ``--seeds`` composed prompts each from seeds of its own, under
every (content u, style u) of ``--content`` x ``--style``, and prints the share of images in
which the judge finds both concepts, content and style. The winner (ties: the larger total gain,
i.e. the smaller change from the loaders' behaviour, then the first listed) is what
:data:`fusion.methods.gated.DEFAULT_UNCOND` holds; the script writes nothing.

``--gate`` tunes under the trained gate (``assets/fusion-gate``) instead of the schedule. Cost
on the toy base, 2-core CPU: about 0.42 s an image with the schedule (0.75 with the gate) when it
ran the guidance halves as two passes; the default grid (4 x 3 candidates x 36 pairs x 4 seeds)
took 14 minutes then, and adapter guidance now costs no extra pass: 13 minutes on 2026-12-02,
when the run over the retrained (800-step) starter shapes chose content 0.5 / style 0.75 again.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

from fusion.gate import GATE_DIR
from training.composition_tuning import Score, best_of, load_tuning, log, score_options
from training.fusion_gate import STARTER_DIR, pair_name

TUNING_OFFSET = 800  # per pair: seeds pair_seed0 + 800.. (gate training 0.., validation 500.., strengths 700..)
DEFAULT_CONTENT = (0.0, 0.25, 0.5, 1.0)
DEFAULT_STYLE = (0.5, 0.75, 1.0)


@dataclass(frozen=True)
class Gains:
    content: float
    style: float

    @property
    def uncond(self) -> dict[str, float]:
        return {"content": self.content, "style": self.style}


def best_gains(scores: dict[Gains, Score]) -> Gains:
    """Highest both-present share; ties go to the larger total gain (closer to plain), then the first listed."""
    return best_of(scores, {g: -(g.content + g.style) for g in scores})


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--library", type=Path, default=STARTER_DIR, help="folder of the starter adapters")
    parser.add_argument("--content", type=float, nargs="+", default=list(DEFAULT_CONTENT),
                        help="unconditional gains of the content role to try")
    parser.add_argument("--style", type=float, nargs="+", default=list(DEFAULT_STYLE),
                        help="unconditional gains of the style role to try")
    parser.add_argument("--gate", nargs="?", type=Path, const=GATE_DIR, default=None,
                        help="tune under the trained gate (default folder: assets/fusion-gate)")
    parser.add_argument("--seeds", type=int, default=4, help="composed prompts per training pair")
    parser.add_argument("--max-pairs", type=int, default=None, help="at most this many training pairs (spread)")
    args = parser.parse_args(argv)
    if any(not (0.0 <= g <= 1.0) for g in [*args.content, *args.style]):
        parser.error("unconditional gains must lie in 0..1")
    if not 0 < args.seeds <= 200:
        parser.error("--seeds must lie in 1..200")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from fusion.gate import FusionGate
    pairs, base, judge = load_tuning(args.library, args.max_pairs)
    base_options: dict[str, Any] = {} if args.gate is None else {"gate": FusionGate.load(args.gate)}
    candidates = [Gains(c, s) for c, s in product(args.content, args.style)]
    log(f"{len(candidates)} candidates x {len(pairs)} training pairs x {args.seeds} seeds "
        f"({len(candidates) * len(pairs) * args.seeds} images), {'trained gate' if args.gate else 'schedule'}")
    started = time.perf_counter()
    scores: dict[Gains, Score] = {}
    for number, gains in enumerate(candidates, 1):
        scores[gains] = score_options(base, judge, pairs, args.seeds, TUNING_OFFSET,
                                      {**base_options, "uncond": gains.uncond})
        s = scores[gains]
        log(f"[{number}/{len(candidates)}] uncond content {gains.content:g} style {gains.style:g}: "
            f"content {s.content:.3f} style {s.style:.3f} both {s.both:.3f}")
    chosen = best_gains(scores)
    seconds = time.perf_counter() - started
    print(f"{'u content':>10}{'u style':>9}{'content%':>10}{'style%':>9}{'both':>8}")
    for g, s in scores.items():
        mark = "  <- chosen" if g == chosen else ""
        print(f"{g.content:>10g}{g.style:>9g}{s.content:>10.3f}{s.style:>9.3f}{s.both:>8.3f}{mark}")
    summary = {
        "chosen": chosen.uncond, "both": round(scores[chosen].both, 4), "gate": args.gate is not None,
        "pairs": [pair_name(p) for p in pairs], "seeds_per_pair": args.seeds, "seconds": round(seconds, 1),
        "candidates": [{**g.uncond, "content_share": round(s.content, 4), "style_share": round(s.style, 4),
                        "both": round(s.both, 4)} for g, s in scores.items()],
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
