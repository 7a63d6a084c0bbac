"""The paper's architecture comparison (Tables 5 and 6): matched models, one training recipe, one report.

:func:`run_comparison` trains each architecture of :mod:`retnet.baselines` and RetNet (with its Table-6
ablations) with the shared trainer and data, evaluates in- and out-of-domain perplexity, and writes the
tables, JSON and plots. ``retnet compare`` is its command line.
"""

from .archs import ENTRIES, LABELS, TABLE5, TABLE6, BaselineSettings, match_parameters
from .config import CompareConfig, CompareSection, load_compare_config
from .runner import rebuild_report, run_comparison

__all__ = [
    "ENTRIES",
    "LABELS",
    "TABLE5",
    "TABLE6",
    "BaselineSettings",
    "CompareConfig",
    "CompareSection",
    "load_compare_config",
    "match_parameters",
    "rebuild_report",
    "run_comparison",
]
