"""Per-pixel expressions over a layer's outputs: parsed safely, checked, run band by band.

An expression such as ``hypot(sobel_x, sobel_y)`` is parsed with Python's :mod:`ast` and
accepted only if every node is on a short whitelist (numbers, names, ``+ - * / **``,
comparisons, and calls of the functions in :data:`FUNCTIONS`); nothing is ever
``eval``-ed. :func:`compile_expressions` then checks it against what one layer offers for
one input depth (its filters' output channels, depthwise groups, the layer's input and
its channels) and returns a :class:`Combine`: the engine calls it on each band of the
layer's output, so expressions stream out of core, on Dask and in batches exactly as
plain filters do.

Values are float32 and follow IEEE rules: ``1/0`` is ``inf``, ``0/0`` and ``sqrt(-1)``
are NaN, comparisons give 1.0 or 0.0 and ``where`` takes any non-zero condition as true.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from convvol.errors import BankError, did_you_mean

# A function: (fewest arguments, most or None for any number, what it computes).
FUNCTIONS: dict[str, tuple[int, int | None, str]] = {
    "abs": (1, 1, "|x|"),
    "sqrt": (1, 1, "√x (NaN for x < 0)"),
    "exp": (1, 1, "eˣ"),
    "log": (1, 1, "natural logarithm (−inf at 0, NaN for x < 0)"),
    "hypot": (2, None, "√(a² + b² + ...)"),
    "min": (2, None, "the smallest argument, pixel by pixel"),
    "max": (2, None, "the largest argument, pixel by pixel"),
    "where": (3, 3, "where(condition, a, b): a where condition ≠ 0, else b"),
    "clip": (3, 3, "clip(x, low, high)"),
}
BINARY = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
UNARY = {ast.USub: "-", ast.UAdd: "+"}
COMPARISONS = {
    ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
}  # fmt: skip
INPUT = "input"
MAX_EXPRESSION_LENGTH = 4096  # characters of one expression
MAX_EXPRESSION_NODES = 1000  # numbers, names, operators and calls in one expression
MAX_EXPRESSION_DEPTH = 100  # parts inside parts: checked and run by recursion
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ALLOWED = (
    "numbers, names, + - * / **, comparisons (< <= > >= == !=), parentheses and the "
    "functions " + ", ".join(FUNCTIONS)
)

_UNARY_FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "abs": np.abs,
    "sqrt": np.sqrt,
    "exp": np.exp,
    "log": np.log,
}
_BINARY_UFUNCS: dict[type, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.divide,
    ast.Pow: np.power,
}
_COMPARE_UFUNCS: dict[type, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    ast.Lt: np.less,
    ast.LtE: np.less_equal,
    ast.Gt: np.greater,
    ast.GtE: np.greater_equal,
    ast.Eq: np.equal,
    ast.NotEq: np.not_equal,
}


@dataclass(frozen=True, eq=False)
class Expression:
    """One named expression as written: its text, its checked syntax tree, where it came from.

    ``origin`` starts every message about it (the bank file, line and item, or
    ``--expr``); ``output`` says whether its channels are among the layer's outputs.
    """

    name: str
    text: str
    tree: ast.expr
    origin: str
    output: bool = True


def parse_expression(name: str, text: str, origin: str, *, output: bool = True) -> Expression:
    """Parse and whitelist one expression (raises BankError naming ``origin``).

    >>> parse_expression("magnitude", "hypot(sobel_x, sobel_y)", "example").name
    'magnitude'
    """
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or name == INPUT:
        raise BankError(
            f"{origin}: an expression's name must be letters, digits and '_' (not starting "
            f"with a digit, and not 'input'); got {name!r}"
        )
    if not isinstance(text, str) or not text.strip():
        raise BankError(f"{origin}: the expression is empty")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise BankError(
            f"{origin}: the expression is {len(text):,} characters long (at most "
            f"{MAX_EXPRESSION_LENGTH:,})"
        )
    source = text.strip()
    if "\n" in source or "\r" in source:
        raise BankError(f"{origin}: an expression is one line of text")
    try:
        tree = ast.parse(source, mode="eval").body
    except SyntaxError as error:
        column = error.offset or 1
        marked = source[: column - 1] + "▶" + source[column - 1 :]
        raise BankError(
            f"{origin}: syntax error at column {column}: {marked}",
            hint=f"{error.msg}; an expression uses {ALLOWED}",
        ) from None
    except (ValueError, RecursionError, MemoryError) as error:  # NUL bytes, deep nesting
        raise BankError(f"{origin}: cannot read the expression: {error}") from None
    nodes = sum(1 for _ in ast.walk(tree))
    if nodes > MAX_EXPRESSION_NODES:
        raise BankError(
            f"{origin}: the expression has {nodes:,} parts (at most {MAX_EXPRESSION_NODES:,})"
        )
    if _depth(tree) > MAX_EXPRESSION_DEPTH:
        raise BankError(
            f"{origin}: the expression nests more than {MAX_EXPRESSION_DEPTH} levels deep"
        )
    _whitelist(tree, source, origin)
    return Expression(name=name, text=source, tree=tree, origin=origin, output=output)


def parse_assignment(text: str) -> Expression:
    """``NAME = EXPR`` as given to ``--expr`` (raises BankError)."""
    name, equals, expression = text.partition("=")
    if not equals or expression.startswith("=") or not NAME_PATTERN.match(name.strip()):
        raise BankError(
            f"--expr {text!r}: expected NAME = EXPRESSION, NAME of letters, digits and '_'",
            hint="e.g. --expr 'magnitude = hypot(sobel_x, sobel_y)'",
        )
    return parse_expression(name.strip(), expression, f"--expr {name.strip()}")


def _depth(tree: ast.AST) -> int:
    """How deep parts nest in ``tree`` (without recursion)."""
    deepest, pending = 0, [(tree, 1)]
    while pending:
        node, depth = pending.pop()
        deepest = max(deepest, depth)
        pending.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _column(node: ast.AST) -> int:
    return int(getattr(node, "col_offset", 0)) + 1


def _at(origin: str, node: ast.AST, source: str) -> str:
    """Where a part of an expression is: ``ORIGIN: at column 7 of 'hypot(sxx, sy)'``."""
    return f"{origin}: at column {_column(node)} of {source!r}"


def _whitelist(tree: ast.expr, source: str, origin: str) -> None:
    """Refuse every node that is not a number, a name, an allowed operator or call."""
    for node in ast.walk(tree):
        where = _at(origin, node, source)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise BankError(f"{where}: {node.value!r} is not a number", hint=ALLOWED)
            try:
                float(node.value)
            except OverflowError:
                raise BankError(f"{where}: a number beyond any float's range") from None
        elif isinstance(node, ast.Name | ast.Load | ast.Compare):
            pass
        elif isinstance(node, ast.BinOp):
            if type(node.op) not in BINARY:
                raise BankError(
                    f"{where}: the operator in {ast.get_source_segment(source, node)!r} is not "
                    "allowed",
                    hint=ALLOWED,
                )
        elif isinstance(node, ast.UnaryOp):
            if type(node.op) not in UNARY:
                raise BankError(
                    f"{where}: {ast.get_source_segment(source, node)!r} uses an operator that is "
                    "not allowed",
                    hint=ALLOWED,
                )
        elif isinstance(node, ast.Call):
            _check_call(node, where)
        elif type(node) in BINARY or type(node) in UNARY or type(node) in COMPARISONS:
            pass
        else:
            segment = ast.get_source_segment(source, node) or type(node).__name__
            raise BankError(f"{where}: {segment!r} is not allowed in an expression", hint=ALLOWED)


def _check_call(node: ast.Call, where: str) -> None:
    if not isinstance(node.func, ast.Name):
        raise BankError(f"{where}: only the functions {', '.join(FUNCTIONS)} may be called")
    name = node.func.id
    if name not in FUNCTIONS:
        raise BankError(
            f"{where}: unknown function {name!r}",
            hint=did_you_mean(name, FUNCTIONS) or "functions: " + ", ".join(FUNCTIONS),
        )
    if node.keywords:
        raise BankError(f"{where}: {name}() takes no keyword arguments")
    if any(isinstance(arg, ast.Starred) for arg in node.args):
        raise BankError(f"{where}: {name}() takes no *arguments")
    low, high, usage = FUNCTIONS[name]
    count = len(node.args)
    if count < low or (high is not None and count > high):
        wanted = f"{low}" if low == high else f"{low} or more" if high is None else f"{low}..{high}"
        raise BankError(
            f"{where}: {name}() takes {wanted} argument{'' if wanted == '1' else 's'}, got {count}",
            hint=f"{name}: {usage}",
        )


# --- checking against a layer, and running -------------------------------------------

# What a value is: a constant, one channel, or a group (its channels' suffixes).
CONSTANT: tuple[str, ...] | None = None
SINGLE: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Source:
    """Where a name's values come from: filter output channels or input channels."""

    from_input: bool
    indices: tuple[int, ...]
    suffixes: tuple[str, ...]  # () for one channel


