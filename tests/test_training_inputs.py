"""`medley toyworld export` and the checks `medley train` makes before it loads anything."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.cli import main
from training.captions import class_word_of, instance_captions, replace_trigger
from training.images import TrainingInputError, load_image_folder
from training.runs import check_name


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that claims a size but holds no pixel data (what a decompression bomb looks like at open)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def _image(path: Path, size: tuple[int, int] = (40, 24), colour: tuple[int, int, int] = (200, 30, 30)) -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


def test_export_writes_images_and_captions(tmp_path, capsys):
    out = tmp_path / "hartok"
    assert main(["toyworld", "export", "hartok", "--count", "3", "--out", str(out)]) == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 3
    assert all(Image.open(p).size == (32, 32) for p in pngs)
    lines = (out / "captions.txt").read_text().splitlines()
    assert len(lines) == 3 and all("\t" in line and "hartok" in line for line in lines)
    assert "medley train --images" in capsys.readouterr().out
    # the same concept by name, bigger, refuses to overwrite without --force
    assert main(["toyworld", "export", "heart", "--count", "3", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["toyworld", "export", "heart", "--count", "2", "--size", "64", "--out", str(out), "--force"]) == 0
    assert Image.open(out / "heart-0000.png").size == (64, 64)
    assert main(["toyworld", "export", "nosuch", "--out", str(out)]) == 2
    assert "no novel concept" in capsys.readouterr().err


def test_exported_folder_loads_with_captions(tmp_path):
    assert main(["toyworld", "export", "slantor", "--count", "2", "--out", str(tmp_path)]) == 0
    folder = load_image_folder(tmp_path, 32)
    assert folder.images.shape == (2, 32, 32, 3) and folder.images.dtype == np.uint8
    assert all(c is not None and "slantor" in c for c in folder.captions)
    assert folder.notes == []


def test_images_are_resized_centre_cropped_and_bad_files_skipped(tmp_path):
    _image(tmp_path / "wide.png", (80, 40))
    Image.new("RGBA", (16, 16), (0, 0, 0, 0)).save(tmp_path / "clear.png")  # transparent -> white
    (tmp_path / "notes.md").write_text("not an image")
    valid = tmp_path / "good.png"
    _image(valid)
    (tmp_path / "broken.png").write_bytes(valid.read_bytes()[:60])  # truncated
    _png_header(tmp_path / "huge.png", 8000, 6000)  # 48 megapixels
    _png_header(tmp_path / "bomb.png", 30000, 30000)
    (tmp_path / "wide.txt").write_text("a photo of sks")  # a caption, not an image
    folder = load_image_folder(tmp_path, 32)
    assert folder.files == ["clear.png", "good.png", "wide.png"]
    assert folder.images.shape == (3, 32, 32, 3)
    assert (folder.images[0] == 255).all()
    assert folder.captions == [None, None, "a photo of sks"]
    notes = "\n".join(folder.notes)
    for name, reason in (("notes.md", "not an image"), ("broken.png", "damaged"), ("huge.png", "megapixel"),
                         ("bomb.png", "megapixel")):
        assert f"skipped {name}: " in notes and reason in notes
    with pytest.raises(TrainingInputError, match="megapixel"):
        load_image_folder(tmp_path, 32, max_pixels=100)  # every image over the limit


def test_folder_errors(tmp_path):
    with pytest.raises(TrainingInputError, match="not found"):
        load_image_folder(tmp_path / "missing", 32)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TrainingInputError, match="empty"):
        load_image_folder(empty, 32)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.txt").write_text("caption")
    (junk / "b.bin").write_bytes(b"\x00\x01")
    with pytest.raises(TrainingInputError, match="no usable images.*b.bin"):
        load_image_folder(junk, 32)
    one = tmp_path / "one"
    one.mkdir()
    _image(one / "a.png")
    with pytest.raises(TrainingInputError, match="at least 2"):
        load_image_folder(one, 32)


@pytest.mark.parametrize("name", ["../evil", "a/b", "a\\b", "..", "x..y", "", ".hidden", "a b"])
def test_bad_names_are_refused(name):
    with pytest.raises(TrainingInputError, match="name"):
        check_name(name)


def test_captions_and_class_captions():
    assert instance_captions([None, "a red hartok", "a red circle"], "hartok", None, "shape") == [
        "a hartok shape", "a red hartok", "hartok, a red circle"]
    assert instance_captions([None, None], "sks", "a photo of sks dog", None) == ["a photo of sks dog"] * 2
    with pytest.raises(TrainingInputError, match="trigger"):
        instance_captions([None], "sks", "a photo of a dog", None)
    assert replace_trigger("a red hartok on a blue background", "hartok", "shape") == "a red shape on a blue background"
    assert replace_trigger("a red hartok on a blue background", "hartok", None) == "a red on a blue background"
    assert replace_trigger("hartok, a red circle", "hartok", None) == "a red circle"
    assert class_word_of("a photo of a dog", None) == "dog" and class_word_of(None, None) is None


def _train(*extra: str) -> list[str]:
    return ["train", "--trigger", "hartok", "--steps", "2", *extra]


def test_train_command_errors_before_loading_anything(tmp_path, capsys, medley_home):
    good = tmp_path / "good"
    good.mkdir()
    for i in range(2):
        _image(good / f"{i}.png")
    cases = [
        (_train("--images", str(tmp_path / "nowhere"), "--name", "x"), "image folder not found"),
        (_train("--images", str(good), "--name", "../x"), "invalid name"),
        (_train("--images", str(good), "--name", "a/b"), "invalid name"),
        (_train("--images", str(good)), "--name is required"),
        (["train", "--images", str(good), "--name", "x"], "--trigger is required"),
        (_train("--images", str(good), "--name", "x", "--trigger", "two words"), "invalid trigger"),
        (_train("--images", str(good), "--name", "x", "--prior"), "--prior needs --class-prompt"),
        (_train("--images", str(good), "--name", "x", "--rank", "0"), "rank must be positive"),
        (["train", "--resume", "never-ran"], "no run named"),
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    cases.append((_train("--images", str(empty), "--name", "x"), "is empty"))
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.doc").write_bytes(b"hello")
    cases.append((_train("--images", str(junk), "--name", "x"), "no usable images"))
    single = tmp_path / "single"
    single.mkdir()
    _image(single / "a.png")
    cases.append((_train("--images", str(single), "--name", "x"), "at least 2"))
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert any(line.startswith("medley: ") and message in line for line in err.splitlines()), (argv, err)
    # a name that exists (run folder, adapter file) is not overwritten without --force
    (medley_home / "runs" / "taken").mkdir(parents=True)
    (medley_home / "runs" / "taken" / "keep.txt").write_text("keep")
    assert main(_train("--images", str(good), "--name", "taken")) == 2
    assert "--force" in capsys.readouterr().err
    assert (medley_home / "runs" / "taken" / "keep.txt").read_text() == "keep"
    (medley_home / "adapters").mkdir(parents=True)
    (medley_home / "adapters" / "mine.safetensors").write_bytes(b"old")
    assert main(_train("--images", str(good), "--name", "mine")) == 2
    assert "exists" in capsys.readouterr().err
    assert (medley_home / "adapters" / "mine.safetensors").read_bytes() == b"old"
