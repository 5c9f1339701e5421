"""The reward-calling code of TRL, verl and OpenRLHF, as installed in `.bench-site` (`make bench-env`: the
versions pinned in the Makefile, installed --no-deps), for the shim tests.

- TRL imports as it is (its dependencies are ours): the tests build a real `GRPOTrainer`.
- verl's package `__init__` imports ray and tensordict, which are not installed here. Its reward-manager modules
  are loaded from the installed files all the same, under empty stand-ins for the packages above them, with
  three names stubbed: `verl.DataProto` (`MiniDataProto`: the part the managers read), `verl.utils.ray_utils.
  get_event_loop` (the same asyncio logic, without ray) and `omegaconf.DictConfig` (a type hint only). The
  managers' `__call__` / `run_single` and verl's `load_extern_object` are verl's own code.
- OpenRLHF's `openrlhf.utils` package `__init__` imports pylatexenc and deepspeed; `openrlhf.utils.agent` (the
  single-turn executor that loads `reward_func` from a file and calls it) is loaded from the installed file under
  an empty stand-in package, with `aiohttp` (used only by the HTTP reward path) stubbed when missing.
"""
from __future__ import annotations

import asyncio
import importlib
import os
import sys
import types
from functools import lru_cache
from importlib.metadata import PathDistribution
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH_SITE = ROOT / ".bench-site"


def framework_version(name: str) -> str:
    """The version of `name` installed in the bench site; skips the test (fails it under CI=true) if absent."""
    found = sorted(BENCH_SITE.glob(f"{name}-*.dist-info"))
    if not found:
        message = f"{name} is not installed in {BENCH_SITE} (run `make bench-env`)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(reason=message)
    if str(BENCH_SITE) not in sys.path:
        sys.path.append(str(BENCH_SITE))  # after the project's own paths: the site also ships a `tests` package
    return PathDistribution(found[-1]).version


class MiniDataProto:
    """What verl's reward managers read of a `DataProto`: `batch` (tensors, leading batch dimension),
    `non_tensor_batch` (numpy object arrays), `meta_info`; `len`, iteration, an index or a slice."""

    def __init__(self, batch: dict, non_tensor_batch: dict, meta_info: dict | None = None):
        self.batch, self.non_tensor_batch, self.meta_info = batch, non_tensor_batch, meta_info or {}

    def __len__(self) -> int:
        return len(next(iter(self.batch.values())))

    def __getitem__(self, index):
        part = MiniDataProto({k: v[index] for k, v in self.batch.items()},
                             {k: v[index] for k, v in self.non_tensor_batch.items()}, self.meta_info)
        return part

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def verl_batch(tokenizer, prompts: list[str], responses: list[str], ground_truths: list, extra_infos: list[dict],
               data_source: str = "align") -> MiniDataProto:
    """A rollout batch as verl lays it out: left-padded prompt ids, right-padded response ids, one attention mask
    over both; the ground truth under `reward_model`, the data source and extra info as non-tensor columns."""
    pad = tokenizer.pad_token_id
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    response_ids = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in responses]
    p_len, r_len = max(map(len, prompt_ids)), max(map(len, response_ids))
    prompt_rows = [[pad] * (p_len - len(ids)) + ids for ids in prompt_ids]
    response_rows = [ids + [pad] * (r_len - len(ids)) for ids in response_ids]
    mask = [[0] * (p_len - len(p)) + [1] * len(p) + [1] * len(r) + [0] * (r_len - len(r))
            for p, r in zip(prompt_ids, response_ids)]
    n = len(prompts)

    def column(values: list) -> np.ndarray:
        array = np.empty(n, dtype=object)
        array[:] = values
        return array

    return MiniDataProto(
        batch={"prompts": torch.tensor(prompt_rows), "responses": torch.tensor(response_rows),
               "attention_mask": torch.tensor(mask)},
        non_tensor_batch={"data_source": column([data_source] * n),
                          "reward_model": column([{"ground_truth": g} for g in ground_truths]),
                          "extra_info": column([dict(e) for e in extra_infos])})


