"""The safe evaluator for the colour expressions users type (R/G/B or H/S/L as numpy expressions in `v`).

The original extension pasted these strings into a lambda and `eval`'d them with numpy as `__builtins__`, which ran
any code a prompt file or a shared infotext carried. Here the text is parsed with `ast.parse(..., mode="eval")` and
only a whitelist is turned into a tree of small closures over numpy ufuncs; nothing is ever `eval`'d, `exec`'d or
compiled to bytecode. What is allowed:

- numbers (always evaluated as float64, so `9**9**9` is `inf` at once instead of a huge integer) and the names
  `v` (the transformed feature value, an array), `pi` and `e`;
- `+ - * / // % **`, unary `+ -`, comparisons `< <= > >= == !=` (also chained, `0 < v < 1`), which give 0.0/1.0;
- calls by bare name, with positional arguments, of the elementwise functions in `FUNCTIONS` (numpy ufuncs such as
  `abs`, `sin`, `exp`, `sqrt`, `where`, `clip`, `maximum`; `max`/`min` mean the elementwise `maximum`/`minimum`).

Everything else (attributes, indexing, strings, lambdas, comprehensions, keyword arguments, `and`/`or`/`not`,
`x if c else y`, any other name) raises `SpecError` with a caret under the offending part. A compiled expression is
probed once on a few sample values, so an expression that cannot be evaluated fails when the settings are checked,
not in the middle of a generation. Limits: at most `MAX_LENGTH` characters and `MAX_DEPTH` levels of nesting.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce

import numpy as np

from lib_dumpunet.errors import DumpUnetError, SpecError

__all__ = ["CONSTANTS", "FUNCTIONS", "MAX_DEPTH", "MAX_LENGTH", "Expression", "compile_expression"]

MAX_LENGTH = 1000
MAX_DEPTH = 100

# The values an expression is tried on when it is compiled (the transformed v lies in [-1, 1]).
_PROBE = np.linspace(-1.0, 1.0, 9)

CONSTANTS: dict[str, float] = {"pi": float(np.pi), "e": float(np.e)}

_ALGEBRAIC = ("abs", "absolute", "sign", "square", "sqrt", "cbrt", "floor", "ceil", "trunc", "rint")
_TRIGONOMETRIC = ("sin", "cos", "tan", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh")
_EXPONENTIAL = ("exp", "exp2", "expm1", "log", "log2", "log10", "log1p")
_TWO_ARGUMENTS = ("arctan2", "maximum", "minimum", "fmax", "fmin", "fmod", "mod", "power", "hypot", "heaviside")

# name -> (numpy function, fewest arguments, most arguments or None for "any number").
_Func = Callable[..., np.ndarray]
FUNCTIONS: dict[str, tuple[_Func, int, int | None]] = {
    **{name: (getattr(np, name), 1, 1) for name in (*_ALGEBRAIC, *_TRIGONOMETRIC, *_EXPONENTIAL)},
    **{name: (getattr(np, name), 2, 2) for name in _TWO_ARGUMENTS},
    "clip": (np.clip, 3, 3),
    "where": (np.where, 3, 3),
    # The original's `max`/`min` were numpy's reductions (with an axis argument); elementwise is what users mean.
    "max": (lambda *xs: reduce(np.maximum, xs), 2, None),
    "min": (lambda *xs: reduce(np.minimum, xs), 2, None),
}

_BINARY: dict[type[ast.operator], _Func] = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.true_divide,
    ast.FloorDiv: np.floor_divide,
    ast.Mod: np.remainder,
    ast.Pow: np.power,
}
_UNARY: dict[type[ast.unaryop], _Func] = {ast.UAdd: np.positive, ast.USub: np.negative}
_COMPARE: dict[type[ast.cmpop], _Func] = {
    ast.Lt: np.less,
    ast.LtE: np.less_equal,
    ast.Gt: np.greater,
    ast.GtE: np.greater_equal,
    ast.Eq: np.equal,
    ast.NotEq: np.not_equal,
}

# Friendly reasons for the syntax a colour expression cannot use.
_REFUSED: tuple[tuple[tuple[type[ast.AST], ...], str], ...] = (
    ((ast.Attribute,), "attribute access ('.') is not allowed; call functions by their bare name, e.g. abs(v)"),
    ((ast.Subscript, ast.Slice), "indexing ('[...]') is not allowed; v is one value per pixel"),
    ((ast.Lambda,), "lambda is not allowed; write the expression in v directly"),
    (
        (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp),
        "comprehensions are not allowed; write the expression in v directly",
    ),
    ((ast.List, ast.Tuple, ast.Set, ast.Dict), "lists, tuples, sets and dicts are not allowed; write one value"),
    ((ast.JoinedStr, ast.FormattedValue), "text in quotes is not allowed; write a number or an expression in v"),
    ((ast.BoolOp,), "'and'/'or' are not allowed; multiply comparisons, e.g. (v > 0) * (v < 0.5), or use where()"),
    ((ast.IfExp,), "'... if ... else ...' is not allowed; use where(condition, a, b)"),
    ((ast.NamedExpr,), "':=' is not allowed"),
    ((ast.Starred,), "'*' unpacking is not allowed; pass each argument by position"),
    ((ast.Await, ast.Yield, ast.YieldFrom), "this is not allowed in a colour expression"),
)

_Node = Callable[[np.ndarray], "np.ndarray | np.float64"]


@dataclass(frozen=True)
class Expression:
    """A compiled colour expression: call it with an array of v, get float32 colour values of the same shape."""

    source: str
    field: str
    _evaluate: _Node = dataclasses.field(repr=False, compare=False)

    def __call__(self, v: np.ndarray) -> np.ndarray:
        """Evaluate on `v` (any shape); the result is float32 of v's shape (a constant is broadcast)."""
        values = np.asarray(v, dtype=np.float64)
        try:
            with np.errstate(all="ignore"):
                result = np.asarray(self._evaluate(values), dtype=np.float64)
                return np.broadcast_to(result, values.shape).astype(np.float32)
        except Exception as exc:  # numpy can raise many types; every one is the user's expression failing
            raise DumpUnetError(f"{self.field}: the expression {self.source!r} cannot be evaluated: {exc}") from exc


