"""Benchmark: which embedded policy translates? chrF of candidate policies on the ALMA zh→en and en→zh test sets.

Each candidate translates the first N test sentences of each direction greedily with the domain's prompt (the
ALMA completion prompt, ending at the first line break; `:chat` wraps it in the model's chat template instead).
Reported per candidate and direction: corpus chrF and BLEU (sacrebleu; `zh` tokeniser for Chinese), and the
share of outputs the translation guards reject (wrong language, copy, length ratio, ...). The best candidate
is compared with the others by a paired bootstrap of corpus chrF on the same sentences. Results are written
after every (candidate, direction), so a stopped run keeps what it measured.

    python bench/translation_policy.py --sentences 40
    python bench/translation_policy.py --models smollm2-135m gemma3-270m --directions zh-en
    python bench/translation_policy.py --models gemma3-270m runs/translation-sft-gemma3/model \
        runs/translation-ppo-gemma3/model --baseline gemma3-270m runs/translation-sft-gemma3/model --sentences 200
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.provenance import Run, headline


def translate(model_name: str, prompts, batch_size: int, max_new_tokens: int) -> tuple[list[str], float]:
    """Greedy translations of `prompts` (domain `Prompt`s) by `model_name` (`name` or `name:chat`)."""
    import torch

    from align.generation import format_prompt, generate
    from align.models import load_causal_lm, load_tokenizer

    name, _, style = model_name.partition(":")
    tokenizer = load_tokenizer(name, padding_side="left")
    model = load_causal_lm(name, dtype=torch.float32).eval()
    texts = [format_prompt(tokenizer, p.prompt, chat=style == "chat") for p in prompts]
    start = time.perf_counter()
    outputs = generate(model, tokenizer, texts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                       prompt_stops=[list(p.meta.get("stop") or []) for p in prompts])
    return [o.text.strip() for o in outputs], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "smollm2-135m:chat", "gemma3-270m"])
    parser.add_argument("--directions", nargs="+", default=["zh-en", "en-zh"])
    parser.add_argument("--sentences", type=int, default=40, help="first N sentences of each direction of the ALMA split (--split)")
    parser.add_argument("--split", default="test", help="ALMA split the sentences come from")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--baseline", nargs="+", default=None, help="compare every model listed after a baseline "
                        "in --models with it (e.g. the base and the SFT policy: base->SFT, base->PPO, SFT->PPO) "
                        "instead of the best with the others")
    parser.add_argument("--name", default="translation_policy")
    args = parser.parse_args()
    if any(b not in args.models for b in args.baseline or []):
        parser.error(f"--baseline {args.baseline}: each baseline must also be one of --models {args.models}")
    run = Run(__file__)

    from domains.translation.domain import TranslationDomain
    from domains.translation.guards import GuardConfig, run_guards
    from domains.translation.metrics import corpus_scores, paired_bootstrap

    out = Path(__file__).parent / "results" / f"{args.name}.json"
    result = {"command": "python " + " ".join([sys.argv[0], *sys.argv[1:]]), "sentences": args.sentences,
              "candidates": {}, "outputs": {}}
    guards = GuardConfig()
    for direction in args.directions:
        domain = TranslationDomain(direction=direction)
        prompts = domain.prompts(args.split)[: args.sentences]
        references = [p.reference for p in prompts]
        for model_name in args.models:
            hypotheses, seconds = translate(model_name, prompts, args.batch_size, args.max_new_tokens)
            scores = corpus_scores(hypotheses, references, domain.tgt_lang)
            rejected = sum(any(not v.passed for v in run_guards(h, p.meta["source"], guards, domain.src_lang,
                                                                 domain.tgt_lang, p.reference).values())
                           for h, p in zip(hypotheses, prompts))
            result["candidates"].setdefault(model_name, {})[direction] = {
                "chrf": scores["chrf"], "bleu": scores["bleu"], "guard_rejected_share": rejected / len(prompts),
                "generate_seconds": seconds}
            result["outputs"].setdefault(model_name, {})[direction] = hypotheses
            out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")  # partial results survive a stop
            print(f"  {model_name} {direction}: chrF {scores['chrf']:.1f} BLEU {scores['bleu']:.1f} "
                  f"guards reject {rejected}/{len(prompts)} ({seconds:.0f} s)", flush=True)
        # the best candidate (or each model against --baseline) on the same sentences: paired bootstrap
        ranked = sorted(args.models, key=lambda m: -result["candidates"][m][direction]["chrf"])
        comparisons = ([(m, b) for b in args.baseline for m in args.models[args.models.index(b) + 1:]]
                       if args.baseline else [(ranked[0], other) for other in ranked[1:]])
        for model_name, other in comparisons:
            result["candidates"][model_name][direction][f"vs_{other}"] = paired_bootstrap(
                result["outputs"][other][direction], result["outputs"][model_name][direction], references,
                domain.tgt_lang)
        result[f"best_{direction}"] = ranked[0]
    headlines = [headline(f"chrF of {model} over {other}, first {args.sentences} ALMA {args.split} sentences {d} "
                          f"(paired-bootstrap 95% CI of the change {c['low']:+.1f}..{c['high']:+.1f})",
                          c["after"], other, c["before"], "chrF")
                 for d in args.directions for model in args.models
                 for other, c in [(k[3:], v) for k, v in result["candidates"][model][d].items() if k.startswith("vs_")]]
    run.write(out, {k: v for k, v in result.items() if k != "command"}, headlines)
    line = "; ".join(f"{d}: " + ", ".join(f"{m} {result['candidates'][m][d]['chrf']:.1f}" for m in args.models)
                     + f" (best {result[f'best_{d}']})" for d in args.directions)
    print(f"translation_policy [chrF, first {args.sentences} ALMA {args.split} sentences] {line} -> {out}")


if __name__ == "__main__":
    main()
