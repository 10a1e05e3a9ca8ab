"""The one table of the eight sites: its hooks, widths and both spellings agree with the
model, the node layout and the circuit.json schema."""
import json
from pathlib import Path

import torch

from sparsecircuits.circuits.nodes import NodeSet
from sparsecircuits.config import ModelConfig
from sparsecircuits.model.gpt import GPT
from sparsecircuits.sites import ACTIVATION_SITES, SITE_KINDS, SITES, hook_name, site_widths

CFG = ModelConfig(vocab_size=37, n_layer=2, d_model=12, n_head=3, d_head=5, d_mlp=20, block_size=8)


def test_widths_are_the_hooked_activations_channel_counts():
    torch.manual_seed(0)
    model = GPT(CFG).eval()
    _, cache = model.run_with_cache(torch.randint(0, 37, (2, 6)))
    widths = site_widths(CFG)
    assert widths == {"attn_in": 12, "q": 15, "k": 15, "v": 15, "attn_out": 12, "mlp_in": 12, "neuron": 20,
                      "mlp_out": 12}
    for layer in range(CFG.n_layer):
        for kind in SITE_KINDS:
            act = cache[hook_name(layer, kind)]  # (B, T, width) or (B, T, H, Dh) for q/k/v
            assert act.shape[:2] == (2, 6)
            assert act[0, 0].numel() == widths[kind], kind


def test_node_layout_uses_the_same_widths():
    nodes = NodeSet.from_config(CFG)
    assert [(s.kind, s.width, s.hook) for s in nodes.sites[:8]] == [
        (kind, w, hook_name(0, kind)) for kind, w in site_widths(CFG).items()]
    assert site_widths(nodes) == site_widths(CFG)


def test_each_switch_turns_abstopk_on_at_its_own_hook_only():
    """Switching one site's AbsTopK on (by its model.afrac_sites name) sparsifies exactly
    the hook this table pairs it with."""
    x = torch.randint(0, 37, (2, 6), generator=torch.Generator().manual_seed(1))
    for spec in SITES:
        torch.manual_seed(0)
        model = GPT(ModelConfig(**{**CFG.__dict__, "afrac": 0.2, "afrac_sites": [spec.switch]})).eval()
        _, cache = model.run_with_cache(x)
        for other in SITES:
            act = cache[hook_name(1, other.kind)].flatten(2)  # (B, T, width)
            nonzero = int((act != 0).sum(-1).max())
            if other is spec:
                assert nonzero == max(1, int(0.2 * act.shape[-1])), spec.switch
            else:
                assert nonzero > max(1, int(0.2 * act.shape[-1])), (spec.switch, other.kind)


def test_spellings_on_disk():
    assert ACTIVATION_SITES == ("attn_in", "attn_q", "attn_k", "attn_v", "attn_out", "mlp_in", "mlp_neuron",
                                "mlp_out")
    assert list(ModelConfig().afrac_sites) == list(ACTIVATION_SITES)
    schema = json.loads((Path(__file__).parents[1] / "docs" / "circuit.schema.json").read_text())
    enum = _find_site_enum(schema)
    assert enum == ["embed", *SITE_KINDS, "logit"]


def _find_site_enum(obj):
    if isinstance(obj, dict):
        site = obj.get("site")
        if isinstance(site, dict) and "enum" in site:
            return site["enum"]
        for v in obj.values():
            found = _find_site_enum(v)
            if found:
                return found
    return None

