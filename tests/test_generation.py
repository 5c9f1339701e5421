"""align.generation: batched left-padded sampling with KV cache, stop strings, EOS, top-p."""
from __future__ import annotations

import copy

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from align.generation import format_prompt, generate, sample_next_token

pytestmark = pytest.mark.usefixtures("one_thread")


PROMPTS = ["hello", "a much longer prompt than the others", "x", "def f(a, b):\n    return"]


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (256 byte symbols + 3 specials) built in memory: no download."""
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


@pytest.fixture(scope="module")
def policy():
    tokenizer = byte_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return LlamaForCausalLM(config).eval(), tokenizer


def reference_greedy(model, tokenizer, prompt: str, n: int) -> list[int]:
    """One prompt at a time, no padding, through transformers' own generate()."""
    ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                         pad_token_id=0, eos_token_id=None)
    return out[0, ids.shape[1]:].tolist()


def test_batched_left_padded_greedy_matches_one_prompt_at_a_time(policy):
    model, tokenizer = policy
    generations = generate(model, tokenizer, PROMPTS, max_new_tokens=12, batch_size=4)
    for prompt, generation in zip(PROMPTS, generations):
        assert generation.completion_ids == reference_greedy(model, tokenizer, prompt, 12)
        assert generation.prompt_ids == tokenizer(prompt)["input_ids"]
        assert generation.finish_reason == "length"
        assert generation.text == tokenizer.decode(generation.completion_ids, skip_special_tokens=True)


def test_output_order_is_prompt_order_times_samples(policy):
    model, tokenizer = policy
    generations = generate(model, tokenizer, PROMPTS, max_new_tokens=3, num_return_sequences=2, batch_size=3,
                           temperature=1.0, seed=0)
    assert [g.prompt_index for g in generations] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [g.prompt_ids for g in generations[::2]] == [tokenizer(p)["input_ids"] for p in PROMPTS]


def test_stop_string_cuts_text_and_keeps_other_rows_going(policy):
    model, tokenizer = policy
    free = generate(model, tokenizer, PROMPTS, max_new_tokens=12)
    # a stop string taken from the middle of prompt 0's greedy completion: that row must stop there,
    # the rows that do not contain it must continue exactly as before (the finished row leaves the cache)
    stop = free[0].text[3:5]
    stopped = generate(model, tokenizer, PROMPTS, max_new_tokens=12, stop=[stop])
    first = stopped[0]
    assert first.finish_reason == "stop" and first.stop == stop
    assert first.text == free[0].text[:free[0].text.index(stop)]
    assert free[0].completion_ids[:len(first.completion_ids)] == first.completion_ids
    assert stop in tokenizer.decode(first.completion_ids) and len(first.completion_ids) < 12
    for before, after in zip(free[1:], stopped[1:]):
        if stop not in before.text:
            assert after.completion_ids == before.completion_ids and after.finish_reason == "length"


def test_prompt_stops_apply_to_their_own_prompt_only(policy):
    model, tokenizer = policy
    free = generate(model, tokenizer, PROMPTS[:2], max_new_tokens=12)
    stop = free[0].text[2:4]
    out = generate(model, tokenizer, PROMPTS[:2], max_new_tokens=12, prompt_stops=[[stop], []])
    assert out[0].finish_reason == "stop" and out[0].text == free[0].text[:free[0].text.index(stop)]
    assert out[1].completion_ids == free[1].completion_ids and out[1].finish_reason == "length"
    with pytest.raises(ValueError, match="prompt_stops"):
        generate(model, tokenizer, PROMPTS[:2], max_new_tokens=2, prompt_stops=[[stop]])


def test_eos_ends_a_completion_and_is_kept_in_the_ids(policy):
    model, tokenizer = policy
    greedy = generate(model, tokenizer, PROMPTS[:2], max_new_tokens=6)
    # declare prompt 0's third greedy token to be EOS: generation must stop right after emitting it
    eos = greedy[0].completion_ids[2]
    model.generation_config.eos_token_id = eos
    try:
        out = generate(model, tokenizer, PROMPTS[:2], max_new_tokens=6)
    finally:
        model.generation_config.eos_token_id = 2
    assert out[0].finish_reason == "eos" and out[0].completion_ids == greedy[0].completion_ids[:3]
    if eos not in greedy[1].completion_ids:
        assert out[1].completion_ids == greedy[1].completion_ids


def test_sampling_is_reproducible_with_a_seed(policy):
    model, tokenizer = policy
    a = generate(model, tokenizer, PROMPTS, max_new_tokens=8, temperature=1.0, seed=3)
    b = generate(model, tokenizer, PROMPTS, max_new_tokens=8, temperature=1.0, seed=3)
    c = generate(model, tokenizer, PROMPTS, max_new_tokens=8, temperature=1.0, seed=4)
    assert [g.completion_ids for g in a] == [g.completion_ids for g in b]
    assert [g.completion_ids for g in a] != [g.completion_ids for g in c]
    tiny_nucleus = generate(model, tokenizer, PROMPTS, max_new_tokens=8, temperature=1.0, top_p=1e-6, seed=3)
    greedy = generate(model, tokenizer, PROMPTS, max_new_tokens=8)
    assert [g.completion_ids for g in tiny_nucleus] == [g.completion_ids for g in greedy]


