"""The two costs of a critic-free RL step on a CPU, each against the way it was done before, in one invocation:

- the update's forwards when a prompt has several samples (RLOO / GRPO groups): each distinct prompt run once with
  its KV cache indexed out to its samples (`align.ppo.rollout.shared_prompt_logits`), against every row run in full;
  timed as the no-grad forward of the old/reference log-probs and as the forward + backward of the update, on the
  code demo's shape (4 prompts x 8 sampled completions of up to 64 tokens, SmolLM2-135M). The log-probs of both
  paths are compared (largest absolute difference);
- sampling: inverse-CDF draws (`align.generation.sample_next_token`) against `torch.multinomial`, timed as the
  whole `generate` call that samples those 32 completions (same seed, same prompts).

Variants alternate over `--repeats` rounds so a busy neighbour slows both alike; medians count, the first round is
a warm-up and is left out.

    .venv/bin/python bench/rollout_step.py [--repeats 5]      -> bench/results/rollout_step.json
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.provenance import Run, headline


def multinomial_sampler(logits, temperature, top_p, generator=None, uniform=None):
    """The peer: softmax then torch.multinomial (no nucleus here: the bench samples with top_p = 1; it draws its own
    randomness, so `uniform` is not read)."""
    import torch

    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = (logits.float() / temperature).softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "rollout_step.json"))
    args = parser.parse_args()
    run = Run(__file__)

    import torch

    from align import generation
    from align.generation import generate
    from align.models import load_causal_lm, load_tokenizer
    from align.ppo import rollout
    from align.ppo.data import prompt_text
    from align.ppo.rollout import collate, response_logprobs
    from align.registry import get_domain
    from align.training.precision import mixed_precision

    precision = "bf16" if mixed_precision("auto") == "bf16" else "fp32"  # as `align ppo precision=auto` computes

    def computing():
        """The autocast `align ppo` runs its forwards under at this precision."""
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

    tokenizer = load_tokenizer(args.model, padding_side="left")
    model = load_causal_lm(args.model)  # fp32 weights, as the trained policy's
    tasks = get_domain("code", tasks="easy", prompt_style="chat", reward="stepcoder", tiers=["two-step"])
    texts = [prompt_text(tokenizer, p, "chat") for p in list(tasks.prompts("train"))[:args.prompts]]

    def sample(sampler) -> tuple[float, list]:
        original = generation.sample_next_token
        generation.sample_next_token = sampler
        try:
            started = time.perf_counter()
            with computing():
                out = generate(model, tokenizer, texts, max_new_tokens=args.max_new_tokens, temperature=1.0,
                               num_return_sequences=args.samples, batch_size=args.prompts * args.samples, seed=0)
            return time.perf_counter() - started, out
        finally:
            generation.sample_next_token = original

    _, generations = sample(generation.sample_next_token)
    batch = collate([g.prompt_ids for g in generations], [g.completion_ids for g in generations],
                    tokenizer.pad_token_id)
    mask = batch.response_mask

    def forward_seconds(shared: bool, with_grad: bool) -> tuple[float, torch.Tensor]:
        original = rollout.shared_prompt_rows
        if not shared:
            rollout.shared_prompt_rows = lambda model, batch: None  # every row runs its prompt itself
        try:
            model.train(with_grad)
            started = time.perf_counter()
            with torch.set_grad_enabled(with_grad), computing():
                logprobs = response_logprobs(model, batch)
            if with_grad:
                (logprobs * mask).sum().backward()
                model.zero_grad(set_to_none=True)
            return time.perf_counter() - started, logprobs.detach().float()
        finally:
            rollout.shared_prompt_rows = original
            model.eval()

    timings: dict[str, list[float]] = {name: [] for name in (
        "forward_shared", "forward_full", "update_shared", "update_full", "sample_inverse_cdf", "sample_multinomial")}
    difference = 0.0
    for repeat in range(args.repeats + 1):
        measured = {}
        for shared in (True, False):
            name = "shared" if shared else "full"
            measured[f"forward_{name}"], logprobs = forward_seconds(shared, with_grad=False)
            measured[f"update_{name}"], _ = forward_seconds(shared, with_grad=True)
            if shared:
                reference = logprobs
            else:
                difference = max(difference, float(((reference - logprobs).abs() * mask).max()))
        measured["sample_inverse_cdf"], _ = sample(generation.sample_next_token)
        measured["sample_multinomial"], _ = sample(multinomial_sampler)
        print(f"round {repeat}{' (warm-up)' if repeat == 0 else ''}: "
              + ", ".join(f"{k} {v:.2f} s" for k, v in measured.items()), flush=True)
        if repeat:
            for key, value in measured.items():
                timings[key].append(value)
    median = {key: statistics.median(values) for key, values in timings.items()}
    rows, width = batch.input_ids.shape
    distinct = len(texts)
    shape = (f"{args.prompts} prompts x {args.samples} samples, {rows} rows of {width} tokens "
             f"(prompt width {batch.prompt_width}), {args.model}, {precision}")
    result = {"seconds": median, "all_runs": timings, "settings": vars(args), "precision": precision,
              "rows": rows, "row_width": width, "prompt_width": batch.prompt_width, "distinct_prompts": distinct,
              "token_ratio": rows * width / (distinct * batch.prompt_width + rows * (width - batch.prompt_width)),
              "max_logprob_difference": difference, "response_tokens": int(mask.sum())}
    run.write(args.out, result, [
        headline(f"RL update forward+backward, prompts run once per group: {shape}", median["update_shared"],
                 "every row runs its prompt", median["update_full"], "s", higher_is_better=False,
                 note=f"largest log-prob difference {difference:.2g}"),
        headline(f"RL old/reference log-prob forward, prompts run once per group: {shape}", median["forward_shared"],
                 "every row runs its prompt", median["forward_full"], "s", higher_is_better=False),
        headline(f"sampling {rows} completions of up to {args.max_new_tokens} tokens, inverse-CDF draws",
                 median["sample_inverse_cdf"], "torch.multinomial", median["sample_multinomial"], "s",
                 higher_is_better=False)])
    print(f"update {median['update_full']:.2f} -> {median['update_shared']:.2f} s, forward {median['forward_full']:.2f}"
          f" -> {median['forward_shared']:.2f} s (tokens x{result['token_ratio']:.2f}; largest log-prob difference "
          f"{difference:.2g}); sampling {median['sample_multinomial']:.2f} -> {median['sample_inverse_cdf']:.2f} s"
          f" -> {args.out}")


if __name__ == "__main__":
    main()
