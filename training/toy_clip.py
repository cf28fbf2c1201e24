"""Reproduce the toy CLIP: ``python -m training.toy_clip [--steps N] [--batch B] [--images N] [--out DIR]``.

The default image embedder of Medley (:class:`retrieval.embedders.image.ImageEmbedder`) is a small
open_clip ``CLIP`` trained here, from scratch, on toy-world renders and plain-word captions, and
shipped in ``assets/toy-clip/``. Uses open_clip (a dependency of Medley); downloads nothing.

1. Data: ``--images`` scenes from seeds ``SEEDS_TOY_CLIP`` on (see :data:`SEEDS_TOY_CLIP`), rendered
   at 32x32 by the toy world itself: half over the whole vocabulary (base and novel shapes, textures
   and palettes, as the judge sees it), a quarter holding one novel concept
   (:func:`toyworld.concepts.concept_scenes`), a quarter holding a random mix of them
   (:func:`toyworld.concepts.combined_scenes`). Captions name everything in plain words, novel
   concepts by their names (``ring``, ``grid``, ``pastel``) or descriptions, never by their made-up
   trigger words, so that zero-shot text such as "a picture of ring" lands near ring images. Each
   step draws a fresh caption per image: the full scene, a few of its attributes, or one attribute
   alone; shapes and textures, which colours cannot stand in for, most often. Half of each batch
   shares one foreground/background colour pair (hard negatives). Images are perturbed as a
   diffusion sample differs from a clean render (:func:`training.judge.augment`), since the
   embedder reads generated previews.
2. Model: a small ``open_clip.CLIP``, embed dim 128: the image tower a timm ``resnet10t`` trained
   from scratch (average pool, linear projection); the text tower width 96, 4 layers, 4 heads,
   context 32, open_clip's own BPE vocabulary. ``--vision-timm vit`` takes a tiny ViT instead
   (32 px / patch 4, width 128, 4 layers, 4 heads); 2,400 steps of it left shape at chance (0.086
   top-1; texture 0.42, novel concept 0.35), where the CNN reads shapes almost perfectly.
3. Training: symmetric InfoNCE with CLIP's learnable logit scale (clamped at 100), as open_clip's
   ``ClipLoss``; AdamW (no decay on gains, biases, embeddings and the scale), linear warm-up then
   cosine decay, ``--threads`` torch threads (2), seeded: the same settings give the same weights.
4. Output, each file written atomically into ``--out`` (default ``assets/toy-clip/``):
   ``open_clip_config.json`` (``model_cfg`` and ``preprocess_cfg``: size 32 and the mean/std used),
   ``open_clip_model.safetensors`` (10.2M parameters stored as float16: 20 MB; ``load_state_dict``
   casts them to the float32 model) and ``report.json``: settings, seconds, losses and a zero-shot
   evaluation of the saved files through ``ImageEmbedder`` on fresh seeds: top-1 over the labels
   with "a picture of {}" for shape (14), texture (13), foreground colour (8), palette (5) and
   novel concept (20), and how often the preview tags of the refiner
   (:func:`retrieval.preview_tags.zero_shot_tags` over :func:`retrieval.preview_tags.toy_world_labels`,
   top 3) of four images of one novel concept, as on a starter preview sheet, name the concept.

Time on 2 CPU cores: rendering 50,000 scenes takes about 1 minute (2 processes); a step at batch
128 takes 0.24 s (the ViT: 0.42 s), so the default 3,600 steps take about 15 minutes, and
evaluation a few seconds: 16 minutes in all. The shipped model's zero-shot top-1 on fresh scenes:
shape 0.986, texture 0.914, novel concept 0.955, palette 0.607, foreground colour 0.237 (half of
each batch shares its colours, so colour is learnt least); the preview tags of four images of a
novel concept name it in 100% of sheets. ``--steps 3 --images 512`` is a smoke run of seconds. If ``report.json``
shows shape or texture accuracy short of the colours', more ``--steps`` is the knob. With another
busy process on the machine, ``--threads 1`` avoids two torch threads waiting on each other.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from library.files import write_atomic
from retrieval.embedders.image import CONFIG_FILE, WEIGHTS_FILE
from retrieval.paths import TOY_CLIP_DIR
from retrieval.preview_tags import toy_world_labels
from toyworld.concepts import combined_scenes, concept_scenes
from toyworld.dataset import JUDGE_VOCAB, SEEDS_LORA
from toyworld.render import render
from toyworld.scene import Scene, sample_scene
from toyworld.vocab import (
    ALL_SHAPES,
    ALL_TEXTURES,
    FOREGROUND_COLOURS,
    IMAGE_SIZE,
    NOVEL_CONCEPTS,
    NOVEL_PALETTES,
    NOVEL_SHAPES,
    NOVEL_TEXTURES,
    PALETTES,
)
from training.judge import augment

# Seeds of the training scenes (48,000,000 on). Free: the base uses 0 (+5M, +7M), the judge 10M and
# 20M (+500k), benchmarks 30M (+0.7M, +1M, +3M, +4M), LoRAs 40M + concept * 100k (< 42M), the starter
# evaluation 45M (+500k), the fusion gate 46M, the weight-encoder corpus 60M, the export 49M.
SEEDS_TOY_CLIP = SEEDS_LORA + 8_000_000
SEEDS_TOY_CLIP_EVAL = SEEDS_TOY_CLIP + 500_000  # the evaluation scenes: disjoint from any --images below 500k
TEMPLATE = "a picture of {}"
REPORT_FILE = "report.json"
VOCAB_SIZE = 49408  # open_clip's SimpleTokenizer (its BPE vocabulary ships inside the package)
Log = Callable[[str], None]


@dataclass(frozen=True)
class ModelSettings:
    embed_dim: int = 128
    patch_size: int = 4
    vision_width: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    text_width: int = 96
    text_layers: int = 4
    text_heads: int = 4
    context_length: int = 32
    vision_timm: str | None = "resnet10t"  # a timm CNN trained from scratch; None: the tiny ViT

    def model_cfg(self) -> dict[str, Any]:
        """The keyword arguments of ``open_clip.CLIP`` (the ``model_cfg`` of ``open_clip_config.json``)."""
        vision: dict[str, Any] = {"image_size": IMAGE_SIZE, "patch_size": self.patch_size, "width": self.vision_width,
                                  "layers": self.vision_layers, "head_width": self.vision_width // self.vision_heads}
        if self.vision_timm:
            vision = {"image_size": IMAGE_SIZE, "timm_model_name": self.vision_timm, "timm_model_pretrained": False,
                      "timm_pool": "avg", "timm_proj": "linear"}
        text = {"context_length": self.context_length, "vocab_size": VOCAB_SIZE, "width": self.text_width,
                "heads": self.text_heads, "layers": self.text_layers}
        return {"embed_dim": self.embed_dim, "vision_cfg": vision, "text_cfg": text}


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 3600
    batch: int = 128
    images: int = 50_000
    learning_rate: float = 1e-3
    warmup: float = 0.05  # fraction of the steps
    weight_decay: float = 0.1
    seed: int = 0
    threads: int = 2
    workers: int = 2  # rendering processes
    eval_per_concept: int = 20  # evaluation images per novel concept (and 50x that over the vocabulary)
    model: ModelSettings = field(default_factory=ModelSettings)


@dataclass
class TrainingLog:
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


# -- data ---------------------------------------------------------------------------------------


def scene_for(seed: int) -> Scene:
    """The training scene of ``seed``: the whole vocabulary (1/2), one novel concept (1/4) or a mix (1/4)."""
    kind = seed % 4
    if kind < 2:
        return sample_scene(seed, **JUDGE_VOCAB)  # type: ignore[arg-type]
    rng = np.random.default_rng([seed, 1])
    if kind == 2:
        return concept_scenes(NOVEL_CONCEPTS[int(rng.integers(len(NOVEL_CONCEPTS)))], [seed])[0]
    families = [NOVEL_SHAPES, NOVEL_TEXTURES, NOVEL_PALETTES]
    keep = [family for family in families if rng.random() < 0.6] or [families[int(rng.integers(3))]]
    return combined_scenes([family[int(rng.integers(len(family)))] for family in keep], [seed])[0]


def render_all(scenes: Sequence[Scene], workers: int = 1) -> np.ndarray:
    """uint8 [N, 32, 32, 3] renders, in ``workers`` processes for large sets."""
    if workers > 1 and len(scenes) > 1024:
        with mp.get_context("fork").Pool(workers) as pool:
            return np.stack(pool.map(render, scenes, chunksize=256))
    return np.stack([render(scene) for scene in scenes])


_NOVEL = {concept.name: concept for concept in NOVEL_CONCEPTS}
_POSITIONS = {"center": "", "left": " on the left", "right": " on the right", "top": " at the top",
              "bottom": " at the bottom"}
_SINGLE_FORMS: dict[str, tuple[str, ...]] = {
    "shape": ("{}", "a {}", "a picture of a {}", TEMPLATE, "a {} shape"),
    "texture": ("{}", TEMPLATE, "a {} texture", "a {} pattern", "something {}"),
    "colour": ("{}", TEMPLATE, "something {}", "a {} shape", "the colour {}"),
    "palette": ("{}", TEMPLATE, "a {} palette", "{} colours"),
    "background": ("a {} background", "on a {} background"),
}
# shapes and textures are what colours cannot stand in for: most single-attribute captions name them
_SINGLE_WEIGHTS = {"shape": 0.35, "texture": 0.35, "colour": 0.1, "palette": 0.1, "background": 0.1}
_PHRASE_PARTS = ("size", "colour", "texture", "position", "background", "palette")


def _single_caption(scene: Scene, rng: np.random.Generator) -> str:
    """One attribute alone: "a picture of ring", "a striped texture", "diagonal stripes", "red"."""
    values = {"shape": scene.shape, "texture": scene.texture, "colour": scene.foreground,
              "palette": scene.palette, "background": scene.background}
    if scene.palette == "plain":
        del values["palette"]
    weights = np.array([_SINGLE_WEIGHTS[attribute] for attribute in values])
    attribute = str(rng.choice(list(values), p=weights / weights.sum()))
    word = values[attribute]
    if word in _NOVEL and rng.random() < 0.25:
        return _NOVEL[word].description
    return str(rng.choice(_SINGLE_FORMS[attribute])).format(word)


def _phrase(scene: Scene, parts: set[str], rng: np.random.Generator) -> str:
    """"a large red striped ring on the left on a blue background, pastel palette", with only ``parts``."""
    words = ["a"]
    if "size" in parts and scene.size != "medium":
        words.append(scene.size)
    if "colour" in parts:
        words.append(scene.foreground)
    tail = ""
    if "texture" in parts and not (scene.texture == "solid" and rng.random() < 0.5):
        if rng.random() < 0.6:
            words.append(scene.texture)
        else:
            tail = f" with a {scene.texture} texture"
    words.append(scene.shape if "shape" in parts else "shape")
    text = " ".join(words) + tail
    if "position" in parts:
        text += _POSITIONS[scene.position]
    if "background" in parts:
        text += f" on a {scene.background} background"
    if "palette" in parts and scene.palette != "plain":
        text += f", {scene.palette} palette"
    return text


def clip_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A plain-word caption of ``scene``: all of it (25%), its shape and texture without colours (25%),
    a few attributes (20%) or one (30%)."""
    draw = rng.random()
    if draw < 0.25:
        return _phrase(scene, {"shape", *_PHRASE_PARTS}, rng)
    if draw < 0.5:
        return _phrase(scene, {"shape", "texture", *(["size", "position"] if rng.random() < 0.3 else [])}, rng)
    if draw < 0.7:
        chosen = {str(part) for part in rng.choice(_PHRASE_PARTS, size=int(rng.integers(1, 3)), replace=False)}
        return _phrase(scene, chosen if rng.random() < 0.2 else {"shape", *chosen}, rng)
    return _single_caption(scene, rng)


