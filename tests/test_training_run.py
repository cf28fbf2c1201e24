"""A few-step DreamBooth-LoRA run on a random-weight toy base: output, catalogue, resume, CAT."""

import json

import numpy as np
import pytest
import torch

from app.cli import main
from library.catalog import Catalog
from library.formats.reader import read_adapter
from toyworld.export import export_concept
from training import dreambooth_lora
from training.dreambooth_lora import TrainArgs, TrainingEvents, resume, start
from training.images import TrainingInputError
from training.lora_trainer import LoraTrainer, LoraTrainingConfig, TrainingData
from training.testing import random_toy_base

FAST = {"steps": 3, "batch_size": 2, "rank": 2, "sample_steps": 2, "checkpoint_every": 0}


@pytest.fixture(scope="module")
def base():
    return random_toy_base()


@pytest.fixture
def images(tmp_path):
    export_concept("hartok", 3, tmp_path / "images")
    return tmp_path / "images"


def _data(count: int = 3) -> TrainingData:
    pixels = np.random.default_rng(0).integers(0, 255, (count, 32, 32, 3), dtype=np.uint8)
    captions = [f"a red hartok on a {c} background" for c in ("blue", "black", "white")][:count]
    return TrainingData(images=pixels, captions=captions,
                        class_captions=[c.replace("hartok", "shape") for c in captions])


def test_run_writes_kohya_file_preview_and_catalogue_entry(base, images, medley_home):
    messages: list[str] = []
    progress: list[int] = []
    args = TrainArgs(name="hartok-test", images=str(images), trigger="hartok", cat=True, class_word="shape",
                     validate_every=3, tags=["toy"], **FAST)
    result = start(args, base=base, events=TrainingEvents(on_progress=lambda p: progress.append(p.step),
                                                          on_message=messages.append))
    assert result.finished and progress == [1, 2, 3]
    assert result.adapter_path == medley_home / "adapters" / "hartok-test.safetensors"
    adapter = read_adapter(result.adapter_path)
    assert adapter.source_format == "kohya" and len(adapter.modules) == 56 and adapter.rank == 2
    meta = adapter.metadata
    assert meta["ss_max_train_steps"] == "3" and meta["ss_num_train_images"] == "3"
    assert meta["ss_base_model_version"] == "medley_toy" and json.loads(meta["medley.triggers"]) == ["hartok"]
    assert json.loads(meta["medley.training"])["cat"] is True and meta["medley.cat"] == "1.0"
    assert result.preview_path is not None and result.preview_path.exists()
    assert sorted(p.name for p in (result.run_dir / "validation").iterdir()) == ["step-000003-0.png",
                                                                                 "step-000003-1.png"]
    with Catalog() as catalog:
        record = catalog.get("hartok-test")
        assert record.source == "trained" and record.kind == "content" and record.base == "toy"
        assert record.triggers == ["hartok"] and "toy" in record.tags and record.previews
        assert catalog.load_adapter("hartok-test").modules.keys() == adapter.modules.keys()
    # the name is taken now: refused without --force, replaced with it
    with pytest.raises(TrainingInputError, match="exists"):
        start(TrainArgs(name="hartok-test", images=str(images), trigger="hartok", **FAST), base=base)
    again = start(TrainArgs(name="hartok-test", images=str(images), trigger="hartok", force=True, **FAST), base=base)
    with Catalog() as catalog:
        trained = [r.name for r in catalog.list() if r.source == "trained"]  # (the starter library may be there too)
        assert trained == ["hartok-test"] and catalog.get("hartok-test").id == again.record.id
    with pytest.raises(TrainingInputError, match="finished"):
        resume("hartok-test", base=base)


def test_interrupted_run_resumes_from_its_folder(base, images, medley_home):
    args = TrainArgs(name="stop-go", images=str(images), trigger="hartok", **{**FAST, "steps": 4,
                                                                                "checkpoint_every": 2})
    steps: list[int] = []
    events = TrainingEvents(stop=lambda: len(steps) >= 2, on_progress=lambda p: steps.append(p.step))
    stopped = start(args, base=base, events=events)
    assert not stopped.finished and stopped.step == 2 and stopped.adapter_path is None
    state = json.loads((medley_home / "runs" / "stop-go" / "checkpoint.json").read_text())
    assert state["step"] == 2
    done = resume("stop-go", base=base)  # everything from the run folder (images, captions, arguments)
    assert done.finished and done.step == 4 and done.record is not None


def test_kill_and_resume_gives_the_same_adapter(base, tmp_path):
    config = LoraTrainingConfig(rank=2, steps=6, batch_size=2, checkpoint_every=3, lambda_cat=0.5, seed=3)
    data = _data()
    straight = LoraTrainer(base.pipe, data, config).train()

    class Killed(Exception):
        pass

    def kill_at_4(step: int) -> None:  # dies after step 4: the last checkpoint is step 3
        if step == 4:
            raise Killed

    with pytest.raises(Killed):
        LoraTrainer(base.pipe, data, config, run_dir=tmp_path).train(on_step=kill_at_4)
    assert json.loads((tmp_path / "checkpoint.json").read_text())["step"] == 3
    again = LoraTrainer(base.pipe, data, config, run_dir=tmp_path)
    resumed = again.train()
    assert again.resumed_from == 3 and again.step == 6
    assert resumed.modules.keys() == straight.modules.keys()
    for target, module in straight.modules.items():
        assert torch.allclose(resumed.modules[target].down, module.down, atol=1e-5), target
        assert torch.allclose(resumed.modules[target].up, module.up, atol=1e-5), target


def test_cat_term_changes_the_loss(base):
    data = _data()
    trainer = LoraTrainer(base.pipe, data, LoraTrainingConfig(rank=2, batch_size=2, lambda_cat=0.0))
    trainer.backend.attach(base.pipe.unet, 0)
    try:
        with torch.no_grad():
            plain = float(trainer.loss(1))
            assert float(trainer.cat_loss(*_noisy(trainer))) == 0.0  # a fresh LoRA (up = 0) is the base
            for group, _ in trainer.backend.parameter_groups():
                for p in group.values():
                    p.add_(0.05 * torch.randn_like(p))
            plain = float(trainer.loss(1))
            trainer.config.lambda_cat = 1.0
            with_cat = float(trainer.loss(1))
            cat_only = float(trainer.cat_loss(*_noisy(trainer)))
    finally:
        trainer.backend.detach()
    assert cat_only > 0 and with_cat > plain  # the same batch, plus the CAT term


def _noisy(trainer: LoraTrainer) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    latents = trainer.latents[:2]
    t = torch.tensor([300, 700])
    noisy = trainer.pipe.scheduler.add_noise(latents, torch.randn(latents.shape, generator=torch.Generator()
                                                                  .manual_seed(0)), t)
    return noisy, t, trainer.data.class_captions[:2]


def test_train_command_end_to_end(base, images, monkeypatch, capsys, medley_home):
    monkeypatch.setattr(dreambooth_lora, "_load_base", lambda spec: base)
    argv = ["train", "--images", str(images), "--trigger", "hartok", "--name", "cli-run", "--steps", "2", "--batch",
            "2", "--rank", "2", "--sample-steps", "2", "--kind", "content", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["name"] == "cli-run" and out["steps"] == 2
    assert read_adapter(out["adapter"]).metadata["medley.kind"] == "content"
    assert main(argv) == 2 and "exists" in capsys.readouterr().err
