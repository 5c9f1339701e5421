"""The real COMET code path on a tiny checkpoint built offline.

`unbabel-comet` pins transformers<5, so it lives in `.venv-comet` (`make comet-env`). The pytest
test runs this file as a script inside that environment: the script builds a tiny COMET
regression model (a tokenizer trained with `tokenizers`, a tiny XLM-R config,
`RegressionMetric(load_pretrained_weights=False)`), saves it in COMET's layout, loads it back
through `domains.translation.comet.load_comet` with HF_HUB_OFFLINE=1 and scores segments.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

try:
    import pytest
except ImportError:  # the script side runs in .venv-comet, which has no pytest
    pytest = None

ROOT = Path(__file__).resolve().parents[1]
COMET_PYTHON = ROOT / ".venv-comet" / "bin" / "python"
SENTENCES = ["the cat sat on the mat .", "a dog ran in the park .", "我 爱 你 。", "猫 坐 在 垫子 上 。",
             "black holes bend light .", "光 无法 逃脱 。", "thank you very much .", "谢谢 。"]


def build_tiny_comet(directory: Path) -> Path:
    """Write a tiny, randomly initialised COMET regression model in COMET's download layout."""
    import pytorch_lightning
    import torch
    import yaml
    from comet.models import RegressionMetric
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import XLMRobertaConfig, XLMRobertaTokenizerFast

    encoder_dir = directory / "tiny-xlmr"
    encoder_dir.mkdir(parents=True, exist_ok=True)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # XLM-R's ids 0..4 order (pad = 1)
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(SENTENCES * 4, trainers.BpeTrainer(vocab_size=120, special_tokens=specials))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[(t, tokenizer.token_to_id(t)) for t in ("<s>", "</s>")])
    XLMRobertaTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                            cls_token="<s>", unk_token="<unk>", pad_token="<pad>",
                            mask_token="<mask>").save_pretrained(encoder_dir)
    XLMRobertaConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=66, pad_token_id=1, bos_token_id=0,
                     eos_token_id=2).save_pretrained(encoder_dir)

    torch.manual_seed(0)
    model = RegressionMetric(pretrained_model=str(encoder_dir), load_pretrained_weights=False, hidden_sizes=[16],
                             layer="mix", pool="avg", dropout=0.0)
    (directory / "checkpoints").mkdir(exist_ok=True)
    checkpoint = directory / "checkpoints" / "model.ckpt"
    torch.save({"state_dict": model.state_dict(), "pytorch-lightning_version": pytorch_lightning.__version__,
                "hyper_parameters": dict(model.hparams)}, checkpoint)
    (directory / "hparams.yaml").write_text(yaml.safe_dump(dict(model.hparams)))
    return checkpoint


def run_check(directory: Path) -> dict:
    """Build, reload offline and score; returns figures the pytest side asserts on."""
    import torch

    from domains.translation.comet import comet_scores, load_comet

    checkpoint = build_tiny_comet(directory)
    model = load_comet(directory)
    sources = ["我 爱 你 。", "谢谢 。", "光 无法 逃脱 。"]
    hypotheses = ["the cat sat on the mat .", "thank you very much .", "black holes bend light ."]
    references = ["a dog ran in the park .", "thank you very much .", "black holes bend light ."]
    first = comet_scores(model, sources, hypotheses, references, batch_size=2)
    again = comet_scores(model, sources, hypotheses, references, batch_size=3)
    # the reloaded weights are the saved ones, not a fresh initialisation
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    same_weights = all(torch.equal(value, model.state_dict()[key]) for key, value in saved.items())
    return {"scores": first, "again": again, "same_weights": same_weights,
            "class": type(model).__name__, "hub_offline": os.environ.get("HF_HUB_OFFLINE"),
            "encoder": model.hparams.pretrained_model}


def test_comet_on_tiny_checkpoint(tmp_path):
    if not COMET_PYTHON.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{COMET_PYTHON} is missing: CI must run `make comet-env` before the tests")
        pytest.skip(reason="no COMET environment: run `make comet-env` (unbabel-comet pins transformers<5, so it gets "
                    ".venv-comet of its own)")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run([str(COMET_PYTHON), __file__, str(tmp_path / "tiny-comet")], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["class"] == "RegressionMetric"
    assert figures["hub_offline"] == "1"
    assert figures["encoder"].endswith("tiny-xlmr")
    assert figures["same_weights"]
    assert len(figures["scores"]) == 3 and all(isinstance(s, float) for s in figures["scores"])
    # deterministic in eval mode, whatever the batching
    assert figures["scores"] == pytest.approx(figures["again"], abs=1e-5)
    # identical inputs except the hypothesis/reference pair: random weights still give distinct scores
    assert len({round(s, 6) for s in figures["scores"]}) > 1


def test_load_comet_without_checkpoint_names_the_path(tmp_path):
    from domains.translation.comet import resolve_checkpoint

    with pytest.raises(FileNotFoundError, match="no COMET checkpoint"):
        resolve_checkpoint(tmp_path)


if __name__ == "__main__":  # run inside .venv-comet by the test above
    import logging

    logging.disable(logging.WARNING)
    print(json.dumps(run_check(Path(sys.argv[1]))))