class Tokens:
    """open_clip's SimpleTokenizer with a cache (captions repeat a lot)."""

    def __init__(self, context_length: int) -> None:
        import open_clip

        self.tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=context_length)
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        missing = [text for text in dict.fromkeys(texts) if text not in self.cache]
        if missing:
            self.cache.update(zip(missing, self.tokenizer(missing), strict=True))
        return torch.stack([self.cache[text] for text in texts])


# -- model and loss -----------------------------------------------------------------------------


def build_model(settings: ModelSettings, seed: int = 0) -> Any:
    """A freshly initialised ``open_clip.CLIP`` (deterministic in ``seed``)."""
    import open_clip

    torch.manual_seed(seed)
    return open_clip.CLIP(**settings.model_cfg())


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images in [0, 1], rounded (the ``preprocess_cfg``)."""
    pixels = images.reshape(-1, 3).astype(np.float64) / 255.0
    return [round(float(v), 4) for v in pixels.mean(0)], [round(float(v), 4) for v in pixels.std(0)]


def to_pixels(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """float [N, 3, H, W] in [0, 1] -> the normalised model input (what ``image_transform`` gives)."""
    return (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                     logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over the batch, ``logit_scale`` in log space (open_clip's ``ClipLoss``).

    A caption repeated in the batch needs no special target: its copies embed identically, so the
    one-hot targets of the copies pull the same way a shared target would.
    """
    image_features = F.normalize(image_features, dim=-1)
    text_features = F.normalize(text_features, dim=-1)
    logits = logit_scale.exp() * image_features @ text_features.T
    labels = torch.arange(len(logits))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay the matrices; not gains, biases, embeddings or the logit scale (as open_clip does)."""
    decay, plain = [], []
    for name, parameter in model.named_parameters():
        exempt = parameter.ndim < 2 or "embedding" in name or "logit_scale" in name
        (plain if exempt else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def cosine_with_warmup(steps: int, warmup: float) -> Callable[[int], float]:
    warm = max(1, round(steps * warmup))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))

    return factor


# -- training -----------------------------------------------------------------------------------


def colour_groups(scenes: Sequence[Scene]) -> list[torch.Tensor]:
    """The scene indices of each (foreground, background) pair."""
    groups: dict[tuple[str, str], list[int]] = {}
    for index, scene in enumerate(scenes):
        groups.setdefault((scene.foreground, scene.background), []).append(index)
    return [torch.tensor(indices) for _, indices in sorted(groups.items())]


def draw_batch(groups: Sequence[torch.Tensor], count: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """Half the batch from one colour pair (hard negatives: only shape, texture, layout and palette tell
    them apart, so colours cannot carry the loss alone), the other half from anywhere."""
    group = groups[int(torch.randint(len(groups), (1,), generator=generator))]
    own = group[torch.randint(len(group), (batch // 2,), generator=generator)]
    return torch.cat([own, torch.randint(0, count, (batch - batch // 2,), generator=generator)])


def format_seconds(seconds: float) -> str:
    minutes, rest = divmod(max(0, int(round(seconds))), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"


def train(model: Any, images: np.ndarray, scenes: Sequence[Scene], mean: Sequence[float], std: Sequence[float],
          settings: TrainSettings, say: Log = print, every_seconds: float = 10.0) -> TrainingLog:
    """Fit ``model`` on the rendered ``images`` of ``scenes``; deterministic in ``settings.seed``."""
    tokens = Tokens(settings.model.context_length)
    optimizer = torch.optim.AdamW(parameter_groups(model, settings.weight_decay), lr=settings.learning_rate,
                                  betas=(0.9, 0.98), eps=1e-6)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(settings.steps, settings.warmup))
    generator = torch.Generator().manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    data = torch.from_numpy(images).permute(0, 3, 1, 2)  # uint8 [N, 3, H, W]
    groups = colour_groups(scenes)
    record, started, last = TrainingLog(), time.perf_counter(), 0.0
    model.train()
    for step in range(1, settings.steps + 1):
        index = draw_batch(groups, len(data), settings.batch, generator)
        captions = [clip_caption(scenes[i], rng) for i in index.tolist()]
        pixels = to_pixels(augment(data[index].float() / 255.0, generator), mean, std)
        loss = contrastive_loss(model.encode_image(pixels), model.encode_text(tokens(captions)), model.logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        record.losses.append(loss.item())
        elapsed = time.perf_counter() - started
        if step == 1 or step == settings.steps or elapsed - last >= every_seconds:
            last = elapsed
            eta = elapsed / step * (settings.steps - step)
            say(f"step {step}/{settings.steps}  loss {loss.item():.4f}  scale {model.logit_scale.exp().item():.1f}  "
                f"{elapsed / step:.2f} s/step  eta {format_seconds(eta)}")
    model.eval()
    record.seconds = time.perf_counter() - started
    return record


def save_model(model: Any, settings: ModelSettings, mean: Sequence[float], std: Sequence[float], out: Path) -> Path:
    """Write ``open_clip_config.json`` and float16 ``open_clip_model.safetensors`` atomically into ``out``."""
    from safetensors.torch import save

    state = {name: tensor.detach().to(torch.float16).contiguous() for name, tensor in model.state_dict().items()}
    config = {"model_cfg": settings.model_cfg(),
              "preprocess_cfg": {"size": IMAGE_SIZE, "mean": list(mean), "std": list(std),
                                 "interpolation": "bicubic", "resize_mode": "shortest"}}
    write_atomic(out / WEIGHTS_FILE, save(state, metadata={"format": "pt", "trained_by": "training.toy_clip"}))
    write_atomic(out / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())
    return out


# -- evaluation ---------------------------------------------------------------------------------


def _images(scenes: Sequence[Scene]) -> list[Any]:
    from PIL import Image

    return [Image.fromarray(render(scene)) for scene in scenes]


def top1(embedder: Any, images: Sequence[Any], truths: Sequence[str], labels: Sequence[str]) -> float:
    """Share of ``images`` whose nearest "a picture of {label}" is the truth (the zero-shot math)."""
    scores = embedder.embed_images(list(images)) @ embedder.embed([TEMPLATE.format(label) for label in labels]).T
    return float(np.mean([labels[int(i)] == truth for i, truth in zip(scores.argmax(1), truths, strict=True)]))


def evaluate(folder: Path, per_concept: int = 20, seed0: int = SEEDS_TOY_CLIP_EVAL) -> dict[str, Any]:
    """Zero-shot top-1 of the saved model on fresh seeds, per attribute, and preview-tag hits."""
    from retrieval.embedders.image import ImageEmbedder
    from retrieval.preview_tags import zero_shot_tags

    embedder = ImageEmbedder(folder)
    scenes = [sample_scene(seed0 + i, **JUDGE_VOCAB) for i in range(50 * per_concept)]  # type: ignore[arg-type]
    images = _images(scenes)
    report: dict[str, Any] = {
        "shape": top1(embedder, images, [s.shape for s in scenes], ALL_SHAPES),
        "texture": top1(embedder, images, [s.texture for s in scenes], ALL_TEXTURES),
        "colour": top1(embedder, images, [s.foreground for s in scenes], tuple(FOREGROUND_COLOURS)),
        "palette": top1(embedder, images, [s.palette for s in scenes], PALETTES),
    }
    names = [concept.name for concept in NOVEL_CONCEPTS]
    labels, hits, novel_images, truths = toy_world_labels(), 0, [], []
    for number, concept in enumerate(NOVEL_CONCEPTS):
        seeds = range(seed0 + 100_000 + number * 1000, seed0 + 100_000 + number * 1000 + per_concept)
        group = _images(concept_scenes(concept, seeds))
        novel_images += group
        truths += [concept.name] * len(group)
        sheets = [group[i : i + 4] for i in range(0, len(group) - 3, 4)]
        hits += sum(concept.name in zero_shot_tags(sheet, embedder, labels, top_k=3) for sheet in sheets)
    report["novel_concept"] = top1(embedder, novel_images, truths, names)
    report["preview_tags_top3"] = hits / max(1, len(NOVEL_CONCEPTS) * (per_concept // 4))
    report = {key: round(value, 4) for key, value in report.items()}
    report["images"] = len(images) + len(novel_images)
    return report


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = TrainSettings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--images", type=int, default=defaults.images, help="training scenes rendered")
    parser.add_argument("--lr", type=float, default=defaults.learning_rate)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=defaults.threads, help="torch threads")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="rendering processes")
    parser.add_argument("--eval-per-concept", type=int, default=defaults.eval_per_concept)
    parser.add_argument("--vision-timm", default=ModelSettings().vision_timm, metavar="NAME",
                        help="image tower: a timm CNN trained from scratch (default resnet10t); 'vit': the tiny ViT")
    parser.add_argument("--out", type=Path, default=TOY_CLIP_DIR)
    args = parser.parse_args(argv)
    if not 0 < args.images <= SEEDS_TOY_CLIP_EVAL - SEEDS_TOY_CLIP:
        parser.error(f"--images must be in 1..{SEEDS_TOY_CLIP_EVAL - SEEDS_TOY_CLIP} (the evaluation seeds follow)")
    return args


def settings_of(args: argparse.Namespace) -> TrainSettings:
    return TrainSettings(steps=args.steps, batch=args.batch, images=args.images, learning_rate=args.lr,
                         seed=args.seed, threads=args.threads, workers=args.workers,
                         eval_per_concept=args.eval_per_concept,
                         model=ModelSettings(vision_timm=None if args.vision_timm == "vit" else args.vision_timm))


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(settings: TrainSettings, out: Path, say: Log = log) -> dict[str, Any]:
    """Render, train, save, evaluate, and write ``report.json``; returns the report."""
    torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    scenes = [scene_for(SEEDS_TOY_CLIP + i) for i in range(settings.images)]
    images = render_all(scenes, settings.workers)
    mean, std = channel_stats(images)
    render_seconds = time.perf_counter() - started
    say(f"rendered {len(images)} scenes in {render_seconds:.0f}s; mean {mean} std {std}")
    model = build_model(settings.model, settings.seed)
    training = train(model, images, scenes, mean, std, settings, say)
    save_model(model, settings.model, mean, std, out)
    checked = time.perf_counter()
    evaluation = evaluate(out, settings.eval_per_concept) if settings.eval_per_concept > 0 else {}
    tail = training.losses[-min(50, len(training.losses)):]
    report = {
        "settings": asdict(settings), "model_cfg": settings.model.model_cfg(), "template": TEMPLATE,
        "seeds": {"train": SEEDS_TOY_CLIP, "eval": SEEDS_TOY_CLIP_EVAL},
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": {"render": round(render_seconds, 1), "train": round(training.seconds, 1),
                    "per_step": round(training.seconds / max(1, settings.steps), 4),
                    "evaluate": round(time.perf_counter() - checked, 1),
                    "total": round(time.perf_counter() - started, 1)},
        "loss": {"first": round(training.losses[0], 4), "last": round(float(np.mean(tail)), 4)},
        "logit_scale": round(model.logit_scale.exp().item(), 2), "zero_shot": evaluation,
    }
    write_atomic(out / REPORT_FILE, (json.dumps(report, indent=2) + "\n").encode())
    say(f"zero-shot top-1 {evaluation}; saved to {out} in {format_seconds(report['seconds']['total'])}")
    return report


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    run(settings_of(args), args.out)


if __name__ == "__main__":
    main()
