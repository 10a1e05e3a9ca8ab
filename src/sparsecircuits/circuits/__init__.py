"""Task circuits: node enumeration, masked forward, pruning, edges and the circuit file.

``prune(run, task, ...)`` is the entry point (see ``circuits/prune.py``); ``Circuit.load``
reads a saved ``circuit.json``.

Note: the name ``prune`` in this package is the *function*.  The module that defines it
is still importable as ``from sparsecircuits.circuits.prune import ...``.
"""
from __future__ import annotations

from . import circuit as _circuit_mod  # noqa: F401  (load submodules before binding names)
from . import graph as _graph_mod  # noqa: F401
from . import masking as _masking_mod  # noqa: F401
from . import nodes as _nodes_mod  # noqa: F401
from . import prune as _prune_mod
from ..config import DEFAULT_K_COEFS, DEFAULT_STEPS, PruneSettings
from ..sites import SITE_KINDS
from .circuit import Circuit, fit_calibration
from .graph import build_graph, count_edges, internal_edges, io_edges
from .masking import MaskedModel, ablate_only, compute_node_means, heaviside_ste, node_means
from .nodes import NodeSet, Site
from .prune import NotLearnedError, smallest_passing


def prune(run, task, **kwargs) -> Circuit:
    """Prune a run (a loaded ``Run`` or a run directory path) to a task circuit.

    Same arguments as :func:`sparsecircuits.circuits.prune.prune`: ``target_loss=0.15,
    ablation="mean", steps=None, seed=0, force=False, k_coefs=None, n_train=256,
    n_test=128, progress=True``.
    """
    if not hasattr(run, "model"):
        from ..run import load_run

        run = load_run(run)
    return _prune_mod.prune(run, task, **kwargs)


__all__ = [
    "Circuit",
    "DEFAULT_K_COEFS",
    "DEFAULT_STEPS",
    "MaskedModel",
    "NodeSet",
    "NotLearnedError",
    "PruneSettings",
    "SITE_KINDS",
    "Site",
    "ablate_only",
    "build_graph",
    "compute_node_means",
    "count_edges",
    "fit_calibration",
    "heaviside_ste",
    "internal_edges",
    "io_edges",
    "node_means",
    "prune",
    "smallest_passing",
]
