"""`sparsecircuits export`: a pruned circuit in a format other tools read.

``--format attribution-graph`` writes the JSON that circuit-tracer's local viewer and
Neuronpedia's graph page load (``sparsecircuits.interop.attribution_graph``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

FORMATS = ("attribution-graph",)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a circuit as attribution-graph JSON (circuit-tracer, Neuronpedia)",
                       description="Write RUN/circuits/TASK/circuit.json in another tool's format, on one prompt.")
    p.add_argument("run_dir", type=Path, help="run directory holding circuits/TASK/circuit.json")
    p.add_argument("--task", required=True, help="the circuit's task")
    p.add_argument("--format", choices=FORMATS, default="attribution-graph")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--prompt", default=None,
                   help="prompt to lay the graph out on (default: the task's first held-out prompt)")
    p.add_argument("--correct", default=None, help="the answer token's text, marked as the target logit")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from ..circuits.circuit import Circuit
    from ..errors import UserError
    from ..interop.attribution_graph import default_prompt, to_attribution_graph
    from ..io import atomic_write_json, read_json
    from ..run import load_run
    from ..rundir import RunDir

    path = RunDir(args.run_dir).circuit(args.task)
    if not path.is_file():
        raise UserError(f"no circuit for task {args.task!r} in {args.run_dir} (run 'prune' first): {path}")
    raw = read_json(path, what="circuit file")
    Circuit.from_json(raw, source=str(path))  # the same checks as every other reader
    run = load_run(args.run_dir)
    prompt, correct = args.prompt, args.correct
    if prompt is None:  # a custom task has no generator: then --prompt is needed
        prompt, task_correct = default_prompt(args.task)
        correct = task_correct if correct is None else correct
    graph = to_attribution_graph(raw, run, prompt, correct)
    atomic_write_json(args.out, graph)
    print(f"wrote {args.out}: {len(graph['nodes'])} nodes, {len(graph['links'])} links on a "
          f"{len(graph['metadata']['prompt_tokens'])}-token prompt ({args.format})")
    return 0
