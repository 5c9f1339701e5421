"""Models: embedded defaults (offline), tokenizers, causal LMs and the reward model.

    resolve_model_path("smollm2-135m")          # embedded name, local dir or hub id -> local dir / id
    tokenizer = load_tokenizer("tiny-llama")    # pad token guaranteed
    policy = load_causal_lm("smollm2-135m")
    rm = load_reward_model("minilm", num_heads=2, head_names=["helpful", "harmless"])
    rm(input_ids, attention_mask).rewards       # [B, 2]
"""
from align.models.embedded import EMBEDDED_MODELS, cache_root, resolve_model_path
from align.models.loading import is_decoder, load_causal_lm, load_tokenizer
from align.models.reward import RewardModel, RewardModelOutput, load_reward_model, score_texts
from align.models.tiny import create_tiny_model

__all__ = ["EMBEDDED_MODELS", "RewardModel", "RewardModelOutput", "cache_root", "create_tiny_model", "is_decoder",
           "load_causal_lm", "load_reward_model", "load_tokenizer", "resolve_model_path", "score_texts"]
