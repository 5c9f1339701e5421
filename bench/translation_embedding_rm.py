"""Benchmark: the translation reward model on frozen multilingual-e5-small features (`embedding_rm.py`).

Every MQM text is encoded once (cached in `--cache`, saved as it goes, so a stopped run resumes). Choices
(feature sets, the reference as an input, synthetic major-error pairs, the regularisation) are compared on a
training document (`--validate-on`, trained on the other training documents, the test document unseen);
`--final` then fits the frozen choice on every training document and scores the test document (talk.6) once.

    python bench/translation_embedding_rm.py --encode-only
    python bench/translation_embedding_rm.py --validate-on talk.7
    python bench/translation_embedding_rm.py --final --l2 1e-3 --name translation_rm_me5
"""
from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load_cache(encoder, path: Path) -> None:
    if path.is_file():
        encoder.cache.update(pickle.loads(path.read_bytes()))


def save_cache(encoder, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(encoder.cache))
    os.replace(tmp, path)


def encode_all(encoder, texts: list[str], cache: Path, chunk: int = 256) -> None:
    todo = [t for t in dict.fromkeys(texts) if t not in encoder.cache]
    start = time.perf_counter()
    for i in range(0, len(todo), chunk):
        encoder.encode(todo[i:i + chunk])
        save_cache(encoder, cache)
        print(f"  encoded {min(i + chunk, len(todo))}/{len(todo)} ({time.perf_counter() - start:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", default="runs/me5-features.pkl")
    parser.add_argument("--encode-only", action="store_true")
    parser.add_argument("--encode-order", nargs="+", default=["talk.9", "talk.7", "talk.5", "talk.6", "talk.2"],
                        help="MQM documents to encode, in this order")
    parser.add_argument("--merge-cache", nargs="*", default=[], help="other caches to read first")
    parser.add_argument("--validate-on", default="talk.7", help="training document the choices are compared on")
    parser.add_argument("--final", action="store_true", help="fit the frozen choice on every training document "
                        "and score the test document")
    parser.add_argument("--variants", nargs="+", default=["base", "pooled", "reference"])
    parser.add_argument("--l2", type=float, nargs="+", default=[1e-4, 1e-3, 1e-2])
    parser.add_argument("--synthetic-pairs", type=int, default=0)
    parser.add_argument("--output-dir", default="runs/translation-embedding-rm")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()

    from domains.translation.domain import TranslationDomain
    from domains.translation.embedding_rm import SentenceEncoder

    encoder = SentenceEncoder("me5-small")
    cache = Path(args.cache)
    cache.parent.mkdir(parents=True, exist_ok=True)
    for other in args.merge_cache:
        load_cache(encoder, Path(other))
    load_cache(encoder, cache)
    scores = TranslationDomain().segment_scores()
    order = {doc: i for i, doc in enumerate(args.encode_order)}
    ordered = sorted([s for s in scores if s.doc in order], key=lambda s: order[s.doc])
    encode_all(encoder, [t for s in ordered for t in (s.source, s.target)], cache)
    if args.encode_only:
        return
    run(args, encoder, cache)


VARIANTS = {"base": {}, "base_no_script": {"drop": ["source_script_share"]},
            "base_margin": {"margin_weight": True}, "pooled": {"pooled": True},
            "reference": {"use_reference": True}, "reference_margin": {"use_reference": True, "margin_weight": True},
            "reference_pooled": {"use_reference": True, "pooled": True}}
HEADS = ["overall", "faithfulness", "expressiveness", "elegance"]


def fit(domain, variant: str, l2: float, encoder, synthetic: int):
    from domains.translation.domain import reference_translations
    from domains.translation.embedding_rm import FEATURES, rows_by_head, train_embedding_rm

    options = VARIANTS[variant]
    domain.synthetic_pairs = 0 if options.get("use_reference") else synthetic
    references = reference_translations(domain.segment_scores()) if options.get("use_reference") else None
    rows = rows_by_head(domain.preferences("train"), HEADS, references)
    texts = [t for values in rows.values() for r in values for t in r[:4] if t]
    encoder.encode(list(dict.fromkeys(texts)))
    return train_embedding_rm(rows, use_reference=bool(options.get("use_reference")),
                              pooled=bool(options.get("pooled")), l2=l2, encoder=encoder,
                              margin_weight=bool(options.get("margin_weight")),
                              base_features=[f for f in FEATURES if f not in options.get("drop", ())])


