"""Every prunable node of a GPT, laid out in one flat vector (docs/method.md §3).

A node is one channel at one hook point, named ``"<hook>:<index>"``
(``blocks.1.attn.hook_q:17``).  Per layer ``i`` the sites are, in forward order (their
table is ``sites.py``):

===========  ==================================  ==============  =========================
site         hook                                width           what one node is
===========  ==================================  ==============  =========================
attn_in      ``blocks.i.hook_attn_in``           d_model         a residual read (normed)
q, k, v      ``blocks.i.attn.hook_q|k|v``        n_head*d_head   one query/key/value channel
attn_out     ``blocks.i.hook_attn_out``          d_model         a residual write
mlp_in       ``blocks.i.hook_mlp_in``            d_model         a residual read (normed)
neuron       ``blocks.i.mlp.hook_post``          d_mlp           one MLP neuron (post-GELU)
mlp_out      ``blocks.i.hook_mlp_out``           d_model         a residual write
===========  ==================================  ==============  =========================

q/k/v hooks hold ``(B, T, H, Dh)`` tensors; their node index is flat over heads,
``j = head * d_head + c``, the same order as the rows of ``attn.c_attn``.

The pruning mask ``tau`` is one vector over all nodes; each site owns a contiguous range
``[start, start + width)`` of it, so masking a site is one slice and one broadcast.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

from ..errors import UserError
from ..sites import QKV_KINDS, SITE_KINDS, hook_name, site_widths


@dataclass(frozen=True)
class Site:
    """One hook point's block of nodes in the flat vector."""

    hook: str
    kind: str
    layer: int
    width: int
    start: int
    d_head: int | None = None  # set for q/k/v: the hook tensor is (B, T, H, Dh)

    @property
    def stop(self) -> int:
        return self.start + self.width

    def head(self, index: int) -> int | None:
        return index // self.d_head if self.d_head else None


class NodeSet:
    """The site table of a model shape, and flat index <-> ``"hook:index"`` helpers."""

    def __init__(self, n_layer: int, d_model: int, n_head: int, d_head: int, d_mlp: int) -> None:
        self.n_layer, self.d_model, self.n_head, self.d_head, self.d_mlp = n_layer, d_model, n_head, d_head, d_mlp
        widths = site_widths(self)
        self.sites: list[Site] = []
        start = 0
        for layer in range(n_layer):
            for kind in SITE_KINDS:
                dh = d_head if kind in QKV_KINDS else None
                self.sites.append(Site(hook_name(layer, kind), kind, layer, widths[kind], start, dh))
                start += widths[kind]
        self.n = start
        self._by_hook = {s.hook: s for s in self.sites}
        self._starts = torch.tensor([s.start for s in self.sites])  # (n_sites,)

    @classmethod
    def from_config(cls, cfg) -> "NodeSet":
        return cls(cfg.n_layer, cfg.d_model, cfg.n_head, cfg.d_head, cfg.d_mlp)

    @classmethod
    def from_model(cls, model) -> "NodeSet":
        return cls.from_config(model.cfg)

    def __len__(self) -> int:
        return self.n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NodeSet) and self.shape == other.shape

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return (self.n_layer, self.d_model, self.n_head, self.d_head, self.d_mlp)

    # ----------------------------------------------------------------- lookups
    def site(self, hook: str) -> Site:
        try:
            return self._by_hook[hook]
        except KeyError:
            raise UserError(f"unknown node site {hook!r}") from None

    def site_at(self, flat: int) -> Site:
        if not 0 <= flat < self.n:
            raise IndexError(f"node index {flat} out of range [0, {self.n})")
        pos = int(torch.searchsorted(self._starts, torch.tensor(flat), right=True)) - 1
        return self.sites[pos]

    def name(self, flat: int) -> str:
        s = self.site_at(flat)
        return f"{s.hook}:{flat - s.start}"

    def names(self, flats: Iterable[int]) -> list[str]:
        return [self.name(int(f)) for f in flats]

    def index(self, name: str) -> int:
        """``"blocks.1.attn.hook_q:17"`` -> flat index; UserError on a malformed name."""
        hook, sep, idx = name.rpartition(":")
        if not sep or not idx.isdigit():
            raise UserError(f"malformed node name {name!r} (expected 'hook:index')")
        s = self.site(hook)
        i = int(idx)
        if i >= s.width:
            raise UserError(f"node {name!r}: index {i} out of range for width {s.width}")
        return s.start + i

    def describe(self, flat: int) -> dict:
        """``{"id", "hook", "index", "layer", "site", "head"}`` for one node."""
        s = self.site_at(flat)
        i = flat - s.start
        return {"id": f"{s.hook}:{i}", "hook": s.hook, "index": i, "layer": s.layer,
                "site": s.kind, "head": s.head(i)}

    def layer(self, flat: int) -> int:
        return self.site_at(flat).layer

    def kind(self, flat: int) -> str:
        return self.site_at(flat).kind

    def head(self, flat: int) -> int | None:
        s = self.site_at(flat)
        return s.head(flat - s.start)

    def keep_from_names(self, names: Iterable[str]) -> torch.Tensor:
        """A boolean keep vector (n,) with exactly the named nodes set."""
        keep = torch.zeros(self.n, dtype=torch.bool)
        for name in names:
            keep[self.index(name)] = True
        return keep

    def kind_counts(self, keep: torch.Tensor) -> dict[str, int]:
        """Kept nodes per site kind, e.g. ``{"neuron": 3, ...}`` (all kinds listed)."""
        out = {k: 0 for k in SITE_KINDS}
        for s in self.sites:
            out[s.kind] += int(keep[s.start:s.stop].sum())
        return out
