"""A translation reward model on a frozen multilingual encoder: COMET-style features, Bradley-Terry heads.

The encoder (default `me5-small`, multilingual-e5-small) reads the source and the translation separately,
once each (`query: ` prefix, as e5 prescribes for symmetric tasks); nothing in it trains. From its token
states and mean-pooled sentence vectors each (source, translation) gets features
(`FEATURES`; s = source, t = translation, r = reference, all vectors L2-normalised):

    cosine                cos(s̄, t̄) of the pooled vectors
    coverage, precision   mean over source tokens of their best cosine with a translation token (omissions lower
                          it), and over translation tokens of their best match in the source (additions lower it)
    f1, coverage_p10,     their harmonic mean, and the 10th percentile of each (one untranslated or dropped
    precision_p10         stretch is a few tokens: a mean hides it)
    log_length_ratio, its square, log_token_ratio
    number_mismatches     numbers of the source missing from the translation or added to it (the numbers guard's
                          count, at most 5: a changed number is a major error the encoder hardly sees)
    source_script_share   share of the translation's words (CJK characters one each) in the source's main script,
                          0 from a half up (same-script languages; the language guard rejects the rest): an
                          untranslated span raises the encoder's cosine and coverage (it *is* the source), this
                          feature names it
    pooled (optional)     t̄, s̄ ⊙ t̄, |s̄ − t̄| (3 × hidden: the COMET estimator's combinations)
    reference (optional)  cos(r̄, t̄) and coverage / precision / f1 of t against r

Each head h scores r_h(s, t) = w_h · z(φ(s, t)) (z: standardised with the training features' mean and spread).
Its weights are the Bradley-Terry maximum-likelihood estimate on that head's preference pairs,

    w_h = argmin_w  Σ_pairs log(1 + exp(−w · (z(φ_chosen) − z(φ_rejected))))  +  λ/2 · n · ‖w‖²

(Bradley & Terry 1952; a logistic regression on feature differences, convex, solved with L-BFGS): the
encoder is frozen, so this is the whole of training, and it needs no training loop. Features that depend
on the source alone cancel within a pair. Saved as `embedding_rm.json` + `weights.npz` in a directory.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from domains.translation.guards import check_numbers, script_counts

MARKER = "embedding_rm.json"
FEATURES = ["cosine", "coverage", "precision", "f1", "coverage_p10", "precision_p10", "log_length_ratio",
            "log_length_ratio_sq", "log_token_ratio", "number_mismatches", "source_script_share"]
REFERENCE_FEATURES = ["ref_cosine", "ref_coverage", "ref_precision", "ref_f1"]
PREFIX = "query: "


def is_embedding_rm(directory: str | Path | None) -> bool:
    return directory is not None and (Path(directory) / MARKER).is_file()


def embedding_rm_backbone(directory: str | Path) -> str:
    """The encoder a saved frozen-encoder RM reads with (an embedded name or a path)."""
    return json.loads((Path(directory) / MARKER).read_text())["backbone"]


class SentenceEncoder:
    """Frozen encoder: token states and pooled vectors of texts, each text encoded once (cached)."""

    def __init__(self, backbone: str = "me5-small", batch_size: int = 32, max_length: int = 256):
        self.backbone, self.batch_size, self.max_length = backbone, batch_size, max_length
        self._model = self._tokenizer = None
        self._device, self._dtype = None, None
        self.cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def place(self, device, dtype) -> None:
        self._device, self._dtype = device, dtype
        if self._model is not None:
            self._model.to(device=device, dtype=dtype)

    def _load(self):
        if self._model is None:
            import torch
            from transformers import AutoModel

            from align.models import load_tokenizer, resolve_model_path

            self._tokenizer = load_tokenizer(self.backbone)
            self._model = AutoModel.from_pretrained(resolve_model_path(self.backbone),
                                                    dtype=self._dtype or torch.float32).eval()
            if self._device is not None:
                self._model.to(self._device)
            self._skip = len(self._tokenizer(PREFIX.strip(), add_special_tokens=False)["input_ids"])
        return self._model, self._tokenizer

    def encode(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(token states [tokens, hidden], pooled [hidden]) per text, L2-normalised; the prefix and the special
        tokens are left out of the token states, the pooled vector is e5's mean over every token."""
        import torch

        todo = sorted({t for t in texts if t not in self.cache}, key=len)
        if todo:
            model, tokenizer = self._load()
            with torch.no_grad():
                for start in range(0, len(todo), self.batch_size):
                    chunk = todo[start:start + self.batch_size]
                    encoded = tokenizer([PREFIX + t for t in chunk], padding=True, truncation=True,
                                        max_length=self.max_length, return_tensors="pt").to(model.device)
                    hidden = model(**encoded).last_hidden_state.float()
                    mask = encoded["attention_mask"].unsqueeze(-1).float()
                    pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
                    states = torch.nn.functional.normalize(hidden, dim=-1)
                    for row, text in enumerate(chunk):
                        length = int(encoded["attention_mask"][row].sum())
                        tokens = states[row, 1 + self._skip:length - 1]  # without <s>, the prefix and </s>
                        self.cache[text] = (tokens.cpu().numpy().astype(np.float16), pooled[row].cpu().numpy())
        return [self.cache[t] for t in texts]


