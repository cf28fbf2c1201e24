"""Generating with library adapters: prompt tags, --lora picks, fusion methods, search, restore."""

import json

import numpy as np
import pytest
from PIL import Image

from app.cli import main
from fusion.testing import random_lora
from library.catalog import open_catalog
from library.errors import LibraryError
from library.formats.writer import write_kohya
from library.metadata import AdapterInfo
from pipeline import Pick, RenderError, RenderRequest, Studio, generate, read_parameters
from pipeline.studio import parse_pick


@pytest.fixture
def two_adapters(toy_base, tmp_path, medley_home):
    """A content and a style adapter with trigger words, imported into a fresh catalogue."""
    folder = tmp_path / "loras"
    unet = toy_base.pipe.unet
    infos = [
        AdapterInfo(name="blobby", title="Blobby shape", triggers=["blobword"], kind="content",
                    description="a lumpy blob shape", tags=["shape"]),
        AdapterInfo(name="wavy", title="Wavy texture", triggers=["wavword"], kind="style",
                    description="wavy lines texture", tags=["texture"]),
    ]
    with open_catalog() as catalog:
        for seed, info in enumerate(infos):
            adapter = random_lora(unet, rank=4, seed=seed, strength=2.0)
            path = write_kohya(adapter, folder / f"{info.name}.safetensors", info, base="toy")
            catalog.import_file(path)
    return infos


def test_render_precedence_triggers_and_roles(two_adapters, toy_base):
    studio = Studio(toy_base, open_catalog())
    outcome = studio.render(RenderRequest(
        "a red circle <lora:blobby:0.6> on a blue background", steps=2,
        picks=[parse_pick("blobby:0.9"), parse_pick("wavy:0.3"), Pick("wavy", 0.8, role="style", source="auto")]))
    picks = outcome.picks[0]
    assert {pick.name: pick.weight for pick in picks} == {"blobby": 0.6, "wavy": 0.3}  # tag beats pick beats plan
    assert {pick.name: pick.source for pick in picks} == {"blobby": "tag", "wavy": "manual"}
    assert {pick.name: pick.role for pick in picks} == {"blobby": "content", "wavy": "style"}  # catalogue kinds
    prompt = outcome.prompts[0]
    assert "<lora:" not in prompt and prompt == "blobword, wavword, a red circle on a blue background"
    assert outcome.provenance[0].prompt == prompt and outcome.runs == 1


def test_render_refuses_unknown_and_other_base(two_adapters, toy_base):
    studio = Studio(toy_base, open_catalog())
    with pytest.raises(LibraryError, match="no adapter named 'nosuch'"):
        studio.render(RenderRequest("a circle <lora:nosuch:1>", steps=1))
    toy_base.family = "sd1"
    try:
        with pytest.raises(RenderError, match=r"made for the embedded toy base \(toy\); the loaded base is Stable"):
            studio.render(RenderRequest("a circle <lora:blobby:1>", steps=1))
    finally:
        toy_base.family = "toy"
    with pytest.raises(RenderError, match="unknown fusion method"):
        studio.render(RenderRequest("a circle", fusion="average"))


def test_repeated_render_reads_no_file_and_wraps_nothing_anew(two_adapters, toy_base, monkeypatch):
    import library.catalog
    from fusion import layer

    reads, wraps = [], []
    read = library.catalog.read_adapter
    monkeypatch.setattr(library.catalog, "read_adapter", lambda path: reads.append(path) or read(path))
    init = layer.FusedLayer.__init__
    monkeypatch.setattr(layer.FusedLayer, "__init__", lambda self, base: wraps.append(1) or init(self, base))
    studio = Studio(toy_base, open_catalog())
    request = RenderRequest("a circle <lora:blobby:0.8> <lora:wavy:0.5>", steps=2, seed=4)
    first = studio.render(request)
    assert len(reads) == 2
    reads.clear(), wraps.clear()
    second = studio.render(request)
    assert reads == [] and wraps == []  # the adapter cache and the kept fusion session
    assert studio.adapters.stats.hits == 2 and toy_base.fusion.swaps >= 1
    assert np.array_equal(np.asarray(first.images[0]), np.asarray(second.images[0]))
    assert toy_base.fusion.attached is None  # and the base is itself again after each render


