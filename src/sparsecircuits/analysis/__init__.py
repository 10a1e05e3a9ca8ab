"""Analyses of trained models and their circuits.

* ``faithfulness``: the report card of a circuit (``run_checks``; thresholds in its docstring);
* ``variants``: shifted versions of the tasks and the bracket-counting failure probes;
* ``frontier``: circuit size vs pretraining loss over a grid of dense and sparse models.
"""
from __future__ import annotations

from .faithfulness import CHECK_NAMES, circuit_from_keep, format_table, run_checks, write_checks
from .frontier import GRIDS, frontier, matched_ratio
from .variants import bracket_length_items, bracket_stray_items, variant_items

__all__ = [
    "CHECK_NAMES",
    "GRIDS",
    "bracket_length_items",
    "bracket_stray_items",
    "circuit_from_keep",
    "format_table",
    "frontier",
    "matched_ratio",
    "run_checks",
    "variant_items",
    "write_checks",
]
