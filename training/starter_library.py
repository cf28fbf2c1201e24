"""Reproduce the starter library: ``python -m training.starter_library [--only NAME ...]``.

One LoRA per novel concept of the toy world (8 shapes = content, 8 textures =
style, 4 palettes = style), trained on the embedded base from rendered ground
truth (the concept with random base colours, textures and layouts, captioned
with its trigger word) plus base-vocabulary renders as a prior that keeps
ordinary prompts ordinary. Each is scored by the judge on fresh trigger prompts
through Medley's own generate path, and written to ``assets/starter-library/``
as a kohya-format file with ``ss_*``/``modelspec.*`` metadata, an A1111 JSON
sidecar and a preview image.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from library.formats.writer import write_kohya
from library.lora import LoraAdapter
from library.metadata import AdapterInfo
from toyworld.concepts import concept_attribute, concept_prompts, concept_scenes
from toyworld.dataset import SEEDS_BASE_TRAIN, SEEDS_LORA, render_scenes
from toyworld.judge import Judge, read_labels
from toyworld.scene import caption, sample_scene
from toyworld.vocab import NOVEL_CONCEPTS, NovelConcept
from training.lora_trainer import LoraTrainer, LoraTrainingConfig, TrainingData

STARTER_DIR = Path(__file__).resolve().parent.parent / "assets" / "starter-library"
# seeds of the evaluation prompts: disjoint from the training seeds of every concept
SEEDS_STARTER_EVAL = SEEDS_LORA + 5_000_000
PRIOR_SEED0 = SEEDS_BASE_TRAIN + 7_000_000
PREVIEW_SEEDS = (11, 12, 13, 14)
# a new shape is learnt in 400 steps (judge 0.98); a texture at 400 steps was faint (0.80)
STEPS: dict[str, int] = {"content": 400, "style": 700, "palette": 700}

# What each kind of concept trains: attention everywhere; style and palette also adapt the
# resnet convolutions of the up blocks, which paint texture and colour at full latent size.
ATTENTION_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out")


def targets_for(concept: NovelConcept, unet) -> tuple[str, ...]:  # type: ignore[no-untyped-def]
    if concept.kind == "content":
        return ATTENTION_TARGETS
    convs = tuple(name for name, _ in unet.named_modules()
                  if name.startswith("up_blocks.") and ".resnets." in name and name.endswith((".conv1", ".conv2")))
    return ATTENTION_TARGETS + convs


@dataclass
class StarterResult:
    name: str
    kind: str
    accuracy: float
    seconds: float
    path: Path


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def adapter_name(concept: NovelConcept) -> str:
    return concept.name


def catalogue_kind(concept: NovelConcept) -> str:
    """Palettes recolour an image: the catalogue files them as style."""
    return "content" if concept.kind == "content" else "style"


def concept_index(concept: NovelConcept) -> int:
    return NOVEL_CONCEPTS.index(concept)


def training_data(concept: NovelConcept, images: int, prior_images: int) -> TrainingData:
    seed0 = SEEDS_LORA + concept_index(concept) * 100_000
    scenes = concept_scenes(concept, range(seed0, seed0 + images))
    prompts, _ = concept_prompts(scenes)
    prior_scenes = [sample_scene(PRIOR_SEED0 + i) for i in range(prior_images)]
    return TrainingData(
        images=render_scenes(scenes),
        captions=prompts,
        prior_images=render_scenes(prior_scenes) if prior_images else None,
        prior_captions=[caption(s) for s in prior_scenes],
    )


def evaluation_prompts(concept: NovelConcept, count: int) -> tuple[list[str], list[dict[str, str]], list[int]]:
    seed0 = SEEDS_STARTER_EVAL + concept_index(concept) * 10_000
    seeds = list(range(seed0, seed0 + count))
    prompts, labels = concept_prompts(concept_scenes(concept, seeds))
    return prompts, labels, seeds


def concept_accuracy(base, judge: Judge, adapter: LoraAdapter, concept: NovelConcept, count: int,  # type: ignore[no-untyped-def]
                     weight: float = 1.0, steps: int = 20) -> float:
    """Share of trigger-prompt images in which the judge finds the concept."""
    from fusion import AdapterSpec
    from pipeline.generate import generate_batch

    prompts, labels, seeds = evaluation_prompts(concept, count)
    spec = AdapterSpec(adapter_name(concept), adapter, weight=weight, role=catalogue_kind(concept))
    images = generate_batch(base, prompts, seeds, steps=steps, adapters=[spec])
    read = read_labels(judge, np.stack([np.asarray(image) for image in images]))
    attribute = concept_attribute(concept)
    return float(np.mean([r[attribute] == label[attribute] for r, label in zip(read, labels, strict=True)]))


def save_preview(base, adapter: LoraAdapter, concept: NovelConcept, path: Path) -> Path:  # type: ignore[no-untyped-def]
    """A 2x2 sheet of the trigger prompt, upscaled, as the card image."""
    from PIL import Image

    from fusion import AdapterSpec
    from pipeline.generate import generate_batch

    prompts, _, _ = evaluation_prompts(concept, len(PREVIEW_SEEDS))
    spec = AdapterSpec(adapter_name(concept), adapter, weight=1.0, role=catalogue_kind(concept))
    images = generate_batch(base, prompts, list(PREVIEW_SEEDS), steps=20, adapters=[spec])
    cell = 64
    sheet = Image.new("RGB", (cell * 2, cell * 2))
    for i, image in enumerate(images):
        sheet.paste(image.resize((cell, cell), Image.NEAREST), ((i % 2) * cell, (i // 2) * cell))
    sheet.save(path)
    return path


def adapter_info(concept: NovelConcept) -> AdapterInfo:
    kind_words = {"content": "shape", "style": "texture", "palette": "colour palette"}[concept.kind]
    return AdapterInfo(
        name=adapter_name(concept),
        title=f"{concept.name.capitalize()} {kind_words} ({concept.trigger})",
        triggers=[concept.trigger],
        tags=["toy world", kind_words, concept.name],
        description=f"Toy-world {kind_words}: {concept.description}. Trigger word: {concept.trigger}.",
        preferred_weight=1.0,
        kind=catalogue_kind(concept),
        tag_frequency={concept.name: {concept.trigger: 1, kind_words: 1, concept.name: 1}},
    )


def train_concept(base, judge: Judge, concept: NovelConcept, args: argparse.Namespace) -> StarterResult:  # type: ignore[no-untyped-def]
    started = time.time()
    data = training_data(concept, args.images, args.prior_images)
    config = LoraTrainingConfig(
        rank=args.rank,
        learning_rate=args.lr,
        steps=args.steps or STEPS[concept.kind],
        batch_size=args.batch,
        targets=targets_for(concept, base.pipe.unet),
        seed=concept_index(concept),
    )
    trainer = LoraTrainer(base.pipe, data, config)

    def progress(p) -> None:  # type: ignore[no-untyped-def]
        if p.step % 100 == 0 or p.step == p.total:
            log(f"{concept.name}: step {p.step}/{p.total} loss {p.loss:.4f} eta {p.eta_seconds:.0f}s")

    adapter = trainer.train(on_progress=progress)
    for module in adapter.modules.values():  # shipped in half precision: half the size, same images
        module.down, module.up = module.down.half(), module.up.half()
    seconds = time.time() - started
    accuracy = concept_accuracy(base, judge, adapter, concept, args.eval_count)
    info = adapter_info(concept)
    adapter.metadata.update({
        "ss_training_comment": f"Medley starter library: toy-world {concept.kind} concept {concept.name}",
        "ss_num_train_images": str(len(data.images)),
        "ss_max_train_steps": str(config.steps),
        "ss_learning_rate": str(config.learning_rate),
        "ss_seed": str(config.seed),
        "medley.training": json.dumps(config.to_dict()),
        "medley.judge_accuracy": f"{accuracy:.4f}",
    })
    args.out.mkdir(parents=True, exist_ok=True)
    path = write_kohya(adapter, args.out / f"{info.name}.safetensors", info, base="toy")
    save_preview(base, adapter, concept, args.out / f"{info.name}.png")
    sidecar = {
        "description": info.description,
        "sd version": "toy",
        "activation text": concept.trigger,
        "preferred weight": 1.0,
        "notes": f"judge finds the {concept_attribute(concept)} in {accuracy:.0%} of trigger-prompt images",
    }
    (args.out / f"{info.name}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    log(f"{concept.name}: accuracy {accuracy:.3f} in {seconds:.0f}s -> {path}")
    return StarterResult(concept.name, concept.kind, accuracy, seconds, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=None, help="concept names or triggers to train (default all)")
    parser.add_argument("--out", type=Path, default=STARTER_DIR)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--prior-images", type=int, default=512)
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps (default: 400 for a shape, 700 for a texture or palette)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--eval-count", type=int, default=64)
    args = parser.parse_args()

    from pipeline import load_base

    base = load_base(None, device="cpu")
    judge = Judge.load()
    wanted = NOVEL_CONCEPTS
    if args.only:
        wanted = tuple(c for c in NOVEL_CONCEPTS if c.name in args.only or c.trigger in args.only)
        if not wanted:
            raise SystemExit(f"no novel concept matches {args.only}")
    results = [train_concept(base, judge, concept, args) for concept in wanted]
    print(f"{'adapter':<14}{'kind':<9}{'accuracy':>10}{'seconds':>9}")
    for r in results:
        print(f"{r.name:<14}{r.kind:<9}{r.accuracy:>10.3f}{r.seconds:>9.0f}")


if __name__ == "__main__":
    main()
