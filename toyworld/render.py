"""Rasterise a toy-world scene: a shape mask, a texture pattern, colours, a palette.

Drawing happens on a 4x supersampled canvas and is box-filtered down, so
edges are anti-aliased and the output is exactly reproducible.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from toyworld.scene import Scene
from toyworld.vocab import BACKGROUND_COLOURS, FOREGROUND_COLOURS, IMAGE_SIZE

SUPERSAMPLE = 4
_RADIUS = {"small": 6.5, "medium": 9.0, "large": 12.0}
_OFFSET = 5.5
_POSITION = {
    "center": (0.0, 0.0),
    "left": (-_OFFSET, 0.0),
    "right": (_OFFSET, 0.0),
    "top": (0.0, -_OFFSET),
    "bottom": (0.0, _OFFSET),
}

Polygon = list[tuple[float, float]]


def _regular(n: int, radius: float = 1.0, phase: float = -math.pi / 2) -> Polygon:
    return [
        (radius * math.cos(phase + 2 * math.pi * k / n), radius * math.sin(phase + 2 * math.pi * k / n))
        for k in range(n)
    ]


def _star() -> Polygon:
    points = []
    for k in range(10):
        radius = 1.0 if k % 2 == 0 else 0.45
        angle = -math.pi / 2 + math.pi * k / 5
        points.append((radius * math.cos(angle), radius * math.sin(angle)))
    return points


def _heart() -> Polygon:
    points = []
    for k in range(64):
        t = 2 * math.pi * k / 64
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        points.append((x / 16.5, -y / 16.5 - 0.05))
    return points


# Each shape is a list of (polygon, fill) operations in unit coordinates; fill 0 cuts a hole.
_SHAPES: dict[str, list[tuple[str, object, int]]] = {
    "circle": [("ellipse", (0.0, 0.0, 1.0), 255)],
    "square": [("polygon", [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)], 255)],
    "triangle": [("polygon", [(0.0, -1.0), (0.95, 0.78), (-0.95, 0.78)], 255)],
    "diamond": [("polygon", [(0.0, -1.0), (0.72, 0.0), (0.0, 1.0), (-0.72, 0.0)], 255)],
    "star": [("polygon", _star(), 255)],
    "cross": [
        ("polygon", [(-0.32, -0.95), (0.32, -0.95), (0.32, 0.95), (-0.32, 0.95)], 255),
        ("polygon", [(-0.95, -0.32), (0.95, -0.32), (0.95, 0.32), (-0.95, 0.32)], 255),
    ],
    "heart": [("polygon", _heart(), 255)],
    "crescent": [("ellipse", (0.0, 0.0, 1.0), 255), ("ellipse", (0.45, -0.2, 0.8), 0)],
    "arrow": [
        (
            "polygon",
            [(-0.95, -0.25), (0.15, -0.25), (0.15, -0.75), (0.95, 0.0), (0.15, 0.75), (0.15, 0.25), (-0.95, 0.25)],
            255,
        )
    ],
    "bolt": [
        (
            "polygon",
            [(0.15, -1.0), (-0.6, 0.15), (-0.05, 0.15), (-0.3, 1.0), (0.6, -0.2), (0.05, -0.2), (0.4, -1.0)],
            255,
        )
    ],
    "ring": [("ellipse", (0.0, 0.0, 1.0), 255), ("ellipse", (0.0, 0.0, 0.52), 0)],
    "hourglass": [
        ("polygon", [(-0.8, -1.0), (0.8, -1.0), (0.14, 0.0), (0.8, 1.0), (-0.8, 1.0), (-0.14, 0.0)], 255)
    ],
    "tee": [
        ("polygon", [(-0.95, -0.9), (0.95, -0.9), (0.95, -0.4), (-0.95, -0.4)], 255),
        ("polygon", [(-0.25, -0.5), (0.25, -0.5), (0.25, 0.95), (-0.25, 0.95)], 255),
    ],
    "chevron": [
        ("polygon", [(0.0, -0.9), (0.95, 0.3), (0.95, 0.85), (0.0, -0.2), (-0.95, 0.85), (-0.95, 0.3)], 255)
    ],
}

SHAPE_NAMES = tuple(_SHAPES)


def shape_mask(scene: Scene) -> np.ndarray:
    """The shape's coverage on the supersampled canvas, float in [0, 1]."""
    canvas = IMAGE_SIZE * SUPERSAMPLE
    cx, cy = (IMAGE_SIZE / 2 + _POSITION[scene.position][0] + scene.jitter_x) * SUPERSAMPLE, (
        IMAGE_SIZE / 2 + _POSITION[scene.position][1] + scene.jitter_y
    ) * SUPERSAMPLE
    radius = (_RADIUS[scene.size] + scene.jitter_radius) * SUPERSAMPLE
    image = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(image)
    for op, geometry, fill in _SHAPES[scene.shape]:
        if op == "ellipse":
            ex, ey, er = geometry  # type: ignore[misc]
            x0, y0 = cx + (ex - er) * radius, cy + (ey - er) * radius
            x1, y1 = cx + (ex + er) * radius, cy + (ey + er) * radius
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        else:
            points = [(cx + px * radius, cy + py * radius) for px, py in geometry]  # type: ignore[union-attr]
            draw.polygon(points, fill=fill)
    return np.asarray(image, dtype=np.float32) / 255.0


