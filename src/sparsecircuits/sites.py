"""The eight activation sites of a transformer block: the one table of their names, hook
points and widths.

A site is where AbsTopK may act and where a pruning node lives. Each has a ``kind``, the
name the code uses and the ``site`` field of a circuit.json node (``q``, ``neuron``), and
a ``switch``, its name among the AbsTopK switches of ``model.afrac_sites`` (``attn_q``,
``mlp_neuron``). Both spellings are on disk and stay: the kinds in every circuit.json
(and docs/circuit.schema.json), the switches in every config.json, in ``eval.json``'s
activation densities and in the ``afrac_loctypes`` of OpenAI's released models, which
use the same words. This table is the only place that pairs them.

No torch import: configs, the report and argument checks read it too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SiteSpec:
    kind: str  # node site in circuit.json and in the code: "q"
    switch: str  # AbsTopK switch in model.afrac_sites: "attn_q"
    hook: str  # hook point inside block i: blocks.{i}.<hook>
    width: str  # "d_model", "heads" (n_head * d_head) or "d_mlp"


# In forward order within a block.
SITES = (
    SiteSpec("attn_in", "attn_in", "hook_attn_in", "d_model"),
    SiteSpec("q", "attn_q", "attn.hook_q", "heads"),
    SiteSpec("k", "attn_k", "attn.hook_k", "heads"),
    SiteSpec("v", "attn_v", "attn.hook_v", "heads"),
    SiteSpec("attn_out", "attn_out", "hook_attn_out", "d_model"),
    SiteSpec("mlp_in", "mlp_in", "hook_mlp_in", "d_model"),
    SiteSpec("neuron", "mlp_neuron", "mlp.hook_post", "d_mlp"),
    SiteSpec("mlp_out", "mlp_out", "hook_mlp_out", "d_model"),
)
SITE_KINDS = tuple(s.kind for s in SITES)
ACTIVATION_SITES = tuple(s.switch for s in SITES)  # the values model.afrac_sites accepts
READ_KINDS = ("attn_in", "mlp_in")
WRITE_KINDS = ("attn_out", "mlp_out")
QKV_KINDS = ("q", "k", "v")

_BY_KIND = {s.kind: s for s in SITES}


class Shape(Protocol):
    d_model: int
    n_head: int
    d_head: int
    d_mlp: int


def site_widths(shape: Shape) -> dict[str, int]:
    """Channels per site kind for a model shape (a ``ModelConfig`` or a ``NodeSet``)."""
    sizes = {"d_model": shape.d_model, "heads": shape.n_head * shape.d_head, "d_mlp": shape.d_mlp}
    return {s.kind: sizes[s.width] for s in SITES}


def hook_name(layer: int, kind: str) -> str:
    """The hook point of a site: ``hook_name(1, "q") == "blocks.1.attn.hook_q"``."""
    return f"blocks.{layer}.{_BY_KIND[kind].hook}"
