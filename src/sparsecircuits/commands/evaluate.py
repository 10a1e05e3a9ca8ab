"""`sparsecircuits eval RUN`: val loss, unigram baseline, nonzeros per tensor."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="val loss, unigram baseline, nonzeros per tensor and the model's own "
                                    "measures of a run (also written to RUN/eval.json for the report)")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--batches", type=int, default=40, help="val batches to average (default 40)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..run import load_run
    from ..train.evaluation import evaluate_run, save_evaluation

    if args.batches < 1:
        raise UserError(f"--batches must be >= 1, got {args.batches}")
    result = evaluate_run(load_run(args.run_dir), n_batches=args.batches)
    save_evaluation(args.run_dir, result)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{'tensor':<36} {'shape':<14} {'nonzero':>9} {'density':>8}")
    for r in result["tensors"]:
        shape = "x".join(map(str, r["shape"]))
        tag = " (dense)" if r["dense_by_design"] else ""
        print(f"{r['name']:<36} {shape:<14} {r['nonzero']:>9} {r['density']:>8.4f}{tag}")
    print(f"val loss {result['val_loss']:.4f} nats/token (unigram baseline {result['unigram_loss']:.4f}); "
          f"nonzero fraction {result['nonzero_frac']:.4f} ({result['nonzero']}/{result['sparse_numel']})")
    m = result["measures"]
    dens = ", ".join(f"{k} {v:.3f}" for k, v in m["activation_density"].items())
    print(f"residual kurtosis {m['residual_kurtosis']:.2f}; dead neurons {m['dead_neuron_frac']:.3f}, "
          f"dead q/k/v channels {m['dead_attn_channel_frac']:.3f}; activation density: {dens}")
    return 0
