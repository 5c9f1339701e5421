"""Execution-labelled preference pairs: sample several completions per task, run them, and prefer
a passing completion over a failing one, and among failures the one with the higher reward
(a wrong answer over a crash, a crash over a syntax error). Equal rewards make no pair; sandbox
failures (reward None) make none either. The output is the preference JSONL `align rm` reads:

    python -m domains.code.pairs --tasks easy --model smollm2-135m --samples 4 --out runs/code_pairs.jsonl
    align rm data=runs/code_pairs.jsonl model=minilm output_dir=runs/code_rm
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from align.types import PreferencePair, Prompt, RewardOutput


def rank_pairs(prompt: Prompt, completions: list[str], outputs: list[RewardOutput],
               max_pairs: int = 4) -> list[PreferencePair]:
    """Pairs for one task, largest reward gap first (pass-over-fail before fail-over-fail)."""
    seen: dict[str, RewardOutput] = {}
    for text, output in zip(completions, outputs):
        if output.reward is not None and text.strip() and text not in seen:
            seen[text] = output
    items = list(seen.items())
    candidates = []
    for chosen, good in items:
        for rejected, bad in items:
            if good.reward > bad.reward:
                pass_over_fail = good.parts.get("status") == "passed" and bad.parts.get("status") != "passed"
                candidates.append((pass_over_fail, good.reward - bad.reward, chosen, rejected, good, bad))
    candidates.sort(key=lambda c: (not c[0], -c[1]))
    pairs, used = [], Counter()
    for pass_over_fail, gap, chosen, rejected, good, bad in candidates:
        if len(pairs) >= max_pairs:
            break
        if used[chosen] >= 2 or used[rejected] >= 2:  # spread pairs over different completions
            continue
        used[chosen] += 1
        used[rejected] += 1
        pairs.append(PreferencePair(
            prompt=prompt.prompt, chosen=chosen, rejected=rejected, id=f"{prompt.id}#{len(pairs)}", margin=gap,
            source="code-execution",
            extra={"task_id": prompt.id, "chosen_status": good.parts.get("status"),
                   "rejected_status": bad.parts.get("status"), "pass_over_fail": pass_over_fail}))
    return pairs


def pair_row(pair: PreferencePair) -> dict:
    return {"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected, "id": pair.id,
            "margin": pair.margin, "source": pair.source, **pair.extra}


def make_pairs(domain, model_name: str, *, split: str = "train", samples: int = 4, temperature: float = 0.8,
               max_new_tokens: int = 192, limit: int = -1, max_pairs: int = 4, batch_size: int = 8,
               seed: int = 0) -> tuple[list[PreferencePair], dict]:
    """Sample `samples` completions per task of `domain` from `model_name`, run, and pair them."""
    from align.models import load_causal_lm, load_tokenizer
    from domains.code.evaluate import sample
    from domains.code.rewards import status_counts

    prompts = list(domain.prompts(split))
    prompts = prompts[:limit] if limit > 0 else prompts
    tokenizer = load_tokenizer(model_name, padding_side="left")
    model = load_causal_lm(model_name)
    generations = sample(model, tokenizer, prompts, num_samples=samples, temperature=temperature, top_p=0.95,
                         max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed)
    flat_prompts = [p for p, group in zip(prompts, generations) for _ in group]
    texts = [g.text for group in generations for g in group]
    outputs = domain.reward(flat_prompts, texts)
    pairs = []
    for index, prompt in enumerate(prompts):
        chunk = slice(index * samples, (index + 1) * samples)
        pairs += rank_pairs(prompt, texts[chunk], outputs[chunk], max_pairs)
    stats = {"tasks": len(prompts), "completions": len(texts), "pairs": len(pairs),
             "pairs_pass_over_fail": sum(1 for p in pairs if p.extra["pass_over_fail"]),
             "tasks_without_pairs": len(prompts) - len({p.extra["task_id"] for p in pairs}),
             **{f"status_{k}": v for k, v in status_counts(outputs).items()}}
    return pairs, stats


def write_pairs(pairs: list[PreferencePair], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        handle.writelines(json.dumps(pair_row(pair), ensure_ascii=False) + "\n" for pair in pairs)


def main(argv: list[str] | None = None) -> int:
    from domains.code.domain import CodeDomain

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="easy", help="easy, humaneval, humanevalplus, mbppplus or a JSONL path")
    parser.add_argument("--split", default="train")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--samples", type=int, default=4, help="completions sampled per task")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--max-new-tokens", type=int, default=192)
    parser.add_argument("--limit", type=int, default=-1, help="use at most this many tasks")
    parser.add_argument("--max-pairs", type=int, default=4, help="pairs kept per task")
    parser.add_argument("--reward", default="stepcoder", help="ranks failures: stepcoder, rltf or pass_rate")
    parser.add_argument("--prompt-style", default="chat", choices=["chat", "completion"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    domain = CodeDomain(tasks=args.tasks, reward=args.reward, prompt_style=args.prompt_style, seed=args.seed)
    pairs, stats = make_pairs(domain, args.model, split=args.split, samples=args.samples,
                              temperature=args.temperature, max_new_tokens=args.max_new_tokens, limit=args.limit,
                              max_pairs=args.max_pairs, seed=args.seed)
    write_pairs(pairs, args.out)
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
