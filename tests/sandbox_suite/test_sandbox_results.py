"""Trusted-side decoding, comparison and classification (no sandbox needed)."""
import json
import math

import pytest

from sandbox import ExecRequest, Limits, TestCase
from sandbox.results import Opaque, build_result, decode_value, stdout_matches, values_equal
from sandbox.runtime.harness import encode_actual


class AlwaysEqual:
    def __eq__(self, other):
        return True


class LyingInt(int):
    def __eq__(self, other):
        return True


def roundtrip(value):
    return decode_value(encode_actual(value))


def test_roundtrip_keeps_types():
    value = {"a": (1, 2.5, None), "b": [True, "x"], 3: {4, 5}, "c": b"\x00\xff", "d": complex(1, -2)}
    assert roundtrip(value) == value
    assert type(roundtrip((1, 2))) is tuple
    assert math.isinf(roundtrip(float("-inf"))) and math.isnan(roundtrip(float("nan")))


def test_objects_that_lie_about_equality_are_opaque():
    for liar in (AlwaysEqual(), LyingInt(7), [LyingInt(1)]):
        decoded = roundtrip(liar)
        assert not values_equal(decoded, 7)
        assert not values_equal(decoded, [1])
    assert isinstance(roundtrip(AlwaysEqual()), Opaque)


def test_too_large_values_become_opaque():
    assert isinstance(roundtrip(list(range(20_000))), Opaque)
    nested = []
    for _ in range(200):
        nested = [nested]
    assert isinstance(roundtrip(nested), Opaque)


def test_float_tolerance_and_sequences():
    assert values_equal(0.1 + 0.2, 0.3)  # default rtol 1e-9
    assert not values_equal(1.0, 1.001)
    assert values_equal(1.0, 1.001, atol=0.01)
    assert values_equal([1, 2.0000000001], (1, 2))  # JSON has no tuple: list and tuple compare alike
    assert not values_equal([1, 2], [1, 2, 3])
    assert not values_equal("1", 1)
    assert values_equal({"a": [1.0]}, {"a": [1]})
    assert not values_equal(float("nan"), 1.0) and values_equal(float("nan"), float("nan"))


def test_decode_rejects_unknown_shapes():
    assert isinstance(decode_value({"__class__": "os.system"}), Opaque)
    assert isinstance(decode_value({"$bytes": "zz"}), Opaque)


def test_stdout_matching_ignores_trailing_whitespace_only():
    assert stdout_matches("3 \n4\n\n", "3\n4")
    assert not stdout_matches("3\n 4\n", "3\n4\n")


def test_classification_from_a_reply():
    request = ExecRequest("def f(x): return x", [TestCase.call_expr("f(1)", 1), TestCase.call_expr("f(2)", 3),
                                                  TestCase.assertion("assert f(1) == 2")])
    reply = {"load": {"status": "ok"}, "stdout": "", "stderr": "", "wall_s": 0.01, "maxrss": 0,
             "tests": [{"status": "ok", "actual": 1, "wall_s": 0.0},
                       {"status": "ok", "actual": 2, "wall_s": 0.0},
                       {"status": "error", "error": {"type": "AssertionError", "message": "", "line": None}}]}
    result = build_result(request, reply, "test", {})
    assert [t.status for t in result.tests] == ["passed", "failed", "failed"]
    assert result.status == "failed"
    reply["tests"][1] = {"status": "died", "how": "signal", "signal": 11}
    result = build_result(request, reply, "test", {})
    assert result.tests[1].status == "runtime_error" and result.tests[1].error["type"] == "SIGSEGV"
    assert result.status == "runtime_error"
    reply["tests"][1] = {"status": "died", "how": "signal", "signal": 24}
    assert build_result(request, reply, "test", {}).tests[1].status == "timeout"  # SIGXCPU


def test_malformed_replies_are_sandbox_errors_or_ignored():
    request = ExecRequest("x = 1", [TestCase.call_expr("x", 1)])
    assert build_result(request, "garbage", "test", {}).status == "sandbox_error"
    result = build_result(request, {"tests": "nope", "load": {"status": "ok"}}, "test", {})
    assert result.tests[0].status == "not_run" and result.status == "runtime_error"


def test_expected_values_never_enter_the_sandbox_payload():
    request = ExecRequest("def f(): pass", [TestCase.call_expr("f()", "EXPECTED-1"),
                                            TestCase.call_args("f", [], "EXPECTED-2"),
                                            TestCase.stdio("in", "EXPECTED-3")])
    assert "EXPECTED" not in repr(request.to_sandbox())