def _grid() -> tuple[np.ndarray, np.ndarray]:
    """Output-pixel coordinates of every supersampled canvas pixel's centre."""
    canvas = IMAGE_SIZE * SUPERSAMPLE
    coords = (np.arange(canvas, dtype=np.float32) + 0.5) / SUPERSAMPLE
    return np.meshgrid(coords, coords)  # x, y


def texture_pattern(scene: Scene, mask: np.ndarray) -> np.ndarray:
    """Where the texture shows its primary colour (1) vs its dark shade (0)."""
    x, y = _grid()
    cx = IMAGE_SIZE / 2 + _POSITION[scene.position][0] + scene.jitter_x
    cy = IMAGE_SIZE / 2 + _POSITION[scene.position][1] + scene.jitter_y
    u, v = x - cx + 64.0, y - cy + 64.0  # pattern anchored to the shape, kept positive
    t = scene.texture
    if t in ("solid", "outlined"):
        return np.ones_like(x)
    if t == "striped":
        return (np.floor(v / 2.0) % 2 == 0).astype(np.float32)
    if t == "dotted":
        du, dv = (u % 4.0) - 2.0, (v % 4.0) - 2.0
        return (du * du + dv * dv > 1.2).astype(np.float32)
    if t == "checkered":
        return ((np.floor(u / 3.0) + np.floor(v / 3.0)) % 2 == 0).astype(np.float32)
    if t == "diagonal":
        return (np.floor((u + v) / 2.5) % 2 == 0).astype(np.float32)
    if t == "grid":
        return ((u % 4.0 >= 1.0) & (v % 4.0 >= 1.0)).astype(np.float32)
    if t == "concentric":
        r = np.sqrt((u - 64.0) ** 2 + (v - 64.0) ** 2)
        return (np.floor(r / 2.0) % 2 == 0).astype(np.float32)
    if t == "zigzag":
        tri = np.abs((u % 4.0) - 2.0)
        return (np.floor((v + tri) / 2.0) % 2 == 0).astype(np.float32)
    if t == "crosshatch":
        a = (u + v) % 4.0 < 1.0
        b = (u - v) % 4.0 < 1.0
        return (~(a | b)).astype(np.float32)
    if t == "vertical":
        return (np.floor(u / 2.0) % 2 == 0).astype(np.float32)
    if t == "gradient":
        rows = mask.sum(axis=1) > 0
        if not rows.any():
            return np.ones_like(x)
        top, bottom = np.argmax(rows), len(rows) - np.argmax(rows[::-1])
        frac = (np.arange(mask.shape[0], dtype=np.float32) - top) / max(bottom - top, 1)
        return np.clip(1.0 - frac, 0.0, 1.0)[:, None] * np.ones_like(x)
    if t == "speckled":
        rng = np.random.default_rng(scene.seed + 7919)
        small = (rng.random((IMAGE_SIZE, IMAGE_SIZE)) > 0.35).astype(np.float32)
        return np.kron(small, np.ones((SUPERSAMPLE, SUPERSAMPLE), dtype=np.float32))
    raise ValueError(f"unknown texture {t!r}")


def _outline(mask: np.ndarray) -> np.ndarray:
    """Keep a band about two output pixels wide inside the shape's edge."""
    image = Image.fromarray((mask * 255).astype(np.uint8))
    eroded = image.filter(ImageFilter.MinFilter(2 * 2 * SUPERSAMPLE + 1))
    return np.clip(mask - np.asarray(eroded, dtype=np.float32) / 255.0, 0.0, 1.0)


def _apply_palette(image: np.ndarray, mask: np.ndarray, fg: np.ndarray, palette: str) -> np.ndarray:
    if palette == "plain":
        return image
    if palette == "pastel":
        return image * 0.5 + 255.0 * 0.5
    if palette == "dusk":
        return image * 0.55 + np.array([20.0, 25.0, 80.0]) * 0.45
    if palette == "sepia":
        grey = image.mean(axis=-1, keepdims=True)
        sepia = grey * np.array([1.07, 0.86, 0.62])
        return np.clip(image * 0.45 + sepia * 0.55, 0, 255)
    if palette == "neon":
        halo_src = Image.fromarray((mask * 255).astype(np.uint8)).filter(ImageFilter.MaxFilter(13))
        halo = np.asarray(halo_src.filter(ImageFilter.GaussianBlur(6)), dtype=np.float32) / 255.0
        halo = np.clip(halo - mask, 0.0, 1.0)[..., None] * 0.85
        return image * (1 - halo) + (fg * 0.6 + 255.0 * 0.4) * halo
    raise ValueError(f"unknown palette {palette!r}")


def render(scene: Scene) -> np.ndarray:
    """Render a scene to a uint8 RGB array of shape [IMAGE_SIZE, IMAGE_SIZE, 3]."""
    fg = np.array(FOREGROUND_COLOURS[scene.foreground], dtype=np.float32)
    bg = np.array(BACKGROUND_COLOURS[scene.background], dtype=np.float32)
    mask = shape_mask(scene)
    if scene.texture == "outlined":
        mask = _outline(mask)
    pattern = texture_pattern(scene, mask)[..., None]
    shade = fg * 0.35
    fill = pattern * fg + (1.0 - pattern) * shade
    image = mask[..., None] * fill + (1.0 - mask[..., None]) * bg
    image = _apply_palette(image, shape_mask(scene), fg, scene.palette)
    pooled = image.reshape(IMAGE_SIZE, SUPERSAMPLE, IMAGE_SIZE, SUPERSAMPLE, 3).mean(axis=(1, 3))
    return np.clip(np.rint(pooled), 0, 255).astype(np.uint8)