def synthetic_valid_accuracy(model, count: int = 600) -> dict[str, float]:
    """The overall head's accuracy on major-error pairs built from the ALMA *valid* sentences (training pairs come
    from ALMA train), per direction and error kind: `synthetic_<src>_<tgt>_<kind>`."""
    from domains.translation.domain import TranslationDomain
    from domains.translation.parallel import parallel_split
    from domains.translation.synthetic import synthetic_pairs

    alma = TranslationDomain().resolve_data_dir() / "alma-zhen"
    result = {}
    for src, tgt in (("zh", "en"), ("en", "zh")):
        rows = [(a, b, src, tgt) for a, b in parallel_split(alma, "valid", src, tgt)]
        pairs = synthetic_pairs(rows, count, lambda source, *_: source, seed=1, aspects=("overall",))
        sources = [p.extra["source_text"] for p in pairs]
        head = model.head_names.index("overall")
        won = (model.score(sources, [p.chosen for p in pairs])[:, head]
               > model.score(sources, [p.rejected for p in pairs])[:, head])
        result[f"synthetic_{src}_{tgt}_all"] = float(won.mean())
        for kind in sorted({p.extra["error"] for p in pairs}):
            mask = [p.extra["error"] == kind for p in pairs]
            result[f"synthetic_{src}_{tgt}_{kind}"] = float(won[mask].mean())
    return result


def run(args, encoder, cache: Path) -> None:
    import json

    from domains.translation.domain import TranslationDomain
    from domains.translation.evaluate import evaluate_translation, preference_pair_accuracy

    command = "python " + " ".join(sys.argv)
    split = {"test_docs": ["talk.6"]} if args.final else {"test_docs": [args.validate_on], "exclude_docs": ["talk.6"]}
    out = Path(__file__).parent / "results" / f"{args.name or ('translation_rm_me5_' + ('final' if args.final else 'validate'))}.json"
    result = {"command": command, "evaluated_on": "talk.6" if args.final else args.validate_on, "runs": {}}
    for variant in args.variants:
        for l2 in args.l2:
            domain = TranslationDomain(**split)
            start = time.perf_counter()
            model = fit(domain, variant, l2, encoder, args.synthetic_pairs)
            directory = Path(args.output_dir) / f"{variant}-l2-{l2:g}"
            model.save(directory)
            domain.reward_model_path, domain._reward_model = str(directory), model
            summary = preference_pair_accuracy(domain, str(directory))
            summary["fit_seconds"] = time.perf_counter() - start
            if not model.use_reference:
                summary.update(synthetic_valid_accuracy(model))
            if args.final:
                domain.synthetic_pairs = 0
                full, _ = evaluate_translation(domain, str(directory), cosine=True)
                summary.update(full)
                summary.update({k: v for k, v in preference_pair_accuracy(domain, str(directory), cosine=True).items()
                                if "cosine" in k})
            save_cache(encoder, cache)
            result["runs"][f"{variant}/l2={l2:g}"] = summary
            out.write_text(json.dumps(result, indent=1) + "\n")
            print(f"  {variant} l2={l2:g}: overall pairs strict {summary['pairs_rm_strict_accuracy']:.3f}, "
                  f"gap>=5 {summary['pairs_rm_strict_accuracy_gap5']:.3f} (longer wins "
                  f"{summary['pairs_length_strict_accuracy_gap5']:.3f}); synthetic valid zh-en "
                  f"{summary.get('synthetic_zh_en_all', float('nan')):.3f}, en-zh "
                  f"{summary.get('synthetic_en_zh_all', float('nan')):.3f}", flush=True)
    best = max(result["runs"], key=lambda k: result["runs"][k]["pairs_rm_strict_accuracy_gap5"])
    result["best"] = best
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"translation_embedding_rm [{result['evaluated_on']}, synthetic {args.synthetic_pairs}] best {best}: "
          f"gap>=5 strict {result['runs'][best]['pairs_rm_strict_accuracy_gap5']:.3f} -> {out}")


if __name__ == "__main__":
    main()
