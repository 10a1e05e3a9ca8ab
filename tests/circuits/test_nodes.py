import pytest
import torch

from sparsecircuits.circuits.nodes import NodeSet
from sparsecircuits.config import ModelConfig
from sparsecircuits.errors import UserError
from sparsecircuits.model.gpt import GPT
from sparsecircuits.sites import SITE_KINDS


def test_layout_counts_every_site_of_cpu_small():
    ns = NodeSet(n_layer=4, d_model=128, n_head=8, d_head=16, d_mlp=512)
    per_layer = 4 * 128 + 3 * 8 * 16 + 512
    assert ns.n == 4 * per_layer == 5632
    assert [s.kind for s in ns.sites[:8]] == list(SITE_KINDS)
    # ranges are contiguous and cover [0, n)
    assert ns.sites[0].start == 0
    for a, b in zip(ns.sites, ns.sites[1:]):
        assert a.stop == b.start
    assert ns.sites[-1].stop == ns.n


def test_name_index_round_trip_and_metadata():
    ns = NodeSet(n_layer=2, d_model=8, n_head=2, d_head=4, d_mlp=16)
    for flat in range(ns.n):
        assert ns.index(ns.name(flat)) == flat
    q = ns.index("blocks.1.attn.hook_q:6")
    assert ns.kind(q) == "q" and ns.layer(q) == 1 and ns.head(q) == 1  # 6 // d_head
    assert ns.head(ns.index("blocks.0.attn.hook_v:3")) == 0
    assert ns.head(ns.index("blocks.0.mlp.hook_post:15")) is None
    d = ns.describe(ns.index("blocks.0.hook_mlp_out:7"))
    assert d == {"id": "blocks.0.hook_mlp_out:7", "hook": "blocks.0.hook_mlp_out", "index": 7, "layer": 0,
                 "site": "mlp_out", "head": None}


@pytest.mark.parametrize("bad", ["blocks.0.hook_attn_in", "blocks.0.hook_attn_in:x", "blocks.9.hook_attn_in:0",
                                 "blocks.0.hook_attn_in:8", "nonsense:1"])
def test_bad_names_are_user_errors(bad):
    ns = NodeSet(n_layer=2, d_model=8, n_head=2, d_head=4, d_mlp=16)
    with pytest.raises(UserError):
        ns.index(bad)


def test_sites_match_the_model_hook_shapes():
    cfg = ModelConfig(vocab_size=32, n_layer=2, d_model=8, n_head=2, d_head=4, d_mlp=16, block_size=8)
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    ns = NodeSet.from_model(model)
    _, cache = model.run_with_cache(torch.randint(0, 32, (3, 5), generator=torch.Generator().manual_seed(0)), names_filter=[s.hook for s in ns.sites])
    for s in ns.sites:
        act = cache[s.hook]
        assert act.shape[:2] == (3, 5)
        assert act[0, 0].numel() == s.width, s.hook