@dataclass(frozen=True, eq=False)
class Combine:
    """Expressions compiled for one layer at one input depth: what the engine runs per band.

    ``names`` are the layer's output channels; :meth:`__call__` fills a band of them from
    the band of filter outputs and the layer's input at the same output pixels.
    """

    names: tuple[str, ...]
    expressions: tuple[Expression, ...]
    sources: Mapping[str, _Source]
    outputs: tuple[tuple[int, str, tuple[str, ...]], ...]  # (expression index, name, suffixes)

    def __call__(self, filters: np.ndarray, inputs: np.ndarray, out: np.ndarray) -> None:
        """Evaluate over a band: ``filters`` rows×W'×N, ``inputs`` rows×W'×C → ``out``
        rows×W'×len(names), all float32."""
        values: dict[str, np.ndarray] = {}
        channel = 0
        kept = {index for index, _, _ in self.outputs}
        with np.errstate(all="ignore"):
            results: dict[int, np.ndarray] = {}
            for index, expression in enumerate(self.expressions):
                result = self._evaluate(expression.tree, filters, inputs, values)
                values[expression.name] = result
                if index in kept:
                    results[index] = result
        for index, _, suffixes in self.outputs:
            count = max(1, len(suffixes))
            out[:, :, channel : channel + count] = results[index]
            channel += count

    def _evaluate(
        self,
        node: ast.expr,
        filters: np.ndarray,
        inputs: np.ndarray,
        values: dict[str, np.ndarray],
    ) -> np.ndarray:
        """The value of ``node`` over the band (float32; a constant as a float32 scalar)."""
        if isinstance(node, ast.Constant):
            assert isinstance(node.value, int | float)  # whitelisted
            return np.asarray(float(node.value), np.float32)  # 1e39 is inf, as IEEE says
        if isinstance(node, ast.Name):
            if node.id in values:
                return values[node.id]
            source = self.sources[node.id]
            band = inputs if source.from_input else filters
            if source.suffixes:
                return band[:, :, list(source.indices)]
            return band[:, :, source.indices[0] : source.indices[0] + 1]  # rows×W'×1
        if isinstance(node, ast.UnaryOp):
            operand = self._evaluate(node.operand, filters, inputs, values)
            return np.negative(operand) if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            left = self._evaluate(node.left, filters, inputs, values)
            right = self._evaluate(node.right, filters, inputs, values)
            return _float32(_BINARY_UFUNCS[type(node.op)](left, right))
        if isinstance(node, ast.Compare):
            left = self._evaluate(node.left, filters, inputs, values)
            truth: np.ndarray | None = None
            for op, comparator in zip(node.ops, node.comparators, strict=True):
                right = self._evaluate(comparator, filters, inputs, values)
                step = _COMPARE_UFUNCS[type(op)](left, right)
                truth = step if truth is None else np.logical_and(truth, step)
                left = right
            return _float32(truth)
        assert isinstance(node, ast.Call)
        assert isinstance(node.func, ast.Name)
        name = node.func.id
        args = [self._evaluate(arg, filters, inputs, values) for arg in node.args]
        if name in _UNARY_FUNCTIONS:
            return _float32(_UNARY_FUNCTIONS[name](args[0]))
        if name == "hypot":
            total = np.hypot(args[0], args[1])
            for arg in args[2:]:
                total = np.hypot(total, arg)
            return _float32(total)
        if name in ("min", "max"):
            pick = np.minimum if name == "min" else np.maximum  # NaN wins, as IEEE says
            total = args[0]
            for arg in args[1:]:
                total = pick(total, arg)
            return _float32(total)
        if name == "where":
            condition, when_true, when_false = args
            return _float32(np.where(condition != 0, when_true, when_false))
        value, low, high = args  # clip
        return _float32(np.minimum(np.maximum(value, low), high))


