"""The easy task set: simple arithmetic, list and string functions with call tests.

HumanEval is beyond the embedded 135M policy (0 of the first 40 tasks greedily), so an RL run on a
CPU would see no reward signal there. These tasks sit at its frontier: each family is a one- or
two-line function (add a constant, count a character, keep the even numbers, ...) written as a
HumanEval-style prompt (signature + docstring + one example). Constants vary per task, so there
are a few hundred distinct tasks; generation is deterministic from the seed. Expected outputs come
from the reference implementation here (our own trusted code), not from the sandbox.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from domains.code.tasks import CodeTask, call_source

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]


@dataclass
class Family:
    """A function template: `{k}` / `{w}` (k as a word) / `{c}` / `{s}` are filled per task."""

    name: str
    signature: str
    description: str
    body: str
    reference: Callable[..., Any]
    inputs: Callable[[random.Random], list]
    params: list[dict]


def _ints(rng: random.Random, n: int = 1, low: int = -20, high: int = 50) -> list[int]:
    return [rng.randint(low, high) for _ in range(n)]


def _int_list(rng: random.Random, length: tuple[int, int] = (0, 7)) -> list[int]:
    return [rng.randint(-9, 30) for _ in range(rng.randint(*length))]


def _word(rng: random.Random) -> str:
    letters = "abcdefghijklmnoprstu"
    return "".join(rng.choice(letters) for _ in range(rng.randint(1, 8)))


def _sentence(rng: random.Random) -> str:
    return " ".join(_word(rng) for _ in range(rng.randint(1, 4)))


KS = [{"k": k, "w": NUMBER_WORDS[k]} for k in range(2, 21)]
SMALL_KS = KS[:8]
CHARS = [{"c": c} for c in "abdegilmnorstu"]
SUFFIXES = [{"s": s} for s in ["ing", "ed", "!", "_x", "er", "ly", "s", "?", "ness", "_1"]]


def _families() -> list[Family]:
    one_int = lambda rng: [_ints(rng, 1) for _ in range(5)]
    two_ints = lambda rng: [_ints(rng, 2) for _ in range(5)]
    int_list = lambda rng: [[_int_list(rng)] for _ in range(5)]
    nonempty_list = lambda rng: [[_int_list(rng, (1, 7))] for _ in range(5)]
    word = lambda rng: [[_word(rng)] for _ in range(5)]
    sentence = lambda rng: [[_sentence(rng)] for _ in range(5)]
    return [
        # arithmetic
        Family("add_{w}", "(x: int) -> int", "Return x plus {k}.", "    return x + {k}\n",
               lambda x, k: x + k, one_int, KS),
        Family("times_{w}", "(x: int) -> int", "Return x multiplied by {k}.", "    return x * {k}\n",
               lambda x, k: x * k, one_int, KS),
        Family("subtract_{w}", "(x: int) -> int", "Return x minus {k}.", "    return x - {k}\n",
               lambda x, k: x - k, one_int, KS),
        Family("is_multiple_of_{w}", "(x: int) -> bool", "Return True if x is divisible by {k}, else False.",
               "    return x % {k} == 0\n", lambda x, k: x % k == 0, one_int, KS),
        Family("remainder_{w}", "(x: int) -> int", "Return the remainder of x divided by {k}.",
               "    return x % {k}\n", lambda x, k: x % k, one_int, KS),
        Family("square", "(x: int) -> int", "Return the square of x.", "    return x * x\n",
               lambda x: x * x, one_int, [{}]),
        Family("max_of_two", "(a: int, b: int) -> int", "Return the larger of a and b.", "    return max(a, b)\n",
               max, two_ints, [{}]),
        Family("min_of_two", "(a: int, b: int) -> int", "Return the smaller of a and b.", "    return min(a, b)\n",
               min, two_ints, [{}]),
        Family("sum_of_two", "(a: int, b: int) -> int", "Return the sum of a and b.", "    return a + b\n",
               lambda a, b: a + b, two_ints, [{}]),
        Family("absolute", "(x: int) -> int", "Return the absolute value of x.", "    return abs(x)\n",
               abs, one_int, [{}]),
        # lists
        Family("sum_list", "(numbers: list) -> int", "Return the sum of the numbers in the list.",
               "    return sum(numbers)\n", sum, int_list, [{}]),
        Family("largest", "(numbers: list) -> int", "Return the largest number in a non-empty list.",
               "    return max(numbers)\n", max, nonempty_list, [{}]),
        Family("smallest", "(numbers: list) -> int", "Return the smallest number in a non-empty list.",
               "    return min(numbers)\n", min, nonempty_list, [{}]),
        Family("count_items", "(numbers: list) -> int", "Return how many items the list has.",
               "    return len(numbers)\n", len, int_list, [{}]),
        Family("reverse_list", "(numbers: list) -> list", "Return the list in reverse order.",
               "    return numbers[::-1]\n", lambda xs: xs[::-1], int_list, [{}]),
        Family("sort_list", "(numbers: list) -> list", "Return the numbers sorted from smallest to largest.",
               "    return sorted(numbers)\n", sorted, int_list, [{}]),
        Family("first_item", "(numbers: list) -> int", "Return the first item of a non-empty list.",
               "    return numbers[0]\n", lambda xs: xs[0], nonempty_list, [{}]),
        Family("last_item", "(numbers: list) -> int", "Return the last item of a non-empty list.",
               "    return numbers[-1]\n", lambda xs: xs[-1], nonempty_list, [{}]),
        Family("add_{w}_to_each", "(numbers: list) -> list", "Return a new list with {k} added to every number.",
               "    return [x + {k} for x in numbers]\n", lambda xs, k: [x + k for x in xs], int_list, KS),
        Family("multiply_each_by_{w}", "(numbers: list) -> list",
               "Return a new list with every number multiplied by {k}.",
               "    return [x * {k} for x in numbers]\n", lambda xs, k: [x * k for x in xs], int_list, KS),
        Family("keep_even", "(numbers: list) -> list", "Return the even numbers of the list, in order.",
               "    return [x for x in numbers if x % 2 == 0]\n", lambda xs: [x for x in xs if x % 2 == 0],
               int_list, [{}]),
        Family("count_above_{w}", "(numbers: list) -> int", "Return how many numbers in the list are greater than {k}.",
               "    return sum(1 for x in numbers if x > {k})\n", lambda xs, k: sum(1 for x in xs if x > k),
               int_list, KS),
        Family("contains_{w}", "(numbers: list) -> bool", "Return True if {k} is in the list, else False.",
               "    return {k} in numbers\n", lambda xs, k: k in xs,
               lambda rng: [[_int_list(rng) + ([rng.randint(2, 9)] if rng.random() < 0.5 else [])] for _ in range(5)],
               SMALL_KS),
        Family("greater_than_{w}", "(x: int) -> bool", "Return True if x is greater than {k}, else False.",
               "    return x > {k}\n", lambda x, k: x > k, one_int, KS),
        Family("first_{w}_items", "(numbers: list) -> list", "Return the first {k} items of the list.",
               "    return numbers[:{k}]\n", lambda xs, k: xs[:k],
               lambda rng: [[_int_list(rng, (0, 12))] for _ in range(5)], SMALL_KS),
        # strings
        Family("reverse_string", "(text: str) -> str", "Return the string reversed.", "    return text[::-1]\n",
               lambda s: s[::-1], word, [{}]),
        Family("to_upper", "(text: str) -> str", "Return the string in upper case.", "    return text.upper()\n",
               str.upper, sentence, [{}]),
        Family("string_length", "(text: str) -> int", "Return the number of characters in the string.",
               "    return len(text)\n", len, sentence, [{}]),
        Family("count_letter_{c}", "(text: str) -> int", "Return how many times the letter '{c}' occurs in text.",
               "    return text.count('{c}')\n", lambda s, c: s.count(c), sentence, CHARS),
        Family("add_suffix_{tag}", "(text: str) -> str", "Return text followed by '{s}'.",
               "    return text + '{s}'\n", lambda s, s2: s + s2, word, SUFFIXES),
        Family("repeat_{w}_times", "(text: str) -> str", "Return the string repeated {k} times.",
               "    return text * {k}\n", lambda s, k: s * k, word, SMALL_KS),
        Family("remove_letter_{c}", "(text: str) -> str", "Return text with every letter '{c}' removed.",
               "    return text.replace('{c}', '')\n", lambda s, c: s.replace(c, ""), sentence, CHARS),
        Family("starts_with_{c}", "(text: str) -> bool", "Return True if text starts with the letter '{c}'.",
               "    return text.startswith('{c}')\n", lambda s, c: s.startswith(c), word, CHARS),
        Family("ends_with_{tag}", "(text: str) -> bool", "Return True if text ends with '{s}', else False.",
               "    return text.endswith('{s}')\n", lambda s, s2: s.endswith(s2),
               lambda rng: [[_word(rng) + (rng.choice(["ing", "ed", "s", "er"]) if rng.random() < 0.5 else "")]
                            for _ in range(5)], SUFFIXES),
        Family("first_letter", "(text: str) -> str", "Return the first character of a non-empty string.",
               "    return text[0]\n", lambda s: s[0], word, [{}]),
        Family("is_palindrome", "(text: str) -> bool", "Return True if the string reads the same backwards.",
               "    return text == text[::-1]\n", lambda s: s == s[::-1],
               lambda rng: [[w if rng.random() < 0.5 else w + w[::-1]] for w in (_word(rng) for _ in range(5))],
               [{}]),
        Family("count_words", "(text: str) -> int", "Return the number of words (separated by spaces) in text.",
               "    return len(text.split())\n", lambda s: len(s.split()), sentence, [{}]),
    ]


def _fill(template: str, params: dict) -> str:
    tag = {"!": "bang", "?": "question"}.get(params.get("s", ""), "".join(ch for ch in params.get("s", "") if ch.isalnum()))
    return template.format(tag=tag, **params)


def _reference_args(params: dict) -> list:
    return [params[key] for key in ("k", "c", "s") if key in params]


def easy_tasks(seed: int = 0, num_tasks: int = -1) -> list[CodeTask]:
    """Every (family, constant) task with 5 call tests drawn from `seed`, in a seeded shuffled order."""
    rng = random.Random(seed)
    tasks = []
    for family in _families():
        for params in family.params:
            name = _fill(family.name, params)
            description = _fill(family.description, params)
            inputs = family.inputs(rng)
            extra = _reference_args(params)
            tests = [{"call": call_source(name, args), "expected": family.reference(*args, *extra), "atol": 0.0}
                     for args in inputs]
            example = tests[0]
            prompt = (f"def {name}{family.signature}:\n    \"\"\"{description}\n"
                      f"    >>> {example['call']}\n    {example['expected']!r}\n    \"\"\"\n")
            tasks.append(CodeTask(task_id=f"easy/{name}", prompt=prompt, entry_point=name, tests=tests,
                                  canonical_solution=_fill(family.body, params), instruction=description,
                                  source=f"domains.code.easy seed={seed}", meta={"family": family.name}))
    rng.shuffle(tasks)
    return tasks[:num_tasks] if num_tasks > 0 else tasks


def split_easy(tasks: list[CodeTask], held_out_fraction: float = 0.2) -> tuple[list[CodeTask], list[CodeTask]]:
    """(train, held-out): the tasks are already in a seeded random order, so the split is a cut."""
    cut = len(tasks) - max(1, round(len(tasks) * held_out_fraction))
    return tasks[:cut], tasks[cut:]