def test_batch_runs_group_images_and_each_matches_its_solo_render(two_adapters, toy_base):
    studio = Studio(toy_base, open_catalog())
    prompts = ["a red circle <lora:blobby:1>", "a blue square", "a green star <lora:blobby:1>"]
    outcome = studio.render(RenderRequest(prompts, seed=[5, 6, 7], steps=3))
    assert outcome.runs == 2  # images 0 and 2 share their adapters
    assert [p.prompt for p in outcome.provenance] == ["blobword, a red circle", "a blue square",
                                                      "blobword, a green star"]
    for index, prompt in enumerate(prompts):
        solo = studio.render(RenderRequest(prompt, seed=5 + index, steps=3))
        # the same seed and adapters; a batch of 2 sums its matrix products in another order than a batch of 1
        # on the CPU, which may move a pixel by a level or two
        difference = np.abs(np.asarray(solo.images[0], dtype=int) - np.asarray(outcome.images[index], dtype=int))
        assert difference.max() <= 2, (index, difference.max())


def test_generate_with_tag_changes_image_and_restores_base(two_adapters, tmp_path):
    out_plain, out_lora = tmp_path / "plain.png", tmp_path / "lora.png"
    args = ["--seed", "1", "--steps", "4"]
    assert main(["generate", "a red circle on a blue background", *args, "--out", str(out_plain)]) == 0
    assert main(["generate", "a red circle on a blue background <lora:blobby:1>", *args, "--out", str(out_lora)]) == 0
    again = tmp_path / "again.png"
    assert main(["generate", "a red circle on a blue background", *args, "--out", str(again)]) == 0
    plain, lora, after = (np.asarray(Image.open(p), dtype=int) for p in (out_plain, out_lora, again))
    assert np.abs(plain - lora).max() > 10  # the adapter acted
    assert np.array_equal(plain, after)  # and the base came back exactly
    text = read_parameters(out_lora)
    assert 'Lora hashes: "blobby: ' in text
    assert text.splitlines()[0] == "blobword, a red circle on a blue background"  # trigger added, tag removed


@pytest.mark.parametrize("method", ["merge", "switch", "composite", "klora", "gated"])
def test_every_method_from_the_cli(two_adapters, tmp_path, capsys, method):
    out = tmp_path / f"{method}.png"
    code = main(["generate", "a green square on a white background", "--lora", "blobby:0.8", "--lora", "wavy:0.8",
                 "--fusion", method, "--steps", "5", "--out", str(out), "--json"])
    assert code == 0, capsys.readouterr().err
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [a["alias"] for a in record["adapters"]] == ["blobby", "wavy"]
    assert all(a["fusion"] == method for a in record["adapters"])
    if method == "gated":  # the method's settings travel with the image
        from fusion.methods.gated import DEFAULT_UNCOND

        assert all(a["fusion_options"]["uncond"] == DEFAULT_UNCOND for a in record["adapters"])


def test_unknown_adapter_and_bad_option_are_clear_errors(two_adapters, capsys, tmp_path):
    assert main(["generate", "a circle", "--lora", "nosuch:1", "--out", str(tmp_path / "x.png")]) == 2
    assert "no adapter named 'nosuch'" in capsys.readouterr().err
    assert main(["generate", "a circle", "--lora", "blobby", "--fusion-option", "tau", "--out",
                 str(tmp_path / "y.png")]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_search_ranks_by_trigger_and_description(two_adapters, capsys):
    assert main(["search", "a wavword circle on a black background", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["results"][0]["name"] == "wavy"
    assert "wavy" in [a["name"] for c in document["plan"]["concepts"] for a in c["adapters"]]
    assert main(["search", "lumpy blob shape", "--k", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[1] == "blobby"


def test_python_api_render_and_generate_with_specs(two_adapters, toy_base):
    studio = Studio(toy_base, open_catalog())
    outcome = studio.render(RenderRequest("a yellow star on a purple background", seed=2, steps=4,
                                          picks=[parse_pick("wavy:1")]))
    assert outcome.provenance[0].adapters[0]["alias"] == "wavy"
    assert outcome.provenance[0].prompt.startswith("wavword")
    adapter = studio.adapters.get(studio.catalog.get("wavy"))
    from fusion import AdapterSpec

    result = generate(toy_base, outcome.prompts[0], seed=2, steps=4, adapters=[AdapterSpec("wavy", adapter, 1.0)])
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(outcome.images[0]))


def test_cli_says_which_prompt_words_the_toy_base_cannot_draw(capsys, tmp_path):
    args = ["--steps", "1", "--out"]
    assert main(["generate", "a black circle on a blue background", *args, str(tmp_path / "a.png")]) == 0
    out = capsys.readouterr().out
    assert "note: the embedded base cannot draw 'black' as a shape colour (it knows red, orange, yellow" in out
    assert main(["generate", "a red circle on a blue background", *args, str(tmp_path / "b.png")]) == 0
    assert "note:" not in capsys.readouterr().out
