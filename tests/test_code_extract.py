"""From completion to program (chat answers, continuations, wrong names, dropped imports) and the FGO mask."""
from domains.code.extract import extract_program
from domains.code.fgo import char_mask, token_mask

PROMPT = 'from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    """Sum of xs."""\n'


def test_chat_answer_with_fence_and_explanations():
    completion = ("Here is the function:\n\n```python\ndef total(xs: List[int]) -> int:\n    return sum(xs)\n\n"
                  "print(total([1, 2]))\n```\n\nIt adds the numbers up.")
    e = extract_program(completion, PROMPT, "total")
    assert e.style == "fenced" and e.failure is None and e.cut == "top_level_code"
    # the prompt's import is put back (the answer used List without importing it)
    assert e.program.startswith("from typing import List\ndef total(")
    assert "print(" not in e.program and "adds" not in e.program
    assert completion[e.code_start:e.code_end].startswith("def total(")


def test_completion_style_continuation_is_appended_to_the_prompt():
    e = extract_program("    return sum(xs)\n\n\nprint(total([1]))\n", PROMPT, "total")
    assert e.style == "continuation" and e.program == PROMPT + "    return sum(xs)\n\n\n"
    assert e.header_lines == PROMPT.count("\n")


def test_bare_function_between_prose_and_wrong_function_name():
    e = extract_program("Sure.\ndef add_up(xs):\n    return sum(xs)\nThis sums the list.", PROMPT, "total")
    assert e.style == "code" and e.cut == "trailing_text" and e.renamed_from == "add_up"
    assert e.program.endswith("def add_up(xs):\n    return sum(xs)\n\ntotal = add_up\n")


def test_syntax_error_inside_the_function_is_kept_for_the_sandbox():
    e = extract_program("    return sum(xs\n    x = 1\n", PROMPT, "total")
    assert e.program is not None and e.program.endswith("    return sum(xs\n    x = 1\n")


def test_failures_say_why():
    assert extract_program("   ", PROMPT, "total").failure == "empty"
    assert extract_program("I cannot help with that.", PROMPT, "total").failure == "no_code"
    assert extract_program("```python\nprint('hi')\n```", PROMPT, "total").failure == "no_function"


def test_fenced_function_body_reads_as_continuation():
    e = extract_program("```python\n    return sum(xs)\n```", PROMPT, "total")
    assert e.style == "fenced" and e.program == PROMPT + "    return sum(xs)\n"


def test_body_then_extra_def_stays_a_continuation():
    completion = "    return helper(xs)\n\ndef helper(xs):\n    return sum(xs)\n"
    e = extract_program(completion, PROMPT, "total")
    assert e.style == "continuation" and e.program == PROMPT + completion


# --------------------------------------------------------------------------- FGO

BRANCHY = "def sign(x):\n    if x < 0:\n        return -1\n    return 1\n"


def test_fgo_masks_the_untaken_branch():
    completion = BRANCHY
    e = extract_program(completion, "", "sign")
    # lines as the tracer reports them for sign(5): def at import, `if`, `return 1`
    chars = char_mask(completion, e, executed_lines=[1, 2, 4], compile_error=False)
    masked = "".join(ch for ch, m in zip(completion, chars) if m == 0)
    assert masked == "        return -1\n"
    offsets, position = [], 0
    for piece in ["def", " sign", "(x", "):\n", "    if", " x", " <", " 0", ":\n", "        return", " -", "1",
                  "\n", "    return", " 1", "\n"]:
        offsets.append((position, position + len(piece)))
        position += len(piece)
    mask = token_mask(completion, offsets + [(len(completion), len(completion))], e, [1, 2, 4], False)
    assert mask == [1] * 9 + [0, 0, 0, 0] + [1, 1, 1] + [1]   # final (empty) EOS span keeps 1
    # the whole completion counts on a compile error, and nothing is masked without a trace
    assert set(token_mask(completion, offsets, e, None, compile_error=True)) == {1}
    assert token_mask(completion, offsets, e, None, compile_error=False) is None


def test_fgo_maps_lines_through_the_header_of_a_continuation():
    prompt = "def sign(x):\n"
    completion = "    if x < 0:\n        return -1\n    return 1\n"
    e = extract_program(completion, prompt, "sign")
    chars = char_mask(completion, e, executed_lines=[1, 2, 3], compile_error=False)   # sign(-5)
    masked = "".join(ch for ch, m in zip(completion, chars) if m == 0)
    assert masked == "    return 1\n"


def test_token_offsets_cover_the_decoded_completion():
    from align.models import load_tokenizer
    from domains.code.fgo import token_offsets

    tokenizer = load_tokenizer("tiny-llama")
    text = "    if x < 0:\n        return -x\n"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    offsets = token_offsets(tokenizer, ids)
    assert len(offsets) == len(ids) and offsets[-1][0] == offsets[-1][1]   # EOS: empty span
    assert "".join(text[a:b] for a, b in offsets) == text


def test_fgo_maps_lines_of_a_fenced_answer_past_the_restored_imports():
    prompt = "from typing import List\n\n\ndef sign(x: int) -> int:\n"
    completion = "Sure:\n```python\n" + BRANCHY + "```\nDone."
    e = extract_program(completion, prompt, "sign")
    assert e.header_lines == 1 and e.program.startswith("from typing import List\ndef sign")
    # program lines: 1 import, 2 def, 3 if, 4 return -1, 5 return 1
    chars = char_mask(completion, e, executed_lines=[1, 2, 3, 5], compile_error=False)
    assert "".join(ch for ch, m in zip(completion, chars) if m == 0) == "        return -1\n"
