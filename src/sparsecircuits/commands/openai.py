"""`sparsecircuits import-openai` / `export-openai`: OpenAI's released model folders.

The paper's models ship as ``beeg_config.json`` + ``final_model.pt``; importing one gives
a run directory every other command accepts (eval, sample, prune, ...), and exporting a
run gives a folder their public code loads. See ``sparsecircuits.interop.openai``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-openai", help="turn a released OpenAI model folder into a run directory",
                       description="Read beeg_config.json + final_model.pt (weights only; pickled code is "
                                   "refused) and write runs/NAME. The folder may be on the Hugging Face Hub: "
                                   "hf://OWNER/NAME[@REVISION]/SUBFOLDER, or --hub-repo with --subfolder and "
                                   "--revision (the Hub's cache, HF_HUB_OFFLINE and tokens apply).")
    p.add_argument("src_dir", nargs="?", default=None,
                   help="folder holding beeg_config.json and final_model.pt, or hf://OWNER/NAME[@REV]/SUBFOLDER")
    p.add_argument("--hub-repo", default=None, metavar="OWNER/NAME",
                   help="a Hub repository, e.g. openai/circuit-sparsity (instead of SRC_DIR)")
    p.add_argument("--subfolder", default=None, help="the model's folder inside --hub-repo")
    p.add_argument("--revision", default=None,
                   help="branch, tag or commit of --hub-repo to pin (default: main)")
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


def _source(args: argparse.Namespace) -> tuple[Path, dict | None, str]:
    """The local folder to import, its Hub provenance (or None) and how to name it."""
    from ..errors import UserError
    from ..interop.hub import PREFIX, fetch_model_folder, hub_source, parse_hub_url

    src = args.src_dir
    if args.hub_repo is not None:
        if src is not None:
            raise UserError("give either SRC_DIR or --hub-repo, not both")
        hub = hub_source(args.hub_repo, args.subfolder, args.revision)
    elif src is not None and src.startswith(PREFIX):
        if args.subfolder is not None:
            raise UserError("--subfolder goes with --hub-repo; an hf:// address names its folder itself")
        hub = parse_hub_url(src)
        if args.revision is not None:
            if hub.revision is not None and hub.revision != args.revision:
                raise UserError(f"two revisions given: @{hub.revision} and --revision {args.revision}")
            hub = hub_source(hub.repo_id, hub.subfolder, args.revision)
    else:
        if src is None:
            raise UserError("give SRC_DIR (a folder or hf://OWNER/NAME/SUBFOLDER) or --hub-repo")
        if args.revision is not None or args.subfolder is not None:
            raise UserError("--revision and --subfolder go with a Hub source (hf://... or --hub-repo)")
        return Path(src), None, src
    folder, commit = fetch_model_folder(hub)
    prov = {"hub": {"repo_id": hub.repo_id, "subfolder": hub.subfolder, "revision": hub.revision or "main",
                    "commit": commit}}
    return folder, prov, f"{hub} (commit {commit[:12]})"


def run_import(args: argparse.Namespace) -> int:
    from ..interop.openai import import_openai

    folder, provenance, name = _source(args)
    r = import_openai(folder, args.out, tokenizer=args.tokenizer, provenance=provenance)
    _notes(r.notes)
    m = r.config.model
    extras = [name for name, on in (("sink", m.attn_sink), ("bigram table", m.bigram_table),
                                    ("pos emb", m.pos_emb), ("tied unembed", m.tied_unembed)) if on]
    density = r.nonzero / max(r.numel, 1)
    print(f"imported {name} -> {r.out}: {m.n_layer} layers, d_model {m.d_model}, "
          f"{m.n_head}x{m.d_head} heads, d_mlp {m.d_mlp}, vocab {m.vocab_size}"
          f"{', ' + ', '.join(extras) if extras else ''}; {density:.4f} of weights nonzero; "
          f"tokenizer: {r.tokenizer_source or 'none'}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ..interop.openai import export_openai

    r = export_openai(args.run_dir, args.out)
    _notes(r.notes)
    print(f"exported {args.run_dir} -> {r.out}: {', '.join(r.files)}")
    return 0
