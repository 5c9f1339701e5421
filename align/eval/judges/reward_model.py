"""The `rm` judge: a reward model scores both completions; the higher reward wins unless the two are
within the tie band."""
from __future__ import annotations

from typing import Any

from align.config import ConfigError
from align.eval.judges.base import Verdict, check_lengths, verdict_from_scores
from align.types import Prompt


class RewardModelJudge:
    """`model`: a saved reward model directory (or a loaded `RewardModel`); `head`: which head decides (name or
    index; the first by default); `tie_band`: |r_a - r_b| <= tie_band is a tie. The completions are scored
    as PPO scores them: the prompt rendered the way the RM was trained, then the completion."""

    name = "rm"

    def __init__(self, model: Any, tie_band: float = 0.0, head: str | int = 0, batch_size: int = 16,
                 max_length: int = 512):
        from align.models import RewardModel

        if tie_band < 0:
            raise ConfigError(f"judge_options.tie_band: expected a non-negative number, got {tie_band!r}")
        self.reward_model = model if isinstance(model, RewardModel) else RewardModel.from_pretrained(str(model))
        heads = self.reward_model.head_names
        if isinstance(head, str) and not head.lstrip("-").isdigit():
            if head not in heads:
                raise ConfigError(f"judge_options.head: {head!r} is not a head of this reward model ({heads})")
            self.head = heads.index(head)
        else:
            self.head = int(head)
            if not 0 <= self.head < len(heads):
                raise ConfigError(f"judge_options.head: index {self.head} out of range for heads {heads}")
        self.tie_band, self.batch_size, self.max_length = tie_band, batch_size, max_length

    def scores(self, prompts: list[Prompt], completions: list[str]) -> list[float]:
        """The chosen head's reward of each completion."""
        from align.models import score_texts
        from align.ppo.rollout import RewardSources

        texts = RewardSources(reward_model=self.reward_model).rm_texts(prompts, completions)
        return score_texts(self.reward_model, texts, self.batch_size, self.max_length)[:, self.head].tolist()

    def judge(self, prompts: list[Prompt], completions_a: list[str], completions_b: list[str]) -> list[Verdict]:
        check_lengths(prompts, completions_a, completions_b)
        # both sides in one scoring pass (score_texts batches by length)
        rewards = self.scores(list(prompts) * 2, list(completions_a) + list(completions_b))
        n = len(prompts)
        # identical texts tie whatever the band: batched in different padding they can score a few 1e-7 apart
        return [verdict_from_scores(rewards[i], rewards[n + i], self.tie_band if completions_a[i] != completions_b[i]
                                    else float("inf")) for i in range(n)]
