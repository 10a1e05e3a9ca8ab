"""The faithfulness report card: does a pruned circuit do the task the way the model does?

Low task loss alone proves little: pruning reaches it even on a nonsense task, can drop
the attention patterns the model uses, and can give nodes a new meaning (docs/method.md §5).  Each
check below tests one of these ways a circuit can mislead, and has a fixed threshold so
that a verdict is ``pass`` or ``flag`` (a flag asks for a closer look; it is not an
error).  All evaluations use the circuit's own ablation (mean or zero) and held-out test
items regenerated from the circuit's task, seed and ``n_test``.  Losses are the task loss
in nats per pair (``tasks.base.binary_task_loss``: the binary cross-entropies over the two
answer logits of a pair's two prompts, summed; chance is 2 ln 2 = 1.386).

=====================  ======================================================  ============
check                  value (and when it passes)                              threshold
=====================  ======================================================  ============
necessity              loss of the full model with only the circuit's nodes    >= 1.2
                       ablated, after the best scale and shift (fitted on
                       train items): removing the circuit must leave the model
                       near chance (1.2 = 87% of 2 ln 2).  Passes if >= 1.2
sufficiency            the circuit's calibrated loss on held-out test items;   target + 0.1
                       passes if value <= the pruning target + 0.1
sufficiency_shifted    worst excess loss over shifted variants (longer         <= 0.2
                       prompts, other names, other nesting, a prefix of other
                       code; ``analysis/variants.py``): per variant, the
                       circuit's loss minus max(target, the full model's loss
                       on that variant).  Passes if value <= 0.2
random_baseline        the circuit's calibrated test loss; random circuits     5th pct.
                       with the same number of nodes at every site (20 draws,
                       each calibrated the same way) give the threshold, their
                       5th percentile.  Passes if value < threshold
interchange            the model's flip rate with only the circuit's nodes     >= 0.8
                       taken from the pair's other prompt (the prompts the
                       model answers right): the circuit must be where the
                       model carries the answer.  Passes if value >= 0.8
nonsense_control       min over nodes and edges of size(nonsense circuit) /    >= 2
                       size(circuit), the nonsense task ``nonsense_name_when``
                       pruned the same way (forced).  Passes if value >= 2, or
                       if the nonsense pruning never reached the target
random_weights         min node ratio control / circuit, the task pruned the   >= 2
                       same way (forced) on fresh random weights and on the
                       model with each matrix's entries shuffled.  Flags if a
                       control meets the target with < 2x the nodes
node_roles             fraction of kept nodes whose activation in the circuit  <= 0.1
                       and in the full model (every position of the test
                       prompts) correlate below 0.5 (Pearson) or point the
                       opposite way (cosine < 0).  Passes if value <= 0.1
attention              fraction of the circuit's heads (any kept q/k/v node)   <= 0
                       flagged: total-variation distance between the circuit's
                       and the model's attention at the last position, mean
                       over test prompts, above 0.25; or a head kept with
                       value nodes only (its pattern is then frozen by the
                       ablation).  Passes if no head is flagged
bracket_stray          bracket_counting only: |circuit accuracy - model        <= 0.15
                       accuracy| with an unclosed ``[`` in a comment before
                       the list (a failure the paper predicts): a faithful
                       circuit predicts the model's behaviour there
bracket_length         bracket_counting only: the largest such accuracy gap    <= 0.15
                       over list lengths 2..32 (table in ``data``)
=====================  ======================================================  ============

Each check is ``{"value", "threshold", "verdict", "detail"}`` plus, where useful, a
``data`` object with the numbers behind it (per-variant losses, per-node correlations,
per-head divergences, the length table).  ``run_checks`` returns them by name.

Layout: one module per check in ``checks/`` (its threshold beside it), registered by
name (``registry.py``), so a new check is a new module there; ``context.py`` holds what
they share (the circuit's masked model, items and scores), ``runner.py`` runs and stores
them, ``node_set.py`` makes a circuit of any hand-chosen node set for them to judge.
"""
from __future__ import annotations

from .checks.node_roles import role_correlations
from .checks.random_baseline import RANDOM_DRAWS, random_keeps
from .context import encode_items
from .node_set import circuit_from_keep
from .runner import check_names, default_checks, format_table, run_checks, write_checks

CHECK_NAMES = check_names()

__all__ = ["CHECK_NAMES", "RANDOM_DRAWS", "circuit_from_keep", "default_checks", "encode_items", "format_table",
           "random_keeps", "role_correlations", "run_checks", "write_checks"]
