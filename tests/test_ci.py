"""CI runs the slow tier: `.ci/run` runs `make test`, then `make test-slow` (into an empty model cache, so the
SmolLM2 conversion really runs), timing each; the slow tier holds the end-to-end checks the suite leaves out."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SLOW_CHECKS = [  # what the slow tier exists for
    "tests/test_models.py::test_smollm2_converts_and_answers",
    "tests/sandbox_suite/test_sandbox_humaneval.py::test_humaneval_canonical_solutions_pass_and_wrong_ones_fail",
    "tests/test_code_eval.py::test_real_humanevalplus_and_mbppplus_canonical_solutions_pass",
    "tests/test_translation_mqm.py::test_real_mqm_scores_match_the_dataset_averages",
]


def test_ci_runs_the_suite_then_the_slow_tier_from_an_empty_model_cache_and_times_both():
    script = (ROOT / ".ci" / "run").read_text()
    subprocess.run(["bash", "-n", str(ROOT / ".ci" / "run")], check=True)
    steps = re.findall(r"^timed \"([^\"]+)\" (.+)$", script, flags=re.MULTILINE)
    assert [name for name, _ in steps] == ["make test", "make test-slow"]
    assert "ALIGN_CACHE_DIR=" in steps[1][1] and steps[1][1].endswith("make test-slow")
    makefile = (ROOT / "Makefile").read_text()
    target = re.search(r"^test-slow:.*\n((?:\t.*\n)+)", makefile, flags=re.MULTILINE)
    assert target and "-m slow" in target.group(1)


def test_the_slow_tier_holds_the_end_to_end_checks():
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                                "-m", "slow", *[c.split("::")[0] for c in SLOW_CHECKS]],
                               cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()
    assert set(SLOW_CHECKS) <= set(collected)
