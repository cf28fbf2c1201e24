"""DreamBooth-LoRA from a folder of images: ``medley train`` and its Python API.

    from training.dreambooth_lora import TrainArgs, start, resume

    result = start(TrainArgs(name="my-hartok", images="hartok-images", trigger="hartok", cat=True))
    result.adapter_path, result.record      # kohya safetensors in MEDLEY_HOME/adapters, catalogued

The images (any size) are resized and centre-cropped to the base's size and captioned
with the trigger word (their own captions, or the instance prompt). Options follow
diffusers' ``train_dreambooth_lora.py``: a class prompt with prior preservation (class
images rendered by the base and cached in the run folder), rank/alpha, learning rate,
steps, batch size, targets (the UNet's attention projections by default), seed,
validation prompts rendered every N steps, checkpoints every N steps. ``cat`` adds the
CAT loss (class captions: the instance captions with the trigger replaced by the class
word, or removed); ``b4m`` trains one Break-for-Make stage (content or style) or makes
the combined adapter from two finished stage runs (see :mod:`training.b4m`).

A run lives in ``MEDLEY_HOME/runs/<name>/`` (see :mod:`training.runs`) and resumes from
its latest checkpoint with :func:`resume`; the finished adapter is written with
``ss_*``/``modelspec.*``/``medley.*`` metadata, a preview PNG and an A1111 sidecar into
``MEDLEY_HOME/adapters/`` and registered in the catalogue with source "trained". The
retrieval index picks it up from the catalogue's change log (``Catalog.changed_since``)
the next time it syncs.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from library.lora import LoraAdapter
from library.records import AdapterRecord
from library.vocabulary import B4M_ROLES, KINDS
from training import runs
from training.captions import check_trigger, class_word_of, instance_captions, replace_trigger
from training.images import TrainingInputError, check_folder, load_image_folder
from training.lora_trainer import (
    ATTENTION_TARGETS,
    LoraTrainer,
    LoraTrainingConfig,
    ProgressCallback,
    TrainingData,
)

# defaults that depend on the base: the toy base learns fast at 32 px; SD wants diffusers' usual values
FAMILY_DEFAULTS: dict[str, dict[str, float]] = {
    "toy": {"learning_rate": 2e-3, "steps": 400, "batch_size": 16, "sample_steps": 20},
    "sd1": {"learning_rate": 1e-4, "steps": 500, "batch_size": 1, "sample_steps": 30},
}
CLASS_SEED0 = 1_000_000
PRECHECK_SIZE = 8
MAX_STEPS = 1_000_000


@dataclass
class TrainArgs:
    """Everything a run needs; saved as ``args.json`` in the run folder (defaults resolved)."""

    name: str
    images: str | None = None
    trigger: str = ""
    instance_prompt: str | None = None
    class_prompt: str | None = None
    class_word: str | None = None
    prior: bool = False
    num_class_images: int = 50
    prior_weight: float = 1.0
    cat: bool = False
    lambda_cat: float = 1.0
    kind: str | None = None  # content, style or other (default: the B4M role, else content)
    b4m: str | None = None  # content, style, or combined (from the runs b4m_content and b4m_style)
    b4m_content: str | None = None
    b4m_style: str | None = None
    rank: int = 8
    alpha: float | None = None
    learning_rate: float | None = None  # None: the base family's default (FAMILY_DEFAULTS)
    steps: int | None = None
    batch_size: int | None = None
    targets: list[str] = field(default_factory=lambda: list(ATTENTION_TARGETS))
    seed: int = 0
    validation_prompts: list[str] = field(default_factory=list)
    validate_every: int = 0
    checkpoint_every: int = 50
    sample_steps: int | None = None  # denoising steps of class, validation and preview images
    base: str | None = None  # None: the embedded toy base
    tags: list[str] = field(default_factory=list)
    description: str = ""
    force: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainArgs:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})


@dataclass
class TrainingEvents:
    """Callbacks for a UI: step progress (with ETA), one-line messages, validation images, stop."""

    on_progress: ProgressCallback | None = None
    on_message: Callable[[str], None] | None = None
    on_validation: Callable[[int, list[Path]], None] | None = None
    stop: Callable[[], bool] | None = None

    def say(self, text: str) -> None:
        if self.on_message is not None:
            self.on_message(text)


@dataclass
class TrainResult:
    name: str
    run_dir: Path
    finished: bool
    step: int
    steps: int
    seconds: float
    adapter: LoraAdapter | None = None
    adapter_path: Path | None = None
    preview_path: Path | None = None
    record: AdapterRecord | None = None
    notes: list[str] = field(default_factory=list)
    validation: list[Path] = field(default_factory=list)


# -- checking the arguments ----------------------------------------------------------------------

def _positive(name: str, value: float | None, upper: float | None = None) -> None:
    if value is not None and (not value > 0 or (upper is not None and value > upper)):
        raise TrainingInputError(f"{name} must be positive{f' and at most {upper:g}' if upper else ''}, got {value}")


def check_args(args: TrainArgs) -> None:
    """Raise TrainingInputError on arguments no run can use (before anything is loaded or written)."""
    runs.check_name(args.name)
    if args.b4m is not None and args.b4m not in B4M_ROLES:
        raise TrainingInputError(f"--b4m must be one of {', '.join(B4M_ROLES)}, got {args.b4m!r}")
    if args.kind is not None and args.kind not in KINDS:
        raise TrainingInputError(f"--kind must be one of {', '.join(KINDS)}, got {args.kind!r}")
    if args.b4m == "combined":
        if not (args.b4m_content and args.b4m_style):
            raise TrainingInputError("--b4m combined needs --b4m-content RUN and --b4m-style RUN")
        runs.check_name(args.b4m_content)
        runs.check_name(args.b4m_style)
    else:
        if not args.images:
            raise TrainingInputError("--images DIR is required")
        check_trigger(args.trigger)
    for name, value, upper in (("rank", args.rank, 1024), ("learning rate", args.learning_rate, 1.0),
                               ("steps", args.steps, MAX_STEPS), ("batch size", args.batch_size, 4096),
                               ("alpha", args.alpha, None), ("class images", args.num_class_images, 10_000),
                               ("sample steps", args.sample_steps, 500)):
        _positive(name, value, upper)
    if args.prior and not args.class_prompt:
        raise TrainingInputError("--prior needs --class-prompt (the prompt class images are rendered from)")
    if args.validate_every < 0 or args.checkpoint_every < 0:
        raise TrainingInputError("--validate-every and --checkpoint-every must be 0 (off) or positive")
    if args.lambda_cat < 0 or args.prior_weight < 0:
        raise TrainingInputError("--cat-weight and --prior-weight must not be negative")
    if not args.targets:
        raise TrainingInputError("the run needs at least one target module")
    if not 0 <= args.seed < 2**31:
        raise TrainingInputError(f"seed must be between 0 and 2^31-1, got {args.seed}")


def _catalog(catalog):  # type: ignore[no-untyped-def]
    """A context holding ``catalog``, or MEDLEY_HOME's catalogue opened (and closed) for the call."""
    if catalog is not None:
        return contextlib.nullcontext(catalog)
    from library.catalog import Catalog

    return Catalog()


