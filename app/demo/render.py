"""Drawing the demo world's photos: each class has a look (shape, colour, texture); look-alike
classes share one, so that only their tags tell them apart."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

TINY = {"Bee", "Candle", "Mobile phone", "Traffic light"}
SHAPES = ("circle", "ring", "square", "diamond", "triangle", "cross", "hbar", "vbar")
TEXTURES = ("solid", "hstripes", "vstripes", "checker", "dots")
COLORS = np.array([(220, 40, 40), (40, 170, 60), (40, 80, 220), (240, 200, 30), (150, 60, 190),
                   (30, 190, 200), (240, 130, 30), (120, 80, 40), (240, 240, 240), (30, 30, 30)], np.float32)

def render(objects: list, looks: dict, rng: np.random.Generator, size: int) -> bytes:
    """Draws a photo's objects (each class's look: shape, colour, texture) over clutter and noise; returns a JPEG."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    top, bottom = rng.uniform(60, 200, 3), rng.uniform(60, 200, 3)
    canvas = top + (bottom - top) * (yy[..., None] / size)
    for _ in range(rng.integers(2, 6)):  # clutter
        mask = _shape_mask(int(rng.integers(len(SHAPES))), xx, yy, rng.uniform(0, size, 2), size * rng.uniform(0.04, 0.1))
        canvas[mask] = rng.uniform(50, 200, 3)
    order = sorted(objects, key=lambda o: o[1] != "background")
    for name, role in order:
        shape, color, texture = looks[name]
        scale = rng.uniform(0.1, 0.16) if role == "background" or name in TINY else rng.uniform(0.2, 0.34)
        center = rng.uniform(size * 0.2, size * 0.8, 2)
        mask = _shape_mask(shape, xx, yy, center, size * scale)
        shade = _texture(texture, xx, yy)
        rgb = np.clip(COLORS[color] + rng.normal(0, 12, 3), 0, 255)
        canvas[mask] = (rgb * shade[..., None])[mask]
    canvas += rng.normal(0, 10, canvas.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _shape_mask(shape: int, xx, yy, center, radius):
    dx, dy = xx - center[0], yy - center[1]
    kind = SHAPES[shape]
    if kind == "circle":
        return dx * dx + dy * dy <= radius * radius
    if kind == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= radius * radius) & (d2 >= (0.55 * radius) ** 2)
    if kind == "square":
        return np.maximum(abs(dx), abs(dy)) <= 0.8 * radius
    if kind == "diamond":
        return abs(dx) + abs(dy) <= radius
    if kind == "triangle":
        return (dy <= 0.8 * radius) & (dy >= -0.8 * radius) & (abs(dx) <= (dy + 0.8 * radius) * 0.6)
    if kind == "cross":
        return ((abs(dx) <= 0.3 * radius) & (abs(dy) <= radius)) | ((abs(dy) <= 0.3 * radius) & (abs(dx) <= radius))
    if kind == "hbar":
        return (abs(dx) <= radius) & (abs(dy) <= 0.4 * radius)
    return (abs(dy) <= radius) & (abs(dx) <= 0.4 * radius)


def _texture(texture: int, xx, yy):
    kind = TEXTURES[texture]
    if kind == "solid":
        return np.ones_like(xx)
    if kind == "hstripes":
        return np.where((yy // 3) % 2 == 0, 1.0, 0.5)
    if kind == "vstripes":
        return np.where((xx // 3) % 2 == 0, 1.0, 0.5)
    if kind == "checker":
        return np.where(((xx // 4) + (yy // 4)) % 2 == 0, 1.0, 0.45)
    return np.where(((xx % 4) < 2) & ((yy % 4) < 2), 0.4, 1.0)
