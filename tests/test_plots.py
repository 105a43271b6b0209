"""The report's figures read right: no label of the Pareto figure overlaps another, and no text of
it or of the effects figure is cut off at the figure's edge (measured on the drawn figure)."""

from __future__ import annotations

import itertools

import matplotlib.text as mtext
import pandas as pd

from fmnist import plots


def _texts(fig):
    """Every text the figure draws: titles, axis labels, tick labels of ticks in view, annotations."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [fig._suptitle] if fig._suptitle is not None else []
    for ax in fig.axes:
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        for axis, (lo, hi) in ((ax.xaxis, sorted(ax.get_xlim())), (ax.yaxis, sorted(ax.get_ylim()))):
            texts += [tick.label1 for tick in axis.get_major_ticks() if lo <= tick.get_loc() <= hi]
    return [(t, t.get_window_extent(renderer)) for t in texts if t.get_visible() and t.get_text().strip()]


def _outside(fig) -> list[str]:
    w, h = fig.canvas.get_width_height()
    return [t.get_text() for t, bb in _texts(fig) if bb.x0 < -1 or bb.y0 < -1 or bb.x1 > w + 1 or bb.y1 > h + 1]


def crowded() -> pd.DataFrame:
    """Six experiments with one parameter count and accuracies 0.01 points apart: every one on the
    time panel's front, all at one x on the size panel (the CPU record's report B models)."""
    rows = [{"experiment": f"deformable_cnn_bn.b_mixup_{k}.b_default", "test_accuracy_mean": 0.9220 - k * 0.0001,
             "params": 427_216, "train_seconds_mean": 4800.0 - 60 * k} for k in range(6)]
    rows.append({"experiment": "deep_cnn.none.b_default", "test_accuracy_mean": 0.9138, "params": 1_994_890,
                 "train_seconds_mean": 9000.0})
    return pd.DataFrame(rows)


def test_pareto_labels_do_not_overlap_and_stay_inside():
    fig = plots.pareto_figure(crowded())
    fig.canvas.draw()  # as savefig does: annotations take their places when drawn
    assert sum(len(ax.texts) for ax in fig.axes[:2]) >= 7  # 1 on the size panel's front, 6 on the time panel's
    for ax in fig.axes[:2]:
        # the text's own box (an annotation's extent includes its leader line)
        boxes = [(a.get_text(), mtext.Text.get_window_extent(a)) for a in ax.texts]
        touching = [(a, b) for (a, ba), (b, bb) in itertools.combinations(boxes, 2) if ba.overlaps(bb)]
        assert not touching, touching
    assert _outside(fig) == []
    key = fig.axes[2].texts[0].get_text()
    assert all(f"deformable_cnn_bn.b_mixup_{k}.b_default" in key for k in range(6))


def test_effects_title_is_not_clipped():
    df = pd.DataFrame([{"model": "deformable_cnn_bn", "setting": "b_default", "augmentation": f"aug{k}",
                        "baseline": "none", "pairs": 3, "difference_mean": 0.5, "ci95_low": -0.6,
                        "ci95_high": 1.9, "verdict": "no clear difference", "comparisons": 12}
                       for k in range(3)])
    fig = plots.effects_figure(df)
    assert any("over 12 comparisons" in t.get_text() for t, _ in _texts(fig))
    assert _outside(fig) == []
