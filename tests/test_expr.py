from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib_dumpunet import expr
from lib_dumpunet.errors import DumpUnetError, SpecError
from lib_dumpunet.expr import MAX_DEPTH, MAX_LENGTH, compile_expression

V = np.linspace(-1.0, 1.0, 11)


def run(source: str, v: np.ndarray = V) -> np.ndarray:
    return compile_expression(source, field="H")(v)


# --- what is allowed computes what numpy computes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("(2+v)/3", (2 + V) / 3),
        ("abs(v)", np.abs(V)),
        ("absolute(-v)", np.abs(V)),
        ("where(v>0, v, 0)", np.where(V > 0, V, 0)),
        ("clip(v*2, 0, 1)", np.clip(V * 2, 0, 1)),
        ("1.0", np.ones_like(V)),
        ("0.5", np.full_like(V, 0.5)),
        ("-v", -V),
        ("+v", V),
        ("v - 1", V - 1),
        ("v ** 2", V**2),
        ("2 ** v", 2**V),
        ("v // 0.3", V // 0.3),
        ("v % 0.3", V % 0.3),
        ("max(v, 0)", np.maximum(V, 0)),
        ("min(v, 0)", np.minimum(V, 0)),
        ("max(v, 0, 0.5)", np.maximum(np.maximum(V, 0), 0.5)),
        ("maximum(v, -v)", np.abs(V)),
        ("fmax(v, 0)", np.fmax(V, 0)),
        ("sin(pi * v)", np.sin(np.pi * V)),
        ("exp(v) / e", np.exp(V) / np.e),
        ("arctan2(v, 1)", np.arctan2(V, 1)),
        ("hypot(v, v)", np.hypot(V, V)),
        ("heaviside(v, 0.5)", np.heaviside(V, 0.5)),
        ("power(abs(v), 0.5)", np.sqrt(np.abs(V))),
        ("sign(v) * square(v)", np.sign(V) * V**2),
        ("mod(v, 0.4)", np.mod(V, 0.4)),
        ("fmod(v, 0.4)", np.fmod(V, 0.4)),
        ("floor(v*3) + ceil(v) + trunc(v) + rint(v)", np.floor(V * 3) + np.ceil(V) + np.trunc(V) + np.rint(V)),
        ("cbrt(v) + exp2(v) + expm1(v) + log1p(v + 1)", np.cbrt(V) + np.exp2(V) + np.expm1(V) + np.log1p(V + 1)),
        ("v > 0", (V > 0).astype(float)),
        ("v <= 0", (V <= 0).astype(float)),
        ("v == 0", (V == 0).astype(float)),
        ("v != 0", (V != 0).astype(float)),
        ("-0.5 < v < 0.5", ((V > -0.5) & (V < 0.5)).astype(float)),
        ("0 <= v <= 1 != v", ((V >= 0) & (V <= 1) & (V != 1)).astype(float)),
        ("(v > 0) * (v < 0.5)", ((V > 0) & (V < 0.5)).astype(float)),
        ("0x10 + 1_0 + 1e-1", np.full_like(V, 26.1)),
        ("(2-2*v)/3", (2 - 2 * V) / 3),  # the attention tab's recommended hue
    ],
)
def test_allowed_expressions_compute_numpy_results(source, expected):
    result = run(source)
    assert result.dtype == np.float32
    assert result.shape == V.shape
    np.testing.assert_allclose(result, np.asarray(expected, dtype=np.float32), rtol=1e-6, atol=1e-6)


def test_result_has_the_shape_of_v_whatever_its_shape():
    v = np.linspace(-1, 1, 24).reshape(2, 3, 4)
    assert run("0.5", v).shape == (2, 3, 4)
    np.testing.assert_allclose(run("v * 2", v), v * 2, rtol=1e-6)


def test_numbers_are_floats_so_huge_powers_finish_as_infinity():
    assert np.isinf(run("9**9**9")).all()
    assert np.isinf(run("10**400")).all()
    assert run("7 // 2")[0] == 3.0  # float floor division, as numpy does
    assert run("1/0")[0] == np.inf  # no ZeroDivisionError: numpy semantics under errstate
    assert np.isnan(run("0/0")).all()


