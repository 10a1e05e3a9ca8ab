"""Importing and exporting OpenAI's released format: logits equal to a reference forward
written here from the format's description, exact round trips, refusals by name."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from sparsecircuits.config import RunConfig
from sparsecircuits.errors import UserError
from sparsecircuits.model.gpt import GPT
from sparsecircuits.interop.openai import export_openai, import_openai
from sparsecircuits.run import load_weights


# -- the reference: the format's forward pass, from its description ---------------------
def reference_logits(cfg: dict, sd: dict[str, torch.Tensor], idx: torch.Tensor, resolved) -> torch.Tensor:
    """Their forward, from the format's own config and state-dict names.

    RMSNorm with torch's default eps (float32 epsilon, inside the sqrt); wpe always added;
    AbsTopK keeps int(afrac * width) entries at the named sites, on q/k/v before the head
    split; the sink is a key slot prepended with zero key and value and a per-head logit;
    SDPA with scale 1/sqrt(d_head); ReLU after each residual add when asked; exact GELU.
    """
    c = resolved(cfg)
    B, T = idx.shape
    H, Dh = c["n_head"], c["d_head"]
    sites = c["afrac_loctypes"].split(",")

    def sparsify(x, site):
        if c["afrac"] is None or site not in sites:
            return x
        keep = x.abs().topk(int(c["afrac"] * x.shape[-1]), dim=-1).indices
        return torch.zeros_like(x).scatter(-1, keep, x.gather(-1, keep))

    def norm(x, weight):
        return F.rms_norm(x, (x.shape[-1],), weight)

    def linear(x, name):
        return F.linear(x, sd[name + ".weight"], sd.get(name + ".bias"))

    def resid(x):
        return torch.relu(x) if c["residual_activation_type"] == "relu" else x

    act = torch.nn.GELU() if c["activation_type"] == "gelu" else torch.nn.ReLU()
    x = sd["transformer.wte.weight"][idx] + sd["transformer.wpe.weight"][:T].unsqueeze(0)
    for i in range(c["n_layer"]):
        p = f"transformer.h.{i}."
        h = sparsify(norm(x, sd[p + "ln_1.weight"]), "attn_in")
        q, k, v = linear(h, p + "attn.c_attn").split(H * Dh, dim=-1)
        q, k, v = (sparsify(t, s).view(B, T, H, Dh).transpose(1, 2)
                   for t, s in ((q, "attn_q"), (k, "attn_k"), (v, "attn_v")))
        if c["sink"]:
            zeros = torch.zeros(B, H, 1, Dh)
            k, v = torch.cat([zeros, k], dim=2), torch.cat([zeros, v], dim=2)
            allowed = torch.cat([torch.ones(T, 1, dtype=torch.bool), torch.ones(T, T, dtype=torch.bool).tril()], 1)
            mask = torch.where(allowed, 0.0, torch.finfo(torch.float32).min).expand(1, H, T, T + 1).clone()
            mask[..., 0] += sd[p + "attn.attn_imp.sink_logit"].view(1, H, 1)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1 / math.sqrt(Dh))
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1 / math.sqrt(Dh))
        y = y.transpose(1, 2).reshape(B, T, H * Dh)
        x = resid(x + sparsify(linear(y, p + "attn.c_proj"), "attn_out"))
        h = sparsify(norm(x, sd[p + "ln_2.weight"]), "mlp_in")
        h = sparsify(act(linear(h, p + "mlp.c_fc")), "mlp_neuron")
        x = resid(x + sparsify(linear(h, p + "mlp.c_proj"), "mlp_out"))
    logits = norm(x, sd["transformer.ln_f.weight"]) @ sd["lm_head.weight"].T
    if "final_logits_bias" in sd:
        logits = logits + sd["final_logits_bias"]
    if c["enable_bigram_table"]:
        logits = logits + sd["bigram_table"][idx]
    return logits


def load_model(run_dir) -> GPT:
    """What ``load_run`` does for the model: config.json, strict safetensors load, eval mode."""
    cfg = RunConfig.load(run_dir / "config.json")
    model = GPT(cfg.model)
    load_weights(model, run_dir / "model.safetensors")
    return model.eval()


def tokens(V, T=12, B=3, seed=5):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


# (beeg_config overrides on top of SMALL, weight options, what our config must say)
CASES = {
    "paper_like": (
        {"d_head": 8, "d_mlp": 96, "bias": False, "tied_unembed": False, "sink": True, "afrac": 0.25,
         "afrac_loctypes": "attn_in,attn_q,attn_k,attn_v,attn_out,mlp_in,mlp_neuron,mlp_out",
         "enable_bigram_table": True, "learnable_bigram_table": True, "ln_bias": False,
         "dropout": 0.0, "flash": True, "grad_checkpointing": True, "tokenizer_name": "tinypython_2k",
         "pfrac": 0.001, "bigram_table_rank": None, "n_embd": 32, "debug_exact_topk": False},
        {"zero_wpe": True, "logits_bias": False},
        {"attn_sink": True, "bigram_table": True, "pos_emb": False, "final_logits_bias": False,
         "bias": False, "tied_unembed": False, "afrac": 0.25},
    ),
    "format_defaults": (  # only shapes given: bias and tied unembed on, no sparsity, no sink
        {},
        {"zero_wpe": False, "logits_bias": True},
        {"attn_sink": False, "bias": True, "tied_unembed": True, "pos_emb": True, "final_logits_bias": True,
         "afrac": 1.0, "d_head": 16, "d_mlp": 128},
    ),
    "relu_everywhere": (
        {"n_mlp": 48, "bias": True, "tied_unembed": False, "sink": True, "afrac": 0.5,
         "residual_activation_type": "relu", "activation_type": "relu",
         "enable_bigram_table": True, "learnable_bigram_table": False},
        {"zero_wpe": False, "logits_bias": False},
        {"residual_activation": "relu_sublayer", "mlp_activation": "relu", "d_mlp": 48,
         "afrac_sites": ["attn_in", "attn_out", "mlp_in", "mlp_out"]},
    ),
    "qkv_sites_tied_slow_path": (
        {"d_head": 4, "n_head": 4, "bias": False, "afrac": 0.25, "sink": False, "flash": False,
         "afrac_loctypes": "attn_q,attn_k,attn_v,mlp_neuron"},
        {"zero_wpe": True, "logits_bias": True, "causal_buffers": True},
        {"tied_unembed": True, "afrac_sites": ["attn_q", "attn_k", "attn_v", "mlp_neuron"],
         "n_head": 4, "d_head": 4},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_import_matches_reference_forward(case, openai_folder, fmt, tmp_path):
    overrides, weight_opts, expect = CASES[case]
    cfg = {**fmt.SMALL, **overrides}
    src, sd = openai_folder(cfg, **weight_opts)
    result = import_openai(src, tmp_path / "run")
    for key, value in expect.items():
        assert getattr(result.config.model, key) == value, key
    model = load_model(tmp_path / "run")
    idx = tokens(cfg["vocab_size"])
    with torch.no_grad():
        ours, ref = model(idx), reference_logits(cfg, sd, idx, fmt.resolved)
    assert ours.shape == ref.shape == (3, 12, cfg["vocab_size"])
    assert torch.allclose(ours, ref, atol=1e-5, rtol=0), (ours - ref).abs().max()


def test_reference_is_sensitive_to_each_option(openai_folder, fmt, tmp_path):
    """The comparison above can fail: flipping an option the importer must honour moves logits."""
    cfg = {**fmt.SMALL, **CASES["relu_everywhere"][0]}
    src, sd = openai_folder(cfg, zero_wpe=False)
    import_openai(src, tmp_path / "run")
    model = load_model(tmp_path / "run")
    idx = tokens(cfg["vocab_size"])
    with torch.no_grad():
        ours = model(idx)
        for flip in ({"sink": False}, {"residual_activation_type": "identity"}, {"activation_type": "gelu"},
                     {"afrac": None}, {"enable_bigram_table": False}):
            other = reference_logits({**cfg, **flip}, sd, idx, fmt.resolved)
            assert not torch.allclose(ours, other, atol=1e-3), flip


@pytest.mark.parametrize("case", list(CASES))
def test_export_then_import_is_identical(case, openai_folder, fmt, tmp_path):
    overrides, weight_opts, _ = CASES[case]
    cfg = {**fmt.SMALL, **overrides}
    src, sd = openai_folder(cfg, **weight_opts)
    first = import_openai(src, tmp_path / "run1")
    export_openai(tmp_path / "run1", tmp_path / "exported")
    second = import_openai(tmp_path / "exported", tmp_path / "run2")
    assert first.config.model == second.config.model

    from safetensors.torch import load_file

    a, b = load_file(str(tmp_path / "run1/model.safetensors")), load_file(str(tmp_path / "run2/model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    idx = tokens(cfg["vocab_size"])
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "run1")(idx), load_model(tmp_path / "run2")(idx))

    # the exported files are in the format: same tensors under the same names, same forward
    exported = torch.load(tmp_path / "exported/final_model.pt", weights_only=True)
    for key, t in sd.items():
        if key.endswith(".attn.bias") and t.dim() == 4:
            continue  # a causal-mask buffer, not a weight
        assert torch.equal(exported[key], t), key
    beeg = json.loads((tmp_path / "exported/beeg_config.json").read_text())
    with torch.no_grad():
        assert torch.allclose(reference_logits(beeg, exported, idx, fmt.resolved),
                              reference_logits(cfg, sd, idx, fmt.resolved), atol=1e-5, rtol=0)


def test_exported_tied_unembed_shares_one_tensor(openai_folder, fmt, tmp_path):
    src, _ = openai_folder({**fmt.SMALL, "tied_unembed": True})
    import_openai(src, tmp_path / "run")
    export_openai(tmp_path / "run", tmp_path / "out")
    sd = torch.load(tmp_path / "out/final_model.pt", weights_only=True)
    assert sd["lm_head.weight"].data_ptr() == sd["transformer.wte.weight"].data_ptr()


def test_our_run_exports_to_the_format_forward(our_run, fmt, tmp_path):
    """A run of ours (every option the format can express) -> their forward gives our logits."""
    from sparsecircuits.config import ModelConfig
    from sparsecircuits.interop.openai import OPENAI_NORM_EPS

    mc = ModelConfig(vocab_size=53, n_layer=2, d_model=32, n_head=4, d_head=8, d_mlp=64, block_size=16,
                     pos_emb=True, attn_sink=True, bigram_table=True, afrac=0.25, final_logits_bias=True,
                     bias=True, residual_activation="relu_sublayer", norm_eps=OPENAI_NORM_EPS)
    run = our_run(mc)
    export_openai(run, tmp_path / "out")
    beeg = json.loads((tmp_path / "out/beeg_config.json").read_text())
    sd = torch.load(tmp_path / "out/final_model.pt", weights_only=True)
    idx = tokens(53)
    with torch.no_grad():
        assert torch.allclose(load_model(run)(idx), reference_logits(beeg, sd, idx, fmt.resolved), atol=1e-5, rtol=0)


def test_round_trip_keeps_what_the_format_cannot_say(our_run, tmp_path):
    """norm eps 1e-5, and a positional embedding / logit bias that are on but zero, survive
    export + import through the sidecar, so the re-imported run is the same run."""
    from sparsecircuits.config import ModelConfig

    mc = ModelConfig(vocab_size=53, n_layer=1, d_model=32, n_head=2, d_head=16, d_mlp=64, block_size=16,
                     pos_emb=True, final_logits_bias=True, tied_unembed=True, afrac_sites=["mlp_neuron"])
    run = our_run(mc)
    from safetensors.torch import load_file, save_file

    sd = load_file(str(run / "model.safetensors"))
    sd["wpe.weight"].zero_()
    sd["final_logits_bias"].zero_()
    save_file(sd, str(run / "model.safetensors"))
    export_openai(run, tmp_path / "out")
    back = import_openai(tmp_path / "out", tmp_path / "back")
    assert back.config.model == mc
    assert back.config.train == RunConfig().train
    idx = tokens(53)
    with torch.no_grad():
        assert torch.equal(load_model(run)(idx), load_model(tmp_path / "back")(idx))
    # without the sidecar the same files import as the format describes them
    (tmp_path / "out/sparsecircuits.json").unlink()
    plain = import_openai(tmp_path / "out", tmp_path / "plain").config.model
    assert (plain.pos_emb, plain.final_logits_bias, plain.norm_eps) == (False, False, torch.finfo(torch.float32).eps)


def test_load_run_gives_the_reference_logits(openai_folder, fmt, tmp_path):
    pytest.importorskip("sparsecircuits.data.tokenizer")
    import sparsecircuits
    from tokenizers import Tokenizer, models

    cfg = {**fmt.SMALL, **CASES["paper_like"][0]}
    src, sd = openai_folder(cfg, zero_wpe=True)
    tok = Tokenizer(models.BPE(vocab={chr(97 + i): i for i in range(20)}, merges=[]))
    tok.save(str(tmp_path / "tok.json"))
    import_openai(src, tmp_path / "run", tokenizer=tmp_path / "tok.json")
    run = sparsecircuits.load_run(tmp_path / "run")
    idx = tokens(cfg["vocab_size"])
    with torch.no_grad():
        assert torch.allclose(run.model(idx), reference_logits(cfg, sd, idx, fmt.resolved), atol=1e-5, rtol=0)


# -- refusals ----------------------------------------------------------------------------
@pytest.mark.parametrize("override, named", [
    ({"rms_norm": False}, "rms_norm"),
    ({"d_pos_emb": 8}, "d_pos_emb"),
    ({"residual_activation_type": "tanh"}, "residual_activation_type"),
    ({"activation_type": "silu"}, "activation_type"),
    ({"afrac": 0.5, "afrac_loctypes": "attn_in,resid_post_mlp"}, "resid_post_mlp"),
    ({"afrac": 0.5, "afrac_loctypes": "attn_in,mlp_gate"}, "mlp_gate"),
    ({"afrac": 0.01, "afrac_loctypes": "attn_in"}, "attn_in"),  # int(0.01 * 32) == 0 entries kept
    ({"use_tied_aux_matrix": True}, "use_tied_aux_matrix"),
    ({"mup": True}, "mup"),
    ({"unembed_rank": 8}, "unembed_rank"),
    ({"mystery_option": 1}, "mystery_option"),
    ({"n_layer": "two"}, "n_layer"),
    ({"sink": "yes"}, "sink"),
    ({"n_embd": 64}, "n_embd"),
])
def test_unsupported_or_bad_config_is_refused_by_name(override, named, openai_folder, fmt, tmp_path):
    src, _ = openai_folder(fmt.SMALL)
    (src / "beeg_config.json").write_text(json.dumps({**fmt.SMALL, **override}))
    with pytest.raises(UserError, match=named):
        import_openai(src, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("edit, named", [
    (lambda sd: sd.pop("transformer.h.1.mlp.c_fc.weight"), "transformer.h.1.mlp.c_fc.weight"),
    (lambda sd: sd.pop("transformer.wpe.weight"), "transformer.wpe.weight"),
    (lambda sd: sd.__setitem__("transformer.h.0.attn.extra", torch.zeros(3)), "transformer.h.0.attn.extra"),
    (lambda sd: sd.__setitem__("transformer.h.0.ln_1.weight", torch.ones(31)), "transformer.h.0.ln_1.weight"),
    (lambda sd: sd.__setitem__("transformer.wpe.weight", torch.ones(8, 32)), "transformer.wpe.weight"),
    (lambda sd: sd.__setitem__("bigram_table", torch.zeros(67, 67)), "bigram_table"),  # not enabled
    (lambda sd: sd.__setitem__("transformer.ln_f.weight", torch.ones(32, dtype=torch.long)), "dtype"),
])
def test_weights_that_do_not_fit_are_refused_by_name(edit, named, fmt, tmp_path):
    cfg = {**fmt.SMALL, "bias": False}
    sd = fmt.state_dict(cfg)
    edit(sd)
    src = fmt.write(tmp_path / "src", cfg, sd)
    with pytest.raises(UserError, match=named.replace(".", r"\.")):
        import_openai(src, tmp_path / "run")


def test_tied_unembed_with_different_matrices_is_refused(fmt, tmp_path):
    cfg = {**fmt.SMALL, "tied_unembed": True}
    sd = fmt.state_dict(cfg)
    sd["lm_head.weight"] = sd["lm_head.weight"] + 1
    with pytest.raises(UserError, match="tied_unembed"):
        import_openai(fmt.write(tmp_path / "src", cfg, sd), tmp_path / "run")


def test_existing_run_is_not_overwritten(openai_folder, fmt, tmp_path):
    src, _ = openai_folder(fmt.SMALL)
    (tmp_path / "run").mkdir()
    (tmp_path / "run/keep.txt").write_text("mine")
    with pytest.raises(UserError, match="already exists"):
        import_openai(src, tmp_path / "run")
    assert (tmp_path / "run/keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "src"]  # no staging folder left


def test_export_refuses_block_level_relu(our_run, tmp_path):
    from sparsecircuits.config import ModelConfig

    run = our_run(ModelConfig(vocab_size=40, n_layer=1, d_model=16, n_head=2, d_head=8, d_mlp=32,
                              block_size=8, residual_activation="relu"))
    with pytest.raises(UserError, match="residual_activation"):
        export_openai(run, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- pickles that would run code ---------------------------------------------------------
class _Payload:
    """Unpickling this writes a marker file: the stand-in for any code a pickle can run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def test_payload_really_runs_code_when_unpickled_unsafely(tmp_path):
    import pickle

    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Payload(marker)))  # the unsafe way, on purpose, on our own payload
    assert marker.exists()


@pytest.mark.parametrize("writer", ["torch.save", "pickle protocol 2", "pickle protocol 5"])
def test_pickle_that_would_run_code_is_refused_and_not_run(writer, openai_folder, fmt, tmp_path):
    import pickle

    src, sd = openai_folder(fmt.SMALL)
    marker = tmp_path / "pwned"
    evil = dict(sd, **{"transformer.h.0.ln_1.weight": _Payload(marker)})
    if writer == "torch.save":
        torch.save(evil, src / "final_model.pt")
    else:
        (src / "final_model.pt").write_bytes(pickle.dumps(evil, protocol=int(writer[-1])))
    with pytest.raises(UserError, match="refused") as err:
        import_openai(src, tmp_path / "run")
    assert "\n" not in str(err.value)
    assert not marker.exists()
    assert not (tmp_path / "run").exists()


def test_garbage_weights_file_is_one_line_error(openai_folder, fmt, tmp_path):
    src, _ = openai_folder(fmt.SMALL)
    (src / "final_model.pt").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UserError, match="final_model.pt") as err:
        import_openai(src, tmp_path / "run")
    assert "\n" not in str(err.value)