def _float32(value: object) -> np.ndarray:
    array = np.asarray(value)
    return array if array.dtype == np.float32 else array.astype(np.float32)


def input_names(channels: Sequence[str]) -> dict[str, int]:
    """``input_red``, ``input_green``, ... (or ``input_0``, ...): the input's channels,
    each also ``input_<index>`` at any depth (``input_0`` is ``input_red`` or ``input_gray``)."""
    names = {f"{INPUT}_{name}": index for index, name in enumerate(channels)}
    for index in range(len(channels)):
        names.setdefault(f"{INPUT}_{index}", index)
    return names


def compile_expressions(
    expressions: Sequence[Expression],
    filter_names: Sequence[str],
    groups: Mapping[str, Sequence[tuple[str, int]]],
    channels: Sequence[str],
) -> Combine:
    """Check ``expressions`` against one layer and compile them (raises BankError).

    ``filter_names`` are the filters' output channels in order; ``groups`` maps a
    depthwise filter's name to its (suffix, output index) pairs; ``channels`` names the
    layer's input channels (``red``, ``green``, ... as :func:`convvol.bank.channel_names`).
    The layer's outputs are the expressions marked ``output``, a group giving one channel
    per member (``sharp_red``, ``sharp_green``, ...).
    """
    sources: dict[str, _Source] = {}
    for index, name in enumerate(filter_names):
        sources[name] = _Source(False, (index,), ())
    for name, members in groups.items():
        sources.setdefault(
            name, _Source(False, tuple(i for _, i in members), tuple(s for s, _ in members))
        )
    sources[INPUT] = _Source(True, tuple(range(len(channels))), tuple(channels))
    for name, index in input_names(channels).items():
        sources.setdefault(name, _Source(True, (index,), ()))
    kinds: dict[str, tuple[str, ...] | None] = {
        name: source.suffixes for name, source in sources.items()
    }
    outputs: list[tuple[int, str, tuple[str, ...]]] = []
    names: list[str] = []
    for index, expression in enumerate(expressions):
        if expression.name in kinds:
            source = sources.get(expression.name)
            what = (
                "an earlier expression"
                if source is None
                else "the layer's input"
                if source.from_input
                else "an output of a filter"
            )
            raise BankError(
                f"{expression.origin}: the name {expression.name!r} is taken by {what}",
                hint="give the expression another name",
            )
        kind = _kind(expression.tree, expression, kinds)
        if kind is CONSTANT:
            raise BankError(
                f"{expression.origin}: {expression.text!r} is a constant; an expression must "
                "read at least one channel",
                hint=f"e.g. {expression.text} + 0 * input",
            )
        kinds[expression.name] = kind
        if expression.output:
            assert kind is not None
            outputs.append((index, expression.name, kind))
            names.extend([f"{expression.name}_{s}" for s in kind] if kind else [expression.name])
    if not outputs:
        raise BankError(f"{expressions[-1].origin}: no expression is marked as an output")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise BankError(
                f"{expressions[-1].origin}: two outputs would be named {name!r}",
                hint="rename one of the expressions",
            )
        seen.add(name)
    return Combine(tuple(names), tuple(expressions), sources, tuple(outputs))


