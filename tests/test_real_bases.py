"""SD1, SD2-v and SDXL diffusers folders (tiny, random weights) load as their family and generate."""

import pytest

from app.cli import main
from pipeline import generate, load_base
from training.tiny_bases import save_tiny_sd


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("bases")
    return {family: save_tiny_sd(family, root / family) for family in ("sd1", "sd2", "sdxl")}


@pytest.mark.parametrize(("family", "prediction"), [("sd1", "epsilon"), ("sd2", "v_prediction"),
                                                      ("sdxl", "epsilon")])
def test_a_diffusers_folder_loads_as_its_family(folders, family, prediction):
    base = load_base(folders[family], device="cpu")
    assert (base.family, base.prediction_type) == (family, prediction)
    result = generate(base, "a red circle on a blue background", steps=2, seed=1)
    assert result.images[0].size == (base.default_size, base.default_size)
    assert result.provenance[0].model == family


def test_cli_generates_on_a_folder_base(folders, tmp_path, capsys):
    out = tmp_path / "sd2.png"
    assert main(["generate", "a photo of a cat", "--base", str(folders["sd2"]), "--steps", "2", "--out", str(out)]) == 0
    assert out.exists() and "note:" not in capsys.readouterr().out  # the vocabulary notes are the toy base's
