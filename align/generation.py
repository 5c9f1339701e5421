"""Batched sampling from a causal LM: left padding, KV cache, temperature / top-p, stop strings.

One loop, written out so that a reader sees every step (and so PPO rollouts cost no more than
they must): tokenize each prompt, pad on the LEFT so every prompt ends at the same column,
run the prompt once to fill the KV cache, then feed one token per step. Rows that finish
(EOS, a stop string, or `max_new_tokens`) are dropped from the batch and its cache, so long
and short completions do not pay for each other.

`Generation.completion_ids` is exactly what the policy produced, including the EOS token or
the token that completed a stop string (PPO trains on these tokens and must learn to stop);
`Generation.text` is the decoded completion without special tokens, cut before the stop string.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from align.data import render_prompt
from align.types import PromptText


@dataclass
class Generation:
    """One sampled completion of one prompt."""

    text: str
    """The decoded completion (special tokens removed, cut before the first stop string)."""
    prompt_ids: list[int]
    """The prompt's token ids as the model saw them (without padding)."""
    completion_ids: list[int]
    """The sampled token ids, including a final EOS or the token that completed a stop string."""
    finish_reason: str
    """`eos`, `stop` (a stop string appeared) or `length` (reached `max_new_tokens`)."""
    prompt_index: int = 0
    """Index of the prompt (in the `prompts` argument) this completion answers."""
    stop: str | None = field(default=None)
    """The stop string that ended the completion, if any."""


# --------------------------------------------------------------------------- prompts


def format_prompt(tokenizer, prompt: PromptText, chat: bool = True) -> str:
    """The text to generate from. With `chat` (dialogue): the tokenizer's chat template with the
    assistant turn opened, or without a template the `Human: ...\n\nAssistant:` turns the reward
    models are trained on (`align.data.render_prompt`). Without `chat` (code completion) a text
    prompt is used unchanged."""
    if isinstance(prompt, str) and not chat:
        return prompt
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if chat and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return render_prompt(messages)


def encode_prompt(tokenizer, text: str, max_prompt_length: int | None = None) -> list[int]:
    """Token ids of a prompt. BOS is added the tokenizer's way unless the text already starts with
    it (chat templates often write it); an over-long prompt keeps its end (the question)."""
    bos = getattr(tokenizer, "bos_token", None)
    add_special = not (bos and text.startswith(bos))
    ids = tokenizer(text, add_special_tokens=add_special)["input_ids"]
    if max_prompt_length is not None and len(ids) > max_prompt_length:
        ids = ids[len(ids) - max_prompt_length:]
    return list(ids)


# --------------------------------------------------------------------------- sampling


