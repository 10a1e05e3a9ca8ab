"""`sparsecircuits sample RUN --prompt TEXT`: continue a prompt with the model."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="continue a prompt with a trained model")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--prompt", default="def ", help="text to continue")
    p.add_argument("--tokens", type=int, default=64, help="tokens to generate (default 64)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=50, help="sample among the k likeliest tokens (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..run import load_run

    if args.tokens < 1:
        raise UserError(f"--tokens must be >= 1, got {args.tokens}")
    if args.top_k < 0:
        raise UserError(f"--top-k must be >= 0 (0 = no cut-off), got {args.top_k}")
    r = load_run(args.run_dir)
    ids = r.encode(args.prompt)
    if not ids:
        raise UserError("--prompt is empty after tokenisation")
    gen = torch.Generator().manual_seed(args.seed)
    out = r.model.generate(torch.tensor([ids]), args.tokens, temperature=args.temperature,
                           top_k=args.top_k, generator=gen)
    print(r.decode(out[0].tolist()))
    return 0
