"""The easy task set: small arithmetic, list and string functions with call tests.

HumanEval is mostly beyond the embedded 135M policy (greedy pass@1 1 of the first 10 tasks,
bench/results/code_model.json), so an RL run on a CPU would see almost no reward signal there. These tasks sit at its frontier. Each is a HumanEval-style
prompt (signature + docstring + one example) with 5 call tests. Two tiers: `one-step` families
(add a constant, reverse a string: the policy solves most of them) and `two-step` families (sum
the numbers above k, replace one letter by another, clamp to a range: it solves few), mixed so
that greedy pass@1 of SmolLM2-135M-Instruct lands in the middle: 29/64 = 45% in chat style on the
first 64 tasks of seed 0 (one-step 11/12, two-step 18/52).
Constants vary per task, so there are a few hundred distinct tasks; generation is deterministic
from the seed. Expected outputs come from the reference implementation here (our own trusted
code), not from the sandbox.
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from domains.code.tasks import CodeTask, call_source

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]


@dataclass
class Family:
    """A function template: `{k}` / `{w}` (k as a word) / `{m}` / `{c}` / `{d}` / `{s}` are filled per task.
    `reference(*args, p)` computes the expected value (p: the task's constants)."""

    name: str
    signature: str
    description: str
    body: str
    reference: Callable[..., Any]
    inputs: Callable[[random.Random], list]
    params: list[dict]
    tier: str = "one-step"
    """`one-step` (a single operation; the 135M policy solves most) or `two-step` (it solves few)."""


def _ints(rng: random.Random, n: int = 1, low: int = -20, high: int = 50) -> list[int]:
    return [rng.randint(low, high) for _ in range(n)]


def _int_list(rng: random.Random, length: tuple[int, int] = (0, 7)) -> list[int]:
    return [rng.randint(-9, 30) for _ in range(rng.randint(*length))]


def _word(rng: random.Random) -> str:
    letters = "abdegilmnorstu"
    return "".join(rng.choice(letters) for _ in range(rng.randint(1, 8)))


def _sentence(rng: random.Random) -> str:
    return " ".join(_word(rng) for _ in range(rng.randint(1, 4)))


def _k(k: int) -> dict:
    return {"k": k, "w": NUMBER_WORDS[k]}


KS = [_k(k) for k in range(2, 21)]
FEW_KS = [_k(k) for k in (3, 4, 7, 9)]
CHARS = [{"c": c} for c in "abdegilmnorstu"]
FEW_CHARS = [{"c": c} for c in "aest"]
SUFFIXES = [{"s": s} for s in ["ing", "ed", "!", "er"]]
PAIRS = [dict(_k(k), m=m) for k in range(2, 10) for m in (1, 3, 5, 8)]
CHAR_PAIRS = [{"c": c, "d": d} for c, d in zip("abdegilmnorstu", "xyzqxyzqxyzqxy")]
BOUNDS = [dict(_k(k), m=k + span) for k in (0, 2, 5, 10) for span in (5, 10, 20)]


def _one_step(one_int, two_ints, int_list, nonempty_list, word, sentence) -> list[Family]:
    return [
        Family("add_{w}", "(x: int) -> int", "Return x plus {k}.", "    return x + {k}\n",
               lambda x, p: x + p["k"], one_int, FEW_KS),
        Family("times_{w}", "(x: int) -> int", "Return x multiplied by {k}.", "    return x * {k}\n",
               lambda x, p: x * p["k"], one_int, FEW_KS),
        Family("subtract_{w}", "(x: int) -> int", "Return x minus {k}.", "    return x - {k}\n",
               lambda x, p: x - p["k"], one_int, FEW_KS),
        Family("is_multiple_of_{w}", "(x: int) -> bool", "Return True if x is divisible by {k}, else False.",
               "    return x % {k} == 0\n", lambda x, p: x % p["k"] == 0, one_int, FEW_KS),
        Family("greater_than_{w}", "(x: int) -> bool", "Return True if x is greater than {k}, else False.",
               "    return x > {k}\n", lambda x, p: x > p["k"], one_int, FEW_KS),
        Family("square", "(x: int) -> int", "Return the square of x.", "    return x * x\n",
               lambda x, p: x * x, one_int, [{}]),
        Family("max_of_two", "(a: int, b: int) -> int", "Return the larger of a and b.",
               "    return max(a, b)\n", lambda a, b, p: max(a, b), two_ints, [{}]),
        Family("absolute", "(x: int) -> int", "Return the absolute value of x.", "    return abs(x)\n",
               lambda x, p: abs(x), one_int, [{}]),
        Family("sum_list", "(numbers: list) -> int", "Return the sum of the numbers in the list.",
               "    return sum(numbers)\n", lambda xs, p: sum(xs), int_list, [{}]),
        Family("largest", "(numbers: list) -> int", "Return the largest number in a non-empty list.",
               "    return max(numbers)\n", lambda xs, p: max(xs), nonempty_list, [{}]),
        Family("sort_list", "(numbers: list) -> list", "Return the numbers sorted from smallest to largest.",
               "    return sorted(numbers)\n", lambda xs, p: sorted(xs), int_list, [{}]),
        Family("reverse_list", "(numbers: list) -> list", "Return the list in reverse order.",
               "    return numbers[::-1]\n", lambda xs, p: xs[::-1], int_list, [{}]),
        Family("add_{w}_to_each", "(numbers: list) -> list", "Return a new list with {k} added to every number.",
               "    return [x + {k} for x in numbers]\n", lambda xs, p: [x + p["k"] for x in xs], int_list,
               FEW_KS),
        Family("reverse_string", "(text: str) -> str", "Return the string reversed.", "    return text[::-1]\n",
               lambda t, p: t[::-1], word, [{}]),
        Family("to_upper", "(text: str) -> str", "Return the string in upper case.", "    return text.upper()\n",
               lambda t, p: t.upper(), sentence, [{}]),
        Family("add_suffix_{tag}", "(text: str) -> str", "Return text followed by '{s}'.",
               "    return text + '{s}'\n", lambda t, p: t + p["s"], word, SUFFIXES),
        Family("ends_with_{tag}", "(text: str) -> bool", "Return True if text ends with '{s}', else False.",
               "    return text.endswith('{s}')\n", lambda t, p: t.endswith(p["s"]),
               lambda rng: [[_word(rng) + (rng.choice(["ing", "ed", "er", "!"]) if rng.random() < 0.5 else "")]
                            for _ in range(5)], SUFFIXES),
        Family("count_letter_{c}", "(text: str) -> int", "Return how many times the letter '{c}' occurs in text.",
               "    return text.count('{c}')\n", lambda t, p: t.count(p["c"]), sentence, FEW_CHARS),
    ]


def _two_step(one_int, int_list, nonempty_list, word, sentence) -> list[Family]:
    return [
        Family("times_{w}_plus_{m}", "(x: int) -> int", "Return x multiplied by {k}, plus {m}.",
               "    return x * {k} + {m}\n", lambda x, p: x * p["k"] + p["m"], one_int, PAIRS[::2], "two-step"),
        Family("sum_above_{w}", "(numbers: list) -> int",
               "Return the sum of the numbers in the list that are greater than {k}.",
               "    return sum(x for x in numbers if x > {k})\n", lambda xs, p: sum(x for x in xs if x > p["k"]),
               int_list, KS, "two-step"),
        Family("count_above_{w}", "(numbers: list) -> int", "Return how many numbers in the list are greater than {k}.",
               "    return sum(1 for x in numbers if x > {k})\n", lambda xs, p: sum(1 for x in xs if x > p["k"]),
               int_list, KS, "two-step"),
        Family("index_of_{w}", "(numbers: list) -> int",
               "Return the position of the first {k} in the list, or -1 if {k} is not in it.",
               "    return numbers.index({k}) if {k} in numbers else -1\n",
               lambda xs, p: xs.index(p["k"]) if p["k"] in xs else -1,
               lambda rng: [[_int_list(rng) + ([rng.randint(2, 20)] if rng.random() < 0.6 else [])] for _ in range(5)],
               KS, "two-step"),
        Family("fizz_{w}", "(x: int) -> str", "Return 'fizz' if x is divisible by {k}, otherwise x as a string.",
               "    return 'fizz' if x % {k} == 0 else str(x)\n",
               lambda x, p: "fizz" if x % p["k"] == 0 else str(x), one_int, KS, "two-step"),
        Family("clamp_{k}_{m}", "(x: int) -> int", "Return x limited to the range {k} to {m}: below {k} gives {k}, "
               "above {m} gives {m}.", "    return min(max(x, {k}), {m})\n",
               lambda x, p: min(max(x, p["k"]), p["m"]), one_int, BOUNDS, "two-step"),
        Family("replace_{c}_with_{d}", "(text: str) -> str", "Return text with every '{c}' replaced by '{d}'.",
               "    return text.replace('{c}', '{d}')\n", lambda t, p: t.replace(p["c"], p["d"]), sentence,
               CHAR_PAIRS, "two-step"),
        Family("remove_letter_{c}", "(text: str) -> str", "Return text with every letter '{c}' removed.",
               "    return text.replace('{c}', '')\n", lambda t, p: t.replace(p["c"], ""), sentence, CHARS,
               "two-step"),
        Family("words_starting_with_{c}", "(text: str) -> int",
               "Return how many words of text (separated by spaces) start with the letter '{c}'.",
               "    return sum(1 for word in text.split() if word.startswith('{c}'))\n",
               lambda t, p: sum(1 for w in t.split() if w.startswith(p["c"])), sentence, CHARS, "two-step"),
        Family("first_{w}_items", "(numbers: list) -> list", "Return the first {k} items of the list.",
               "    return numbers[:{k}]\n", lambda xs, p: xs[:p["k"]],
               lambda rng: [[_int_list(rng, (0, 12))] for _ in range(5)], FEW_KS, "two-step"),
        Family("count_even", "(numbers: list) -> int", "Return how many even numbers the list has.",
               "    return sum(1 for x in numbers if x % 2 == 0)\n", lambda xs, p: sum(1 for x in xs if x % 2 == 0),
               int_list, [{}], "two-step"),
        Family("sum_of_squares", "(numbers: list) -> int", "Return the sum of the squares of the numbers.",
               "    return sum(x * x for x in numbers)\n", lambda xs, p: sum(x * x for x in xs), int_list, [{}],
               "two-step"),
        Family("product", "(numbers: list) -> int", "Return the product of the numbers (1 for an empty list).",
               "    result = 1\n    for x in numbers:\n        result *= x\n    return result\n",
               lambda xs, p: math.prod(xs), int_list, [{}], "two-step"),
        Family("max_minus_min", "(numbers: list) -> int",
               "Return the largest number minus the smallest number of a non-empty list.",
               "    return max(numbers) - min(numbers)\n", lambda xs, p: max(xs) - min(xs), nonempty_list, [{}],
               "two-step"),
        Family("count_vowels", "(text: str) -> int", "Return how many vowels (a, e, i, o, u) text contains.",
               "    return sum(1 for ch in text if ch in 'aeiou')\n", lambda t, p: sum(1 for ch in t if ch in "aeiou"),
               sentence, [{}], "two-step"),
        Family("digit_sum", "(x: int) -> int", "Return the sum of the decimal digits of a non-negative integer x.",
               "    return sum(int(d) for d in str(x))\n", lambda x, p: sum(int(d) for d in str(x)),
               lambda rng: [[rng.randint(0, 99999)] for _ in range(5)], [{}], "two-step"),
        Family("sum_every_other", "(numbers: list) -> int",
               "Return the sum of the items at even positions (0, 2, 4, ...) of the list.",
               "    return sum(numbers[::2])\n", lambda xs, p: sum(xs[::2]), int_list, [{}], "two-step"),
        Family("longest_word", "(text: str) -> str",
               "Return the longest word of a non-empty text (words are separated by spaces; the first on a tie).",
               "    return max(text.split(), key=len)\n", lambda t, p: max(t.split(), key=len), sentence, [{}],
               "two-step"),
        Family("reverse_words", "(text: str) -> str", "Return the words of text in reverse order, joined by spaces.",
               "    return ' '.join(text.split()[::-1])\n", lambda t, p: " ".join(t.split()[::-1]), sentence, [{}],
               "two-step"),
        Family("unique_in_order", "(numbers: list) -> list",
               "Return the numbers without repeats, keeping the first occurrence of each, in order.",
               "    seen = []\n    for x in numbers:\n        if x not in seen:\n            seen.append(x)\n"
               "    return seen\n", lambda xs, p: list(dict.fromkeys(xs)),
               lambda rng: [[[rng.randint(0, 5) for _ in range(rng.randint(0, 8))]] for _ in range(5)], [{}],
               "two-step"),
    ]


def _families() -> list[Family]:
    one_int = lambda rng: [_ints(rng, 1) for _ in range(5)]
    two_ints = lambda rng: [_ints(rng, 2) for _ in range(5)]
    int_list = lambda rng: [[_int_list(rng)] for _ in range(5)]
    nonempty_list = lambda rng: [[_int_list(rng, (1, 7))] for _ in range(5)]
    word = lambda rng: [[_word(rng)] for _ in range(5)]
    sentence = lambda rng: [[_sentence(rng)] for _ in range(5)]
    return (_one_step(one_int, two_ints, int_list, nonempty_list, word, sentence)
            + _two_step(one_int, int_list, nonempty_list, word, sentence))


def _fill(template: str, params: dict) -> str:
    tag = {"!": "bang", "?": "question"}.get(params.get("s", ""), "".join(ch for ch in params.get("s", "") if ch.isalnum()))
    return template.format(tag=tag, **params)


def easy_tasks(seed: int = 0, num_tasks: int = -1) -> list[CodeTask]:
    """Every (family, constant) task with 5 call tests drawn from `seed`, in a seeded shuffled order."""
    rng = random.Random(seed)
    tasks = []
    for family in _families():
        for params in family.params:
            name = _fill(family.name, params)
            description = _fill(family.description, params)
            inputs = family.inputs(rng)
            tests = [{"call": call_source(name, args), "expected": family.reference(*args, params), "atol": 0.0}
                     for args in inputs]
            example = tests[0]
            prompt = (f"def {name}{family.signature}:\n    \"\"\"{description}\n"
                      f"    >>> {example['call']}\n    {example['expected']!r}\n    \"\"\"\n")
            tasks.append(CodeTask(task_id=f"easy/{name}", prompt=prompt, entry_point=name, tests=tests,
                                  canonical_solution=_fill(family.body, params), instruction=description,
                                  source=f"domains.code.easy seed={seed}", meta={"family": family.name, "tier": family.tier}))
    rng.shuffle(tasks)
    return tasks[:num_tasks] if num_tasks > 0 else tasks


def split_easy(tasks: list[CodeTask], held_out_fraction: float = 0.2) -> tuple[list[CodeTask], list[CodeTask]]:
    """(train, held-out): the tasks are already in a seeded random order, so the split is a cut."""
    cut = len(tasks) - max(1, round(len(tasks) * held_out_fraction))
    return tasks[:cut], tasks[cut:]
