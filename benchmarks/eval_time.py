"""CPU time of `tasks eval` and `sample` on a run: the plain paths against the fast ones.

``tasks eval``: every task's test items scored by ``evaluate_task`` (the full logits of
every position, torch's AbsTopK) and by ``evaluate_suite`` (the last position's logits
only, AbsTopK by the C kernel where faster, its freezing included), alternately,
``--rounds`` times; the fastest round of each.  ``sample``: ``GPT.generate`` as it is
(no autograd graph, the last position's logits) against the same inside ``kernel_sites``
(its freezing timed apart), and the former against the loop it replaced (``model(ctx)``
with a graph and every position's logits).  Prints one JSON object with CPU seconds
(process time: the machine is shared), the ratios, whether the scores and tokens were
the same, and the load average.

    python benchmarks/eval_time.py RUN_DIR [--n 200] [--tokens 64] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch


def _cpu(fn):
    c0 = time.process_time()
    out = fn()
    return out, time.process_time() - c0


def _old_generate(model, tokens: torch.Tensor, n: int, temperature: float, top_k: int, seed: int) -> torch.Tensor:
    """The sampling loop before: a graph and every position's logits each step."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n):
        logits = model(tokens[:, -model.cfg.block_size:])[:, -1, :] / temperature  # (B, V)
        kth = logits.topk(top_k).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
        tokens = torch.cat([tokens, torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)], dim=1)
    return tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--n", type=int, default=200, help="test pairs per task")
    ap.add_argument("--tokens", type=int, default=64, help="tokens sampled")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    from sparsecircuits.circuits.frozen import kernel_sites
    from sparsecircuits.run import load_run
    from sparsecircuits.tasks import TASKS, encode_examples, evaluate_task
    from sparsecircuits.tasks.evaluation import evaluate_suite

    torch.set_num_threads(args.threads)
    run = load_run(args.run_dir)
    model = run.model
    block = model.cfg.block_size
    load = [round(x, 2) for x in os.getloadavg()]

    def plain():
        return [evaluate_task(model, encode_examples(run.tokenizer, t.examples(args.n, seed=0, split="test"),
                                                     task_name=name, max_len=block))
                for name, t in TASKS.items()]

    evals = {"plain": [], "fast": []}
    for _ in range(args.rounds):
        want, sec = _cpu(plain)
        evals["plain"].append(sec)
        got, sec = _cpu(lambda: evaluate_suite(run, n=args.n))
        evals["fast"].append(sec)
    same_scores = all(g["accuracy"] == w["accuracy"] and abs(g["loss"] - w["loss"]) <= 1e-5 * abs(w["loss"])
                      for g, w in zip(got, want))

    prompt = torch.tensor([run.encode("def main():\n    ")])
    kw = dict(temperature=0.8, top_k=50)
    samples = {"before": [], "generate": [], "kernel": []}
    for _ in range(args.rounds):
        old, sec = _cpu(lambda: _old_generate(model, prompt, args.tokens, seed=0, **kw))
        samples["before"].append(sec)
        new, sec = _cpu(lambda: model.generate(prompt, args.tokens, generator=torch.Generator().manual_seed(0), **kw))
        samples["generate"].append(sec)
        c0 = time.process_time()
        with kernel_sites(model):
            freeze = time.process_time() - c0
            frozen, sec = _cpu(lambda: model.generate(prompt, args.tokens,
                                                      generator=torch.Generator().manual_seed(0), **kw))
        samples["kernel"].append(sec)
    best = {k: round(min(v), 3) for k, v in {**evals, **samples}.items()}
    print(json.dumps({
        "tasks": len(TASKS), "pairs_per_task": args.n, "tokens_sampled": args.tokens, "threads": args.threads,
        "tasks_eval_cpu_seconds": {"plain": best["plain"], "fast": best["fast"]},
        "tasks_eval_speedup": round(best["plain"] / best["fast"], 2), "same_scores": same_scores,
        "sample_cpu_seconds": {"before": best["before"], "generate": best["generate"], "kernel": best["kernel"],
                               "kernel_freeze": round(freeze, 3)},
        "sample_speedup": round(best["before"] / best["generate"], 2),
        "same_tokens": bool(torch.equal(old, new) and torch.equal(new, frozen)),
        "load_average": [load, [round(x, 2) for x in os.getloadavg()]],
    }))


if __name__ == "__main__":
    main()
