"""A run's learning curves as a small inline SVG for the summary page: the loss and accuracy panels of
fmnist.plots.learning_curves (train and validation per epoch, the best epoch dotted), drawn straight
from history.csv in about 3 KB, where the PNG of the same figure is 15-20 KB. The PNG stays the
run's figure (the Snakemake report shows it); this is what a page of hundreds of runs can afford.

The SVG holds numbers and fixed words only (no run name, no config text), so it is safe to insert
into the page unescaped."""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.ticker import MaxNLocator

TRAIN, VAL, BEST = "#1f77b4", "#ff7f0e", "#808080"  # matplotlib's first two colours, as the PNG
WIDTH, HEIGHT = 900, 312
PANEL_W, PANEL_H = 360, 210
LEFT, TOP, GAP = 62, 30, 90


def _ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    ticks = MaxNLocator(nbins=n, integer=integer).tick_values(lo, hi)
    return [float(t) for t in ticks if lo - 1e-9 <= t <= hi + 1e-9]


def _label(v: float) -> str:
    return f"{v:g}" if abs(v) >= 1 or v == 0 else f"{v:.2f}".rstrip("0").rstrip(".")


def _panel(x0: float, title: str, epochs: list[int], series: list[tuple[str, list[float]]],
           best_epoch: int | None) -> list[str]:
    values = [v for _, ys in series for v in ys if v is not None and math.isfinite(v)]
    out = [f'<g transform="translate({x0},{TOP})">',
           f'<rect width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#999"/>',
           f'<text x="{PANEL_W / 2}" y="-10" text-anchor="middle" font-size="14">{title}</text>']
    if not epochs or not values:
        out += [f'<text x="{PANEL_W / 2}" y="{PANEL_H / 2}" text-anchor="middle" font-size="12">no finished epoch</text>',
                "</g>"]
        return out
    x_lo, x_hi = min(epochs), max(epochs)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    pad = (max(values) - min(values)) * 0.06 or 0.05
    y_lo, y_hi = min(values) - pad, max(values) + pad

    def sx(x: float) -> float:
        return round(PANEL_W * (x - x_lo) / (x_hi - x_lo))

    def sy(y: float) -> float:
        return round(PANEL_H * (1 - (y - y_lo) / (y_hi - y_lo)))

    grid = []
    for t in _ticks(x_lo, x_hi, integer=True):
        grid.append(f'<line x1="{sx(t)}" x2="{sx(t)}" y2="{PANEL_H}" stroke="#ddd"/>'
                    f'<text x="{sx(t)}" y="{PANEL_H + 16}" text-anchor="middle">{_label(t)}</text>')
    for t in _ticks(y_lo, y_hi):
        grid.append(f'<line y1="{sy(t)}" y2="{sy(t)}" x2="{PANEL_W}" stroke="#ddd"/>'
                    f'<text x="-6" y="{sy(t) + 4}" text-anchor="end">{_label(t)}</text>')
    out.append('<g font-size="11">' + "".join(grid) + "</g>")
    out.append(f'<text x="{PANEL_W / 2}" y="{PANEL_H + 34}" text-anchor="middle" font-size="12">epoch</text>')
    if best_epoch and x_lo <= best_epoch <= x_hi:
        out.append(f'<line x1="{sx(best_epoch)}" x2="{sx(best_epoch)}" y2="{PANEL_H}" stroke="{BEST}" '
                   'stroke-dasharray="2,3"/>')
    for colour, ys in series:
        points = " ".join(f"{sx(x)},{sy(y)}" for x, y in zip(epochs, ys, strict=True)
                          if y is not None and math.isfinite(y))
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.8"/>')
    out.append("</g>")
    return out


def learning_curves_svg(history: pd.DataFrame, best_epoch: int | None = None) -> str:
    """The two panels as one <svg> element, scaled to its container's width."""
    epochs = [int(e) for e in history["epoch"]] if len(history) else []

    def col(name: str) -> list[float]:
        return [float(v) for v in history[name]] if name in history else []

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" class="curves" role="img" '
             'font-family="sans-serif" aria-label="learning curves: loss and accuracy per epoch">']
    for i, (title, train, val) in enumerate((("loss", "train_loss", "val_loss"),
                                             ("accuracy", "train_accuracy", "val_accuracy"))):
        series = [(TRAIN, col(train)), (VAL, col(val))] if epochs else []
        parts += _panel(LEFT + i * (PANEL_W + GAP), title, epochs, series, best_epoch)
    legend_y = HEIGHT - 6
    legend = [(TRAIN, "train", ""), (VAL, "validation", "")]
    if best_epoch:
        legend.append((BEST, f"best epoch {best_epoch}", ' stroke-dasharray="2,3"'))
    x = LEFT
    for colour, text, dash in legend:
        parts.append(f'<line x1="{x}" x2="{x + 22}" y1="{legend_y - 4}" y2="{legend_y - 4}" stroke="{colour}" '
                     f'stroke-width="1.8"{dash}/><text x="{x + 28}" y="{legend_y}" font-size="12">{text}</text>')
        x += 40 + 7 * len(text)
    parts.append("</svg>")
    return "".join(parts)
