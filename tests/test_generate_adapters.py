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
from pipeline import generate, read_parameters
from pipeline.adapters import parse_pick, resolve_adapters


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


def test_resolve_adapters_precedence_triggers_and_roles(two_adapters):
    with open_catalog() as catalog:
        resolved = resolve_adapters(
            catalog,
            "a red circle <lora:blobby:0.6> on a blue background",
            picks=[parse_pick("blobby:0.9"), parse_pick("wavy:0.3")],
            planned=[("wavy", 0.8, "style")],
        )
    weights = {spec.name: spec.weight for spec in resolved.specs}
    assert weights == {"blobby": 0.6, "wavy": 0.3}  # tag beats pick beats plan
    roles = {spec.name: spec.role for spec in resolved.specs}
    assert roles == {"blobby": "content", "wavy": "style"}
    assert "<lora:" not in resolved.prompt
    assert "blobword" in resolved.prompt and "wavword" in resolved.prompt


def test_resolve_refuses_unknown_and_other_base(two_adapters):
    with open_catalog() as catalog:
        with pytest.raises(LibraryError, match="no adapter named 'nosuch'"):
            resolve_adapters(catalog, "a circle <lora:nosuch:1>")
        with pytest.raises(ValueError, match="made for base 'toy'"):
            resolve_adapters(catalog, "a circle <lora:blobby:1>", base_family="sd1")


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


def test_python_api_generate_with_specs(two_adapters, toy_base):
    with open_catalog() as catalog:
        resolved = resolve_adapters(catalog, "a yellow star on a purple background", [parse_pick("wavy:1")])
    result = generate(toy_base, resolved.prompt, seed=2, steps=4, adapters=resolved.specs, fusion="merge")
    assert result.provenance[0].adapters[0]["alias"] == "wavy"
    assert result.provenance[0].prompt.startswith("wavword")