def check_free(name: str, force: bool, catalog) -> None:  # type: ignore[no-untyped-def]
    """The run, its adapter file and its catalogue name must be free (or ``force``)."""
    if force:
        return
    folder = runs.run_folder(name)
    if folder.exists():
        raise TrainingInputError(f"a run named {name!r} exists ({folder}); resume it with --resume {name}, "
                                 "or use --force to start over")
    if runs.adapter_path(name).exists():
        raise TrainingInputError(f"an adapter file named {name!r} exists ({runs.adapter_path(name)}); "
                                 "use another --name or --force")
    if catalog.find(name) is not None:
        raise TrainingInputError(f"the library already has an adapter named {name!r}; use another --name or --force")


# -- starting and resuming -----------------------------------------------------------------------

def _load_base(spec: str | None):  # type: ignore[no-untyped-def]
    from pipeline import load_base

    return load_base(spec)


def resolve_defaults(args: TrainArgs, family: str) -> TrainArgs:
    if family == "sdxl":
        raise TrainingInputError("training on SDXL bases is not supported yet; use an SD1.x/2.x base or the toy base")
    defaults = FAMILY_DEFAULTS.get(family, FAMILY_DEFAULTS["sd1"])
    values = args.to_dict()
    for key in ("learning_rate", "steps", "batch_size", "sample_steps"):
        if values[key] is None:
            values[key] = float(defaults[key]) if key == "learning_rate" else int(defaults[key])
    if values["kind"] is None:
        values["kind"] = {"style": "style", "combined": "other"}.get(str(args.b4m), "content")
    return TrainArgs.from_dict(values)


