"""sparsecircuits: weight-sparse transformers and their task circuits."""
__version__ = "0.1.0"


def load_run(path, device: str = "cpu", checkpoint: int | None = None):
    """Open a run directory (or the weights of one of its checkpoints); see
    :func:`sparsecircuits.run.load_run`."""
    from .run import load_run as _load_run

    return _load_run(path, device=device, checkpoint=checkpoint)


def prune(run, task, **kwargs):
    """Prune a run to a task circuit; see :func:`sparsecircuits.circuits.prune.prune`."""
    from .circuits import prune as _prune

    return _prune(run, task, **kwargs)
