"""CLI commands, one module each; see ``sparsecircuits.cli``."""
