"""The CLI's contract for bad input: exit code 2, exactly one line on stderr, nothing written.

Also the config layering (preset, then TOML file, then ``--set``), where an unknown key
or a wrong type is an error naming the key.
"""
from __future__ import annotations

import pytest

from sparsecircuits.cli import main
from sparsecircuits.config import build_config
from sparsecircuits.errors import UserError


def _fails(capsys, args: list[str], *needles: str) -> str:
    capsys.readouterr()
    try:
        rc = main(args)
    except SystemExit as exc:  # argparse usage errors exit from inside parse_args
        rc = exc.code
    assert rc == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in captured.err
    return lines[0]


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip()


# -- config layering ---------------------------------------------------------------

def test_preset_then_toml_then_set(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('seed = 3\n[train]\nsteps = 77\nlr = 0.5\n[model]\nd_model = 64\n')
    cfg = build_config("cpu-tiny", toml, ["train.lr=0.25", "model.pos_emb=true", "train.density=1/8"])
    assert (cfg.seed, cfg.train.steps, cfg.model.d_model) == (3, 77, 64)  # from the file
    assert (cfg.train.lr, cfg.model.pos_emb, cfg.train.density) == (0.25, True, 0.125)  # --set wins
    assert cfg.model.n_layer == 2 and cfg.data.vocab_size == 512  # the preset underneath


@pytest.mark.parametrize("toml_text, needle", [
    ("[train]\nstepz = 5\n", "train.stepz"),
    ("[trian]\nsteps = 5\n", "trian"),
    ('[train]\nsteps = "many"\n', "train.steps"),
    ("[model]\npos_emb = 3\n", "model.pos_emb"),
    ("train = 5\n", "train"),
    ("[train\nsteps = 5\n", "not valid TOML"),
    ("[train]\ndensity = 2.0\n", "train.density"),
])
def test_bad_toml_is_one_line_naming_the_key(tmp_path, capsys, toml_text, needle):
    toml = tmp_path / "c.toml"
    toml.write_text(toml_text)
    out = tmp_path / "run"
    _fails(capsys, ["train", "--preset", "cpu-tiny", "--config", str(toml), "--out", str(out)], needle)
    assert not out.exists()


@pytest.mark.parametrize("item, needle", [
    ("train.nope=1", "train.nope"),
    ("train.steps=abc", "train.steps"),
    ("train.steps=1.5", "train.steps"),
    ("model.bias=maybe", "model.bias"),
    ("steps", "key=value"),
    ("train..steps=3", "malformed"),
    ("model=3", "model"),
    ("train.steps=0", "train.steps"),
    ("train.grad_accum=3", "grad_accum"),
])
def test_bad_set_is_one_line_naming_the_key(tmp_path, capsys, item, needle):
    out = tmp_path / "run"
    _fails(capsys, ["train", "--preset", "cpu-tiny", "--out", str(out), "--set", item], needle)
    assert not out.exists()


def test_unknown_preset(tmp_path, capsys):
    line = _fails(capsys, ["train", "--preset", "gpu-huge", "--out", str(tmp_path / "r")], "gpu-huge", "cpu-tiny")
    assert "unknown preset" in line
    assert not (tmp_path / "r").exists()


def test_missing_config_file(tmp_path, capsys):
    _fails(capsys, ["train", "--config", str(tmp_path / "none.toml"), "--out", str(tmp_path / "r")], "none.toml")


def test_train_needs_out(capsys):
    _fails(capsys, ["train", "--preset", "cpu-tiny"], "--out")


def test_missing_data_dir(tmp_path, capsys):
    out = tmp_path / "run"
    _fails(capsys, ["train", "--preset", "cpu-tiny", "--data", str(tmp_path / "nodata"), "--out", str(out)], "nodata")
    assert not out.exists()


def test_cuda_without_gpu(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    _fails(capsys, ["train", "--preset", "cpu-tiny", "--device", "cuda", "--out", str(tmp_path / "r")], "cuda")


@pytest.mark.parametrize("args, needle", [
    (["--resume", "{tmp}/nothing"], "not found"),
    (["--resume", "{tmp}", "--preset", "cpu-tiny"], "--resume"),
    (["--resume", "{tmp}"], "config.json"),
    (["--out", "{tmp}/r", "--stop-after", "0"], "--stop-after"),
    (["--out", "{tmp}/r", "--check-masks-every", "-1"], "--check-masks-every"),
    (["--out", "{tmp}/r", "--bogus"], "--bogus"),
])
def test_bad_train_arguments(tmp_path, capsys, args, needle):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    _fails(capsys, ["train", *args], needle)


def test_check_masks_every_validated_in_trainer(tmp_path):
    from sparsecircuits.train.trainer import Trainer

    with pytest.raises(UserError, match="check-masks-every"):
        Trainer(build_config("cpu-tiny"), tmp_path / "r", check_masks_every=-2)


# -- data build ----------------------------------------------------------------------

def test_data_build_missing_source_dir(tmp_path, capsys):
    out = tmp_path / "data"
    _fails(capsys, ["data", "build", "--src", str(tmp_path / "no_such_src"), "--out", str(out), "--no-progress"],
           "no_such_src")
    assert not out.exists()


def test_data_build_empty_corpus(tmp_path, capsys):
    src = tmp_path / "empty"
    (src / "pkg").mkdir(parents=True)
    (src / "README.txt").write_text("no python here\n")
    out = tmp_path / "data"
    _fails(capsys, ["data", "build", "--src", str(src), "--out", str(out), "--no-progress"], "no usable .py files")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no temp dirs left behind