def start(args: TrainArgs, base=None, events: TrainingEvents | None = None,  # type: ignore[no-untyped-def]
          catalog=None) -> TrainResult:
    """Check everything, prepare the run folder, then train (see the module docstring).

    Nothing is written or removed until the inputs have been checked; an existing run or
    adapter of the same name is replaced only with ``args.force``. ``catalog`` defaults to
    MEDLEY_HOME's.
    """
    events = events or TrainingEvents()
    check_args(args)
    args = TrainArgs.from_dict(args.to_dict())  # the caller's copy stays as it was
    if args.b4m != "combined":
        assert args.images is not None
        args.images = str(check_folder(args.images))
    with _catalog(catalog) as library:
        check_free(args.name, args.force, library)
        if args.b4m == "combined":
            for partner in (args.b4m_content, args.b4m_style):
                assert partner is not None
                _finished_run(partner)
        else:
            assert args.images is not None
            precheck = load_image_folder(args.images, PRECHECK_SIZE)  # bad input is reported before the base loads
            instance_captions(precheck.captions, args.trigger, args.instance_prompt, None)
        base = base or _load_base(args.base)
        args = resolve_defaults(args, base.family)
        notes: list[str] = []
        if args.b4m != "combined":
            assert args.images is not None
            folder = load_image_folder(args.images, base.default_size)
            notes = folder.notes
            captions = instance_captions(folder.captions, args.trigger, args.instance_prompt,
                                         class_word_of(args.class_prompt, args.class_word))
            for note in notes:
                events.say(note)
        run_dir = runs.run_folder(args.name)
        if run_dir.exists():  # only with --force (check_free); never under a trainer that holds it
            with runs.run_lock(run_dir):
                shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        if args.b4m != "combined":
            runs.save_data(run_dir, folder.images, captions, folder.files)
        state = {"args": args.to_dict(), "notes": notes, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                 "base": {"name": base.name, "family": base.family, "hash": base.model_hash,
                          "size": base.default_size}}
        runs.write_json(run_dir / runs.ARGS_FILE, state)
        result = _run(run_dir, base, events, library)
    result.notes = notes + result.notes
    return result


def resume(name: str, base=None, events: TrainingEvents | None = None,  # type: ignore[no-untyped-def]
           catalog=None) -> TrainResult:
    """Continue the run ``name`` from its latest checkpoint (everything else comes from its folder)."""
    run_dir = runs.run_folder(name)
    if not run_dir.is_dir():
        raise TrainingInputError(f"no run named {name!r} in {runs.runs_root()}")
    if (run_dir / runs.RESULT_FILE).exists():
        done = runs.read_json(run_dir / runs.RESULT_FILE)
        raise TrainingInputError(f"the run {name!r} has finished; its adapter is {done.get('adapter_path')}")
    if not (run_dir / runs.ARGS_FILE).exists():
        raise TrainingInputError(f"the run {name!r} was interrupted before it started; start it again with --force")
    state = runs.read_json(run_dir / runs.ARGS_FILE)
    with _catalog(catalog) as library:
        if base is None:
            base = _load_base(state["args"].get("base"))
        return _run(run_dir, base, events or TrainingEvents(), library)


def _finished_run(name: str) -> dict[str, Any]:
    folder = runs.run_folder(name)
    if not (folder / runs.RESULT_FILE).exists():
        raise TrainingInputError(f"the run {name!r} has not finished (no {runs.RESULT_FILE} in {folder})")
    return runs.read_json(folder / runs.RESULT_FILE)


# -- the run -------------------------------------------------------------------------------------

