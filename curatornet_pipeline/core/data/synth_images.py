"""Procedural artwork images for the synthetic dataset: visual styles (palette, texture,
stripes, shapes; docs/synthetic-data.md) and their rendering, numpy plus PIL. Every image
draws from its own generator seeded by ``(seed, item index)``, so bytes do not depend on the
rendering order.
"""

import colorsys
import io
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "rectangle", "triangle", "line", "ring")
LAYOUTS: tuple[str, ...] = ("center", "grid", "scatter", "horizon")
NOISE_CELLS: tuple[int, ...] = (2, 4, 8, 16, 32)  # texture cells across the image
STRIPE_FREQS: tuple[float, ...] = (0.0, 3.0, 8.0, 20.0)  # cycles across the image
# (saturation, value) of the background colours: vivid, muted, dark, pastel
TONES: tuple[tuple[float, float], ...] = ((0.85, 0.85), (0.35, 0.6), (0.7, 0.25), (0.3, 0.95))
JPEG_QUALITY = 90


def _hsv(h: float, s: float, v: float) -> list[float]:
    return list(colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1))))


def make_styles(n_styles: int, rng: np.random.Generator) -> list[dict]:
    """``n_styles`` JSON-able styles whose attributes cycle so neighbours differ in every one."""
    if n_styles < 1:
        raise ValueError(f"n_styles must be >= 1, got {n_styles}")
    golden = 0.618033988749895
    hue0 = float(rng.random())
    styles = []
    for k in range(n_styles):
        hue = (hue0 + k * golden) % 1.0
        sat, val = TONES[k % len(TONES)]
        contrast_hue = (hue + 0.5 + rng.uniform(-0.1, 0.1)) % 1.0
        styles.append(
            {
                "id": k,
                "palette": [
                    _hsv(hue, sat, val),
                    _hsv(hue + 0.08, sat * 0.8, val * 0.7 + 0.1),
                    _hsv(contrast_hue, 0.6, 1.0 - val * 0.6),
                    _hsv(contrast_hue + 0.1, 0.9, 0.9 if val < 0.5 else 0.2),
                ],
                "gradient_angle": float(rng.uniform(0, 2 * np.pi)),
                "noise_cells": NOISE_CELLS[(k // 2) % len(NOISE_CELLS)],
                "noise_amp": float(rng.uniform(0.08, 0.25)),
                "stripe_freq": STRIPE_FREQS[(k // 3) % len(STRIPE_FREQS)],
                "stripe_angle": float(rng.uniform(0, np.pi)),
                "stripe_amp": float(rng.uniform(0.25, 0.45)),
                "shape": SHAPES[k % len(SHAPES)],
                "layout": LAYOUTS[(k // len(SHAPES)) % len(LAYOUTS)],
                "n_shapes": int(rng.choice([1, 3, 6, 12, 25])),
                "shape_scale": float(rng.uniform(0.08, 0.35)),
            }
        )
    return styles


def jitter_style(style: dict, rng: np.random.Generator) -> dict:
    """An artist's variant of ``style``: slightly shifted colours, angles and sizes."""
    out = dict(style)
    out["palette"] = np.clip(
        np.asarray(style["palette"]) + rng.normal(0, 0.04, (4, 3)), 0, 1
    ).tolist()
    out["gradient_angle"] = style["gradient_angle"] + float(rng.normal(0, 0.3))
    out["stripe_angle"] = style["stripe_angle"] + float(rng.normal(0, 0.1))
    out["shape_scale"] = style["shape_scale"] * float(rng.uniform(0.85, 1.15))
    out["noise_amp"] = style["noise_amp"] * float(rng.uniform(0.85, 1.15))
    return out


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    return x, y  # (S, S) each, in [0, 1]


def _value_noise(cells: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth noise in [-1, 1] with about ``cells`` features across the image."""
    grid = rng.uniform(-1, 1, (cells + 1, cells + 1)).astype(np.float32)
    x, y = _grid(size)
    gx, gy = x * cells, y * cells
    x0 = np.minimum(gx.astype(np.int32), cells - 1)
    y0 = np.minimum(gy.astype(np.int32), cells - 1)
    fx, fy = gx - x0, gy - y0
    top = grid[y0, x0] * (1 - fx) + grid[y0, x0 + 1] * fx
    bottom = grid[y0 + 1, x0] * (1 - fx) + grid[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy  # (S, S)


def _shape_centres(layout: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 2) shape centres in [0, 1] following the style's composition."""
    if layout == "center":
        return np.clip(0.5 + rng.normal(0, 0.08, (n, 2)), 0, 1)
    if layout == "grid":
        side = int(np.ceil(np.sqrt(n)))
        idx = np.arange(n)
        pts = np.stack([(idx % side + 0.5) / side, (idx // side + 0.5) / side], axis=1)
        return np.clip(pts + rng.normal(0, 0.02, (n, 2)), 0, 1)
    if layout == "horizon":
        return np.stack([rng.uniform(0, 1, n), 0.65 + rng.normal(0, 0.05, n)], axis=1)
    return rng.uniform(0, 1, (n, 2))  # scatter


def _draw_shapes(img: Image.Image, style: dict, rng: np.random.Generator) -> None:
    size = img.width
    draw = ImageDraw.Draw(img)
    n = max(1, int(style["n_shapes"] + rng.integers(-1, 2)))
    centres = _shape_centres(style["layout"], n, rng) * size
    radii = style["shape_scale"] * size * rng.uniform(0.6, 1.2, n) / np.sqrt(max(n, 1) / 3 + 1)
    base = np.asarray(style["palette"][3])
    width = max(1, size // 40)
    for (cx, cy), r in zip(centres, np.maximum(radii, 1.0), strict=True):
        colour = tuple(int(c) for c in np.clip(base + rng.normal(0, 0.05, 3), 0, 1) * 255)
        box = (cx - r, cy - r, cx + r, cy + r)
        kind = style["shape"]
        if kind == "circle":
            draw.ellipse(box, fill=colour)
        elif kind == "ring":
            draw.ellipse(box, outline=colour, width=max(width, int(r / 3)))
        elif kind == "rectangle":
            draw.rectangle((cx - r, cy - 0.6 * r, cx + r, cy + 0.6 * r), fill=colour)
        elif kind == "triangle":
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
        else:  # line
            a = rng.uniform(0, np.pi)
            dx, dy = np.cos(a) * r * 1.5, np.sin(a) * r * 1.5
            draw.line((cx - dx, cy - dy, cx + dx, cy + dy), fill=colour, width=width * 2)


def render(style: dict, size: int, rng: np.random.Generator) -> Image.Image:
    """One RGB image of ``size`` x ``size`` pixels in ``style``."""
    x, y = _grid(size)
    pal = np.asarray(style["palette"], dtype=np.float32) + rng.normal(0, 0.03, (4, 3)).astype(
        np.float32
    )
    angle = style["gradient_angle"] + rng.normal(0, 0.25)
    t = (x - 0.5) * np.cos(angle) + (y - 0.5) * np.sin(angle)
    t = np.clip(t / 1.42 + 0.5, 0, 1)[..., None]  # (S, S, 1)
    rgb = pal[0] * (1 - t) + pal[1] * t  # (S, S, 3)
    if style["stripe_freq"] > 0:
        a = style["stripe_angle"]
        phase = rng.uniform(0, 2 * np.pi)
        wave = np.sin(2 * np.pi * style["stripe_freq"] * (x * np.cos(a) + y * np.sin(a)) + phase)
        mix = (style["stripe_amp"] * (wave > 0))[..., None]  # hard-edged strokes
        rgb = rgb * (1 - mix) + pal[2] * mix
    noise = _value_noise(int(style["noise_cells"]), size, rng)
    rgb = rgb + style["noise_amp"] * noise[..., None]
    img = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB")
    _draw_shapes(img, style, rng)
    return img


def jpeg_bytes(img: Image.Image) -> bytes:
    """Baseline JPEG at a fixed quality, no EXIF, no timestamps: equal input, equal bytes."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=False, progressive=False)
    return buf.getvalue()
