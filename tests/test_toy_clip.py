"""The toy-CLIP training script (training/toy_clip.py) and the preview tags it feeds to the refiner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from library.records import AdapterRecord
from retrieval.embedders.image import CONFIG_FILE, WEIGHTS_FILE, ImageEmbedder
from retrieval.preview_tags import PreviewTagger, toy_world_labels
from retrieval.refiner import default_describer, describe
from toyworld.render import render
from toyworld.vocab import NOVEL_CONCEPTS
from training.toy_clip import (
    REPORT_FILE,
    ModelSettings,
    Tokens,
    TrainSettings,
    build_model,
    clip_caption,
    contrastive_loss,
    parameter_groups,
    render_all,
    run,
    scene_for,
    to_pixels,
    train,
)

TINY = ModelSettings(embed_dim=32, patch_size=8, vision_width=32, vision_layers=1, vision_heads=2, text_width=32,
                     text_layers=1, text_heads=2, context_length=24, vision_timm=None)


def tiny_settings(**changes: object) -> TrainSettings:
    base: dict[str, object] = dict(steps=3, batch=16, images=64, workers=1, threads=torch.get_num_threads(),
                                   eval_per_concept=4, model=TINY)
    base.update(changes)
    return TrainSettings(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[str]]:
    out = tmp_path_factory.mktemp("toy-clip")
    lines: list[str] = []
    report = run(tiny_settings(), out, say=lines.append)
    return out, report, lines


def test_smoke_run_writes_files_the_image_embedder_loads(trained: tuple[Path, dict, list[str]]) -> None:
    out, report, lines = trained
    assert {p.name for p in out.iterdir()} == {CONFIG_FILE, WEIGHTS_FILE, REPORT_FILE}  # no temp files left
    config = json.loads((out / CONFIG_FILE).read_text())
    assert config["model_cfg"] == TINY.model_cfg() and config["preprocess_cfg"]["size"] == 32
    with safe_open(str(out / WEIGHTS_FILE), "pt") as weights:
        assert all(weights.get_tensor(k).dtype == torch.float16 for k in weights.keys())
    embedder = ImageEmbedder(out)  # strict load of float16 weights into the float32 model
    assert embedder.dimension == TINY.embed_dim
    texts = embedder.embed(["a picture of ring", "a striped texture"])
    images = embedder.embed_images([Image.fromarray(render(scene_for(48_000_000 + i))) for i in range(3)])
    for vectors, rows in ((texts, 2), (images, 3)):
        assert vectors.shape == (rows, TINY.embed_dim) and vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert any("step 3/3" in line and "eta" in line for line in lines)
    zero_shot = json.loads((out / REPORT_FILE).read_text())["zero_shot"]
    assert zero_shot == report["zero_shot"] and zero_shot["images"] == 50 * 4 + 20 * 4
    for key in ("shape", "texture", "colour", "palette", "novel_concept", "preview_tags_top3"):
        assert 0.0 <= zero_shot[key] <= 1.0
    assert np.isfinite(report["loss"]["last"]) and report["settings"]["steps"] == 3


def test_training_input_matches_the_loaders_preprocessing(trained: tuple[Path, dict, list[str]]) -> None:
    out, _, _ = trained
    cfg = json.loads((out / CONFIG_FILE).read_text())["preprocess_cfg"]
    preprocess = open_clip.image_transform(cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"])
    pixels = render(scene_for(48_000_002))
    trained_on = to_pixels(torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255.0, cfg["mean"], cfg["std"])
    torch.testing.assert_close(preprocess(Image.fromarray(pixels))[None], trained_on, atol=1e-5, rtol=0)


def test_captions_name_concepts_in_plain_words() -> None:
    scenes = [scene_for(48_000_000 + i) for i in range(600)]
    rng = np.random.default_rng(0)
    captions = [clip_caption(scene, rng) for scene in scenes]
    triggers = {concept.trigger for concept in NOVEL_CONCEPTS}
    assert not any(set(text.replace(",", " ").split()) & triggers for text in captions)
    seen = {s.shape for s in scenes} | {s.texture for s in scenes} | {s.palette for s in scenes}
    assert {concept.name for concept in NOVEL_CONCEPTS} <= seen  # every novel concept is trained on
    assert any(text.startswith("a picture of ") for text in captions)
    again = np.random.default_rng(0)
    assert [clip_caption(scene, again) for scene in scenes] == captions  # seeded


def test_loss_goes_down_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    scenes = [scene_for(48_000_000 + i) for i in range(8)]
    captions = [f"a {s.foreground} {s.texture} {s.shape} on a {s.background} background" for s in scenes]
    model = build_model(TINY)
    tokens = Tokens(TINY.context_length)(captions)
    pixels = to_pixels(torch.from_numpy(render_all(scenes)).permute(0, 3, 1, 2).float() / 255.0, [0.5] * 3, [0.25] * 3)
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.1), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = contrastive_loss(model.encode_image(pixels), model.encode_text(tokens), model.logit_scale)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_loss_is_open_clips_symmetric_infonce() -> None:
    generator = torch.Generator().manual_seed(0)
    images, texts = torch.randn(6, 8, generator=generator), torch.randn(6, 8, generator=generator)
    scale = torch.tensor(np.log(20.0))
    normalise = torch.nn.functional.normalize
    expected = open_clip.ClipLoss()(normalise(images, dim=-1), normalise(texts, dim=-1), scale.exp())
    torch.testing.assert_close(contrastive_loss(images, texts, scale), expected)
    assert float(contrastive_loss(images, images, torch.tensor(np.log(100.0)))) < 0.05


def _weights_after(settings: TrainSettings) -> dict[str, torch.Tensor]:
    scenes = [scene_for(48_000_000 + i) for i in range(32)]
    model = build_model(settings.model, settings.seed)
    train(model, render_all(scenes), scenes, [0.5] * 3, [0.25] * 3, settings, say=lambda _: None)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_training_is_deterministic_in_its_seed() -> None:
    first, again = _weights_after(tiny_settings()), _weights_after(tiny_settings())
    other = _weights_after(tiny_settings(seed=1))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


# -- the refiner's preview tags -----------------------------------------------------------------


def _record(tmp_path: Path, base: str = "toy") -> AdapterRecord:
    sheet = Image.new("RGB", (128, 128))
    for i in range(4):
        tile = Image.fromarray(render(scene_for(48_000_002 + 4 * i))).resize((64, 64), Image.NEAREST)
        sheet.paste(tile, ((i % 2) * 64, (i // 2) * 64))
    sheet.save(tmp_path / "ring.png")
    return AdapterRecord(id=1, sha256="ab" * 32, name="ring", title="Ring", path=str(tmp_path / "ring.safetensors"),
                         format="kohya", base=base, rank=4, kind="content", previews=[str(tmp_path / "ring.png")])


def test_preview_tags_reach_the_description(trained: tuple[Path, dict, list[str]], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    out, _, _ = trained
    record = _record(tmp_path)
    tagger = PreviewTagger(ImageEmbedder(out), toy_only=True)
    tags = tagger(record)
    assert 1 <= len(tags) <= 3 and set(tags) <= set(toy_world_labels()) and tagger(record) == tags
    assert tagger(_record(tmp_path, base="sd1")) == []  # the toy CLIP knows only the toy world
    broken = _record(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    broken.previews = [str(tmp_path / "broken.png"), str(tmp_path / "missing.png")]
    assert tagger(broken) == []
    monkeypatch.setattr("retrieval.embedders.image.TOY_CLIP_DIR", out)  # as if shipped in assets/toy-clip/
    text = default_describer()(record)
    assert text == describe(record, extra_tags=tags) and "looks like: " in text
    from retrieval.embedders.hashing import HashingEmbedder
    from retrieval.search import Retriever

    assert "looks like: " in Retriever([record], HashingEmbedder(), persist=False).descriptions[1]


def test_no_model_or_no_open_clip_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record = _record(tmp_path)
    assert default_describer(tmp_path / "no-model") is describe
    monkeypatch.setattr("retrieval.preview_tags.open_clip_installed", lambda: False)
    assert default_describer() is describe and "looks like" not in default_describer()(record)

    class Failing:
        def embed(self, texts: object) -> np.ndarray:
            raise RuntimeError("no open_clip")

        embed_images = embed

    tagger = PreviewTagger(Failing(), toy_only=True)
    assert tagger(record) == [] and not tagger.enabled and tagger(record) == []


def test_the_shipped_toy_clip_tags_starter_previews_with_their_concept() -> None:
    """assets/toy-clip (a resnet10t image tower) names a starter's concept among its preview tags."""
    from library.records import AdapterRecord
    from retrieval.embedders.image import ImageEmbedder
    from retrieval.paths import TOY_CLIP_DIR

    if not (TOY_CLIP_DIR / "open_clip_model.safetensors").is_file():
        pytest.skip("no shipped toy CLIP")
    tagger = PreviewTagger(ImageEmbedder(TOY_CLIP_DIR), toy_only=True)
    starters = Path(__file__).resolve().parent.parent / "assets" / "starter-library"
    found = {}
    for name in ("heart", "crescent", "diagonal", "vertical"):
        previews = sorted(str(p) for p in starters.glob(f"{name}*.png"))
        assert previews, f"no preview of {name}"
        record = AdapterRecord(id=1, sha256="0" * 64, name=name, title=name, path=f"{name}.safetensors",
                               format="kohya", base="toy", rank=4, previews=previews)
        found[name] = name in tagger(record)
    assert all(found.values()), found