def _config(args: TrainArgs) -> LoraTrainingConfig:
    assert args.steps is not None and args.batch_size is not None and args.learning_rate is not None
    return LoraTrainingConfig(rank=args.rank, alpha=args.alpha, learning_rate=args.learning_rate, steps=args.steps,
                              batch_size=args.batch_size, targets=tuple(args.targets), seed=args.seed,
                              prior_weight=args.prior_weight, lambda_cat=args.lambda_cat if args.cat else 0.0,
                              warmup_steps=min(20, max(1, args.steps // 10)),
                              checkpoint_every=args.checkpoint_every)


def class_images(base, args: TrainArgs, folder: Path, events: TrainingEvents) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The prior-preservation images: rendered once from the class prompt, cached as PNGs."""
    from pipeline.generate import generate

    assert args.class_prompt is not None and args.sample_steps is not None
    cache = folder / runs.CLASS_DIR
    cache.mkdir(exist_ok=True)
    paths = [cache / f"{i:04d}.png" for i in range(args.num_class_images)]
    images: dict[int, np.ndarray] = {}
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            if pixels.shape[:2] == (base.default_size, base.default_size):
                images[i] = pixels
        except (OSError, ValueError):
            continue
    missing = [i for i in range(len(paths)) if i not in images]
    if missing:
        events.say(f"rendering {len(missing)} class images of {args.class_prompt!r}")
    for start in range(0, len(missing), 32):
        chunk = missing[start:start + 32]
        seeds = [CLASS_SEED0 + args.seed * 10_000 + i for i in chunk]
        rendered = generate(base, [args.class_prompt] * len(chunk), seed=seeds, steps=args.sample_steps).images
        for i, image in zip(chunk, rendered, strict=True):
            _save_png(image, paths[i])
            images[i] = np.asarray(image.convert("RGB"))
    return np.stack([images[i] for i in range(len(paths))])


def _save_png(image: Image.Image, path: Path) -> Path:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    runs.write_atomic(path, buffer.getvalue())
    return path


def training_data(base, args: TrainArgs, folder: Path, events: TrainingEvents) -> TrainingData:  # type: ignore[no-untyped-def]
    images, captions, _ = runs.load_data(folder)
    prior_images = class_images(base, args, folder, events) if args.prior else None
    prior_captions = [args.class_prompt or ""] * (len(prior_images) if prior_images is not None else 0)
    class_captions: list[str] = []
    if args.cat:
        word = class_word_of(args.class_prompt, args.class_word)
        class_captions = [replace_trigger(c, args.trigger, word) for c in captions]
    return TrainingData(images=images, captions=captions, prior_images=prior_images, prior_captions=prior_captions,
                        class_captions=class_captions)


def _trainer(base, args: TrainArgs, folder: Path, events: TrainingEvents) -> tuple[LoraTrainer, TrainingData]:  # type: ignore[no-untyped-def]
    from training.b4m import B4MBackend, combine_data, splice

    config = _config(args)
    if args.b4m == "combined":
        assert args.b4m_content is not None and args.b4m_style is not None
        parts = []
        adapters = []
        for partner in (args.b4m_content, args.b4m_style):
            done = _finished_run(partner)
            partner_folder = runs.run_folder(partner)
            partner_args = TrainArgs.from_dict(runs.read_json(partner_folder / runs.ARGS_FILE)["args"])
            partner_args.cat = args.cat  # CAT class captions of both image sets when the make stage uses CAT
            parts.append(training_data(base, partner_args, partner_folder, events))
            from library.formats.reader import read_adapter

            adapters.append(read_adapter(Path(done["adapter_path"])))
        data = combine_data(parts[0], parts[1])
        backend = B4MBackend("combined", config.rank, config.lora_alpha, config.targets,
                             init=splice(_unet_only(adapters[0]), _unet_only(adapters[1])))
        return LoraTrainer(base.pipe, data, config, run_dir=folder, backend=backend), data
    data = training_data(base, args, folder, events)
    backend = None
    if args.b4m is not None:
        backend = B4MBackend(args.b4m, config.rank, config.lora_alpha, config.targets)
    return LoraTrainer(base.pipe, data, config, run_dir=folder, backend=backend), data


def _unet_only(adapter: LoraAdapter) -> LoraAdapter:
    return LoraAdapter({k: v for k, v in adapter.modules.items() if k.startswith("unet.")}, dict(adapter.metadata))


def _validation_prompts(args: TrainArgs, data: TrainingData) -> list[str]:
    if args.validation_prompts:
        return list(args.validation_prompts)
    return list(dict.fromkeys(data.captions))[:2]


def _run(folder: Path, base, events: TrainingEvents, catalog) -> TrainResult:  # type: ignore[no-untyped-def]
    state = runs.read_json(folder / runs.ARGS_FILE)
    args = TrainArgs.from_dict(state["args"])
    if state.get("base", {}).get("hash") not in (None, base.model_hash):
        raise TrainingInputError(f"the run {args.name!r} started on the base {state['base'].get('name')} "
                                 f"({state['base'].get('hash')}); load that base to resume it")
    started = time.perf_counter()
    with runs.run_lock(folder):
        trainer, data = _trainer(base, args, folder, events)
        prompts = _validation_prompts(args, data)
        rendered: list[Path] = []

        def validate(step: int) -> None:
            if not args.validate_every or (step % args.validate_every and step != trainer.config.steps):
                return
            from pipeline.generate import generate

            assert args.sample_steps is not None
            images = generate(base, prompts, seed=[args.seed + i for i in range(len(prompts))],
                              steps=args.sample_steps).images
            paths = [_save_png(image, folder / runs.VALIDATION_DIR / f"step-{step:06d}-{i}.png")
                     for i, image in enumerate(images)]
            rendered.extend(paths)
            if events.on_validation is not None:
                events.on_validation(step, paths)

        if trainer.step:
            events.say(f"resuming at step {trainer.step}")
        adapter = trainer.train(on_progress=events.on_progress, on_step=validate, stop=events.stop)
        if trainer.resumed_from:
            events.say(f"resumed from step {trainer.resumed_from}")
        result = TrainResult(name=args.name, run_dir=folder, finished=trainer.finished, step=trainer.step,
                             steps=trainer.config.steps, seconds=time.perf_counter() - started, adapter=adapter,
                             validation=rendered)
        if not trainer.finished:
            return result
        _finish(base, args, state, trainer, data, adapter, prompts, result, catalog)
        return result


# -- writing the adapter -------------------------------------------------------------------------

def _triggers(args: TrainArgs) -> list[str]:
    if args.b4m != "combined":
        return [args.trigger]
    triggers = []
    for partner in (args.b4m_content, args.b4m_style):
        assert partner is not None
        triggers.append(str(runs.read_json(runs.run_folder(partner) / runs.ARGS_FILE)["args"]["trigger"]))
    return triggers


def training_metadata(args: TrainArgs, state: dict[str, Any], trainer: LoraTrainer,
                      data: TrainingData) -> dict[str, str]:
    """kohya ``ss_*`` keys describing the run, plus ``medley.training`` (the full arguments)."""
    config = trainer.config
    size = state["base"]["size"]
    prior = 0 if data.prior_images is None else len(data.prior_images)
    return {
        "ss_training_comment": f"Medley DreamBooth-LoRA run {args.name}" + (" with CAT" if args.cat else ""),
        "ss_sd_model_name": str(state["base"]["name"]),
        "ss_sd_model_hash": str(state["base"]["hash"]),
        "ss_resolution": f"({size}, {size})",
        "ss_num_train_images": str(len(data.images)),
        "ss_num_reg_images": str(prior),
        "ss_prior_loss_weight": repr(float(config.prior_weight)),
        "ss_max_train_steps": str(config.steps),
        "ss_steps": str(trainer.step),
        "ss_batch_size_per_device": str(config.batch_size),
        "ss_learning_rate": repr(float(config.learning_rate)),
        "ss_unet_lr": repr(float(config.learning_rate)),
        "ss_text_encoder_lr": "0",
        "ss_network_train_unet_only": "True",
        "ss_lr_scheduler": "cosine",
        "ss_lr_warmup_steps": str(config.warmup_steps),
        "ss_min_snr_gamma": repr(float(config.snr_gamma)),
        "ss_seed": str(config.seed),
        "ss_optimizer": "torch.optim.AdamW(weight_decay=0.0001)",
        "ss_training_finished_at": str(int(time.time())),
        "ss_dataset_dirs": json.dumps({Path(args.images or args.name).name: {"n_repeats": 1,
                                                                              "img_count": len(data.images)}}),
        "medley.training": json.dumps(args.to_dict(), sort_keys=True),
        "medley.run": args.name,
        "medley.cat": repr(float(config.lambda_cat)),
        "medley.final_loss": f"{float(np.mean(trainer.losses[-20:])) if trainer.losses else 0.0:.5f}",
    }


def adapter_info(args: TrainArgs, data: TrainingData):  # type: ignore[no-untyped-def]
    from library.metadata import AdapterInfo

    triggers = _triggers(args)
    word = class_word_of(args.class_prompt, args.class_word)
    tags = list(dict.fromkeys([*args.tags, *(t for t in [word, args.kind] if t), "trained"]))
    description = args.description or (f"DreamBooth-LoRA trained by Medley on {len(data.images)} images; "
                                       f"trigger word{'s' if len(triggers) > 1 else ''}: {', '.join(triggers)}.")
    counts = {t: len(data.images) for t in [*triggers, *(t for t in [word] if t)]}
    return AdapterInfo(name=args.name, title=args.name, triggers=triggers, tags=tags, description=description,
                       preferred_weight=1.0, kind=args.kind, tag_frequency={args.name: counts})


def save_preview(base, adapter: LoraAdapter, args: TrainArgs, prompts: list[str], path: Path) -> Path:  # type: ignore[no-untyped-def]
    """A 2x2 sheet of the validation prompts rendered with the adapter."""
    from fusion import AdapterSpec
    from pipeline.generate import generate

    assert args.sample_steps is not None
    chosen = [prompts[i % len(prompts)] for i in range(4)]
    role = args.kind if args.kind in ("content", "style") else "other"
    images = generate(base, chosen, seed=[args.seed + i for i in range(4)], steps=args.sample_steps,
                      adapters=[AdapterSpec(args.name, adapter, weight=1.0, role=role)]).images
    cell = max(64, min(256, base.default_size))
    sheet = Image.new("RGB", (cell * 2, cell * 2))
    resample = Image.Resampling.NEAREST if base.default_size < cell else Image.Resampling.LANCZOS
    for i, image in enumerate(images):
        sheet.paste(image.resize((cell, cell), resample), ((i % 2) * cell, (i // 2) * cell))
    return _save_png(sheet, path)


def _finish(base, args: TrainArgs, state: dict[str, Any], trainer: LoraTrainer, data: TrainingData,  # type: ignore[no-untyped-def]
            adapter: LoraAdapter, prompts: list[str], result: TrainResult, catalog) -> None:
    from library.formats.writer import write_kohya

    path = runs.adapter_path(args.name)
    existing = catalog.find(args.name)
    if existing is not None:
        if not (args.force or Path(existing.path).resolve() == path.resolve()):
            raise TrainingInputError(f"the library gained an adapter named {args.name!r} while this run trained; "
                                     f"resume with --force to replace it, or rename that adapter")
        catalog.remove(existing.id)  # deletes the old file only when it lives in MEDLEY_HOME/adapters
    info = adapter_info(args, data)
    adapter.metadata.update(training_metadata(args, state, trainer, data))
    write_kohya(adapter, path, info, base=state["base"]["family"])
    preview = save_preview(base, adapter, args, prompts, path.with_suffix(".png"))
    sidecar = {"description": info.description, "sd version": state["base"]["family"],
               "activation text": ", ".join(info.triggers), "preferred weight": 1.0,
               "notes": f"trained by Medley: run {args.name}, {trainer.step} steps"}
    runs.write_json(path.with_suffix(".json"), sidecar)
    record = catalog.register(path, source="trained")
    result.adapter_path, result.preview_path, result.record = path, preview, record
    runs.write_json(result.run_dir / runs.RESULT_FILE, {
        "adapter_path": str(path), "preview_path": str(preview), "record_id": record.id, "name": record.name,
        "steps": trainer.step, "final_loss": adapter.metadata.get("medley.final_loss"),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