def test_undefined_values_are_nan_not_errors():
    result = run("sqrt(v)")
    assert np.isnan(result[V < 0]).all()
    assert not np.isnan(result[V >= 0]).any()
    assert np.isneginf(run("log(v - v)")).all()


def test_evaluation_does_not_warn(recwarn):
    run("log(v) + sqrt(v) + 1/v + exp(1000 * v) + 9**9**9")
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_leading_and_trailing_blanks_and_parenthesised_line_breaks_are_fine():
    np.testing.assert_allclose(run("  abs(v)  "), np.abs(V))
    np.testing.assert_allclose(run("\t(v +\n 1)"), V + 1, rtol=1e-6)


def test_expression_keeps_its_source_and_field():
    expression = compile_expression("abs(v)", field="R")
    assert (expression.source, expression.field) == ("abs(v)", "R")


# --- what is refused, and where the caret goes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "position", "reason"),
    [
        ("__import__('os').system('id')", 0, "named directly"),
        ("v.__class__", 0, "attribute"),
        ("(lambda: 1)()", 1, "named directly"),
        ("(lambda: 1)", 1, "lambda"),
        ("[x for x in v]", 0, "comprehension"),
        ("sum(x for x in v)", 0, "unknown function 'sum'"),
        ("open('f')", 0, "unknown function 'open'"),
        ("v[0]", 0, "indexing"),
        ("''", 0, "quotes"),
        ("f'{v}'", 0, "quotes"),
        ("b'x'", 0, "quotes"),
        ("v and 1", 0, "'and'/'or'"),
        ("v or 1", 0, "'and'/'or'"),
        ("not v", 0, "'not'"),
        ("~v", 0, "operator"),
        ("v @ v", 0, "operator"),
        ("v << 1", 0, "operator"),
        ("v if v > 0 else 0", 0, "where("),
        ("(y := v)", 1, "':='"),
        ("abs(v=1)", 4, "positional"),
        ("abs(*v)", 4, "unpacking"),
        ("clip(v)", 0, "clip() takes 3 arguments, got 1"),
        ("abs(v, v)", 0, "abs() takes 1 argument, got 2"),
        ("where(v > 0, v)", 0, "where() takes 3 arguments"),
        ("maximum(v, v, v)", 0, "maximum() takes 2 arguments"),
        ("max(v)", 0, "max() takes at least 2 arguments"),
        ("abs", 0, "is a function"),
        ("x", 0, "unknown name 'x'"),
        ("v + __builtins__", 4, "'__builtins__' is not allowed"),
        ("v + np", 4, "unknown name 'np'"),
        ("v.real", 0, "attribute"),
        ("[v]", 0, "lists"),
        ("(v, v)", 0, "lists, tuples"),
        ("{1: v}", 0, "dicts"),
        ("True", 0, "not a number"),
        ("None", 0, "not a number"),
        ("...", 0, "not a number"),
        ("1j", 0, "complex"),
        ("v in v", 0, "comparisons"),
        ("v is v", 0, "comparisons"),
        ("v + (1 if v else 2)", 5, "where("),
        ("abs(v) + sin(v) + cos(x)", 22, "unknown name 'x'"),
        ("v +", 3, "not a valid expression"),
        ("v + * 2", 4, "not a valid expression"),
        ("(v", 0, "not a valid expression"),
        ("v; import os", 1, "not a valid expression"),
        ("import os", 0, "not a valid expression"),
        ("\uff56 + x", 4, "unknown name 'x'"),  # a full-width v is v (NFKC); positions count characters, not bytes
        ("é + v", 0, "unknown name 'é'"),
        ("  x", 2, "unknown name 'x'"),
        ("(v +\n x)", 6, "unknown name 'x'"),
    ],
)
def test_refused_with_a_caret_at_the_offending_part(source, position, reason):
    with pytest.raises(SpecError) as info:
        compile_expression(source, field="H")
    error = info.value
    assert error.field == "H"
    assert error.text == source
    assert reason in error.reason
    assert error.position == position
    assert str(error).startswith("[Dump U-Net] H: ")


