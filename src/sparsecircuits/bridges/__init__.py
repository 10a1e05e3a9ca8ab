"""Bridges: a weight-sparse twin trained against a frozen dense model, its evaluation and
editing the dense model through one node of the twin (Gao et al. 2025, 2.3, 3.3, A.3, A.4)."""
from .model import BridgedRun, Bridges, BridgeSpec, bridge_terms, load_bridged, location_names

__all__ = ["BridgedRun", "Bridges", "BridgeSpec", "bridge_terms", "load_bridged", "location_names"]
