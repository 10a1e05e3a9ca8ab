"""`sparsecircuits import-openai` / `export-openai`: one-line summaries, exit 2 with one
line on bad input, nothing half-written."""
from __future__ import annotations

import json
import os

import pytest
import torch

from sparsecircuits.cli import main


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("sparsecircuits: error: ") and err.count("\n") == 1, err
    return err


def test_import_then_export_round_trip(openai_folder, fmt, tmp_path, capsys):
    cfg = {**fmt.SMALL, "sink": True, "bias": False, "afrac": 0.25, "enable_bigram_table": True}
    src, sd = openai_folder(cfg, zero_wpe=True)
    assert main(["import-openai", str(src), "--out", str(tmp_path / "runs/imp")]) == 0
    out = capsys.readouterr()
    assert out.out.count("\n") == 1 and "2 layers" in out.out and "sink" in out.out
    assert "no tokenizer" in out.err  # told how to supply one
    assert {p.name for p in (tmp_path / "runs/imp").iterdir()} >= {"config.json", "model.safetensors"}

    assert main(["export-openai", str(tmp_path / "runs/imp"), "--out", str(tmp_path / "exp")]) == 0
    assert "beeg_config.json" in capsys.readouterr().out
    back = torch.load(tmp_path / "exp/final_model.pt", weights_only=True)
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)


def test_import_converts_gpt2_style_tokenizer_files(openai_folder, fmt, tmp_path, capsys):
    """vocab.bpe + encoder.json beside the weights become the run's tokenizer.json."""
    from sparsecircuits.run import load_run

    byte_tokens = [chr(c) for c in range(ord("!"), ord("~") + 1)]  # a toy vocabulary: ASCII only
    encoder = {t: i for i, t in enumerate(byte_tokens)}
    encoder["de"] = len(encoder)
    encoder["<|endoftext|>"] = len(encoder)
    src, _ = openai_folder({**fmt.SMALL, "vocab_size": len(encoder) + 3})
    (src / "encoder.json").write_text(json.dumps(encoder))
    (src / "vocab.bpe").write_text("#version: 0.2\nd e\n")
    assert main(["import-openai", str(src), "--out", str(tmp_path / "run")]) == 0
    assert "converted from" in capsys.readouterr().out
    pytest.importorskip("sparsecircuits.data.tokenizer")
    run = load_run(tmp_path / "run")
    assert run.encode("def") == [encoder["de"], encoder["f"]]


def test_tokenizer_option_copies_a_tokenizer_json(openai_folder, fmt, tmp_path, capsys):
    from tokenizers import Tokenizer, models

    Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[])).save(str(tmp_path / "tok.json"))
    src, _ = openai_folder(fmt.SMALL)
    assert main(["import-openai", str(src), "--out", str(tmp_path / "run"),
                 "--tokenizer", str(tmp_path / "tok.json")]) == 0
    assert "no tokenizer" not in capsys.readouterr().err
    assert Tokenizer.from_file(str(tmp_path / "run/tokenizer.json")).get_vocab() == {"a": 0, "b": 1}


def test_tokenizer_larger_than_the_model_vocab_is_refused(openai_folder, fmt, tmp_path, capsys):
    from tokenizers import Tokenizer, models

    Tokenizer(models.BPE(vocab={f"t{i}": i for i in range(100)}, merges=[])).save(str(tmp_path / "tok.json"))
    src, _ = openai_folder(fmt.SMALL)  # vocab_size 67
    assert main(["import-openai", str(src), "--out", str(tmp_path / "run"),
                 "--tokenizer", str(tmp_path / "tok.json")]) == 2
    assert "100 tokens" in _one_line_error(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("problem, named", [
    ("no_config", "beeg_config.json"),
    ("no_weights", "final_model.pt"),
    ("bad_json", "not valid JSON"),
    ("unknown_key", "frobnicate"),
    ("unsupported", "rms_norm"),
    ("pickle", "refused"),
    ("not_a_dir", "not a folder"),
])
def test_bad_input_is_exit_2_with_one_line(problem, named, openai_folder, fmt, tmp_path, capsys):
    src, sd = openai_folder(fmt.SMALL)
    marker = tmp_path / "ran"
    if problem == "no_config":
        (src / "beeg_config.json").unlink()
    elif problem == "no_weights":
        (src / "final_model.pt").unlink()
    elif problem == "bad_json":
        (src / "beeg_config.json").write_text("{not json")
    elif problem == "unknown_key":
        (src / "beeg_config.json").write_text(json.dumps({**fmt.SMALL, "frobnicate": True}))
    elif problem == "unsupported":
        (src / "beeg_config.json").write_text(json.dumps({**fmt.SMALL, "rms_norm": False}))
    elif problem == "pickle":
        class Payload:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))
        torch.save(dict(sd, extra=Payload()), src / "final_model.pt")
    elif problem == "not_a_dir":
        src = tmp_path / "missing"
    assert main(["import-openai", str(src), "--out", str(tmp_path / "run")]) == 2
    assert named in _one_line_error(capsys)
    assert not (tmp_path / "run").exists() and not marker.exists()


def test_import_refuses_an_existing_run(openai_folder, fmt, tmp_path, capsys):
    src, _ = openai_folder(fmt.SMALL)
    assert main(["import-openai", str(src), "--out", str(tmp_path / "run")]) == 0
    before = (tmp_path / "run/model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["import-openai", str(src), "--out", str(tmp_path / "run")]) == 2
    assert "already exists" in _one_line_error(capsys)
    assert (tmp_path / "run/model.safetensors").read_bytes() == before


def test_export_bad_input_is_exit_2(openai_folder, fmt, tmp_path, capsys):
    assert main(["export-openai", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert "not found" in _one_line_error(capsys)
    src, _ = openai_folder(fmt.SMALL)
    assert main(["import-openai", str(src), "--out", str(tmp_path / "run")]) == 0
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken/f").write_text("x")
    capsys.readouterr()
    assert main(["export-openai", str(tmp_path / "run"), "--out", str(tmp_path / "taken")]) == 2
    assert "already exists" in _one_line_error(capsys)