# The names a channel may have at some depth (convvol.bank.channel_names): colours, indices.
_ANY_CHANNEL = re.compile(r"^(gray|alpha|red|green|blue|[0-9]+)$")


def check_names(
    expressions: Sequence[Expression],
    filter_names: Sequence[str],
    groups: Sequence[str],
) -> None:
    """Refuse a name that no input depth can give (raises BankError with "did you mean").

    What :func:`compile_expressions` checks needs the layer's input depth; this needs
    none, so a caller can check before reading an input whose depth it cannot know yet
    (a ``.npy``, standard input, a TIFF stack). ``filter_names`` are the filters' names
    and ``groups`` the depthwise ones, whose outputs are ``NAME_<channel>``. A name is
    possible if it is a filter, ``input``, an earlier expression, or a group's or the
    input's ``_<channel>`` (``gray``, ``alpha``, ``red``, ``green``, ``blue`` or a number).
    """
    known = {*filter_names, INPUT}
    prefixes = {*groups, INPUT}
    for expression in expressions:
        calls = {id(node.func) for node in ast.walk(expression.tree) if isinstance(node, ast.Call)}
        names = [node for node in ast.walk(expression.tree)
                 if isinstance(node, ast.Name) and id(node) not in calls]  # fmt: skip
        for node in sorted(names, key=_column):
            if node.id in known:
                continue
            prefix, _, channel = node.id.rpartition("_")
            if prefix in prefixes and _ANY_CHANNEL.match(channel):
                continue
            close = [f"{p}_{c}" for p in prefixes for c in ("gray", "red", "green", "blue", "0")]
            listed = sorted(known) + [f"{p}_<channel>" for p in sorted(prefixes)]
            raise BankError(
                f"{_at(expression.origin, node, expression.text)}: unknown name {node.id!r}",
                hint=did_you_mean(node.id, [*known, *close])
                or "names: " + ", ".join(listed[:20]) + (" ..." if len(listed) > 20 else ""),
            )
        known.add(expression.name)