def compile_expression(source: str, *, field: str) -> Expression:
    """Parse and check a colour expression in `v`; raise `SpecError` (a `DumpUnetError`) if it is not allowed.

    >>> compile_expression("(2+v)/3", field="H")(np.array([-1.0, 1.0]))
    array([0.33333334, 1.        ], dtype=float32)
    """
    if not isinstance(source, str):
        raise DumpUnetError(f"{field}: expected an expression in v as text, got {type(source).__name__}")
    if not source.strip():
        raise SpecError(field, source, 0, "the expression is empty; write one in v, e.g. abs(v) or 0.5")
    if len(source) > MAX_LENGTH:
        reason = f"the expression is {len(source):,} characters long, longer than the {MAX_LENGTH:,} allowed"
        raise SpecError(field, source, MAX_LENGTH, reason)
    # ast.parse refuses leading blanks ("unexpected indent"); parse without them and shift every position back.
    lead = len(source) - len(source.lstrip())
    compiler = _Compiler(field, source, lead)
    tree = compiler.parse(source[lead:])
    expression = Expression(source, field, compiler.compile(tree.body, 0))
    try:
        expression(_PROBE)
    except DumpUnetError as exc:
        raise SpecError(field, source, lead, f"the expression cannot be evaluated: {exc.__cause__ or exc}") from exc
    return expression


