"""AbsTopK by the C kernel while a model's weights stay fixed (pruning, the checks, node details).

A masked forward pass of a small model spends a third to a half of its time in AbsTopK
(``torch.topk``, then a scatter and a multiply, per site).  ``freeze_sparse`` can run
each site by a radix-select kernel instead, where it measured faster, keeping exactly the
entries the model's own op keeps; so logits, losses and mask gradients are the same to
the bit, and a circuit does not depend on which path was timed faster on the day.  A site
whose feeding weight rows are all zero (the demo model's q and k) is skipped outright:
its input is zeros, and so is what AbsTopK makes of them (``FrozenAbsTopK``).  The
weight products are left to BLAS here: their sparse paths pay little at these widths
under a mean-ablation mask (the ablated inputs are dense) and would make results depend
on that timing at the rounding level.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


@contextmanager
def kernel_sites(model: nn.Module) -> Iterator[None]:
    """Run ``model``'s AbsTopK sites by the C kernel (where faster) inside the ``with``.

    Does nothing when the model is on another device than the CPU, the kernels cannot be
    built, the model has no AbsTopK site, or it is frozen already (an enclosing block
    thaws it).
    """
    from ..model import native
    from ..model.sparse_linear import freeze_sparse, frozen_plan, thaw

    param = next(model.parameters(), None)
    cfg = getattr(model, "cfg", None)
    if (param is None or param.device.type != "cpu" or param.dtype != torch.float32 or cfg is None
            or frozen_plan(model) is not None or native.library() is None):
        yield
        return
    # timed on prompts shaped like a task batch: 32 rows of 24 tokens
    T = min(24, cfg.block_size)
    sample = torch.randint(0, cfg.vocab_size, (32, T), generator=torch.Generator().manual_seed(0))
    freeze_sparse(model, sample, products=False)
    try:
        yield
    finally:
        thaw(model)