def _kind(
    node: ast.expr, expression: Expression, kinds: Mapping[str, tuple[str, ...] | None]
) -> tuple[str, ...] | None:
    """CONSTANT, SINGLE or a group's suffixes; BankError for unknown names and mixtures."""
    where = _at(expression.origin, node, expression.text)
    if isinstance(node, ast.Constant):
        return CONSTANT
    if isinstance(node, ast.Name):
        if node.id not in kinds:
            # input_0, input_1, ... stand for the named channels: suggested for numbers only.
            by_index = re.compile(rf"^{INPUT}_[0-9]+$")
            names = [name for name in kinds if by_index.match(node.id) or not by_index.match(name)]
            raise BankError(
                f"{where}: unknown name {node.id!r}",
                hint=did_you_mean(node.id, names)
                or "names: " + ", ".join(sorted(names)[:20]) + (" ..." if len(names) > 20 else ""),
            )
        return kinds[node.id]
    if isinstance(node, ast.UnaryOp):
        return _kind(node.operand, expression, kinds)
    if isinstance(node, ast.BinOp):
        parts = [node.left, node.right]
        if isinstance(node.op, ast.Div) and _constant(node.right) == 0:
            raise BankError(
                f"{where}: divides by the constant "
                + _constant_zero(ast.get_source_segment(expression.text, node.right) or "0")
                + ": every pixel would be ±inf or NaN",
                hint="division by a channel that is 0 at some pixels is allowed: IEEE results "
                "(±inf, NaN), then NaN becomes 0 when written as pixels",
            )
    elif isinstance(node, ast.Compare):
        parts = [node.left, *node.comparators]
    else:
        assert isinstance(node, ast.Call)
        parts = list(node.args)
    kind: tuple[str, ...] | None = CONSTANT
    first: ast.expr | None = None
    for part in parts:
        part_kind = _kind(part, expression, kinds)
        if part_kind is CONSTANT:
            continue
        if kind is CONSTANT:
            kind, first = part_kind, part
            continue
        if part_kind != kind and {len(kind or ()), len(part_kind or ())} == {0, 1}:
            kind = kind or part_kind  # a group of one channel goes with single channels
        elif part_kind != kind:
            assert first is not None
            raise BankError(
                f"{_at(expression.origin, part, expression.text)}: "
                f"{_describe(first, expression, kind)} and "
                f"{_describe(part, expression, part_kind)} cannot be combined",
                hint="a group combines with a constant or a group of the same channels; "
                "name one member (e.g. blur_red) to combine it with a single channel",
            )
    return kind


def _constant_zero(text: str) -> str:
    """A divisor that is the constant 0, as said: ``0``, or ``'1 - 1', which is 0``."""
    try:
        literal = float(text) == 0
    except ValueError:
        literal = False
    return text if literal else f"{text!r}, which is 0"


def _constant(node: ast.expr) -> float | None:
    """The value of a part made of numbers only, else None."""
    if any(isinstance(part, ast.Name) for part in ast.walk(node)):
        return None
    combine = Combine((), (), {}, ())
    with np.errstate(all="ignore"):
        empty = np.empty((0, 0, 0), np.float32)
        return float(combine._evaluate(node, empty, empty, {}))


def _describe(node: ast.expr, expression: Expression, kind: tuple[str, ...] | None) -> str:
    text = ast.get_source_segment(expression.text, node) or ast.unparse(node)
    if not kind:
        return f"{text!r} (one channel)"
    return f"{text!r} (a group of {len(kind)}: {', '.join(kind)})"