def test_numbers_beyond_float_range_never_raise():
    """An int too large for a float (a program may return 2 ** 2000 where a float is expected) and
    a forged 10 ** 4000 in the reply are judged, never raised (run() must not raise for a program)."""
    assert not values_equal(2 ** 2000, 1.5) and not values_equal(1.5, 2 ** 2000)
    assert not values_equal(2 ** 2000, float("inf")) and not values_equal(10 ** 400, complex(1, 0))
    assert values_equal(2 ** 2000, 2 ** 2000)
    request = ExecRequest("def f(): pass", [TestCase.call_expr("f()", 1.5), TestCase.call_expr("f()", 1)])
    reply = {"load": {"status": "ok"}, "stdout": "", "stderr": "", "wall_s": 10 ** 4000, "maxrss": "x",
             "tests": [{"status": "ok", "actual": 2 ** 2000, "wall_s": 10 ** 4000},
                       {"status": "error", "wall_s": float("nan"),
                        "error": {"type": "E", "message": "m", "line": 10 ** 30}}]}
    result = build_result(request, reply, "test", {})
    assert [t.status for t in result.tests] == ["failed", "runtime_error"]
    assert result.tests[0].wall_s is None and result.tests[1].wall_s is None and result.wall_s == 0.0
    assert result.tests[1].error["line"] is None and result.peak_memory_bytes is None


def test_clip_text_keeps_the_longest_prefix_that_fits_its_json():
    from sandbox.runtime.harness import clip_text, json_len
    assert clip_text("plain ascii", 100) == ("plain ascii", False)
    assert clip_text("abc", 2) == ("ab", True)
    assert clip_text("a\ufffdb", 6) == ("a", True) and json_len("a\ufffd") == 7
    assert clip_text("\U0001f600x", 12) == ("\U0001f600", True)  # a surrogate pair: 12 bytes
    text = "x\x00\u00e9\"\\\n\U0001f600" * 5000
    kept, cut = clip_text(text, 10_000)
    assert cut and json_len(kept) <= 10_000 < json_len(text[:len(kept) + 1]) and text.startswith(kept)


def test_the_result_json_is_bounded_whatever_the_reply_holds():
    """Escaping can make JSON six times the bytes the program wrote (U+FFFD for every invalid byte,
    \\u0000 for every NUL): the bound applies to the JSON, and the tests are judged before any cut."""
    huge_text = "\ufffd" * (1 << 20)
    request = ExecRequest("def f(): pass", [TestCase.call_expr("f()", "\x00" * 999_000),
                                            TestCase.stdio("", huge_text),
                                            TestCase.call_expr("f()", [1, "é"])])
    reply = {"load": {"status": "ok"}, "stdout": huge_text, "stderr": "\x00" * (1 << 20), "wall_s": 0.1,
             "tests": [{"status": "ok", "actual": "\x00" * 999_000, "wall_s": 0.0},
                       {"status": "ok", "actual": huge_text, "wall_s": 0.0},
                       {"status": "ok", "actual": [1, "é"], "wall_s": 0.0}]}
    result = build_result(request, reply, "test", {})
    assert [t.status for t in result.tests] == ["passed", "passed", "passed"]  # judged on the whole value
    size = len(result.to_json())
    assert size <= request.result_bound() == 3 * (1 << 20) + (8 << 10) + 3 * (3 << 10)
    assert size > 3 * (1 << 20) - 64  # excerpts filled up to the bound, not emptied
    assert result.stdout_truncated and result.stderr_truncated
    assert [t.actual_truncated for t in result.tests] == [True, True, False]
    assert isinstance(result.tests[0].actual, Opaque) and "5,994,002 bytes as JSON" in repr(result.tests[0].actual)
    assert huge_text.startswith(result.tests[1].actual) and result.tests[2].actual == [1, "é"]
    # small output is unchanged, byte for byte
    small = {"load": {"status": "ok"}, "stdout": "héllo\x00 wörld\n", "stderr": "warn\n", "wall_s": 0.1,
             "tests": [{"status": "ok", "actual": "\x00" * 999_000, "wall_s": 0.0},
                       {"status": "ok", "actual": "a\ufffdb\n", "wall_s": 0.0},
                       {"status": "ok", "actual": [1, "é"], "wall_s": 0.0}]}
    result = build_result(request, small, "test", {})
    data = json.loads(result.to_json())
    assert (data["stdout"], data["stderr"]) == ("héllo\x00 wörld\n", "warn\n")
    assert data["tests"][1]["actual"] == "a\ufffdb\n" and data["tests"][2]["actual"] == [1, "é"]
    assert not (result.stdout_truncated or result.stderr_truncated or result.tests[1].actual_truncated)
    # a small excerpt (rewards by the thousand) bounds it further
    tiny = ExecRequest(request.program, request.tests, limits=Limits(excerpt_bytes=4096))
    result = build_result(tiny, reply, "test", {})
    assert len(result.to_json()) <= tiny.result_bound() == 3 * 4096 + (8 << 10) + 3 * (3 << 10)
    assert [t.status for t in result.tests] == ["passed", "passed", "passed"]


def test_excerpt_bytes_is_validated():
    for bad in (-1, 9 << 20, 1.5):
        with pytest.raises(ValueError, match="excerpt_bytes"):
            Limits(excerpt_bytes=bad).validate()
    Limits(excerpt_bytes=0).validate()
