"""The blinded review's tally: how often each category was chosen for PIEs and for controls.

A pure function over the reviewer's categories and the key's PIE flags (read by
:func:`pie_audit.interchange.read_review`). Each category is tested on its own 2 x 2 table
(that category or another, PIE or control) with Fisher's exact test, two-sided, and the p-values
are corrected across the categories with Benjamini-Hochberg, as Hooker et al.'s human study asks
whether PIEs are over-indexed on some kinds of example (``docs/review.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..interchange import CATEGORIES
from ._distributions import benjamini_hochberg

__all__ = ["TALLY_COLUMNS", "review_tally", "NOT_A_CATEGORY", "TALLY_LENGTHS"]

#: The columns of :func:`review_tally`'s table, and of ``tally.csv``.
TALLY_COLUMNS = ("category", "pies", "controls", "odds_ratio", "p_value", "q_value")
NOT_A_CATEGORY = "category {value!r} is not one of: {categories}"
TALLY_LENGTHS = "categories has {n} entries but is_pie {m}; expected one of each per reviewed example"


def review_tally(categories: Sequence[str] | np.ndarray, is_pie: Sequence[bool] | np.ndarray) -> pd.DataFrame:
    """Per category, the PIEs and controls a reviewer put in it, and whether PIEs are over-indexed.

    Parameters
    ----------
    categories : sequence of str, shape (K,)
        The category of each reviewed example, each one of :data:`pie_audit.interchange.CATEGORIES`.
    is_pie : sequence of bool, shape (K,)
        Whether the example is a PIE (the key); otherwise a control.

    Returns
    -------
    DataFrame
        One row per category of :data:`~pie_audit.interchange.CATEGORIES`, in its order, even
        those never chosen: ``category`` (str), ``pies`` and ``controls`` (int64: how many of
        each the reviewer put in it), ``odds_ratio`` (of the table ``[[pies in it, pies not],
        [controls in it, controls not]]``, as ``scipy.stats.fisher_exact`` gives it: ``inf``
        when no control is in it but some PIE is, ``0`` the other way round, NaN where it is
        0 / 0, as for a category no example or every example is in), ``p_value`` (Fisher's exact test, two-sided; 1 for
        a category no example or every example is in) and ``q_value`` (Benjamini-Hochberg over
        the categories' p-values).

    Raises
    ------
    ConfigError
        :data:`TALLY_LENGTHS`, or :data:`NOT_A_CATEGORY` for the first unknown category.

    Examples
    --------
    >>> tally = review_tally(["ambiguous", "fine", "ambiguous", "fine"], [True, False, True, False])
    >>> tally.set_index("category").loc["ambiguous", ["pies", "controls"]].tolist()
    [2, 0]
    """
    from scipy.stats import fisher_exact

    categories = np.asarray(categories, dtype=object)
    is_pie = np.asarray(is_pie, dtype=bool)
    if categories.shape != is_pie.shape or categories.ndim != 1:
        raise ConfigError(TALLY_LENGTHS.format(n=categories.size, m=is_pie.size))
    for value in categories.tolist():
        if value not in CATEGORIES:
            raise ConfigError(NOT_A_CATEGORY.format(value=value, categories=", ".join(CATEGORIES)))
    n_pies, n_controls = int(is_pie.sum()), int((~is_pie).sum())
    pies = np.array([int((is_pie & (categories == c)).sum()) for c in CATEGORIES], dtype=np.int64)
    controls = np.array([int((~is_pie & (categories == c)).sum()) for c in CATEGORIES], dtype=np.int64)
    odds, p = [], []
    for a, c in zip(pies.tolist(), controls.tolist(), strict=True):
        result = fisher_exact([[a, n_pies - a], [c, n_controls - c]], alternative="two-sided")
        odds.append(float(result.statistic))
        p.append(float(result.pvalue))
    p_values = np.array(p, dtype=np.float64)
    return pd.DataFrame(
        {
            "category": pd.Series(CATEGORIES, dtype=object),
            "pies": pies,
            "controls": controls,
            "odds_ratio": np.array(odds, dtype=np.float64),
            "p_value": p_values,
            "q_value": benjamini_hochberg(p_values),
        },
        columns=list(TALLY_COLUMNS),
    )
