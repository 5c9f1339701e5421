"""A reward in the shapes three RL frameworks call, built from one batch scorer.

A *scorer* takes `(prompts, completions, labels, **options)` (a prompt is text, chat messages, or None where
the framework passes none) and returns one `RewardOutput` per completion; `reward=None` means "no reward"
(e.g. a sandbox failure). The adapters below turn it into:

- TRL `reward_funcs` entries (`trl_reward_func`): GRPOTrainer calls
  `f(prompts=[...], completions=[...], completion_ids=[...], trainer_state=..., log_extra=..., log_metric=...,
  **dataset_columns)`; completions are strings or, for conversational data, `[{"role": "assistant", ...}]`
  lists. The label comes from a dataset column. Returns `list[float | None]` (TRL turns None into NaN and
  leaves it out).
- OpenRLHF `--remote_rm_url <file>.py` (`openrlhf_reward_func`): the file's `reward_func(queries, prompts,
  labels)`, queries being prompt + response decoded together; returns `{"rewards", "scores", "extra_logs"}`
  tensors. OpenRLHF cannot drop a sample: "no reward" scores 0 and is counted in `extra_logs`.
- verl `custom_reward_function.path=<file>.py, name=compute_score` (`verl_compute_score`): the single-sample
  reward managers (naive, dapo, the reward loop's) call `compute_score(data_source=..., solution_str=...,
  ground_truth=..., extra_info=...)`, the batch manager calls `compute_score(data_sources=...,
  solution_strs=..., ground_truths=..., extra_infos=...)` and wants a list back; both work, and so do the same
  calls with positional arguments. `custom_reward_function.reward_kwargs` arrive as keyword options. Each
  sample gives `{"score", "dropped", <parts>}` with the same keys every time (verl collects them per key).
  The prompt, when the scorer needs one, is read from `extra_info["prompt"]`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from align.types import RewardOutput

Scorer = Callable[..., list[RewardOutput]]
"""scorer(prompts: list[PromptText | None], completions: list[str], labels: list, **options) -> outputs."""

# Keyword arguments verl's reward-loop managers add for their own reward router; not options of a scorer.
VERL_INTERNAL_KWARGS = ("reward_router_address", "reward_model_tokenizer")


def completion_text(completion: Any) -> str:
    """A completion as TRL passes it: a string, or a list of messages (conversational; the last one's content)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    raise TypeError(f"completion: expected a string or a list of messages, got {type(completion).__name__}")


def response_of(query: str, prompt: str) -> str:
    """The response in an OpenRLHF query (prompt + response decoded together). A query that does not start
    with its prompt (a prompt cut on the left to fit) is scored whole: the response is at its end."""
    return query.removeprefix(prompt)


def trl_reward_func(scorer: Scorer, name: str, label_columns: Sequence[str] = ("label",),
                    **options: Any) -> Callable[..., list[float | None]]:
    """A TRL `reward_funcs` entry. Labels come from the first of `label_columns` present in the dataset (None per
    sample when there is none: scorers that need no label, such as a reward model, accept that)."""

    def reward(prompts: list, completions: list, **columns: Any) -> list[float | None]:
        labels = next((columns[c] for c in label_columns if columns.get(c) is not None), [None] * len(completions))
        outputs = scorer(list(prompts), [completion_text(c) for c in completions], list(labels), **options)
        return [o.reward for o in outputs]

    reward.__name__ = reward.__qualname__ = name  # TRL logs each reward function under its name
    return reward


def openrlhf_reward_func(scorer: Scorer, score_of: Callable[[RewardOutput], float] | None = None,
                         dropped_name: str = "dropped", **options: Any) -> Callable[..., dict]:
    """OpenRLHF's `reward_func(queries, prompts, labels)`. `scores` (OpenRLHF's filter and pass-rate signal) is
    `score_of(output)` when given, else the reward; samples without a reward count in `extra_logs[dropped_name]`."""

    def reward_func(queries: list[str], prompts: list[str], labels: list[Any], **kwargs: Any) -> dict:
        import torch

        outputs = scorer(list(prompts), [response_of(q, p) for q, p in zip(queries, prompts, strict=True)],
                         list(labels), **options, **kwargs)
        rewards = torch.tensor([o.reward if o.reward is not None else 0.0 for o in outputs], dtype=torch.float32)
        scores = rewards.clone() if score_of is None else torch.tensor([float(score_of(o)) for o in outputs])
        dropped = torch.tensor(float(sum(o.reward is None for o in outputs)))
        return {"rewards": rewards, "scores": scores, "extra_logs": {dropped_name: dropped}}

    return reward_func


def _as_list(value: Any, n: int, name: str) -> list:
    if value is None:
        return [None] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"compute_score: {name} has {len(values)} entries for {n} solutions")
    return values


def verl_compute_score(scorer: Scorer, parts: Sequence[str] = ()) -> Callable[..., Any]:
    """verl's `compute_score`, single-sample or batch (see the module docstring). `parts` names the
    `RewardOutput.parts` each result carries besides `score` and `dropped` (None where a sample has none)."""

    def part(value: Any) -> Any:  # verl collects each key into one array: lists become one string
        return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value

    def result(output: RewardOutput) -> dict[str, Any]:
        return {"score": output.reward if output.reward is not None else 0.0, "dropped": output.reward is None,
                **{key: part(output.parts.get(key)) for key in parts}}

    def compute_score(data_source: Any = None, solution_str: Any = None, ground_truth: Any = None,
                      extra_info: Any = None, *, data_sources: Any = None, solution_strs: Any = None,
                      ground_truths: Any = None, extra_infos: Any = None, **options: Any):
        for key in VERL_INTERNAL_KWARGS:
            options.pop(key, None)
        plural = solution_strs is not None or data_sources is not None or ground_truths is not None
        if plural and (solution_str is not None or ground_truth is not None):
            raise TypeError("compute_score: pass either solution_str/ground_truth (one sample) or "
                            "solution_strs/ground_truths (a batch), not both")
        if plural:
            solutions, truths, infos = solution_strs, ground_truths, extra_infos
        elif isinstance(solution_str, str):
            solutions, truths, infos = [solution_str], [ground_truth], [extra_info]
        else:  # lists passed by position (a batch)
            solutions, truths, infos = solution_str, ground_truth, extra_info
        if solutions is None:
            raise TypeError("compute_score: missing solution_str (or solution_strs for a batch)")
        solutions = [str(s) for s in solutions]
        truths = _as_list(truths, len(solutions), "ground_truths")
        infos = _as_list(infos, len(solutions), "extra_infos")
        prompts = [info.get("prompt") if isinstance(info, dict) else None for info in infos]
        results = [result(o) for o in scorer(prompts, solutions, truths, **options)]
        return results if plural or not isinstance(solution_str, str) else results[0]

    return compute_score
