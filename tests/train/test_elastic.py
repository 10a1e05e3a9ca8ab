"""torchrun as a cluster uses it (gloo, CPU): a lost worker is survived, two nodes train
as one, and no thread of a finished run is left to abort the process at exit.

Two ranks with half the global batch each equal one process with ``train.grad_accum=2``
bit for bit (see test_distributed), so ``accum_run`` is the uninterrupted run that a
restarted or two-node run must match exactly.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sparsecircuits.cli import main
from sparsecircuits.rundir import RunDir
from sparsecircuits.train import checkpoint as ckpt
from sparsecircuits.train import elastic
from sparsecircuits.train import trainer as trainer_mod

from .conftest import cli_env, metrics, train_args, weights

TIMEOUT_S = 300
THREADS_SCRIPT = str(Path(__file__).with_name("cli_then_threads.py"))
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode, out, err


def _popen(cmd: list[str], **env: str) -> subprocess.Popen:
    return subprocess.Popen(cmd, env={**cli_env(), **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _worker_pid(agent: int, rank: int) -> int | None:
    """The pid of the worker process with RANK=rank that the torchrun process ``agent`` started."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = next((int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("PPid:")), None)
        if ppid == agent and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


def _mid_save(run: Path, step: int) -> bool:
    ckdir = run / "checkpoints"
    return ckdir.is_dir() and any((p / ckpt.STATE_TENSORS).is_file() for p in ckdir.glob(f".step_{step:07d}.*"))


def _threads(root: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(root.glob("threads.*.json"))}


@pytest.fixture(scope="module")
def restarted_run(tiny_data, tmp_path_factory):
    """2 ranks under --max-restarts=1; rank 1 is SIGKILLed while rank 0 is half-way through
    writing checkpoint 15, so the restarted group must resume from checkpoint 10."""
    root = tmp_path_factory.mktemp("restart")
    run = root / "run"
    cmd = [*TORCHRUN, "--standalone", "--nproc_per_node=2", "--max-restarts=1", "--monitor-interval=0.1",
           THREADS_SCRIPT, str(root), *train_args(tiny_data, run)]
    # each write of checkpoint 15 pauses 3 s between its tensors and its state.json
    proc = _popen(cmd, **{ckpt.SLOW_SAVE_ENV: "15:3"})
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not _mid_save(run, 15):
            assert proc.poll() is None, f"torchrun ended early: {proc.communicate()[1][-3000:]}"
            assert time.monotonic() < deadline, "checkpoint 15 was never started"
            time.sleep(0.02)
        victim = _worker_pid(proc.pid, rank=1)
        assert victim is not None, "rank 1 not found"
        os.kill(victim, signal.SIGKILL)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    rc, out, err = _finish(proc)
    return {"root": root, "run": run, "rc": rc, "out": out, "err": err}


@pytest.mark.slow
def test_lost_worker_restarts_and_resumes_bitwise(restarted_run, accum_run):
    r = restarted_run
    assert r["rc"] == 0, r["err"][-3000:]
    assert r["out"].count("trained 40 steps") == 1
    assert r["err"].count("resuming") == 1  # rank 0 says so, once
    ref, got = weights(accum_run), weights(r["run"])
    assert ref.keys() == got.keys()
    for name in ref:
        assert torch.equal(ref[name], got[name]), name
    assert metrics(r["run"]) == metrics(accum_run)  # lines after checkpoint 10 were rewound, then rewritten
    # only the restarted attempt got to the end; the killed one left no record
    assert sorted(_threads(r["root"])) == ["threads.1.0.json", "threads.1.1.json"]


@pytest.mark.slow
def test_no_thread_outlives_a_distributed_run(restarted_run):
    """Gloo's worker threads (and tqdm's monitor) must be gone once the command returns.

    A gloo worker still running at interpreter shutdown can take the GIL while dropping a
    tensor and abort the process (SIGABRT) after a successful run; this catches it every
    time, where the abort itself happens only now and then.
    """
    for name, rec in _threads(restarted_run["root"]).items():
        assert rec["rc"] == 0, name
        assert len(rec["threads"]) == 1, f"{name}: threads still alive after the run: {rec['threads']}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_node_run(tiny_data, tmp_path_factory):
    """Two torchrun "nodes" of one process each, meeting through the c10d rendezvous."""
    root = tmp_path_factory.mktemp("two_nodes")
    run = root / "run"
    port = _free_port()
    node = [*TORCHRUN, "--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d",
            f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id=two-nodes-{port}",
            THREADS_SCRIPT, str(root), *train_args(tiny_data, run)]
    procs = [_popen(node) for _ in range(2)]
    results = [_finish(p) for p in procs]
    return {"root": root, "run": run, "results": results}


@pytest.mark.slow
def test_two_nodes_train_like_one_process(two_node_run, accum_run, reference_run):
    results = two_node_run["results"]
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    assert sum(out.count("trained 40 steps") for _, out, _ in results) == 1  # rank 0's node only
    run = two_node_run["run"]
    ref, got = weights(accum_run), weights(run)
    for name in ref:
        assert torch.equal(ref[name], got[name]), name
    one = weights(reference_run)
    diff = max((one[k] - got[k]).abs().max().item() for k in one)
    assert diff <= 1e-6, diff
    assert [r["step"] for r in metrics(run)] == [10, 20, 30, 40]
    threads = _threads(two_node_run["root"])
    assert sorted(threads) == ["threads.0.0.json", "threads.0.1.json"]
    assert all(len(rec["threads"]) == 1 for rec in threads.values()), threads


