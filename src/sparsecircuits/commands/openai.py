"""`sparsecircuits import-openai` / `export-openai`: OpenAI's released model folders.

The paper's models ship as ``beeg_config.json`` + ``final_model.pt``; importing one gives
a run directory every other command accepts (eval, sample, prune, ...), and exporting a
run gives a folder their public code loads. See ``sparsecircuits.model.openai_format``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-openai", help="turn a released OpenAI model folder into a run directory",
                       description="Read beeg_config.json + final_model.pt (weights only; pickled code is "
                                   "refused) and write runs/NAME.")
    p.add_argument("src_dir", type=Path, help="folder holding beeg_config.json and final_model.pt")
    p.add_argument("--out", type=Path, required=True, help="run directory to create, e.g. runs/NAME")
    p.add_argument("--tokenizer", type=Path, default=None, metavar="PATH",
                   help="a tokenizer.json, or a folder with vocab.bpe + encoder.json "
                        "(default: whichever of these SRC_DIR holds)")
    p.set_defaults(func=run_import)

    p = sub.add_parser("export-openai", help="write a run in OpenAI's released format",
                       description="Write beeg_config.json + final_model.pt (and tokenizer.json) from a run.")
    p.add_argument("run_dir", type=Path, help="run directory, e.g. runs/NAME")
    p.add_argument("--out", type=Path, required=True, help="folder to create")
    p.set_defaults(func=run_export)


def _notes(notes: list[str]) -> None:
    for note in notes:
        sys.stderr.write(f"note: {note}\n")


def run_import(args: argparse.Namespace) -> int:
    from ..model.openai_format import import_openai

    r = import_openai(args.src_dir, args.out, tokenizer=args.tokenizer)
    _notes(r.notes)
    m = r.config.model
    extras = [name for name, on in (("sink", m.attn_sink), ("bigram table", m.bigram_table),
                                    ("pos emb", m.pos_emb), ("tied unembed", m.tied_unembed)) if on]
    density = r.nonzero / max(r.numel, 1)
    print(f"imported {args.src_dir} -> {r.out}: {m.n_layer} layers, d_model {m.d_model}, "
          f"{m.n_head}x{m.d_head} heads, d_mlp {m.d_mlp}, vocab {m.vocab_size}"
          f"{', ' + ', '.join(extras) if extras else ''}; {density:.4f} of weights nonzero; "
          f"tokenizer: {r.tokenizer_source or 'none'}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ..model.openai_format import export_openai

    r = export_openai(args.run_dir, args.out)
    _notes(r.notes)
    print(f"exported {args.run_dir} -> {r.out}: {', '.join(r.files)}")
    return 0