def sample_next_token(logits: torch.Tensor, temperature: float, top_p: float,
                      generator: torch.Generator | None = None, uniform: torch.Tensor | None = None) -> torch.Tensor:
    """Next token per row from `logits` [B, V]: argmax when `temperature` is 0, else a sample from
    softmax(logits / temperature) restricted to the smallest set of tokens whose probability
    reaches `top_p` (nucleus sampling, Holtzman et al. 2020). `uniform` [B] (in [0, 1)) gives each row its
    draw; without it the draws come from `generator` (or the global RNG)."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_p < 1.0:
        sorted_logits, sorted_index = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # drop a token when the tokens ranked above it already reach top_p (the top token always stays)
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= top_p
        drop = drop_sorted.scatter(1, sorted_index, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    # inverse-CDF sampling, one uniform per row: torch.multinomial takes ~40x longer on a CPU for a 49k vocabulary
    # (32 ms a call at batch 32, a sixth of SmolLM2's decoding time); `right=True` never picks a zero-probability token
    cumulative = logits.softmax(dim=-1).double().cumsum(dim=-1)
    if uniform is None:
        uniform = torch.rand(len(logits), generator=generator, device=logits.device, dtype=torch.float64)
    picked = torch.searchsorted(cumulative, uniform.to(cumulative).unsqueeze(1) * cumulative[:, -1:],
                                right=True).squeeze(1)
    return picked.clamp_(max=logits.shape[-1] - 1)


def _left_pad(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row):] = 1
    return ids.to(device), mask.to(device)


def _eos_ids(model, tokenizer) -> set[int]:
    ids = set()
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if value is not None:
            ids.update(value if isinstance(value, (list, tuple)) else [value])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _find_stop(text: str, stop: list[str]) -> tuple[int, str] | None:
    """Earliest occurrence of any stop string in `text`: (char index, the stop string)."""
    best = None
    for s in stop:
        at = text.find(s)
        if at >= 0 and (best is None or at < best[0]):
            best = (at, s)
    return best


def _forward_parameters(model) -> set[str]:
    """The keyword names the model's forward takes (a DDP or PEFT wrapper takes **kwargs: its model's)."""
    base = getattr(model, "module", model)
    base = base.get_base_model() if hasattr(base, "get_base_model") else base
    return set(inspect.signature(base.forward).parameters)


def cache_argument(model) -> str:
    """The name a model's forward takes its KV cache by: `cache` in transformers 5 (`past_key_values` there is
    deprecated, to be removed in 5.40), `past_key_values` before. The output attribute has the same name."""
    return "cache" if "cache" in _forward_parameters(model) else "past_key_values"


def keep_logits(model, keep: int | torch.Tensor) -> dict:
    """`logits_to_keep=keep` when the model's forward takes it (an int: the last `keep` positions; a 1-D tensor:
    these positions), else nothing: the vocabulary projection is skipped where no one reads its logits."""
    return {"logits_to_keep": keep} if "logits_to_keep" in _forward_parameters(model) else {}


def last_logits_only(model) -> dict:
    """Sampling reads only the last position: the prompt's full vocabulary projection is a quarter of a 135M
    model's prefill."""
    return keep_logits(model, 1)


@torch.no_grad()  # not inference_mode: there autocast cannot cache its bf16 copies of fp32 weights and recasts every
# weight at every token (half of SmolLM2-135M's decode time in bf16 on a CPU)
def _generate_batch(model, tokenizer, rows: list[list[int]], *, max_new_tokens: int, temperature: float,
                    top_p: float, stops: list[list[str]], eos_ids: set[int], pad_id: int,
                    uniforms: torch.Tensor | None) -> list[tuple[list[int], str, str | None]]:
    """Complete left-padded `rows` (row i stops at any of `stops[i]`, and draws its t-th token with
    `uniforms[i, t]` when given); returns (completion ids, finish reason, stop string) per row."""
    device = next(model.parameters()).device
    input_ids, attention_mask = _left_pad(rows, pad_id, device)
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    completions: list[list[int]] = [[] for _ in rows]
    results: list[tuple[list[int], str, str | None] | None] = [None] * len(rows)
    active = torch.arange(len(rows), device=device)  # which original rows are still in the batch
    eos = torch.tensor(sorted(eos_ids), device=device, dtype=torch.long)
    cache, cache_key, keep_logits = None, cache_argument(model), last_logits_only(model)
    for step in range(max_new_tokens):
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                    use_cache=True, **{cache_key: cache}, **keep_logits)
        cache = getattr(out, cache_key)
        next_tokens = sample_next_token(out.logits[:, -1, :], temperature, top_p,
                                        uniform=None if uniforms is None else uniforms[active, step])
        finished_eos = torch.isin(next_tokens, eos) if len(eos) else torch.zeros_like(next_tokens, dtype=torch.bool)
        keep = []
        for j, (row, token) in enumerate(zip(active.tolist(), next_tokens.tolist())):
            completions[row].append(token)
            if finished_eos[j]:
                results[row] = (completions[row], "eos", None)
                continue
            if stops[row]:
                # decode only a tail long enough to contain any stop string that ends in this token
                longest = max(len(s) for s in stops[row])
                found = _find_stop(tokenizer.decode(completions[row][-(longest + 4):], skip_special_tokens=True),
                                   stops[row])
                if found is not None:
                    results[row] = (completions[row], "stop", found[1])
                    continue
            keep.append(j)
        if not keep:
            break
        keep_index = torch.tensor(keep, device=device)
        if len(keep) < len(active):
            cache.batch_select_indices(keep_index)
            attention_mask = attention_mask[keep_index]
            position_ids = position_ids[keep_index]
            active = active[keep_index]
            next_tokens = next_tokens[keep_index]
        input_ids = next_tokens.unsqueeze(1)
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(keep), 1))], dim=1)
        position_ids = position_ids[:, -1:] + 1
    for row in range(len(rows)):
        if results[row] is None:
            results[row] = (completions[row], "length", None)
    return results  # type: ignore[return-value]


