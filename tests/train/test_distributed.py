"""DDP under torchrun (gloo, 2 CPU processes): same result as one process, resume, rank-0 writes.

Two ranks each take half of the global batch and average their gradients, which is
exactly what one process with ``train.grad_accum=2`` does (halving is exact in floating
point, and the two half-batch passes are the same computations), so the 2-process run
must equal that run bit for bit, and the plain one-process run (one full-batch pass,
another summation order) within 1e-6.
"""
from __future__ import annotations

import pytest
import torch

from sparsecircuits.train.trainer import DistInfo, Trainer, mask_fingerprint

from .conftest import SETS, metrics, snapshot, torchrun, weights

TIMEOUT_S = 300


def _finish(proc) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def ddp_run(tiny_data, reference_run, tmp_path_factory):
    """A 2-process run stopped after step 15 and resumed; plus a refused start, run alongside."""
    run = tmp_path_factory.mktemp("ddp") / "run"
    ref_before = snapshot(reference_run)
    first = torchrun(2, ["train", "--preset", "cpu-tiny", "--data", str(tiny_data), "--out", str(run),
                         "--no-progress", *SETS, "--stop-after", "15", "--check-masks-every", "1"])
    refused = torchrun(2, ["train", "--preset", "cpu-tiny", "--data", str(tiny_data), "--out", str(reference_run),
                           "--no-progress", *SETS])
    stopped = _finish(first)
    refused = _finish(refused)
    after_stop = metrics(run) if stopped[0] == 0 else None
    resumed = _finish(torchrun(2, ["train", "--resume", str(run), "--no-progress", "--check-masks-every", "1"]))
    return {"run": run, "stopped": stopped, "resumed": resumed, "after_stop": after_stop,
            "refused": refused, "ref_before": ref_before}


@pytest.mark.slow
def test_two_processes_stop_and_resume(ddp_run):
    rc, out, err = ddp_run["stopped"]
    assert rc == 0, err[-3000:]
    assert out.count("stopped after step 15") == 1  # printed by rank 0 only
    assert [r["step"] for r in ddp_run["after_stop"]] == [10]  # one line per step: only rank 0 logs
    rc, out, err = ddp_run["resumed"]
    assert rc == 0, err[-3000:]
    assert out.count("trained 40 steps") == 1


@pytest.mark.slow
def test_two_processes_equal_grad_accum_bitwise(ddp_run, accum_run):
    ref, got = weights(accum_run), weights(ddp_run["run"])
    for name in ref:
        assert torch.equal(ref[name], got[name]), name
    assert metrics(ddp_run["run"]) == metrics(accum_run)


@pytest.mark.slow
def test_two_processes_match_one_process_within_1e6(ddp_run, reference_run):
    ref, got = weights(reference_run), weights(ddp_run["run"])
    assert ref.keys() == got.keys()
    diff = max((ref[k] - got[k]).abs().max().item() for k in ref)
    assert diff <= 1e-6, diff
    assert [r["step"] for r in metrics(ddp_run["run"])] == [10, 20, 30, 40]


@pytest.mark.slow
def test_rank0_failure_stops_every_rank_with_one_line(ddp_run, reference_run):
    rc, out, err = ddp_run["refused"]
    assert rc != 0
    assert err.count("already holds a run") == 1, err[-3000:]
    assert snapshot(reference_run) == ddp_run["ref_before"]


# -- the mask check, without processes --------------------------------------------

def test_mask_fingerprint_sees_one_moved_entry():
    w = torch.zeros(6, 5)
    w[0, 1] = w[2, 3] = w[5, 4] = 1.0
    moved = w.clone()
    moved[2, 3], moved[2, 2] = 0.0, 1.0
    scaled = w * -3.0  # same mask, other values
    fp = mask_fingerprint([w])
    assert fp.tolist()[0][0] == 3
    assert torch.equal(fp, mask_fingerprint([scaled]))
    assert not torch.equal(fp, mask_fingerprint([moved]))
    swapped = torch.zeros(6, 5)  # {1, 4} vs {2, 3}: the same count and index sum
    swapped.view(-1)[[1, 4]] = 1.0
    other = torch.zeros(6, 5)
    other.view(-1)[[2, 3]] = 1.0
    assert not torch.equal(mask_fingerprint([swapped]), mask_fingerprint([other]))


def test_check_masks_names_the_differing_tensor(tiny_data, tmp_path, monkeypatch):
    import torch.distributed as dist

    from sparsecircuits.config import build_config

    cfg = build_config("cpu-tiny", sets=[f"data.data_dir={tiny_data}", "train.threads=1"])
    tr = Trainer(cfg, tmp_path / "run", progress=False)
    tr.train_step()
    tr.dist = DistInfo(rank=0, world_size=2)
    victim = tr.sparsifier.names[3]

    def fake_all_gather(outs, mine):
        outs[0].copy_(mine)
        other = mine.clone()
        other[3, 1] += 1
        outs[1].copy_(other)

    monkeypatch.setattr(dist, "all_gather", fake_all_gather)
    with pytest.raises(RuntimeError, match=f"rank 1 after step 1 in {victim}"):
        tr.check_masks()

    monkeypatch.setattr(dist, "all_gather", lambda outs, mine: [o.copy_(mine) for o in outs])
    tr.check_masks()  # equal on both "ranks": no error
