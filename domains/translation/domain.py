"""`TranslationDomain`: MQM preference pairs, parallel-text prompts, and the gated translation reward."""
from __future__ import annotations

import dataclasses
import itertools
import random
from collections import Counter
from pathlib import Path
from typing import Any

from align.config import ConfigError, coerce
from align.data import DATA_DIR_ENV, data_dirs, in_test_split
from align.types import PreferencePair, Prompt, RewardOutput
from domains.translation import mqm
from domains.translation.embedding_rm import EmbeddingRewardModel, embedding_rm_backbone, is_embedding_rm
from domains.translation.metrics import SENTENCE_METRICS
from domains.translation.mqm import REFERENCE_SYSTEM, reference_translations
from domains.translation.parallel import (
    format_prompt,
    load_user_preferences,
    make_prompt,
    parallel_split,
    parse_direction,
    reward_model_prompt,
)
from domains.translation.reward import (
    HeadStats,
    RewardConfig,
    measure_head_stats,
    prompt_fields,
    translation_reward,
)

MQM_FILE = Path("mqm-ted-zhen") / "mqm_ted_zhen.tsv.gz"
ALMA_DIR = Path("alma-zhen")


def _reward_config(options: dict | RewardConfig | None) -> RewardConfig:
    if isinstance(options, RewardConfig):
        return options
    config = RewardConfig()
    for key, value in (options or {}).items():
        if key == "guards" and isinstance(value, dict):
            for guard_key, guard_value in value.items():
                if not hasattr(config.guards, guard_key):
                    raise ConfigError(f"reward.guards.{guard_key}: unknown key")
                setattr(config.guards, guard_key, guard_value)
        elif not hasattr(config, key):
            raise ConfigError(f"reward.{key}: unknown key; known: {', '.join(vars(config))}")
        else:
            setattr(config, key, coerce(f"reward.{key}", value, type(getattr(config, key))))
    config.validate()
    return config


