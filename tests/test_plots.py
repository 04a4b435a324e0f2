"""Figures: which classes are drawn, and SVG fit for inline embedding in a light/dark page."""

import numpy as np
import pandas as pd

from pie_audit.plots import class_change_svg, most_affected, pies_per_class_svg


def classes(changes, significant):
    n = len(changes)
    changes = np.asarray(changes, dtype=float)
    return pd.DataFrame(
        {
            "label": np.arange(n),
            "normalized_change": changes,
            "ci_low": changes - 0.01,
            "ci_high": changes + 0.01,
            "significant": significant,
            "direction": np.where(significant, np.where(changes < 0, "harmed", "helped"), "none"),
            "n_pies": np.arange(n),
        }
    )


def test_most_affected_keeps_significant_classes_first():
    frame = classes([-0.01, 0.5, -0.4, 0.02, np.nan], [True, False, False, True, False])
    # Both significant classes, then the largest other change; drawn in order of change.
    assert most_affected(frame, limit=3)["label"].tolist() == [0, 3, 1]
    assert most_affected(frame, limit=10)["label"].tolist() == [2, 0, 3, 1]  # NaN left out


def test_class_change_svg_is_inline_ready():
    frame = classes([-0.2, 0.1, 0.0], [True, True, False])
    svg = class_change_svg(frame, class_labels=["<b>", "$5 bill", "c"], limit=40)
    assert svg.startswith('<svg role="img" aria-label="Normalized recall change per class" class="figure"')
    assert 'width="' not in svg.split(">", 1)[0]  # scales with the page
    assert "&lt;b&gt;" in svg and "$5 bill" in svg  # text, not markup or mathtext
    assert "currentColor" in svg and "#0a0b0c" not in svg
    assert 'id="change-' in svg and "<style" not in svg and "<metadata" not in svg
    assert "#d1495b" in svg and "#2e86de" in svg  # harmed and helped colours


def test_empty_inputs_give_no_figure():
    assert class_change_svg(classes([np.nan], [False]), class_labels=["a"]) == ""
    assert pies_per_class_svg(classes([0.0], [False]), class_labels=["a"]) == ""
