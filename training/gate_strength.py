"""Tune the trained gate's role strengths with the judge: ``python -m training.gate_strength``.

The fusion gate (:mod:`fusion.gate`, trained by :mod:`training.fusion_gate`) learns from the
denoising loss which adapter speaks where; how *strongly* the composed adapters speak is a
separate knob: each starter is calibrated to show its concept alone, and beside a second
adapter it shows it less often. This script picks, for the content and the style role, the
gain (``FusionGate.strengths``) at which the judge finds both concepts most often:

1. the gate's own training pairs (:func:`training.fusion_gate.training_pairs`: no concept of
   :data:`toyworld.concepts.COMPOSITION_HELDOUT`, so the composition benchmark's held-out pairs
   stay unseen), ``--seeds`` composed scenes each, from seeds neither the gate's training nor
   its validation scenes use;
2. every (content, style) candidate of ``--content`` x ``--style`` renders those prompts with
   the trained gate (20 DDIM steps and the gated method's adapter guidance, the app's defaults)
   and the judge reads shape, texture and palette back;
3. the candidate with the highest both-present share wins (ties: the smaller total gain, then
   the first listed); it is written into the gate's ``config.json`` as ``strengths`` with a
   ``strength_tuning`` record (every candidate's content, style and both shares).

``--dry-run`` prints the table without writing. Cost on the toy base, 2-core CPU: about
0.55-0.75 s per image (the gate needs each adapter's output), so a 2 x 2 grid (36 pairs x 4
seeds) takes 5-7 minutes.
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

from fusion.gate import GATE_DIR, FusionGate
from fusion.methods.gated import DEFAULT_UNCOND
from toyworld.concepts import COMPOSITION_HELDOUT
from training.composition_tuning import Score, best_of, load_tuning, log, score_options
from training.fusion_gate import STARTER_DIR, Pair, pair_name

TUNING_OFFSET = 700  # per pair: seeds pair_seed0 + 700.. (training uses 0.., validation 500..)
DEFAULT_CONTENT = (1.0, 1.2, 1.4)
DEFAULT_STYLE = (1.0, 1.2, 1.4)


@dataclass(frozen=True)
class Candidate:
    content: float
    style: float

    @property
    def strengths(self) -> dict[str, float]:
        return {"content": self.content, "style": self.style}


def score_candidate(base: Any, judge: Any, gate: FusionGate, pairs: Sequence[Pair], seeds: int,
                    candidate: Candidate, steps: int = 20) -> Score:
    """Render ``seeds`` composed prompts per pair with the gate at ``candidate``'s strengths; the judge scores them."""
    return score_options(base, judge, pairs, seeds, TUNING_OFFSET, {"gate": gate, "strengths": candidate.strengths},
                         steps)


def best_candidate(scores: dict[Candidate, Score]) -> Candidate:
    """Highest both-present share; ties go to the smaller total gain, then to the first listed."""
    return best_of(scores, {c: c.content + c.style for c in scores})


def tuning_record(scores: dict[Candidate, Score], chosen: Candidate, pairs: Sequence[Pair], seeds: int,
                  seconds: float) -> dict[str, Any]:
    return {
        "script": "training/gate_strength.py",
        "criterion": "judge: share of composed images showing both the content and the style concept",
        "pairs": [pair_name(p) for p in pairs],
        "heldout_concepts": sorted(COMPOSITION_HELDOUT),
        "seeds_per_pair": seeds,
        "uncond": dict(DEFAULT_UNCOND),  # the adapter guidance the candidates ran under
        "candidates": [{"content": c.content, "style": c.style, "content_share": round(s.content, 4),
                        "style_share": round(s.style, 4), "both": round(s.both, 4)} for c, s in scores.items()],
        "chosen": chosen.strengths,
        "seconds": round(seconds, 1),
        "date": time.strftime("%Y-%m-%d"),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gate", type=Path, default=GATE_DIR, help="folder of the trained gate (read and updated)")
    parser.add_argument("--library", type=Path, default=STARTER_DIR, help="folder of the starter adapters")
    parser.add_argument("--content", type=float, nargs="+", default=list(DEFAULT_CONTENT), help="content gains to try")
    parser.add_argument("--style", type=float, nargs="+", default=list(DEFAULT_STYLE), help="style gains to try")
    parser.add_argument("--seeds", type=int, default=4, help="composed prompts per training pair")
    parser.add_argument("--max-pairs", type=int, default=None, help="at most this many training pairs (spread)")
    parser.add_argument("--dry-run", action="store_true", help="print the table, write nothing")
    args = parser.parse_args(argv)
    gains = [*args.content, *args.style]
    if any(not (0.0 <= g <= 4.0) for g in gains):
        parser.error("gains must lie in 0..4")
    if not 0 < args.seeds <= 200:
        parser.error("--seeds must lie in 1..200")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    gate = FusionGate.load(args.gate)
    pairs, base, judge = load_tuning(args.library, args.max_pairs)
    candidates = [Candidate(c, s) for c, s in product(args.content, args.style)]
    log(f"{len(candidates)} candidates x {len(pairs)} training pairs x {args.seeds} seeds "
        f"({len(candidates) * len(pairs) * args.seeds} images)")
    started = time.perf_counter()
    scores: dict[Candidate, Score] = {}
    for number, candidate in enumerate(candidates, 1):
        scores[candidate] = score_candidate(base, judge, gate, pairs, args.seeds, candidate)
        s = scores[candidate]
        log(f"[{number}/{len(candidates)}] content x{candidate.content:g} style x{candidate.style:g}: "
            f"content {s.content:.3f} style {s.style:.3f} both {s.both:.3f}")
    chosen = best_candidate(scores)
    seconds = time.perf_counter() - started
    print(f"{'content':>8}{'style':>8}{'content%':>10}{'style%':>9}{'both':>8}")
    for c, s in scores.items():
        mark = "  <- chosen" if c == chosen else ""
        print(f"{c.content:>8g}{c.style:>8g}{s.content:>10.3f}{s.style:>9.3f}{s.both:>8.3f}{mark}")
    record = tuning_record(scores, chosen, pairs, args.seeds, seconds)
    if not args.dry_run:
        gate.strengths = chosen.strengths
        gate.record = {**gate.record, "strength_tuning": record}
        gate.save(args.gate)
        log(f"strengths {chosen.strengths} written to {args.gate / 'config.json'}")
    print(json.dumps({"chosen": chosen.strengths, "both": round(scores[chosen].both, 4), "written": not args.dry_run,
                      "seconds": round(seconds, 1)}))


if __name__ == "__main__":
    main()