class _Compiler:
    """Turns a whitelisted AST into nested closures; refuses everything else with a positioned `SpecError`."""

    def __init__(self, field: str, source: str, lead: int) -> None:
        self.field, self.source, self.lead = field, source, lead
        self.body = source[lead:]
        # Start offset of each line of the parsed text, as Python's tokenizer counts lines (\r\n, \r or \n).
        self.line_starts = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", self.body)]

    # --- positions -------------------------------------------------------------------------------------------------

    def offset(self, lineno: int | None, col: int | None, *, utf8: bool) -> int:
        """Character offset in `source` of a 1-based line and a column (UTF-8 bytes for AST nodes)."""
        line = max(1, min(lineno or 1, len(self.line_starts))) - 1
        start = self.line_starts[line]
        end = self.line_starts[line + 1] if line + 1 < len(self.line_starts) else len(self.body)
        col = max(0, col or 0)
        if utf8:
            col = len(self.body[start:end].encode("utf-8")[:col].decode("utf-8", errors="ignore"))
        return self.lead + start + col

    def fail(self, node: ast.AST, reason: str) -> SpecError:
        start = self.offset(getattr(node, "lineno", 1), getattr(node, "col_offset", 0), utf8=True)
        end_line, end_col = getattr(node, "end_lineno", None), getattr(node, "end_col_offset", None)
        end = self.offset(end_line, end_col, utf8=True) if end_line is not None and end_col is not None else start + 1
        return SpecError(self.field, self.source, start, reason, max(1, end - start))

    # --- parsing ---------------------------------------------------------------------------------------------------

    def parse(self, body: str) -> ast.Expression:
        try:
            with warnings.catch_warnings():  # "invalid decimal literal" and the like: the text is refused anyway
                warnings.simplefilter("ignore", SyntaxWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                return ast.parse(body, mode="eval")
        except SyntaxError as exc:
            # Python gives no column when the text ends too early: then point just after its end.
            at_end = len(self.source.rstrip())
            position = self.offset(exc.lineno, exc.offset - 1, utf8=False) if exc.offset else at_end
            raise SpecError(self.field, self.source, position, f"this is not a valid expression: {exc.msg}") from exc
        except (ValueError, MemoryError, RecursionError) as exc:  # null bytes, huge literals, deep nesting
            raise SpecError(self.field, self.source, self.lead, f"this is not a valid expression: {exc}") from exc

    # --- compiling -------------------------------------------------------------------------------------------------

    def compile(self, node: ast.AST, depth: int) -> _Node:
        if depth > MAX_DEPTH:
            raise self.fail(node, f"the expression is nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.BinOp):
            return self.binary(node, depth)
        if isinstance(node, ast.UnaryOp):
            return self.unary(node, depth)
        if isinstance(node, ast.Compare):
            return self.compare(node, depth)
        if isinstance(node, ast.Call):
            return self.call(node, depth)
        for kinds, reason in _REFUSED:
            if isinstance(node, kinds):
                raise self.fail(node, reason)
        raise self.fail(node, f"{type(node).__name__} is not allowed in a colour expression")

    def constant(self, node: ast.Constant) -> _Node:
        value = node.value
        if isinstance(value, str | bytes):
            raise self.fail(node, "text in quotes is not allowed; write a number or an expression in v")
        if isinstance(value, bool) or value is None or value is Ellipsis:
            raise self.fail(node, f"{value!r} is not a number; write a number such as 0.5")
        if isinstance(value, complex):
            raise self.fail(node, "complex numbers are not allowed")
        try:
            number = np.float64(float(value))
        except OverflowError as exc:
            raise self.fail(node, "this number is too large") from exc
        return lambda v: number

    def name(self, node: ast.Name) -> _Node:
        if node.id == "v":
            return lambda v: v
        if node.id in CONSTANTS:
            number = np.float64(CONSTANTS[node.id])
            return lambda v: number
        if node.id in FUNCTIONS:
            raise self.fail(node, f"{node.id} is a function; call it, e.g. {node.id}(v)")
        if node.id.startswith("__"):
            raise self.fail(node, f"the name {node.id!r} is not allowed")
        raise self.fail(node, f"unknown name {node.id!r}; an expression may use v, pi, e and functions such as abs(v)")

    def binary(self, node: ast.BinOp, depth: int) -> _Node:
        op = _BINARY.get(type(node.op))
        if op is None:
            raise self.fail(node, "this operator is not allowed; use + - * / // % ** and comparisons")
        left, right = self.compile(node.left, depth + 1), self.compile(node.right, depth + 1)
        return lambda v: op(left(v), right(v))

    def unary(self, node: ast.UnaryOp, depth: int) -> _Node:
        op = _UNARY.get(type(node.op))
        if op is None:
            hint = "use 1 - (...) for 'not'" if isinstance(node.op, ast.Not) else "use + or -"
            raise self.fail(node, f"this operator is not allowed; {hint}")
        operand = self.compile(node.operand, depth + 1)
        return lambda v: op(operand(v))

    def compare(self, node: ast.Compare, depth: int) -> _Node:
        ops: list[_Func] = []
        for op in node.ops:
            func = _COMPARE.get(type(op))
            if func is None:
                raise self.fail(node, "only < <= > >= == != comparisons are allowed")
            ops.append(func)
        operands = [self.compile(x, depth + 1) for x in (node.left, *node.comparators)]

        def evaluate(v: np.ndarray) -> np.ndarray:
            values = [f(v) for f in operands]
            truth = reduce(np.logical_and, (op(a, b) for op, a, b in zip(ops, values, values[1:], strict=False)))
            return np.asarray(truth, dtype=np.float64)

        return evaluate

    def call(self, node: ast.Call, depth: int) -> _Node:
        if not isinstance(node.func, ast.Name):
            raise self.fail(node.func, "only functions named directly can be called, e.g. abs(v) or clip(v, 0, 1)")
        name = node.func.id
        if name not in FUNCTIONS:
            raise self.fail(node.func, f"unknown function {name!r}; allowed: {', '.join(sorted(FUNCTIONS))}")
        if node.keywords:
            raise self.fail(node.keywords[0], f"{name}() takes positional arguments only")
        func, fewest, most = FUNCTIONS[name]
        count = len(node.args)
        if count < fewest or (most is not None and count > most):
            wanted = f"{fewest}" if most == fewest else f"at least {fewest}" if most is None else f"{fewest}–{most}"
            plural = "" if wanted == "1" else "s"
            raise self.fail(node, f"{name}() takes {wanted} argument{plural}, got {count}")
        args = [self.compile(arg, depth + 1) for arg in node.args]
        return lambda v: func(*(a(v) for a in args))
