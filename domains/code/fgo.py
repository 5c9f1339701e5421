"""FGO (fine-grained optimization, StepCoder, Dou et al. 2024): a per-token mask over the completion
that is 0 on code the tests never executed, so the policy-gradient loss ignores it.

The sandbox records the executed line numbers of the program (union over tests). Each statement of
the program's AST is *unexecuted* when its first line never ran; compound statements (`if`, `for`,
`def`, ...) are judged on their header, their bodies statement by statement (an untaken branch is
masked, the taken one kept). Text that is not code (prose, fences, blank lines, comments) and
tokens outside the code keep mask 1. On a compile error the whole completion counts (mask all 1):
no line ran, yet the error is what the policy must learn from.
"""
from __future__ import annotations

import ast

from domains.code.extract import Extraction


def _unexecuted_lines(tree: ast.AST, executed: set[int]) -> set[int]:
    """Program lines (1-based) belonging to statements that never ran."""
    dead: set[int] = set()

    def ran(node: ast.stmt) -> bool:
        if node.lineno in executed:
            return True
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            # A def runs at import even when the tracer only watched the test calls: it counts as
            # executed when the module loaded (top level) or when anything inside it ran.
            return any(getattr(child, "lineno", None) in executed for child in ast.walk(node) if child is not node)
        return False

    def visit(statements: list[ast.stmt], top_level: bool) -> None:
        for node in statements:
            body_fields = [getattr(node, name) for name in ("body", "orelse", "finalbody") if hasattr(node, name)]
            handlers = getattr(node, "handlers", [])
            compound = bool(body_fields) or bool(handlers)
            is_def = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            if not (ran(node) or (top_level and is_def)):
                dead.update(range(min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]),
                                  node.end_lineno + 1))
                continue
            if not compound:
                continue
            for block in body_fields:
                visit(block, top_level=False)
            for handler in handlers:
                if handler.lineno not in executed and not any(s.lineno in executed for s in handler.body):
                    dead.update(range(handler.lineno, handler.end_lineno + 1))
                else:
                    visit(handler.body, top_level=False)

    visit(tree.body, top_level=True)
    return dead


def line_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Character spans [a, b) of each line of `text[start:end]` (the newline belongs to its line)."""
    spans, position = [], start
    for line in text[start:end].splitlines(keepends=True):
        spans.append((position, position + len(line)))
        position += len(line)
    return spans


def char_mask(completion: str, extraction: Extraction, executed_lines: list[int] | None,
              compile_error: bool) -> list[int] | None:
    """0/1 per character of `completion`: 0 where unexecuted code lies. None when no trace exists."""
    if extraction.program is None or compile_error:
        return [1] * len(completion)
    if executed_lines is None:
        return None
    try:
        tree = ast.parse(extraction.program)
    except SyntaxError:
        return [1] * len(completion)
    dead = _unexecuted_lines(tree, set(executed_lines))
    mask = [1] * len(completion)
    for index, (a, b) in enumerate(line_spans(completion, extraction.code_start, extraction.code_end)):
        if extraction.header_lines + 1 + index in dead:
            for position in range(a, b):
                mask[position] = 0
    return mask


def token_mask(completion: str, offsets: list[tuple[int, int]], extraction: Extraction,
               executed_lines: list[int] | None, compile_error: bool) -> list[int] | None:
    """0/1 per completion token (`offsets`: the tokens' character spans in `completion`): a token
    is 0 when all its non-space characters (or, for a whitespace token, all its characters) lie in
    unexecuted code. Tokens outside the text (EOS) keep 1."""
    chars = char_mask(completion, extraction, executed_lines, compile_error)
    if chars is None:
        return None
    mask = []
    for start, end in offsets:
        start, end = max(0, start), min(len(completion), end)
        if end <= start:
            mask.append(1)
            continue
        solid = [chars[i] for i in range(start, end) if not completion[i].isspace()]
        covered = solid if solid else chars[start:end]
        mask.append(0 if all(value == 0 for value in covered) else 1)
    return mask


def token_offsets(tokenizer, completion_ids: list[int]) -> list[tuple[int, int]]:
    """Character span of each completion token in the decoded completion (special tokens decode to
    nothing, so they get an empty span). Incremental decoding keeps multi-byte characters whole."""
    offsets, previous = [], 0
    for index in range(1, len(completion_ids) + 1):
        length = len(tokenizer.decode(completion_ids[:index], skip_special_tokens=True))
        offsets.append((previous, max(previous, length)))
        previous = max(previous, length)
    return offsets