def generate(model, tokenizer, prompts: list[str], *, max_new_tokens: int = 128, temperature: float = 0.0,
             top_p: float = 1.0, stop: list[str] | None = None, num_return_sequences: int = 1,
             batch_size: int = 8, seed: int | None = None, progress: bool = False,
             max_prompt_length: int | None = None, prompt_stops: list[list[str]] | None = None) -> list[Generation]:
    """Complete every prompt (already formatted text, see `format_prompt`).

    Returns `len(prompts) * num_return_sequences` generations in prompt order (the samples of a
    prompt are adjacent). Temperature 0 is greedy. `seed` makes sampling reproducible on its own and gives
    completion j its own stream of uniforms, drawn up front whatever the batching: two models sampled with one
    seed share their random numbers completion by completion, so where their next-token distributions agree
    they write the same text and a paired before/after comparison sees the models' difference, not the dice
    (common random numbers). Without `seed` the global torch RNG is used (so a seeded training run stays
    reproducible). The model runs in eval mode without gradients and is put back in its previous mode
    afterwards. `prompt_stops[i]` adds stop strings for prompt i only (e.g. a task's own end markers).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: expected a positive number, got {max_new_tokens!r}")
    if num_return_sequences < 1 or batch_size < 1:
        raise ValueError("num_return_sequences and batch_size must be positive")
    stop = [s for s in (stop or []) if s]
    if prompt_stops is not None and len(prompt_stops) != len(prompts):
        raise ValueError(f"prompt_stops: {len(prompt_stops)} lists for {len(prompts)} prompts")
    row_stops = [stop + [s for s in (prompt_stops[i] if prompt_stops else []) if s and s not in stop]
                 for i in range(len(prompts))]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        pad_id = 0  # padded positions are masked out; any id works
    eos_ids = _eos_ids(model, tokenizer)
    device = next(model.parameters()).device
    encoded = [encode_prompt(tokenizer, p, max_prompt_length) for p in prompts]
    jobs = [(i, k) for i in range(len(prompts)) for k in range(num_return_sequences)]
    uniforms = None
    if seed is not None and temperature > 0:
        generator = torch.Generator(device=device).manual_seed(seed)
        uniforms = torch.rand((len(jobs), max_new_tokens), generator=generator, device=device, dtype=torch.float64)
    # batch prompts of similar length together (less padding), then restore the caller's order
    order = sorted(range(len(jobs)), key=lambda j: len(encoded[jobs[j][0]]))
    outputs: list[Generation | None] = [None] * len(jobs)
    was_training = model.training
    model.eval()
    try:
        for start in tqdm(range(0, len(order), batch_size), desc="generate", disable=not progress,
                          dynamic_ncols=True):
            chunk = order[start:start + batch_size]
            rows = [encoded[jobs[j][0]] for j in chunk]
            results = _generate_batch(model, tokenizer, rows, max_new_tokens=max_new_tokens,
                                      temperature=temperature, top_p=top_p,
                                      stops=[row_stops[jobs[j][0]] for j in chunk], eos_ids=eos_ids,
                                      pad_id=pad_id,
                                      uniforms=None if uniforms is None else uniforms[chunk])
            for j, (ids, reason, stop_string) in zip(chunk, results):
                text = tokenizer.decode(ids, skip_special_tokens=True)
                if reason == "stop":
                    found = _find_stop(text, row_stops[jobs[j][0]])
                    text = text[:found[0]] if found else text
                outputs[j] = Generation(text=text, prompt_ids=list(encoded[jobs[j][0]]), completion_ids=ids,
                                        finish_reason=reason, prompt_index=jobs[j][0], stop=stop_string)
    finally:
        model.train(was_training)
    return outputs  # type: ignore[return-value]