def _alignment(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float, float]:
    """(coverage of a by b, precision of b against a, f1, their 10th percentiles) of token states."""
    if len(a) == 0 or len(b) == 0:
        return 0.0, 0.0, 0.0, 0.0, 0.0
    similarity = a.astype(np.float32) @ b.astype(np.float32).T
    best_a, best_b = similarity.max(1), similarity.max(0)
    coverage, precision = float(best_a.mean()), float(best_b.mean())
    f1 = 2 * coverage * precision / (coverage + precision) if coverage + precision > 0 else 0.0
    return coverage, precision, f1, float(np.percentile(best_a, 10)), float(np.percentile(best_b, 10))


def source_script_share(source_text: str, translation_text: str) -> float:
    """Share of the translation's words in the source's main script, 0 when the translation is mostly in that
    script too (same-script languages: nothing to tell apart)."""
    source_scripts, translation_scripts = script_counts(source_text), script_counts(translation_text)
    total = sum(translation_scripts.values())
    if not source_scripts or not total:
        return 0.0
    script = source_scripts.most_common(1)[0][0]
    share = translation_scripts[script] / total
    return share if share < 0.5 else 0.0


def pair_features(source, translation, source_text: str, translation_text: str, reference=None,
                  pooled: bool = False, names: Sequence[str] = FEATURES) -> np.ndarray:
    """φ(s, t) as documented in the module docstring (`source`, `translation`, `reference`: encoder outputs);
    `names`: the base features to keep, in order (a model saved before a feature existed reads without it)."""
    (s_tokens, s_vector), (t_tokens, t_vector) = source, translation
    coverage, precision, f1, coverage_low, precision_low = _alignment(s_tokens, t_tokens)
    length = math.log(max(len(translation_text), 1) / max(len(source_text), 1))
    numbers = check_numbers(translation_text, source_text).value or 0.0
    base = dict(zip(FEATURES, [
        float(s_vector @ t_vector), coverage, precision, f1, coverage_low, precision_low, length, length ** 2,
        math.log(max(len(t_tokens), 1) / max(len(s_tokens), 1)), min(numbers, 5.0),
        source_script_share(source_text, translation_text)]))
    values = [base[name] for name in names]
    if reference is not None:
        r_tokens, r_vector = reference
        r_coverage, r_precision, r_f1, _, _ = _alignment(r_tokens, t_tokens)
        values += [float(r_vector @ t_vector), r_coverage, r_precision, r_f1]
    parts = [np.asarray(values, dtype=np.float64)]
    if pooled:
        parts += [t_vector, s_vector * t_vector, np.abs(s_vector - t_vector)]
    return np.concatenate(parts)


def fit_bradley_terry(differences: np.ndarray, l2: float = 1e-3, weights: np.ndarray | None = None) -> np.ndarray:
    """w minimising mean_i c_i · log(1 + exp(−w · d_i)) + l2/2 · ‖w‖² (see the module docstring; c_i = pair
    weights, default 1): the Bradley-Terry estimate from chosen−rejected feature differences `d`."""
    from scipy.optimize import minimize

    d = np.asarray(differences, dtype=np.float64)
    c = np.ones(len(d)) if weights is None else np.asarray(weights, dtype=np.float64)
    c = c / c.mean()

    def objective(w):
        margin = d @ w
        loss = np.mean(c * np.logaddexp(0.0, -margin)) + 0.5 * l2 * w @ w
        gradient = -(d.T @ (c / (1.0 + np.exp(np.clip(margin, -50, 50))))) / len(d) + l2 * w
        return loss, gradient

    return minimize(objective, np.zeros(d.shape[1]), jac=True, method="L-BFGS-B").x