# -- the restart rule, without processes ------------------------------------------

CFG = {"model": {"n_layer": 2}, "train": {"lr": 0.2, "steps": 40}, "seed": 0}


def _make_run(out: Path, launch: str | None, config: dict | None, checkpoint: bool) -> None:
    out.mkdir(parents=True)
    if launch is not None:
        RunDir(out).launch.write_text(json.dumps({"torchelastic_run_id": launch}))
    if config is not None:
        (out / "config.json").write_text(json.dumps(config))
    if checkpoint:
        ckpt.save_checkpoint(out / "checkpoints", 10, {"x": torch.zeros(2)}, {})


def test_restart_plan(tmp_path, monkeypatch):
    from sparsecircuits.errors import UserError

    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "launch-a")
    assert elastic.plan_after_restart(tmp_path / "missing", CFG) == elastic.FRESH
    _make_run(tmp_path / "ours", "launch-a", CFG, checkpoint=True)
    assert elastic.plan_after_restart(tmp_path / "ours", CFG) == elastic.RESUME
    _make_run(tmp_path / "early", "launch-a", CFG, checkpoint=False)
    assert elastic.plan_after_restart(tmp_path / "early", CFG) == elastic.START_OVER
    _make_run(tmp_path / "very_early", "launch-a", None, checkpoint=False)
    assert elastic.plan_after_restart(tmp_path / "very_early", CFG) == elastic.START_OVER
    _make_run(tmp_path / "theirs", "launch-b", CFG, checkpoint=True)
    with pytest.raises(UserError, match="from another launch"):
        elastic.plan_after_restart(tmp_path / "theirs", CFG)
    _make_run(tmp_path / "plain", None, CFG, checkpoint=True)  # made outside torchrun
    with pytest.raises(UserError, match="from another launch"):
        elastic.plan_after_restart(tmp_path / "plain", CFG)
    other = {**CFG, "train": {"lr": 0.1, "steps": 40}}
    with pytest.raises(UserError, match=r"differs from this command's in train\.lr"):
        elastic.plan_after_restart(tmp_path / "ours", other)


def test_first_difference():
    assert elastic.first_difference(CFG, json.loads(json.dumps(CFG))) is None
    assert elastic.first_difference(CFG, {**CFG, "seed": 1}) == "seed"
    assert elastic.first_difference(CFG, {**CFG, "model": {}}) == "model.n_layer"
    assert elastic.first_difference({"a": [1, 2]}, {"a": [1, 3]}) == "a"


def test_restart_count_outside_torchrun(monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    assert elastic.restart_count() == 0
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "2")
    assert elastic.restart_count() == 2


def test_restarted_group_gets_keys_of_its_own(monkeypatch):
    """The keys of a failed attempt linger in torchrun's shared store; a restarted group on
    one node must not read them (a dead peer's address there fails the connection)."""
    import torch.distributed as dist

    server = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    env = {"TORCHELASTIC_USE_AGENT_STORE": "True", "GROUP_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(server.port), "TORCHELASTIC_RESTART_COUNT": "0"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert elastic.restarted_store(2) is None  # the first attempt: torch's own store, as usual
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    for key, value in [("GROUP_WORLD_SIZE", "2"), ("TORCHELASTIC_USE_AGENT_STORE", "False")]:
        with monkeypatch.context() as m:
            m.setenv(key, value)
            assert elastic.restarted_store(2) is None
    server.set("default_pg/0//cpu/rank_1", "stale")  # left by the failed attempt
    store = elastic.restarted_store(2)
    assert not store.check(["default_pg/0//cpu/rank_1"])
    store.set("default_pg/0//cpu/rank_1", "fresh")
    assert server.get("sparsecircuits/attempt_1/default_pg/0//cpu/rank_1") == b"fresh"


# -- a failing rank names itself and the step ---------------------------------------

class _FailingTrainer:
    """Stands in for Trainer: fails during step 18 of 40 with ``error``."""

    error: BaseException = RuntimeError("boom")

    def __init__(self, cfg, *args, **kwargs) -> None:
        self.cfg, self.step, self.closed = cfg, 17, False

    def train(self, stop_after=None):
        raise self.error

    def close(self) -> None:
        pass


@pytest.mark.parametrize("error, rc, line", [
    (RuntimeError("Connection closed by peer\nmore detail"), 1,
     "sparsecircuits: error: rank 1 of 2 failed at step 18 of 40: RuntimeError: Connection closed by peer"),
    (trainer_mod.UserError("could not write the checkpoint"), 2,
     "sparsecircuits: error: rank 1 of 2 failed at step 18 of 40: could not write the checkpoint"),
])
def test_failing_rank_says_which_and_where_in_one_line(tiny_data, tmp_path, monkeypatch, capsys, error, rc, line):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(_FailingTrainer, "error", error)
    monkeypatch.setattr(trainer_mod, "Trainer", _FailingTrainer)
    assert main(train_args(tiny_data, tmp_path / "run")) == rc
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == line
    assert err.count("rank 1 of 2") == 1
