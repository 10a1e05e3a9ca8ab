"""`sparsecircuits bridge train|eval|steer`: a sparse twin of a dense run, coupled by bridges.

``bridge train`` writes an ordinary run directory for the sparse model (so ``prune``,
``check`` and ``report`` work on it unchanged) plus ``bridge.json`` (the dense run it is
coupled to) and ``bridges.safetensors``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError

# The bridge terms' weight. With weight 1 (the paper's sum) the demo-shaped pair diverged in
# 3 steps: the dense model's residual has RMS ~0.01, so the NMSE and KL terms send the
# sparse weights gradients ~50x the pretraining loss's, and at lr 0.1 with Adam's eps 0.1
# the twin's residual stream grew ~1000x (decoder NMSE 40 -> 1e6). At 0.02 every term fell.
DEFAULT_COEF = 0.02


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bridge", help="train, evaluate and steer a sparse twin of a dense run",
                       description="A weight-sparse model trained with bridges to a frozen dense model.")
    bsub = p.add_subparsers(dest="bridge_command", parser_class=type(p))

    t = bsub.add_parser("train", help="train a bridged sparse twin of DENSE_RUN (or resume one)")
    t.add_argument("dense", nargs="?", type=Path, metavar="DENSE_RUN", help="the dense run to explain")
    t.add_argument("--out", type=Path, help="run directory to create")
    t.add_argument("--preset", default=None, help="preset of the sparse model (default cpu-small); "
                                                  "its depth is taken from the dense run")
    t.add_argument("--config", type=Path, default=None, help="TOML file of settings")
    t.add_argument("--data", type=Path, default=None,
                   help="token-shard folder (default: the dense run's); must share its tokenizer")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    t.add_argument("--bridge-afrac", type=float, default=None,
                   help="AbsTopK fraction of the encoders' output (default: the sparse model's afrac)")
    t.add_argument("--nmse-coef", type=float, default=DEFAULT_COEF,
                   help=f"weight of the NMSE terms (default {DEFAULT_COEF}; see README, Bridges)")
    t.add_argument("--kl-coef", type=float, default=DEFAULT_COEF,
                   help=f"weight of the hybrid KL terms (default {DEFAULT_COEF})")
    t.add_argument("--bridge-lr-scale", type=float, default=1.0,
                   help="the bridges' learning rate relative to train.lr's warmup and decay, which "
                        "they follow without the sparse weights' 1/sqrt(density) factor (default 1)")
    t.add_argument("--hybrid-locations", type=int, default=0, metavar="N",
                   help="hybrid forwards at N random locations per step instead of all 2 x n_layer, their "
                        "KL terms scaled up to an unbiased estimate (default 0: all, as the paper); each "
                        "location costs a forward and backward of both models")
    t.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR", help="continue a stopped bridged run")
    t.add_argument("--stop-after", type=int, default=None, metavar="STEP", help="stop with a checkpoint")
    t.add_argument("--device", default=None, help="cpu (default) or cuda")
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    t.set_defaults(func=run_train)

    e = bsub.add_parser("eval", help="NMSE per location and KL of every hybrid path")
    e.add_argument("run", type=Path, metavar="RUN")
    e.add_argument("--batches", type=int, default=None, help="validation batches (default train.eval_batches)")
    e.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    e.set_defaults(func=run_eval)

    s = bsub.add_parser("steer", help="edit the dense model through one node of the sparse twin")
    s.add_argument("run", type=Path, metavar="RUN")
    s.add_argument("--task", required=True)
    s.add_argument("--node", required=True, help="a residual read: blocks.L.hook_attn_in:C or blocks.L.hook_mlp_in:C")
    s.add_argument("--strengths", default=None, help="comma-separated, in [0, 1] (default 0, 0.1, ..., 1)")
    s.add_argument("--random", type=int, default=4, help="random nodes of the same read to compare (default 4)")
    s.add_argument("--pairs", type=int, default=32, help="held-out task pairs (default 32)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    s.set_defaults(func=run_steer)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_train(args: argparse.Namespace) -> int:
    from ..config import apply_overrides, build_config, parse_set
    from ..bridges.train import train_bridged
    from ..run import load_run
    from ..rundir import RunDir

    if args.stop_after is not None and args.stop_after < 1:
        raise UserError(f"--stop-after must be >= 1, got {args.stop_after}")
    if args.resume:
        if args.dense or args.out or args.preset or args.config or args.data:
            raise UserError("--resume takes its settings from the run; drop DENSE_RUN/--out/--preset/--config/--data")
        if not RunDir(args.resume).is_run():
            raise UserError(f"{args.resume} is not a run directory (no config.json)")
        cfg = RunDir(args.resume).read_config()
        if args.set:
            apply_overrides(cfg, parse_set(args.set), source="--set")
            cfg.validate()
        if args.device:
            cfg.train.device = args.device
        out, dense_dir, resume = args.resume, None, True
    else:
        if not args.dense or not args.out:
            raise UserError("bridge train needs DENSE_RUN and --out RUN_DIR (or --resume RUN_DIR)")
        dense = load_run(args.dense)
        sets = [f"model.n_layer={dense.model.cfg.n_layer}"] if not args.config else []
        data = args.data or dense.data_dir
        if data:
            sets.append(f"data.data_dir={data}")
        if args.device:
            sets.append(f"train.device={args.device}")
        cfg = build_config(args.preset or "cpu-small", args.config, sets + list(args.set))
        out, dense_dir, resume = args.out, args.dense, False
    summary = train_bridged(cfg, out, dense_dir, resume=resume, bridge_afrac=args.bridge_afrac,
                            nmse_coef=args.nmse_coef, kl_coef=args.kl_coef, lr_scale=args.bridge_lr_scale,
                            hybrid_locations=args.hybrid_locations, progress=not args.no_progress,
                            stop_after=args.stop_after)
    if summary["stopped"]:
        print(f"stopped after step {summary['step']} of {cfg.train.steps}; continue with "
              f"'sparsecircuits bridge train --resume {out}'")
        return 0
    val = summary["val_loss"]
    val_text = f"val loss {val:.4f}" if val is not None else "already finished, final model rewritten"
    print(f"trained {summary['step']} bridged steps: train loss {summary['train_loss']:.4f}, {val_text}, "
          f"nonzero fraction {summary['nonzero_frac']:.4f} -> {summary['out']}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    import json

    from ..bridges.eval import evaluate_bridges, format_table, write_eval
    from ..bridges.model import load_bridged

    if args.batches is not None and args.batches < 1:
        raise UserError(f"--batches must be >= 1, got {args.batches}")
    br = load_bridged(args.run)
    result = evaluate_bridges(br, args.batches)
    write_eval(br, result)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


def _strengths(text: str | None):
    from ..bridges.steer import DEFAULT_STRENGTHS

    if text is None:
        return DEFAULT_STRENGTHS
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UserError(f"--strengths must be comma-separated numbers, got {text!r}") from None


def run_steer(args: argparse.Namespace) -> int:
    import json

    from ..bridges.model import load_bridged
    from ..bridges.steer import format_curve, plot_curve, steer_curve
    from ..io import atomic_write_json
    from ..rundir import RunDir

    if args.random < 0 or args.pairs < 1:
        raise UserError("--random must be >= 0 and --pairs >= 1")
    strengths = _strengths(args.strengths)
    br = load_bridged(args.run)
    result = steer_curve(br, args.task, args.node, strengths, n_random=args.random, n_pairs=args.pairs,
                         seed=args.seed)
    stem = RunDir(br.path).steer(args.task, args.node)
    json_path, png_path = stem.parent / (stem.name + ".json"), stem.parent / (stem.name + ".png")
    atomic_write_json(json_path, result)
    plot_curve(result, png_path)
    print(json.dumps(result, indent=2) if args.json else format_curve(result))
    print(f"wrote {json_path} and {png_path}")
    return 0