def _stand_in(name: str, directory: Path | None = None, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    if directory is not None:
        module.__path__ = [str(directory)]  # a package whose submodules load from the installed files
    module.__dict__.update(attributes)
    sys.modules[name] = module
    return module


def _get_event_loop():  # verl.utils.ray_utils.get_event_loop, without importing ray
    try:
        return asyncio.get_event_loop()
    except RuntimeError:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        return loop


@lru_cache(maxsize=1)
def verl_modules() -> types.SimpleNamespace:
    """verl's legacy reward managers (`naive`, `batch`), the reward loop's `naive` manager (verl 0.9's default)
    and `load_extern_object` (how verl loads `custom_reward_function.path`), from the installed files."""
    framework_version("verl")
    site = BENCH_SITE / "verl"
    before = set(sys.modules)
    try:
        _stand_in("verl", site, DataProto=MiniDataProto)
        _stand_in("verl.protocol", DataProto=MiniDataProto)
        for package in ("workers", "workers/reward_manager", "utils", "experimental", "experimental/reward_loop",
                        "experimental/reward_loop/reward_manager"):
            _stand_in("verl." + package.replace("/", "."), site / package)
        _stand_in("verl.utils.ray_utils", get_event_loop=_get_event_loop)
        _stand_in("verl.utils.reward_score", default_compute_score=None)
        if importlib.util.find_spec("omegaconf") is None:
            _stand_in("omegaconf", DictConfig=dict)
        legacy = sys.modules["verl.workers.reward_manager"]
        legacy.register = importlib.import_module("verl.workers.reward_manager.registry").register
        loop = sys.modules["verl.experimental.reward_loop.reward_manager"]
        loop.register = importlib.import_module("verl.experimental.reward_loop.reward_manager.registry").register
        return types.SimpleNamespace(
            NaiveRewardManager=importlib.import_module("verl.workers.reward_manager.naive").NaiveRewardManager,
            BatchRewardManager=importlib.import_module("verl.workers.reward_manager.batch").BatchRewardManager,
            LoopNaiveRewardManager=importlib.import_module(
                "verl.experimental.reward_loop.reward_manager.naive").NaiveRewardManager,
            load_extern_object=importlib.import_module("verl.utils.import_utils").load_extern_object)
    finally:
        for name in set(sys.modules) - before:  # the stand-ins must not leak into other tests' imports
            del sys.modules[name]


def verl_rewards(manager_name: str, compute_score, tokenizer, batch: MiniDataProto) -> tuple[list[float], dict]:
    """Run verl's `manager_name` manager (`naive`, `batch` or `loop_naive`) over `batch` with `compute_score`:
    (the reward verl places on each response's last token, the extra info verl collected per key)."""
    verl = verl_modules()
    if manager_name == "loop_naive":
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            manager = verl.LoopNaiveRewardManager({}, tokenizer, compute_score)
            results = [loop.run_until_complete(manager.run_single(batch[i:i + 1])) for i in range(len(batch))]
        finally:
            asyncio.set_event_loop(None)
            loop.close()
        extra: dict = {}
        for result in results:
            for key, value in result["reward_extra_info"].items():
                extra.setdefault(key, []).append(value)
        return [r["reward_score"] for r in results], extra
    cls = {"naive": verl.NaiveRewardManager, "batch": verl.BatchRewardManager}[manager_name]
    out = cls(tokenizer=tokenizer, num_examine=0, compute_score=compute_score)(batch, return_dict=True)
    prompt_len = batch.batch["prompts"].shape[1]
    last = batch.batch["attention_mask"][:, prompt_len:].sum(-1) - 1
    rewards = out["reward_tensor"][torch.arange(len(batch)), last].tolist()
    return rewards, {k: list(v) for k, v in out["reward_extra_info"].items()}


@lru_cache(maxsize=1)
def openrlhf_agent() -> types.ModuleType:
    """`openrlhf.utils.agent` from the installed file (see the module docstring)."""
    framework_version("openrlhf")
    before = set(sys.modules)
    try:
        _stand_in("openrlhf", BENCH_SITE / "openrlhf")
        _stand_in("openrlhf.utils", BENCH_SITE / "openrlhf" / "utils")
        if importlib.util.find_spec("aiohttp") is None:
            _stand_in("aiohttp")
        return importlib.import_module("openrlhf.utils.agent")
    finally:
        for name in set(sys.modules) - before:
            del sys.modules[name]


class FakeVLLMEngine:
    """Stands for OpenRLHF's vLLM engine: "generates" the given response tokens for any prompt."""

    def __init__(self, response_ids: list[int]):
        self.response_ids = response_ids

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        output = types.SimpleNamespace(token_ids=list(self.response_ids), finish_reason="stop", logprobs=None)
        return types.SimpleNamespace(outputs=[output])


def openrlhf_reward(shim_file: Path, tokenizer, prompt: str, response: str, label) -> dict:
    """One OpenRLHF single-turn rollout of `response` to `prompt`, rewarded by the `reward_func` that OpenRLHF
    loads from `shim_file` (`--remote_rm_url <file>.py`): the executor's output (reward, scores, extra_logs)."""
    agent = openrlhf_agent()
    executor = agent.SingleTurnAgentExecutor(remote_rm_url=str(shim_file))
    engine = FakeVLLMEngine(tokenizer(response, add_special_tokens=False)["input_ids"])
    params = types.SimpleNamespace(max_tokens=256, logprobs=None)
    return asyncio.run(executor.execute(prompt, label, params, 1024, tokenizer, engine))
