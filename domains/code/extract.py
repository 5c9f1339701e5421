"""From a model's completion to a program the sandbox can run.

Handled: chat answers (a ```python fence, or prose around a bare `def`), completion-style
continuations of the prompt (the body of the prompt's function), code that re-states the prompt,
a function under the wrong name (aliased to the entry point), code that drops the prompt's
imports (the prompt's imports are put back), trailing example usage or prose after the function
(cut). When nothing usable is found, `Extraction.failure` says why.

For FGO the program must be mapped back onto the completion: the program is
`header + completion[code_start:code_end] + footer`, where the header has `header_lines` lines.
The code slice is kept verbatim (never re-indented or rewritten), so program line
`header_lines + j` is line `j` of the slice.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass

FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
TOP_LEVEL_DEF = re.compile(r"^(?:async\s+)?def\s+([A-Za-z_]\w*)\s*\(", re.MULTILINE)
KEEP_AT_TOP = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom, ast.Assign,
               ast.AnnAssign)


@dataclass
class Extraction:
    program: str | None
    """The program to run, or None when no code was found (`failure` says why)."""
    style: str
    """`fenced`, `code` (a bare function in the answer), `continuation` (the prompt's function body)."""
    code_start: int = 0
    code_end: int = 0
    header_lines: int = 0
    failure: str | None = None
    """`empty`, `no_code`, `no_function` when `program` is None."""
    renamed_from: str | None = None
    """The function the model wrote under another name, aliased to the entry point."""
    cut: str | None = None
    """What was cut off the end: `top_level_code` (example usage) or `trailing_text` (unparsable tail)."""


def prompt_imports(prompt: str) -> str:
    """The import lines at the top level of the prompt (`from typing import List`, ...)."""
    lines = []
    for line in prompt.splitlines():
        if line.startswith(("import ", "from ")):
            lines.append(line)
    return "\n".join(lines) + ("\n" if lines else "")


def _count_lines(text: str) -> int:
    return text.count("\n")


def _defined_functions(code: str) -> list[str]:
    try:
        tree = ast.parse(code)
        return [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    except SyntaxError:
        return TOP_LEVEL_DEF.findall(code)


def _cut_tail(code: str, entry_point: str) -> tuple[str, str | None]:
    """Drop what follows the function definitions: top-level example code (`print(f(3))`, asserts,
    `if __name__ ...`) and, when the tail does not parse, the text from the first bad line on."""
    cut = None
    for _ in range(20):
        try:
            tree = ast.parse(code)
        except SyntaxError as error:
            bad_line = error.lineno or 0
            lines = code.splitlines(keepends=True)
            head = "".join(lines[: max(bad_line - 1, 0)])
            bad_text = lines[bad_line - 1] if 0 < bad_line <= len(lines) else ""
            # Cut only an unindented tail (prose) after complete functions: a syntax error inside
            # a function is the model's own and must reach the sandbox as a compile error.
            if bad_line > 1 and not bad_text[:1].isspace() and _defined_functions(head) and _parses(head):
                code, cut = head, "trailing_text"
                continue
            return code, cut
        seen_def = False
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                seen_def = True
            elif seen_def and not isinstance(node, KEEP_AT_TOP):
                lines = code.splitlines(keepends=True)
                return "".join(lines[: node.lineno - 1]), "top_level_code"
        return code, cut
    return code, cut


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
        return True
    except SyntaxError:
        return False


def _pick_fence(completion: str, entry_point: str) -> tuple[int, int] | None:
    """Span of the fenced block to use: the one defining the entry point, else the first Python one."""
    blocks = [(m.group(1).lower(), m.start(2), m.end(2)) for m in FENCE.finditer(completion)]
    blocks = [b for b in blocks if b[0] in ("", "python", "py", "python3")]
    if not blocks:
        return None
    for _, start, end in blocks:
        if re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", completion[start:end], re.MULTILINE):
            return start, end
    defining = [b for b in blocks if TOP_LEVEL_DEF.search(completion[b[1]:b[2]])]
    _, start, end = (defining or blocks)[0]
    return start, end


def extract_program(completion: str, prompt: str, entry_point: str, *, continuation: bool | None = None) -> Extraction:
    """The program for `completion` of `prompt` (whose function is `entry_point`).

    `continuation=None` decides by the text: a fence or a top-level `def` means the model wrote the
    function itself; anything else is read as the continuation of the prompt's function body.
    """
    if not completion.strip():
        return Extraction(None, "continuation" if continuation else "code", failure="empty")
    fence = _pick_fence(completion, entry_point) if continuation is not True else None
    if fence is not None:
        start, end = fence
        style = "fenced"
    else:
        first_def = TOP_LEVEL_DEF.search(completion)
        body_first = first_def is not None and any(
            line.strip() and line[0] in " \t" for line in completion[:first_def.start()].splitlines())
        if continuation is None and body_first:
            return _continuation(completion, prompt, entry_point)
        if continuation is not True and first_def is not None:
            # Start at the imports/decorators right above the first def, skipping prose before it.
            start = first_def.start()
            lines_before = completion[:start].splitlines(keepends=True)
            while lines_before and (not lines_before[-1].strip()
                                    or lines_before[-1].startswith(("import ", "from ", "@"))):
                start -= len(lines_before.pop())
            while start < first_def.start() and completion[start] == "\n":
                start += 1
            end, style = len(completion), "code"
        elif continuation is False:
            return Extraction(None, "code", failure="no_function")
        else:
            return _continuation(completion, prompt, entry_point)
    code = completion[start:end]
    if not TOP_LEVEL_DEF.search(code) and not re.search(r"^\s+def\s", code, re.MULTILINE):
        indented = [line for line in code.splitlines() if line.strip()]
        if indented and all(line.startswith((" ", "\t")) for line in indented):
            # A fenced function body: read it as a continuation of the prompt.
            extraction = _continuation(code, prompt, entry_point)
            extraction.code_start += start
            extraction.code_end += start
            extraction.style = "fenced"
            return extraction
        return Extraction(None, style, failure="no_function" if code.strip() else "no_code")
    code, cut = _cut_tail(code, entry_point)
    header = prompt_imports(prompt)
    footer = ""
    renamed = None
    defined = _defined_functions(code)
    if entry_point not in defined and defined:
        # The model named its function differently: call that one (the last defined top-level
        # function is the answer; earlier ones are usually its helpers).
        renamed = defined[-1]
        footer = f"\n{entry_point} = {renamed}\n"
    program = header + code + ("" if code.endswith("\n") else "\n") + footer
    return Extraction(program, style, code_start=start, code_end=start + len(code), header_lines=_count_lines(header),
                      renamed_from=renamed, cut=cut)


def _continuation(completion: str, prompt: str, entry_point: str) -> Extraction:
    """The completion continues the prompt's function: cut it where the function ends (the first
    non-indented line that is not a further def), then drop a tail that does not parse."""
    header = prompt  # verbatim: the completion continues exactly this text
    lines = completion.splitlines(keepends=True)
    kept = []
    for index, line in enumerate(lines):
        if index == 0 and not prompt.endswith("\n"):
            kept.append(line)  # continues the prompt's last line
            continue
        if line.strip() and not line.startswith((" ", "\t")) and not line.startswith(("def ", "@", "async def ")):
            break
        kept.append(line)
    code = "".join(kept)
    if not code.strip():
        return Extraction(None, "continuation", failure="no_code")
    full, cut = _cut_tail(header + code, entry_point)
    code = full[len(header):] if len(full) >= len(header) else ""
    if not code.strip():
        return Extraction(None, "continuation", failure="no_code")
    if len(kept) < len(lines) and cut is None:
        cut = "top_level_code"
    program = header + code + ("" if code.endswith("\n") else "\n")
    return Extraction(program, "continuation", code_start=0, code_end=len(code), header_lines=_count_lines(header),
                      cut=cut)