class EmbeddingRewardModel:
    """Heads over `pair_features`; `score` gives one raw reward per head for (source, translation[, reference])."""

    def __init__(self, head_names: list[str], weights: np.ndarray, mean: np.ndarray, std: np.ndarray,
                 backbone: str = "me5-small", use_reference: bool = False, pooled: bool = False,
                 encoder: SentenceEncoder | None = None, base_features: Sequence[str] = FEATURES):
        self.head_names, self.weights, self.mean, self.std = list(head_names), weights, mean, std
        self.backbone, self.use_reference, self.pooled = backbone, use_reference, pooled
        self.base_features = list(base_features)
        self.encoder = encoder or SentenceEncoder(backbone)

    def features(self, sources: Sequence[str], translations: Sequence[str],
                 references: Sequence[str | None] | None = None) -> np.ndarray:
        if self.use_reference and (references is None or any(not r for r in references)):
            raise ValueError("this translation reward model reads the reference translation: every prompt needs one")
        texts = list(dict.fromkeys([*sources, *translations, *(references or [] if self.use_reference else [])]))
        encoded = dict(zip(texts, self.encoder.encode(texts)))
        keys = [(s, t, references[i] if self.use_reference else None) for i, (s, t) in enumerate(zip(sources, translations))]
        unique = {}  # a translation is in many pairs (every other system, every aspect): its features once
        for key in keys:
            if key not in unique:
                s, t, r = key
                unique[key] = pair_features(encoded[s], encoded[t], s, t, encoded[r] if r is not None else None,
                                            self.pooled, self.base_features)
        return np.stack([unique[key] for key in keys]) if keys else np.zeros((0, len(self.mean)))

    def score(self, sources, translations, references=None) -> np.ndarray:
        """[N, heads] raw rewards."""
        features = self.features(sources, translations, references)
        return ((features - self.mean) / self.std) @ self.weights.T

    def place(self, device, dtype) -> None:
        self.encoder.place(device, dtype)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(directory / "weights.npz", weights=self.weights, mean=self.mean, std=self.std)
        (directory / MARKER).write_text(json.dumps(
            {"head_names": self.head_names, "backbone": self.backbone, "use_reference": self.use_reference,
             "pooled": self.pooled, "features": self.base_features + (REFERENCE_FEATURES if self.use_reference else [])
             + (["pooled"] if self.pooled else [])}, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> EmbeddingRewardModel:
        directory = Path(directory)
        meta = json.loads((directory / MARKER).read_text())
        arrays = np.load(directory / "weights.npz")
        base_features = [name for name in meta["features"] if name in FEATURES]
        return cls(meta["head_names"], arrays["weights"], arrays["mean"], arrays["std"], meta["backbone"],
                   meta["use_reference"], meta["pooled"], base_features=base_features)


def train_embedding_rm(pairs_by_head: dict[str, list[tuple[str, str, str, str | None, float]]],
                       backbone: str = "me5-small", use_reference: bool = False, pooled: bool = False,
                       l2: float = 1e-3, encoder: SentenceEncoder | None = None, margin_weight: bool = False,
                       base_features: Sequence[str] = FEATURES) -> EmbeddingRewardModel:
    """Fit one Bradley-Terry head per entry of `pairs_by_head` (head -> (source, chosen, rejected, reference,
    margin) rows) on standardised features; the standardisation is measured on every feature row of every head.
    `margin_weight`: a pair counts in proportion to its margin (capped at 10: one non-translation error weighs 25),
    so pairs a major error apart outweigh those one minor error apart."""
    model = EmbeddingRewardModel(list(pairs_by_head), np.zeros((0, 0)), np.zeros(0), np.ones(0), backbone,
                                 use_reference, pooled, encoder, base_features)
    rows = {}
    for head, pairs in pairs_by_head.items():
        sources = [p[0] for p in pairs] * 2
        translations = [p[1] for p in pairs] + [p[2] for p in pairs]
        references = [p[3] for p in pairs] * 2 if use_reference else None
        features = model.features(sources, translations, references)
        rows[head] = (features[:len(pairs)], features[len(pairs):])
    everything = np.concatenate([np.concatenate(pair) for pair in rows.values()])
    model.mean, model.std = everything.mean(0), everything.std(0) + 1e-6
    weights = {head: np.minimum([p[4] for p in pairs], 10.0) if margin_weight else None
               for head, pairs in pairs_by_head.items()}
    model.weights = np.stack([fit_bradley_terry((chosen - rejected) / model.std, l2, weights[head])
                              for head, (chosen, rejected) in rows.items()])
    return model


def rows_by_head(pairs, heads: Sequence[str], references: dict[str, str] | None = None
                 ) -> dict[str, list[tuple[str, str, str, str | None, float]]]:
    """Training rows per head from preference pairs: a pair trains the head named by its `aspect`, else `overall`.
    With `references` (source -> reference) only pairs whose source has one are kept (synthetic pairs have none:
    their chosen side is the reference)."""
    rows: dict[str, list] = {head: [] for head in heads}
    for pair in pairs:
        source = pair.extra.get("source_text") or ""
        head = pair.aspect if pair.aspect in rows else ("overall" if "overall" in rows else heads[0])
        reference = references.get(source) if references is not None else None
        if references is not None and not reference:
            continue
        rows[head].append((source, pair.chosen, pair.rejected, reference, pair.margin or 1.0))
    return {head: values for head, values in rows.items() if values}
