"""The frozen sparse path (model/sparse_linear.py): the plain model's logits and input gradients to 1e-5.

Random models are projected to each weight density (every matrix, embedding and bias, as
training leaves them), with AbsTopK on and off, and run once plainly and once frozen,
with every product path forced in turn and with the measured choice.  "Input gradients"
are those pruning needs: to the embedding output and to every activation that pruning
masks (residual reads and writes, q/k/v channels, MLP neurons), element by element (a
mask's gradient is their sum with the activation as weights).
At density 1/256 most outputs of a product are exactly zero, so AbsTopK rows are full of
ties at zero, which the kernel must settle as torch.topk does.
"""
from __future__ import annotations

import copy
import os
import time

import pytest
import torch

from sparsecircuits.config import ModelConfig
from sparsecircuits.model import kernels, native, sparse_linear as sl
from sparsecircuits.model.gpt import GPT, abstopk
from sparsecircuits.model.sparsity import nonzero_target, project_, sparse_parameter_names

DENSITIES = (1.0, 1 / 4, 1 / 16, 1 / 64, 1 / 256)
MASKED = ("hook_attn_in", "attn.hook_q", "attn.hook_k", "attn.hook_v", "hook_mlp_in", "mlp.hook_post",
          "hook_attn_out", "hook_mlp_out")
# CI installs a C compiler (.ci/run), so there a missing one fails instead of skipping
if os.environ.get("CI") == "true" and native.library() is None:
    raise RuntimeError(f"CI=true but no C kernels: {native.unavailable_reason()}")
needs_native = pytest.mark.skipif(native.library() is None, reason=f"no C kernels: {native.unavailable_reason()}")