def test_a_seed_gives_each_completion_its_own_random_stream(policy):
    """Common random numbers: one seed gives completion j the same draws whatever the batching, so a slightly
    changed model sampled with that seed mostly writes the same tokens (a paired before/after evaluation then
    compares models, not dice), while another seed shares almost none (~1 in 259 by chance)."""
    model, tokenizer = policy
    sample = {"max_new_tokens": 12, "temperature": 1.0, "num_return_sequences": 2}
    one_by_one = generate(model, tokenizer, PROMPTS, batch_size=1, seed=5, **sample)
    batched = generate(model, tokenizer, PROMPTS, batch_size=8, seed=5, **sample)
    assert [g.completion_ids for g in one_by_one] == [g.completion_ids for g in batched]

    nudged = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in nudged.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1)) * 1e-3)
    ids = torch.tensor([tokenizer(PROMPTS[0])["input_ids"]])
    assert not torch.equal(model(ids).logits, nudged(ids).logits)

    def same_tokens(other):
        return sum(a == b for x, y in zip(batched, other) for a, b in zip(x.completion_ids, y.completion_ids))

    tokens = sum(len(g.completion_ids) for g in batched)
    assert same_tokens(generate(nudged, tokenizer, PROMPTS, batch_size=8, seed=5, **sample)) > tokens / 2
    assert same_tokens(generate(nudged, tokenizer, PROMPTS, batch_size=8, seed=6, **sample)) < tokens / 10


def test_top_p_keeps_the_smallest_set_reaching_p():
    # probabilities 0.5, 0.3, 0.2: top_p=0.6 keeps tokens {0, 1}; top_p=0.5 keeps {0}; 1.0 keeps all
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]])).repeat(4000, 1)
    generator = torch.Generator().manual_seed(0)
    assert set(sample_next_token(logits, 1.0, 0.6, generator).tolist()) == {1, 2}
    assert set(sample_next_token(logits, 1.0, 0.5, generator).tolist()) == {1}
    counts = torch.bincount(sample_next_token(logits, 1.0, 1.0, generator), minlength=3).float() / 4000
    assert torch.allclose(counts, torch.tensor([0.2, 0.5, 0.3]), atol=0.03)
    assert sample_next_token(logits[:2], 0.0, 1.0).tolist() == [1, 1]
    # tokens of probability 0 at either end of the vocabulary are never drawn
    edges = torch.tensor([[float("-inf"), 0.0, 0.0, float("-inf")]]).repeat(4000, 1)
    assert set(sample_next_token(edges, 1.0, 1.0, generator).tolist()) == {1, 2}


def test_model_mode_is_restored_and_long_prompts_keep_their_end(policy):
    model, tokenizer = policy
    model.train()
    out = generate(model, tokenizer, ["0123456789"], max_new_tokens=2, max_prompt_length=4)
    assert model.training
    model.eval()
    assert out[0].prompt_ids == tokenizer("6789")["input_ids"]


def test_format_prompt_chat_template_and_plain_formats(policy):
    _, tokenizer = policy
    assert format_prompt(tokenizer, "Hi?") == "Human: Hi?\n\nAssistant:"
    assert format_prompt(tokenizer, "def f():", chat=False) == "def f():"
    dialogue = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                {"role": "user", "content": "c"}]
    assert format_prompt(tokenizer, dialogue) == "Human: a\n\nAssistant: b\n\nHuman: c\n\nAssistant:"
    chat = byte_tokenizer()
    chat.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
                          "{% if add_generation_prompt %}<assistant>{% endif %}")
    assert format_prompt(chat, "Hi?") == "<user>Hi?<assistant>"
    assert format_prompt(chat, "Hi?", chat=False) == "Hi?"


def test_the_kv_cache_goes_by_the_name_the_models_forward_takes(policy):
    """transformers 5 takes `cache=` (`past_key_values=` is deprecated there); older versions only the latter."""
    from align.generation import cache_argument

    class Older(torch.nn.Module):
        def forward(self, input_ids=None, attention_mask=None, past_key_values=None, use_cache=None):
            return None

    class Wrapper(torch.nn.Module):  # the shape of a PEFT model: **kwargs, the real forward on the base model
        def __init__(self, base):
            super().__init__()
            self.base = base

        def get_base_model(self):
            return self.base

        def forward(self, *args, **kwargs):
            return self.base(*args, **kwargs)

    import inspect

    name = cache_argument(policy[0])
    assert name in inspect.signature(policy[0].forward).parameters and cache_argument(Wrapper(policy[0])) == name
    assert cache_argument(Older()) == "past_key_values" and cache_argument(Wrapper(Older())) == "past_key_values"


def test_generation_projects_only_the_last_position_and_samples_the_same(policy):
    """The prompt's vocabulary projection is skipped (`logits_to_keep=1`) and greedy output does not change."""
    from align.generation import generate, last_logits_only

    model, tokenizer = policy
    seen = []

    class FullLogits(torch.nn.Module):  # a forward without logits_to_keep: every position is projected
        def __init__(self, base):
            super().__init__()
            self.base, self.generation_config, self.config = base, base.generation_config, base.config

        def forward(self, input_ids=None, attention_mask=None, position_ids=None, use_cache=None, cache=None,
                    past_key_values=None):
            kwargs = {"cache": cache} if cache is not None else {}
            out = self.base(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=use_cache, **kwargs)
            seen.append(out.logits.shape[1])
            return out

    assert last_logits_only(model) == {"logits_to_keep": 1} and last_logits_only(FullLogits(model)) == {}
    prompts = ["Hello there, how", "The capital of"]
    fast = generate(model, tokenizer, prompts, max_new_tokens=6)
    full = generate(FullLogits(model), tokenizer, prompts, max_new_tokens=6)
    assert seen[0] > 1  # the full path did project the whole prompt
    assert [g.completion_ids for g in fast] == [g.completion_ids for g in full]
