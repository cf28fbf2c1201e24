import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from app.cli import main
from pipeline import read_parameters

ROOT = Path(__file__).resolve().parent.parent


def test_help_lists_every_command(capsys):
    try:
        main(["--help"])
    except SystemExit:
        pass
    out = capsys.readouterr().out
    assert "generate" in out


def test_generate_writes_png_with_parameters(tmp_path, capsys):
    out = tmp_path / "a.png"
    code = main(["generate", "a red circle on a blue background", "--seed", "0", "--steps", "6", "--out", str(out)])
    assert code == 0 and out.exists()
    text = read_parameters(out)
    assert text.startswith("a red circle on a blue background\n")
    expected = ("Steps: 6", "Sampler: DDIM", "CFG scale: 3", "Seed: 0", "Size: 32x32", "Model hash: ",
                "Model: toy-base")
    for field in expected:
        assert field in text
    again = tmp_path / "b.png"
    main(["generate", "a red circle on a blue background", "--seed", "0", "--steps", "6", "--out", str(again)])
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(again)))


def test_generate_negative_prompt_batch_grid_and_json(tmp_path, capsys):
    out = tmp_path / "img.png"
    grid = tmp_path / "grid.png"
    code = main(["generate", "a red circle on a blue background", "a green square on a black background",
                 "--negative", "striped", "--batch", "2", "--steps", "4", "--out", str(out), "--grid", str(grid),
                 "--json"])
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["seed"] for r in lines] == [0, 1, 0, 1]
    assert all(Path(r["path"]).exists() for r in lines)
    assert "Negative prompt: striped" in read_parameters(lines[0]["path"])
    assert grid.exists()


def test_bad_base_exits_with_message(capsys):
    code = main(["generate", "a red circle", "--base", "/nowhere/model", "--steps", "2"])
    assert code == 2
    assert "not found" in capsys.readouterr().err


def test_console_script_entry_point(tmp_path):
    out = tmp_path / "c.png"
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "generate", "a blue star on a white background", "--steps", "2",
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert out.exists()