def make(density: float, afrac: float = 0.25, seed: int = 0, **kw) -> GPT:
    cfg = ModelConfig(vocab_size=61, n_layer=2, d_model=32, n_head=2, d_head=16, d_mlp=128, block_size=24,
                      afrac=afrac, **kw)
    torch.manual_seed(seed)
    model = GPT(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("sink_logit"):
                p.normal_(0.0, 0.5)
        for name in sparse_parameter_names(model.named_parameters()):
            p = model.get_parameter(name)
            p.normal_(0.0, 0.5)  # well away from zero, so AbsTopK's kept sets are not near ties
            project_(p, nonzero_target(p.numel(), density))
    return model


def tokens(B=3, T=20, seed=1):
    return torch.randint(0, 61, (B, T), generator=torch.Generator().manual_seed(seed))


def logits_and_grads(model: GPT, toks: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits, and the gradients of a fixed projection of them to the embedding and to every masked site."""
    leaves: dict[str, torch.Tensor] = {}

    def embed(x, hook):
        leaves["embed"] = x.detach().requires_grad_(True)
        return leaves["embed"]

    def probe_site(x, hook):
        leaves[hook.name] = torch.zeros_like(x, requires_grad=True)
        return x + leaves[hook.name]  # the gradient to this zero is the gradient to x

    with model.hooks([("hook_embed", embed), (lambda n: n.endswith(MASKED), probe_site)]):
        logits = model(toks)
    probe = torch.randn(logits.shape, generator=torch.Generator().manual_seed(2)).to(logits.device)
    names = sorted(leaves)
    grads = torch.autograd.grad((logits * probe).sum(), [leaves[n] for n in names])
    return logits.detach(), dict(zip(names, grads))


def close(got: torch.Tensor, want: torch.Tensor, what: str = "") -> None:
    """Equal to 1e-5 of the tensor's largest magnitude: float32 sums taken in another order
    differ by a few 1e-7 of their terms, and the model carries that through its layers."""
    scale = float(want.abs().max())
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * scale, msg=lambda m: f"{what}: {m}")


def assert_same(model: GPT, frozen: GPT, toks: torch.Tensor) -> None:
    want_logits, want = logits_and_grads(model, toks)
    got_logits, got = logits_and_grads(frozen, toks)
    close(got_logits, want_logits, "logits")
    with torch.no_grad():  # the AbsTopK sites' paths without a gradient
        close(frozen(toks), model(toks), "logits without gradients")
    assert set(got) == set(want) and len(want) == 1 + len(MASKED) * model.cfg.n_layer
    for name in want:
        close(got[name], want[name], name)


FORCED = ("dense", "torch_csr", "tiled", "scatter")


@pytest.mark.parametrize("afrac", (0.25, 1.0), ids=("abstopk", "no_abstopk"))
@pytest.mark.parametrize("density", DENSITIES, ids=[f"1/{round(1 / d)}" for d in DENSITIES])
@pytest.mark.parametrize("force", (None,) + FORCED, ids=("chosen",) + FORCED)
def test_frozen_model_gives_the_plain_logits_and_input_gradients(density, afrac, force):
    if force in sl.NATIVE_PATHS and native.library() is None:
        pytest.skip(f"no C kernels: {native.unavailable_reason()}")
    model = make(density, afrac)
    frozen = copy.deepcopy(model)
    plan = sl.freeze_sparse(frozen, tokens(B=2, seed=3), repeats=1, force=force)
    assert len(plan.products) == 2 * 4 + 1  # c_attn, c_proj, c_fc, c_proj per block, lm_head
    if force is not None:
        assert {p["forward"] for p in plan.products} == {p["backward"] for p in plan.products} == {force}
    assert_same(model, frozen, tokens())


@pytest.mark.parametrize("opts", ({"bias": True, "bigram_table": True, "final_logits_bias": True},
                                  {"residual_activation": "relu_sublayer", "attn_sink": False, "pos_emb": True},
                                  {"afrac_sites": ["mlp_neuron", "attn_q"], "mlp_activation": "relu"}),
                         ids=("bias_bigram", "relu_sublayer_pos", "two_sites"))
def test_the_model_options_keep_their_logits_and_gradients(opts):
    model = make(1 / 16, **opts)
    frozen = copy.deepcopy(model)
    sl.freeze_sparse(frozen, repeats=1, force="scatter" if native.library() is not None else "torch_csr")
    assert_same(model, frozen, tokens())


def test_the_plan_records_each_matrix_and_site_with_its_timings():
    model = make(1 / 64)
    plan = sl.freeze_sparse(model, repeats=2)
    names = [p["name"] for p in plan.products]
    assert names == [n for n, m in model.named_modules() if isinstance(m, sl.FrozenLinear)]
    assert "lm_head" in names and "blocks.1.mlp.c_fc" in names
    for p in plan.products:
        assert p["forward"] in sl.PATHS and p["backward"] in sl.PATHS
        for way in ("forward", "backward"):
            times = p[f"{way}_ms"]
            fastest = min(times.values())
            # the measured fastest, or the plain product when that is within the margin of it
            assert times[p[way]] == fastest or (p[way] == "dense" and times["dense"] <= sl.MARGIN * fastest)
        assert p["nnz"] == int(torch.count_nonzero(model.get_parameter(p["name"] + ".weight")))
        frozen = model.get_submodule(p["name"])
        assert (frozen.forward_path, frozen.backward_path) == (p["forward"], p["backward"])
    assert len(plan.sites) == 8 * 2
    for s in plan.sites:
        site = model.get_submodule(s["name"])
        assert (site.path, site.no_grad_path) == (s["path"], s["no_grad_path"])
        if native.library() is not None:
            for path, ms in ((s["path"], s["ms"]), (s["no_grad_path"], s["no_grad_ms"])):
                fastest = min(ms.values())
                assert ms[path] == fastest or (path == "torch" and ms["torch"] <= sl.MARGIN * fastest)
    assert plan.tokens == 8 * 24 and "lm_head" in plan.table()


def test_paths_are_timed_checked_and_chosen_by_speed_with_the_plain_one_kept_near_break_even():
    calls = {"dense": 0, "fast": 0, "slow": 0, "wrong": 0, "broken": 0}
    ref = torch.arange(6.0)

    def make_fn(name, seconds=0.0, value=ref):
        def fn():
            calls[name] += 1
            time.sleep(seconds)
            if name == "broken":
                raise RuntimeError("no kernel for this dtype\nmore")
            return value.clone()
        return fn

    rejected: dict[str, str] = {}
    ms = sl._fastest({"dense": make_fn("dense", 0.02), "fast": make_fn("fast", 0.01), "slow": make_fn("slow", 0.2),
                      "wrong": make_fn("wrong", value=ref + 1e-3), "broken": make_fn("broken")}, ref, 3, rejected,
                     "slow")
    assert rejected == {"wrong": "disagrees with the dense product", "broken": "no kernel for this dtype"}
    assert set(ms) == {"dense", "fast", "slow"} and ms["slow"] >= 200
    assert calls == {"dense": 4, "fast": 4, "slow": 4, "wrong": 1, "broken": 1}  # the baseline is always retimed
    calls.update(dict.fromkeys(calls, 0))
    sl._fastest({"dense": make_fn("dense", 0.02), "fast": make_fn("fast", 0.01), "slow": make_fn("slow", 0.2)},
                ref, 3, {}, "dense")
    assert calls == {"dense": 4, "fast": 4, "slow": 2, "wrong": 0, "broken": 0}  # a hopeless one runs twice
    # one slow run (a busy moment) does not rule a path out: it is dropped only when slow twice
    runs = iter([0.3] + [0.001] * 10)
    calls.update(dict.fromkeys(calls, 0))

    def once_slow():
        calls["fast"] += 1
        time.sleep(next(runs))
        return ref.clone()
    ms = sl._fastest({"dense": make_fn("dense", 0.02), "fast": once_slow}, ref, 3, {}, "dense")
    assert calls["fast"] == 4 and ms["fast"] < 20  # the 300 ms run is not its time
    assert sl._choose(ms, "dense") == "fast"
    assert sl._choose({"dense": 1.05, "tiled": 1.0}, "dense") == "dense"
    assert sl._choose({"dense": 1.2, "tiled": 1.0}, "dense") == "tiled"
    assert sl._choose({"tiled": 1.2, "scatter": 1.0}, "dense") == "scatter"


def test_thaw_puts_back_the_modules_and_gradient_flags_and_the_state_dict_never_changes():
    model = make(1 / 16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modules = dict(model.named_modules())
    model.lm_head.weight.requires_grad_(False)
    with sl.sparse_inference(model, repeats=1) as plan:
        assert sl.frozen_plan(model) is plan
        assert isinstance(model.blocks[0].attn.c_attn, sl.FrozenLinear)
        assert isinstance(model.blocks[1].mlp.sparse_neuron, sl.FrozenAbsTopK)
        assert not any(p.requires_grad for p in model.parameters())
        assert model.state_dict().keys() == before.keys()
        with pytest.raises(RuntimeError, match="already frozen"):
            sl.freeze_sparse(model)
    assert sl.frozen_plan(model) is None
    assert dict(model.named_modules()).keys() == modules.keys()
    assert all(model.get_submodule(n) is m for n, m in modules.items())
    assert [n for n, p in model.named_parameters() if not p.requires_grad] == ["lm_head.weight"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_the_weights_get_no_gradient_and_an_in_place_change_is_refused():
    model = make(1 / 16)
    sl.freeze_sparse(model, repeats=1)
    emb = model.embed(tokens()).detach().requires_grad_(True)
    model(emb, start_at_layer=0).sum().backward()
    assert emb.grad is not None and all(p.grad is None for p in model.parameters())
    with torch.no_grad():
        model.blocks[0].mlp.c_fc.weight.mul_(2.0)
    with pytest.raises(RuntimeError, match="changed in place"):
        model(tokens())


def test_generate_gives_the_plain_models_tokens():
    model = make(1 / 16)
    frozen = copy.deepcopy(model)
    sl.freeze_sparse(frozen, repeats=1)
    start = tokens(B=2, T=4)
    assert torch.equal(frozen.generate(start, 8, temperature=0), model.generate(start, 8, temperature=0))


@needs_native
@pytest.mark.parametrize("k", (1, 7, 32, 127))
def test_the_abstopk_kernel_keeps_what_torch_topk_keeps_even_among_ties(k):
    """Ties (small integers, many zeros) make the kernel defer rows to torch.topk; the kept
    entries, the values and the gradient must still equal the model's own AbsTopK."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(300, 128, generator=g),
                   torch.randint(-3, 4, (300, 128), generator=g).float(),
                   torch.randn(300, 128, generator=g) * (torch.rand(300, 128, generator=g) < 0.1)])
    x[5] = 0.0
    x[6, :64] = float("inf")
    out, keep = kernels.native_abstopk(x, k)
    want = abstopk(x, k)
    torch.testing.assert_close(out, want, rtol=0, atol=0, equal_nan=True)  # a dropped inf is NaN in both
    assert torch.equal(out.signbit(), want.signbit())
    assert torch.equal(keep.bool(), torch.zeros_like(x, dtype=torch.bool).scatter_(
        -1, torch.topk(x.abs().view(torch.int32), k, dim=-1, sorted=False).indices, True))
    assert (keep.sum(-1) == k).all()
    # without a gradient only the values count: rows with fewer than k nonzeros are x itself
    fast, loose = kernels.native_abstopk(x, k, exact_keep=False)
    torch.testing.assert_close(fast, want, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(fast.signbit(), want.signbit())
    few = (x != 0).sum(-1) < k  # (R,) tied at zero
    assert few.any() and (loose[few] == 1).all() and torch.equal(loose[~few], keep[~few])
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    gy = torch.randn(x.shape, generator=g)
    kernels.NativeAbsTopK.apply(xa, k).backward(gy)
    abstopk(xb, k).backward(gy)
    assert torch.equal(xa.grad, xb.grad)
    assert torch.equal(xa.grad.signbit(), xb.grad.signbit())


@needs_native
@pytest.mark.parametrize("path", ("tiled", "scatter"))
def test_the_kernels_split_over_threads_give_the_one_thread_result(path):
    torch.manual_seed(0)
    lin = torch.nn.Linear(96, 160)
    with torch.no_grad():
        project_(lin.weight, nonzero_target(lin.weight.numel(), 1 / 16))
    fl = sl.FrozenLinear(lin)
    x = torch.randn(1000, 96) * (torch.rand(1000, 96) < 0.25)
    g = torch.randn(1000, 160)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fl.product(x, path), fl.input_grad(g, path)
        torch.set_num_threads(4)
        four = fl.product(x, path), fl.input_grad(g, path)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], four[0]) and torch.equal(one[1], four[1])
    torch.testing.assert_close(one[0], lin(x).detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(one[1], g @ lin.weight.detach(), atol=1e-5, rtol=1e-5)


def test_without_the_c_kernels_the_torch_paths_are_chosen(monkeypatch):
    monkeypatch.setattr(native, "_loaded", True)
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_reason", "no C compiler found (set CC)")
    model = make(1 / 64)
    frozen = copy.deepcopy(model)
    plan = sl.freeze_sparse(frozen, repeats=1)
    assert plan.native == "no C compiler found (set CC)"
    assert {p["forward"] for p in plan.products} <= {"dense", "torch_csr"}
    assert {s["path"] for s in plan.sites} == {s["no_grad_path"] for s in plan.sites} == {"torch"}
    assert_same(model, frozen, tokens())
    with pytest.raises(RuntimeError, match="needs the C kernels"):
        sl.freeze_sparse(copy.deepcopy(model), force="tiled")


def test_the_library_is_built_once_under_a_name_that_hashes_source_and_cpu(tmp_path, monkeypatch):
    if native._compiler() is None:
        pytest.skip("no C compiler")
    monkeypatch.setenv("SPARSECIRCUITS_CACHE", str(tmp_path))
    first = native._build(native._compiler())
    assert first.parent == tmp_path / "kernels" and first.name.startswith("sparse_kernels-")
    mtime = first.stat().st_mtime_ns
    assert native._build(native._compiler()) == first and first.stat().st_mtime_ns == mtime
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary left behind


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("density", (1 / 4, 1 / 64))
def test_on_cuda_the_frozen_model_gives_the_plain_logits_and_input_gradients(density):
    model = make(density).cuda()
    frozen = copy.deepcopy(model)
    plan = sl.freeze_sparse(frozen, tokens(B=2, seed=3).cuda(), repeats=1)
    assert {p["forward"] for p in plan.products} <= {"dense", "torch_csr"}
    want_logits, want = logits_and_grads(model, tokens().cuda())
    got_logits, got = logits_and_grads(frozen, tokens().cuda())
    close(got_logits, want_logits, "logits")
    for name in want:
        close(got[name], want[name], name)


def _zero_rows(model: GPT, layer: int, which: str) -> None:
    """Zero the rows of block ``layer``'s product that feed its q, k or neuron site."""
    with torch.no_grad():
        attn, mlp = model.blocks[layer].attn, model.blocks[layer].mlp
        inner = attn.n_head * attn.d_head
        if which == "neuron":
            mlp.c_fc.weight.zero_()
        else:
            j = ("q", "k", "v").index(which)
            attn.c_attn.weight[j * inner:(j + 1) * inner].zero_()


def test_a_site_fed_by_zero_weights_is_skipped_with_the_same_logits_and_gradients():
    model = make(1 / 4)
    _zero_rows(model, 0, "q")
    _zero_rows(model, 0, "k")
    _zero_rows(model, 1, "neuron")
    frozen = copy.deepcopy(model)
    plan = sl.freeze_sparse(frozen, tokens(), products=False)
    paths = {s["name"]: s["path"] for s in plan.sites}
    identity = {n for n, p in paths.items() if p == "identity"}
    assert identity == {"blocks.0.attn.sparse_q", "blocks.0.attn.sparse_k", "blocks.1.mlp.sparse_neuron"}
    assert "identity" in plan.table()
    toks = tokens()
    want_logits, want = logits_and_grads(model, toks)
    got_logits, got = logits_and_grads(frozen, toks)
    assert torch.equal(got_logits, want_logits)
    for name in want:  # zeros pass the same gradient either way: it meets only zero weights
        close(got[name], want[name], name)
    with torch.no_grad():
        frozen.blocks[0].attn.c_attn.weight[0, 0] = 1.0  # a changed weight is refused, not ignored
    with pytest.raises(RuntimeError, match="changed in place"):
        frozen(toks)


def test_a_bias_or_a_live_row_keeps_the_site_timed():
    model = make(1 / 4, bias=True)
    _zero_rows(model, 0, "q")  # the bias still feeds q: not zero input
    with torch.no_grad():
        model.blocks[0].attn.c_attn.bias.normal_()
        model.blocks[1].attn.c_attn.weight[:16].zero_()  # half of q's rows only
    plan = sl.freeze_sparse(model, tokens(), products=False)
    assert all(s["path"] != "identity" for s in plan.sites)


def test_a_copy_of_a_frozen_model_runs_and_a_stale_one_is_refused():
    model = make(1 / 16)
    _zero_rows(model, 0, "q")
    sl.freeze_sparse(model, tokens())  # products and sites
    clone = sl.copy_model(model)
    with torch.no_grad():
        assert torch.equal(clone(tokens()), model(tokens()))  # the copy's weights start at version 0
        model.blocks[1].mlp.c_fc.weight.mul_(1.0)
    with pytest.raises(RuntimeError, match="changed in place"):
        sl.copy_model(model)