class TranslationDomain:
    """Translation preferences (faithfulness / expressiveness / elegance) and a reward that resists gaming.

    Data: `data_dir=`, else `$ALIGN_DATA_DIR/translation`, else `<checkout>/../shared/data/translation`
    (MQM annotations in `mqm-ted-zhen/`, parallel text in `alma-zhen/`). `data=` replaces the MQM
    pairs with a user's preference file (JSONL; see `parallel.USER_FORMAT`)."""

    name = "translation"

    def __init__(self, data_dir: str | None = None, min_gap: float = 1.0, direction: str = "zh-en",
                 reward_model: str | None = None, data: str | None = None, test_fraction: float = 0.2,
                 test_docs: list[str] | None = None, seed: int = 0, max_pairs: int = -1, max_eval_pairs: int = -1,
                 aspects: list[str] | None = None, exclude_systems: list[str] | None = None, strict: bool = False,
                 reward: dict | RewardConfig | None = None, comet_model: str | None = None, batch_size: int = 32,
                 max_length: int = 256, rm_reference: bool = False, exclude_docs: list[str] | None = None,
                 synthetic_pairs: int = 0):
        # `both`: parallel-text prompts in both directions of the ALMA pair (one policy that translates either
        # way); preference data stays zh-en, the direction of the MQM annotations
        self.directions = [("zh", "en"), ("en", "zh")] if direction == "both" else [parse_direction(direction)]
        self.src_lang, self.tgt_lang = self.directions[0]
        if min_gap < 0:
            raise ConfigError(f"domain_options.min_gap: expected a non-negative number, got {min_gap!r}")
        self.aspects = tuple(aspects or ("overall",) + mqm.ASPECTS)
        unknown = sorted(set(self.aspects) - {"overall", *mqm.ASPECTS})
        if unknown:
            raise ConfigError(f"domain_options.aspects: unknown aspects {unknown}")
        self.data_dir, self.min_gap, self.direction, self.data = data_dir, min_gap, direction, data
        self.test_fraction, self.test_docs, self.seed = test_fraction, test_docs, seed
        self.max_pairs, self.max_eval_pairs = max_pairs, max_eval_pairs  # caps on the train / test pairs
        self.exclude_systems, self.strict = tuple(exclude_systems or ()), strict
        self.reward_config = _reward_config(reward)
        self.reward_model_path, self.comet_model_path = reward_model, comet_model
        self.batch_size, self.max_length = batch_size, max_length
        # the reward model reads the human reference too (train pairs, evaluation and reward alike)
        self.rm_reference = rm_reference
        # MQM documents left out of both splits (to validate on a training document with the test one unseen)
        self.exclude_docs = tuple(exclude_docs or ())
        if synthetic_pairs < 0:
            raise ConfigError(f"domain_options.synthetic_pairs: expected a count >= 0, got {synthetic_pairs!r}")
        self.synthetic_pairs = synthetic_pairs  # major-error pairs from ALMA train text added to the train split
        self._skipped: dict[str, Counter] = {}  # per data source, so reading a split twice counts once
        self._scores: list[mqm.SegmentScore] | None = None
        self._reward_model = None
        self._device, self._dtype = None, None  # where the reward model scores (`place`); default CPU, fp32
        self._head_stats: HeadStats | None = None
        self._comet = None

    # ------------------------------------------------------------------ data
    @property
    def skipped(self) -> Counter:
        """Rows and candidate pairs left out so far, by reason (bad MQM rows, identical translations, train
        translations of sources that also occur in the test documents, bad rows of a user file)."""
        return sum(self._skipped.values(), Counter())

    def resolve_data_dir(self) -> Path:
        candidates = [Path(self.data_dir)] if self.data_dir else data_dirs("translation")
        for candidate in candidates:
            if (candidate / MQM_FILE).is_file() or (candidate / ALMA_DIR).is_dir():
                return candidate
        raise FileNotFoundError(
            "translation data not found; looked in " + ", ".join(str(c) for c in candidates)
            + f" for {MQM_FILE} and {ALMA_DIR}/. Pass domain_options.data_dir=DIR or set ${DATA_DIR_ENV}.")

    def segment_scores(self) -> list[mqm.SegmentScore]:
        """Every MQM-scored translation (cached)."""
        if self._scores is None:
            if (self.src_lang, self.tgt_lang) != ("zh", "en"):
                raise ValueError(f"the MQM annotations are zh-en; direction={self.direction} has no MQM pairs "
                                 "(pass domain_options.data=YOUR_PAIRS.jsonl)")
            path = self.resolve_data_dir() / MQM_FILE
            if not path.is_file():
                raise FileNotFoundError(f"MQM annotations not found: {path}")
            self._scores, skipped = mqm.load_mqm(path, strict=self.strict)
            self._skipped["mqm"] = skipped
        return self._scores

    def split_scores(self, split: str) -> list[mqm.SegmentScore]:
        """The scored translations of the train or test documents."""
        if split not in ("train", "test"):
            raise ValueError(f"translation preference splits are train and test, got {split!r}")
        scores = [s for s in self.segment_scores() if s.doc not in self.exclude_docs]
        train_docs, test_docs = mqm.split_documents(scores, self.test_fraction, self.seed, self.test_docs)
        return [s for s in scores if s.doc in (train_docs if split == "train" else test_docs)]

    def preferences(self, split: str) -> list[PreferencePair]:
        if self.data:
            return self._user_preferences(split)
        scores = self.split_scores(split)
        counts: Counter = Counter()
        if split == "train":  # a source text in a test document never appears in training ("谢谢。", "（掌声）")
            test_sources = {s.source for s in self.split_scores("test")}
            kept = [s for s in scores if s.source not in test_sources]
            counts["translations_of_test_sources"] = len(scores) - len(kept)
            scores = kept
        exclude, references = self.exclude_systems, {}
        if self.rm_reference:  # the reference system would be compared with itself; sources need a reference
            references = reference_translations(scores)
            exclude = (*exclude, REFERENCE_SYSTEM)
            kept = [s for s in scores if s.source in references]
            counts["translations_without_reference"] = len(scores) - len(kept)
            scores = kept
        pairs = mqm.build_pairs(scores, lambda source: self.rm_prompt(source, references.get(source)),
                                self.min_gap, self.aspects, exclude, counts=counts)
        self._skipped[split] = Counter({f"{split}_{k}": v for k, v in counts.items()})
        random.Random(f"{self.seed}:{split}").shuffle(pairs)  # so any prefix mixes sources and aspects
        cap = self.max_pairs if split == "train" else self.max_eval_pairs
        pairs = pairs[:cap] if cap > 0 else pairs
        if split == "train" and self.synthetic_pairs:
            pairs = self._with_synthetic_pairs(pairs)
        return pairs

    def _with_synthetic_pairs(self, pairs: list[PreferencePair]) -> list[PreferencePair]:
        """`pairs` and `synthetic_pairs` major-error pairs from ALMA training sentences in both directions
        (`synthetic.py`), mixed in by a seeded shuffle. With `rm_reference` the reward model would read the chosen
        translation as its own reference, so the reference line is left out of these pairs' prompts."""
        from domains.translation.synthetic import synthetic_pairs

        directory = self.resolve_data_dir() / ALMA_DIR
        rows = [(s, t, a, b) for a, b in ((self.src_lang, self.tgt_lang), (self.tgt_lang, self.src_lang))
                for s, t in parallel_split(directory, "train", a, b)]
        extra = synthetic_pairs(rows, self.synthetic_pairs, format_prompt, seed=self.seed, aspects=self.aspects)
        self._skipped["synthetic"] = Counter({"train_synthetic_pairs_added": len(extra)})
        mixed = pairs + extra
        random.Random(f"{self.seed}:synthetic").shuffle(mixed)
        return mixed

    def _user_preferences(self, split: str) -> list[PreferencePair]:
        pairs, skipped = load_user_preferences(self.data, self.src_lang, self.tgt_lang, self.strict)
        if self.rm_reference:
            with_reference = [p for p in pairs if p.extra.get("reference")]
            skipped["no_reference_for_rm_reference"] += len(pairs) - len(with_reference)
            pairs = [dataclasses.replace(p, prompt=self.rm_prompt(p.extra["source_text"], p.extra["reference"]))
                     for p in with_reference]
        self._skipped["user_file"] = skipped

        # by source text, so a source never sits on both sides
        return [p for p in pairs if in_test_split(p.extra["source_text"], self.test_fraction) == (split == "test")]

    def prompts(self, split: str) -> list[Prompt]:
        """Parallel sentences (ALMA zh-en) as prompts in the domain's direction; `reference` is the SFT target.
        With `direction=both` the two directions alternate (zh-en, en-zh, ...), so the first N prompts hold both."""
        directory = self.resolve_data_dir() / ALMA_DIR
        if not directory.is_dir():
            raise FileNotFoundError(f"parallel text not found: {directory}")
        per_direction = []
        for src_lang, tgt_lang in self.directions:
            tag = f"{split}:{src_lang}-{tgt_lang}" if len(self.directions) > 1 else split
            per_direction.append([make_prompt(src, src_lang, tgt_lang, reference=tgt, id=f"{tag}:{i}")
                                  for i, (src, tgt) in enumerate(parallel_split(directory, split, src_lang, tgt_lang))])
        return [p for row in itertools.zip_longest(*per_direction) for p in row if p is not None]

    def sft_examples(self, split: str) -> list[dict[str, str]]:
        """`{"prompt", "response"}` rows for supervised fine-tuning."""
        return [{"prompt": p.prompt, "response": p.reference} for p in self.prompts(split)]

    # ------------------------------------------------------------------ reward
    def scoring_model(self) -> tuple[str | None, int, int]:
        """The reward model the reward runs (None without one), its scoring batch size and token limit; for a
        frozen-encoder RM (`embedding_rm.py`) the encoder, which is what runs on the device."""
        if is_embedding_rm(self.reward_model_path):
            return embedding_rm_backbone(self.reward_model_path), self.batch_size, self.max_length
        return self.reward_model_path, self.batch_size, self.max_length

    def place(self, device, dtype) -> None:
        """Score on `device` in `dtype` (the trainer passes the policy's device and its frozen-weight dtype)."""
        self._device, self._dtype = device, dtype
        if isinstance(self._reward_model, EmbeddingRewardModel):
            self._reward_model.place(device, dtype)
        elif self._reward_model is not None:
            self._reward_model.to(device=device, dtype=dtype)

    @property
    def reward_model(self):
        """The reward model at `reward_model` (loaded once): a sequence-classification RM trained by `align rm`, or a
        directory written by `embedding_rm.py` (frozen-encoder features with Bradley-Terry heads)."""
        if self._reward_model is None and self.reward_model_path and is_embedding_rm(self.reward_model_path):
            self._reward_model = EmbeddingRewardModel.load(self.reward_model_path)
            self._reward_model.encoder.batch_size, self._reward_model.encoder.max_length = (self.batch_size,
                                                                                          self.max_length)
            if self._device is not None:
                self._reward_model.place(self._device, self._dtype)
        if self._reward_model is None and self.reward_model_path:
            import torch

            from align.models import RewardModel

            self._reward_model = RewardModel.from_pretrained(self.reward_model_path, dtype=self._dtype or torch.float32)
            self._reward_model.eval()
            if self._device is not None:
                self._reward_model.to(self._device)
        return self._reward_model

    def rm_prompt(self, source: str, reference: str | None, src_lang: str | None = None,
                  tgt_lang: str | None = None) -> str:
        """The text the reward model reads before a translation of `source` (in the domain's direction unless
        given; with the reference when `rm_reference` is set: a missing one is an error, never a silent fallback)."""
        src_lang, tgt_lang = src_lang or self.src_lang, tgt_lang or self.tgt_lang
        if not self.rm_reference:
            return format_prompt(source, src_lang, tgt_lang)
        if not reference:
            raise ValueError("domain_options.rm_reference=true: the reward model reads the reference "
                             f"translation, but the prompt for source {source[:40]!r} has none")
        return reward_model_prompt(source, src_lang, tgt_lang, reference)

    def head_rewards(self, prompts: list[Prompt | str], completions: list[str]) -> list[dict[str, float]]:
        """Raw reward of every head for each (prompt, completion), scored as the RM was trained."""
        from align.data import response_separator
        from align.models import score_texts

        model = self.reward_model
        if isinstance(model, EmbeddingRewardModel):
            fields = [prompt_fields(p, self.src_lang, self.tgt_lang) for p in prompts]
            rewards = model.score([f[0] or "" for f in fields], list(completions),
                                  [f[3] for f in fields] if model.use_reference else None)
            return [dict(zip(model.head_names, map(float, row))) for row in rewards]
        texts = []
        for prompt, completion in zip(prompts, completions):
            if self.rm_reference:
                source, src_lang, tgt_lang, reference = prompt_fields(prompt, self.src_lang, self.tgt_lang)
                text = self.rm_prompt(source or "", reference, src_lang, tgt_lang)
            else:
                text = prompt.prompt if isinstance(prompt, Prompt) else prompt
            texts.append(text + response_separator(text) + completion)
        rewards = score_texts(model, texts, batch_size=self.batch_size, max_length=self.max_length)
        return [dict(zip(model.head_names, row)) for row in rewards.float().tolist()]

    def head_stats(self) -> HeadStats:
        """Per-head mean and spread over calibration translations (MQM training targets), measured once."""
        if self._head_stats is None:
            try:
                scores = self.split_scores("train")
            except (FileNotFoundError, ValueError):
                scores = []
            references = reference_translations(scores)
            if self.rm_reference:
                scores = [s for s in scores if s.source in references and s.system != REFERENCE_SYSTEM]
            sample = random.Random(self.seed).sample(scores, min(len(scores), self.reward_config.calibration_size))
            if sample:
                prompts = [make_prompt(s.source, self.src_lang, self.tgt_lang, reference=references.get(s.source))
                           for s in sample]
                self._head_stats = measure_head_stats(self.head_rewards(prompts, [s.target for s in sample]))
            else:
                self._head_stats = HeadStats()  # no calibration data: raw heads
        return self._head_stats

    def comet_scorer(self):
        if self.comet_model_path is None:
            return None
        if self._comet is None:
            from domains.translation.comet import load_comet

            self._comet = load_comet(self.comet_model_path)
        from domains.translation.comet import comet_scores

        return lambda sources, hypotheses, references: comet_scores(self._comet, sources, hypotheses, references,
                                                                    batch_size=self.batch_size)

    def reward(self, prompts: list[Prompt], completions: list[str], **meta: Any) -> list[RewardOutput]:
        """Aspect heads (when `reward_model` is set) and reference metrics (when weighted), gated by the guards."""
        use_heads = self.reward_model_path is not None
        return translation_reward(prompts, completions, self.reward_config,
                                  head_scorer=self.head_rewards if use_heads else None,
                                  head_stats=self.head_stats() if use_heads else None,
                                  comet_scorer=self.comet_scorer(), src_lang=self.src_lang, tgt_lang=self.tgt_lang)

    def reference_metric(self, prompts: list[Prompt], completions: list[str], metric: str) -> list[float | None]:
        """Sentence `chrf` or `bleu` (0-100) of each completion against its prompt's reference, with the target
        language's settings; None without a reference (align.types.ReferenceMetric, the `metric` judge)."""
        if metric not in ("chrf", "bleu"):
            raise ValueError(f"metric: expected chrf or bleu, got {metric!r}")
        scores: list[float | None] = []
        for prompt, completion in zip(prompts, completions, strict=True):
            _, _, tgt_lang, reference = prompt_fields(prompt, self.src_lang, self.tgt_lang)
            scores.append(SENTENCE_METRICS[metric](completion, reference, tgt_lang) if reference else None)
        return scores

    def demo_stages(self) -> dict:
        """`align demo` stages (align.types.HasDemo): `translation`, a small multi-head RM on this domain's MQM
        pairs, evaluated and reported. Imported here, as `evaluate` is: the domain's rewards and metrics load
        without the training stack (the COMET environment has no accelerate)."""
        from domains.translation.demo import demo_stage

        return {"translation": lambda output_dir: demo_stage(self, output_dir)}

    def evaluate(self, config, run_dir) -> dict:
        """`align eval domain=translation`: acc_eq and strict accuracy per aspect, baselines, robustness."""
        from domains.translation.evaluate import evaluate_domain

        return evaluate_domain(self, config, run_dir)
