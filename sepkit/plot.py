"""Dot-and-whisker PNG of per-system means and intervals, drawn with Pillow (no plotting library needed).

Pillow comes with tensorboard (a dependency), so the plot costs no extra install; matplotlib is not in
the environment and would bring itself and several packages (fonttools, kiwisolver, contourpy, ...) for
one chart.
"""
import logging
import math
from pathlib import Path

from sepkit.audio import atomic_path

logger = logging.getLogger(__name__)

__all__ = ["dot_whisker_png", "nice_ticks"]

WIDTH, LABEL_W, RIGHT, ROW_H, TITLE_H, AXIS_H = 900, 190, 30, 26, 30, 34


def nice_ticks(lo, hi, target=6):
    """Round tick values covering ``[lo, hi]`` (steps of 1, 2 or 5 x 10^k)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / target
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    return [start + k * step for k in range(int(math.ceil((hi - start) / step)) + 1)]


def dot_whisker_png(path, panels):
    """Write ``path``: one panel per ``(title, rows)``, a row ``(label, mean, lo, hi, figures, paper)``.

    Each row: grey ticks = the figures of the seeds, black dot = their mean, line = the interval
    ``[lo, hi]`` (left out when not finite), hollow red diamond = the paper's value (or None).
    The panels share one x axis.
    """
    from PIL import Image, ImageDraw, ImageFont

    xs = [v for _, rows in panels for r in rows for v in (r[1], r[2], r[3], r[5], *r[4])
          if v is not None and math.isfinite(v)]
    ticks = nice_ticks(min(xs, default=0.0), max(xs, default=1.0))
    x0, x1 = ticks[0], ticks[-1]
    height = sum(TITLE_H + ROW_H * max(1, len(rows)) + AXIS_H for _, rows in panels) + 10
    img = Image.new("RGB", (WIDTH, height), "white")
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        font = ImageFont.load_default()

    def px(v):
        return LABEL_W + (v - x0) / (x1 - x0) * (WIDTH - LABEL_W - RIGHT)

    y = 5
    for title, rows in panels:
        draw.text((10, y + 6), title, fill="black", font=font)
        y += TITLE_H
        top, bottom = y, y + ROW_H * max(1, len(rows))
        for t in ticks:
            draw.line([(px(t), top), (px(t), bottom)], fill=(225, 225, 225))
            draw.line([(px(t), bottom), (px(t), bottom + 4)], fill="black")
            draw.text((px(t) - 10, bottom + 6), f"{t:g}", fill="black", font=font)
        draw.line([(LABEL_W, bottom), (WIDTH - RIGHT, bottom)], fill="black")
        for label, mean, lo, hi, figures, paper in rows:
            cy = y + ROW_H // 2
            draw.text((10, cy - 7), label, fill="black", font=font)
            if math.isfinite(lo) and math.isfinite(hi):
                draw.line([(px(lo), cy), (px(hi), cy)], fill=(40, 90, 200), width=3)
                for v in (lo, hi):
                    draw.line([(px(v), cy - 5), (px(v), cy + 5)], fill=(40, 90, 200), width=2)
            for v in figures:
                if math.isfinite(v):
                    draw.line([(px(v), cy - 8), (px(v), cy + 8)], fill=(150, 150, 150), width=1)
            if math.isfinite(mean):
                draw.ellipse([px(mean) - 4, cy - 4, px(mean) + 4, cy + 4], fill="black")
            if paper is not None:
                p = px(paper)
                draw.polygon([(p, cy - 6), (p + 6, cy), (p, cy + 6), (p - 6, cy)], outline=(200, 30, 30))
            y += ROW_H
        y = bottom
        y += AXIS_H
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    logger.info("wrote %s (%d panels)", path, len(panels))
