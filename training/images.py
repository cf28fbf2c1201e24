"""Training images from a folder: checked, decoded safely, resized and centre-cropped to the base's size.

Every regular file in the folder (not its subfolders) is tried as an image. Files
that are not images, are damaged, or are too large to decode safely (over
``MAX_PIXELS``) are skipped with a note; caption files (``captions.txt`` and
``<stem>.txt`` beside an image, kohya's convention) are read, not tried. A folder
that does not exist, is empty, or yields fewer than ``MIN_IMAGES`` usable images
raises :class:`TrainingInputError` with a one-line message.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # 40 megapixels: larger files are refused before decoding
MAX_FILE_BYTES = 256 * 1024 * 1024
MIN_IMAGES = 2
CAPTIONS_FILE = "captions.txt"
CAPTION_SUFFIX = ".txt"
MAX_CAPTION_CHARS = 1000


class TrainingInputError(ValueError):
    """Input a training run cannot use (bad folder, too few images, bad name...). One line, says what to do."""


@dataclass
class ImageFolder:
    """The usable images of a folder, in file-name order, with any captions found beside them."""

    images: np.ndarray  # uint8 [N, size, size, 3]
    files: list[str]
    captions: list[str | None]
    notes: list[str] = field(default_factory=list)  # one line per skipped file


def fit_image(image: Image.Image, size: int) -> np.ndarray:
    """RGB uint8 [size, size, 3]: transparent pixels on white, resized (shorter side) and centre-cropped."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    image = image.convert("RGB")
    if image.size != (size, size):
        image = ImageOps.fit(image, (size, size), Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    return np.asarray(image, dtype=np.uint8).copy()


def read_image(path: Path, size: int, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One image file -> [size, size, 3] uint8; raises ValueError with the reason it cannot be used."""
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ValueError(f"file is over {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ValueError(f"{width}x{height} is {width * height / 1e6:.0f} megapixels, over the "
                                     f"{max_pixels / 1e6:.0f}-megapixel limit; downscale it first")
                if width < 1 or height < 1:
                    raise ValueError("the image has no pixels")
                if image.format == "JPEG":
                    image.draft("RGB", (size, size))  # decode JPEGs at a reduced scale when that is enough
                image.load()
                return fit_image(image, size)
        except UnidentifiedImageError:
            raise ValueError("not an image") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ValueError(f"over the {max_pixels / 1e6:.0f}-megapixel limit; downscale it first") from None
        except (OSError, SyntaxError, EOFError) as error:  # truncated or damaged data
            raise ValueError(f"damaged image ({str(error)[:80]})") from None


def read_captions_file(path: Path) -> dict[str, str]:
    """``captions.txt``: one ``file name<TAB>caption`` (or ``file name: caption``) per line."""
    captions: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return captions
    for line in text.splitlines():
        if "\t" in line:
            name, _, caption = line.partition("\t")
        elif ": " in line:
            name, _, caption = line.partition(": ")
        else:
            continue
        caption = " ".join(caption.split())[:MAX_CAPTION_CHARS]
        if name.strip() and caption:
            captions[name.strip()] = caption
    return captions


def _sidecar_caption(path: Path) -> str | None:
    sidecar = path.with_suffix(CAPTION_SUFFIX)
    if not sidecar.is_file():
        return None
    try:
        text = " ".join(sidecar.read_text(encoding="utf-8", errors="replace").split())
    except OSError:
        return None
    return text[:MAX_CAPTION_CHARS] or None


def check_folder(folder: Path | str) -> Path:
    """The folder, resolved; TrainingInputError when it is missing, not a folder, or empty."""
    path = Path(folder).expanduser()
    if not path.exists():
        raise TrainingInputError(f"image folder not found: {path}")
    if not path.is_dir():
        raise TrainingInputError(f"{path} is not a folder; --images takes a folder of images")
    if not any(entry.is_file() for entry in path.iterdir()):
        raise TrainingInputError(f"image folder {path} is empty")
    return path.resolve()


def load_image_folder(folder: Path | str, size: int, min_images: int = MIN_IMAGES,
                      max_pixels: int = MAX_PIXELS) -> ImageFolder:
    """Every usable image of ``folder`` as [N, size, size, 3] uint8 (see the module docstring)."""
    path = check_folder(folder)
    listed = read_captions_file(path / CAPTIONS_FILE) if (path / CAPTIONS_FILE).is_file() else {}
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    caption_files = {p.name for p in files if p.suffix.lower() == CAPTION_SUFFIX}
    images: list[np.ndarray] = []
    names: list[str] = []
    captions: list[str | None] = []
    notes: list[str] = []
    for file in files:
        if file.name in caption_files:
            continue
        try:
            images.append(read_image(file, size, max_pixels))
        except ValueError as error:
            notes.append(f"skipped {file.name}: {error}")
            continue
        except OSError as error:
            notes.append(f"skipped {file.name}: cannot read it ({error.strerror or error})")
            continue
        names.append(file.name)
        captions.append(_sidecar_caption(file) or listed.get(file.name))
    if not images:
        reasons = "; ".join(notes[:5]) + (f"; and {len(notes) - 5} more" if len(notes) > 5 else "")
        raise TrainingInputError(f"no usable images in {path} ({reasons})" if reasons
                                 else f"no images in {path}, only caption files")
    if len(images) < min_images:
        raise TrainingInputError(f"need at least {min_images} training images, found {len(images)} usable in {path}")
    return ImageFolder(images=np.stack(images), files=names, captions=captions, notes=notes)