@pytest.mark.parametrize("source", ["", " ", "\t\n "])
def test_empty_expression_is_refused(source):
    with pytest.raises(SpecError, match="empty"):
        compile_expression(source, field="S")


def test_non_text_is_refused():
    with pytest.raises(DumpUnetError, match="as text"):
        compile_expression(0.5, field="S")  # type: ignore[arg-type]


def test_limits_on_length_and_nesting():
    with pytest.raises(SpecError, match="longer than"):
        compile_expression("v+" * (MAX_LENGTH // 2) + "v", field="H")
    with pytest.raises(SpecError, match="nested more than"):
        compile_expression("-" * (MAX_DEPTH + 5) + "v", field="H")
    with pytest.raises(SpecError, match="nested more than"):
        compile_expression("+".join(["v"] * (MAX_DEPTH + 5)), field="H")
    assert compile_expression("-" * (MAX_DEPTH - 5) + "v", field="H")(V).shape == V.shape


def test_huge_literals_are_refused_or_infinite_never_crashing():
    with pytest.raises(SpecError, match="too large"):
        compile_expression("9" * 400, field="H")  # an integer beyond float64
    assert np.isinf(run("1e999")).all()  # a float literal beyond float64 is already inf in Python
    with pytest.raises(SpecError, match="not a valid expression"):
        compile_expression("v\x00", field="H")


def test_probe_turns_any_evaluation_failure_into_the_projects_error(monkeypatch):
    def broken(*args):
        raise TypeError("boom")

    monkeypatch.setitem(expr.FUNCTIONS, "abs", (broken, 1, 1))
    with pytest.raises(SpecError, match="cannot be evaluated: boom"):
        compile_expression("abs(v)", field="L")


def test_calling_wraps_failures_in_the_projects_error():
    def evaluate(v):
        raise MemoryError("too big")

    broken = expr.Expression("abs(v)", "L", evaluate)
    with pytest.raises(DumpUnetError, match=r"L: the expression 'abs\(v\)' cannot be evaluated: too big"):
        broken(V)


# --- fuzz: only ever the project's error, or a float32 array of v's shape -----------------------------------------

_TOKENS = [
    "v",
    "pi",
    "e",
    "abs",
    "where",
    "clip",
    "max",
    "min",
    "sqrt",
    "log",
    "exp",
    "sin",
    "(",
    ")",
    ",",
    "+",
    "-",
    "*",
    "/",
    "**",
    "//",
    "%",
    "<",
    ">",
    "<=",
    ">=",
    "==",
    "!=",
    ".",
    "_",
    "[",
    "]",
    ":",
    "'",
    '"',
    ";",
    "=",
    "~",
    "@",
    "&",
    "|",
    "lambda",
    "import",
    "__import__",
    "__class__",
    "not",
    "and",
    "if",
    "else",
    "for",
    "in",
    "os",
    "1e308",
    "9",
    "0",
    "0.5",
    "2",
    " ",
    "\n",
    "\t",
    *"0123456789",
]
_GRAMMARISH = st.lists(st.sampled_from(_TOKENS), max_size=24).map("".join)
_SOURCES = st.one_of(st.text(max_size=40), _GRAMMARISH, _GRAMMARISH, _GRAMMARISH)
_FUZZ_V = np.linspace(-1.0, 1.0, 7).reshape(7, 1)


@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_SOURCES)
def test_fuzz_only_ever_the_projects_error(source):
    try:
        expression = compile_expression(source, field="Fuzz")
    except DumpUnetError as error:
        message = str(error)
    else:
        result = expression(_FUZZ_V)
        assert result.dtype == np.float32
        assert result.shape == _FUZZ_V.shape
        return
    assert message.startswith("[Dump U-Net] Fuzz")


@given(st.floats(-1, 1), st.floats(-3, 3, allow_nan=False))
def test_arithmetic_matches_python_on_scalars(v, c):
    result = float(compile_expression(f"(v + {c!r}) * 2 - v / 4", field="H")(np.array([v]))[0])
    assert math.isclose(result, (v + c) * 2 - v / 4, rel_tol=1e-6, abs_tol=1e-6)
