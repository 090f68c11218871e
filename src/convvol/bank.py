"""Filter banks: YAML/JSON files parsed and validated into frozen dataclasses, and the search path.

A bank is a list of filters. A filter is a kh×kw×C volume given in one of three ways
(``channels``: named per-channel layers, the rest zero; ``kernel``: one 2-D layer on every
channel; ``weights``: every layer explicitly). How many channels a filter has depends on
the volume it meets, so a :class:`Bank` is *resolved* against a channel count
(:meth:`Bank.resolve`) into plain N×C×kh×kw weights for the engine.

Every problem raises :class:`~convvol.errors.BankError` naming the file, the filter and,
where the parser knows it, the line.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from convvol import kernels
from convvol.errors import BankError, KernelError, ParameterError, choice_hint, did_you_mean
from convvol.normalize import InputNorm, parse_input
from convvol.settings import ACTIVATIONS, BORDERS, PADDINGS

if TYPE_CHECKING:  # expressions are compiled only by banks that have them
    from convvol.expressions import Combine, Expression

BANK_SUFFIXES = (".yaml", ".yml", ".json")
BANK_KEYS = ("name", "description", "filters", "defaults", "expressions", "input", "provenance")
FILTER_KEYS = (
    "name", "description", "channels", "kernel", "weights",
    "scale", "bias", "normalize", "depthwise", "slope",
)  # fmt: skip
SOURCE_KEYS = ("channels", "kernel", "weights")
DEFAULT_KEYS = ("padding", "border", "cval", "stride", "dilation", "activation", "slope")
EXPRESSION_KEYS = ("name", "expr", "output")
# Kernel arithmetic: a layer written {sum: [...]} or {rotate: {...}} (not built-in names).
SUM_KEYS = ("weight", "kernel")
ROTATE_KEYS = ("kernel", "angle")
MAX_EXPRESSIONS = 1024
CHANNEL_KEYS = {"red": 0, "r": 0, "green": 1, "g": 1, "blue": 2, "b": 2, "alpha": 3, "a": 3}
# Names end up in file names ({name} in --split templates): keep them path-safe.
NAME_PATTERN = re.compile(r"^[\w.+-]+$")
MAX_FILTERS = 4096
MAX_CHANNEL_INDEX = 4095
FLOAT32_MAX = float(np.finfo(np.float32).max)
# Limits on what a bank file may make convvol do (see docs/errors.md).
MAX_BANK_BYTES = 16 * 2**20  # the file itself
MAX_BANK_VALUES = 2**20  # numbers, texts, lists and mappings, YAML aliases expanded
MAX_BANK_NESTING = 64  # lists and mappings inside each other
MAX_BANK_WEIGHTS = kernels.MAX_KERNEL_WEIGHTS  # as written, and as resolved (N×C×kh×kw)
MAX_NUMBER_LENGTH = 400  # characters of one YAML or JSON integer (float32 needs 39 digits)


def channel_names(channels: int) -> list[str]:
    """Names of a volume's channels: colour names for 1–4 channels, indices beyond."""
    by_depth = {1: ["gray"], 2: ["gray", "alpha"], 3: ["red", "green", "blue"]}
    by_depth[4] = [*by_depth[3], "alpha"]
    return by_depth.get(channels, [str(index) for index in range(channels)])


# --- the data -------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Filter:
    """One filter of a bank, as written: its layers are completed per volume by :meth:`expand`.

    ``layers`` maps a channel index to a 2-D layer (``channels:``); ``kernel`` is one layer
    for every channel (``kernel:``); ``weights`` is a C×kh×kw array (``weights:``). Exactly one
    of the three is set.
    """

    name: str
    description: str = ""
    layers: Mapping[int, np.ndarray] | None = None
    kernel: np.ndarray | None = None
    weights: np.ndarray | None = None
    bias: float = 0.0
    scale: float = 1.0
    normalize: bool = False
    depthwise: bool = False
    line: int | None = None  # where it starts in its YAML file, for messages
    recipe: str = ""  # how a kernel: was written when it is a built-in or composite
    slope: float | None = None  # prelu's negative slope for this filter (else the layer's)

    @property
    def kernel_shape(self) -> tuple[int, int]:
        """(kh, kw) of every layer."""
        if self.kernel is not None:
            layer = self.kernel
        elif self.weights is not None:
            layer = self.weights[0]
        else:
            assert self.layers is not None
            layer = next(iter(self.layers.values()))
        return int(layer.shape[0]), int(layer.shape[1])

    @property
    def channels_needed(self) -> int:
        """The fewest input channels this filter can run on."""
        if self.weights is not None:
            return int(self.weights.shape[0])
        if self.layers is not None:
            return max(self.layers) + 1
        return 1

    def expand(self, channels: int) -> list[tuple[str, np.ndarray, float]]:
        """Complete this filter for a volume of ``channels`` channels.

        Returns (output name, C×kh×kw float64 weights, bias) per output channel: one, or
        one per input channel for a depthwise filter. Raises ValueError with the reason when
        the filter cannot run on that depth.
        """
        kh, kw = self.kernel_shape
        if self.weights is not None:
            if self.weights.shape[0] != channels:
                raise ValueError(
                    f"has {self.weights.shape[0]} layers but the volume has "
                    f"{counted(channels, 'channel')}"
                )
            outputs = [(self.name, self.weights.copy())]
        elif self.layers is not None:
            if max(self.layers) >= channels:
                names = channel_names(max(self.layers) + 1)
                raise ValueError(
                    f"reads channel {max(self.layers)} ({names[max(self.layers)]}) but the volume "
                    f"has {counted(channels, 'channel')}"
                )
            full = np.zeros((channels, kh, kw))
            for index, layer in self.layers.items():
                full[index] = layer
            outputs = [(self.name, full)]
        elif self.depthwise:
            assert self.kernel is not None
            outputs = []
            for index, channel in enumerate(channel_names(channels)):
                single = np.zeros((channels, kh, kw))
                single[index] = self.kernel
                outputs.append((f"{self.name}_{channel}", single))
        else:
            assert self.kernel is not None
            outputs = [(self.name, np.broadcast_to(self.kernel, (channels, kh, kw)).copy())]
        return [
            (name, _normalized(weights) * self.scale if self.normalize else weights * self.scale,
             self.bias)
            for name, weights in outputs
        ]  # fmt: skip


def counted(number: int, noun: str) -> str:
    """'1 filter', '3 filters': a number and its noun, for messages."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _normalized(weights: np.ndarray) -> np.ndarray:
    """Scale to sum 1; for a zero-sum filter, positive weights to +1 and negative to −1."""
    total = weights.sum()
    magnitude = np.abs(weights).sum()
    if magnitude == 0:
        raise ValueError("cannot normalize: all its weights are zero")
    if abs(total) > 1e-9 * magnitude:
        return weights / total
    positive = weights[weights > 0].sum()
    negative = -weights[weights < 0].sum()
    return np.where(weights > 0, weights / positive, weights / negative)


@dataclass(frozen=True, eq=False)
class BankWeights:
    """A bank completed for one input depth: what the engine needs, plus output names.

    ``names`` are the filters' output channels (one per row of ``weights``); ``combine``,
    when the bank has expressions, turns them into the layer's outputs (:attr:`outputs`).
    """

    names: tuple[str, ...]
    weights: np.ndarray  # N×C×kh×kw float32
    bias: np.ndarray  # N float32
    sources: tuple[int, ...] = ()  # for each filter output, the index of its filter
    combine: Combine | None = None
    slopes: tuple[float | None, ...] = ()  # for each filter output, its filter's prelu slope

    @property
    def outputs(self) -> tuple[str, ...]:
        """The layer's output channels: the expressions' if any, else the filters'."""
        return self.combine.names if self.combine is not None else self.names

    def prelu_slopes(self, default: float) -> np.ndarray:
        """Each filter output's prelu slope: its filter's ``slope:``, else ``default``."""
        given = self.slopes or (None,) * len(self.names)
        return np.array([default if s is None else s for s in given], np.float32)


@dataclass(frozen=True, eq=False)
class Bank:
    """A validated filter bank. ``defaults`` holds the bank's own convolution settings."""

    name: str
    filters: tuple[Filter, ...]
    description: str = ""
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    source: Path | None = None
    expressions: tuple[Expression, ...] = ()

    def with_expressions(self, extra: Sequence[Expression | str]) -> Bank:
        """This bank with ``extra`` expressions (``"NAME = EXPR"`` texts, as ``--expr``
        takes them) after its own: they become the layer's outputs, and the bank's own
        expressions are kept as names they may read.

        >>> load_bank("gradients").with_expressions(["m = hypot(dx, dy)"]).resolve(3).outputs
        ('m',)
        """
        if not extra:
            return self
        from convvol.expressions import parse_assignment

        added = tuple(parse_assignment(e) if isinstance(e, str) else e for e in extra)
        own = tuple(replace(expression, output=False) for expression in self.expressions)
        return replace(self, expressions=(*own, *added))

    def check_names(self) -> None:
        """Refuse expressions reading a name that no input depth gives (BankError): what
        can be checked before the input's depth is known (:meth:`resolve` checks the rest)."""
        if self.expressions:
            from convvol.expressions import check_names

            check_names(
                self.expressions,
                [filt.name for filt in self.filters],
                [filt.name for filt in self.filters if filt.depthwise],
            )

    input: InputNorm | None = None  # how the network normalised its input (``input:``)
    provenance: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def kernel_shape(self) -> tuple[int, int]:
        """The (kh, kw) shared by every filter."""
        return self.filters[0].kernel_shape

    @property
    def default_channels(self) -> int:
        """The depth the bank is written for: explicit weights fix it, else RGB or more."""
        fixed = [f.weights.shape[0] for f in self.filters if f.weights is not None]
        if fixed:
            return int(fixed[0])
        return max(3, *(f.channels_needed for f in self.filters))

    def resolve(self, channels: int) -> BankWeights:
        """Complete every filter for a volume of ``channels`` channels (raises BankError)."""
        kh, kw = self.kernel_shape
        size = sum(channels if f.depthwise else 1 for f in self.filters) * channels * kh * kw
        if size > MAX_BANK_WEIGHTS:
            raise BankError(
                f"{self._label()}: for a volume of {counted(channels, 'channel')} the bank would "
                f"hold {size // (channels * kh * kw)}×{channels}×{kh}×{kw} = {size:,} weights, "
                f"more than the limit of {MAX_BANK_WEIGHTS:,}",
                hint="use fewer channels, filters or a smaller kernel",
            )
        weights32 = np.empty((size // (channels * kh * kw), channels, kh, kw), np.float32)
        names: list[str] = []
        biases: list[float] = []
        sources: list[int] = []
        for index, filt in enumerate(self.filters):
            try:
                outputs = filt.expand(channels)
            except ValueError as error:
                raise BankError(
                    f"{self._label(filt)}: {_filter_label(index, filt.name)} {error}"
                ) from None
            for name, weights, bias in outputs:
                if name in names:
                    other = self.filters[sources[names.index(name)]].name
                    raise BankError(
                        f"{self._label(filt)}: {_filter_label(index, filt.name)} makes an output "
                        f"channel named {name!r}, as filter {other!r} does",
                        hint="rename one of the filters",
                    )
                with np.errstate(over="ignore"):
                    weights32[len(names)] = weights
                names.append(name)
                biases.append(bias)
                sources.append(index)
        if not np.isfinite(weights32).all():
            raise BankError(
                f"{self._label()}: after scale and normalize some weights are beyond float32's "
                "range",
                hint="use a smaller scale",
            )
        combine = None
        if self.expressions:
            from convvol.expressions import compile_expressions

            groups = {
                filt.name: [
                    (channel, names.index(f"{filt.name}_{channel}"))
                    for channel in channel_names(channels)
                ]
                for filt in self.filters
                if filt.depthwise
            }
            combine = compile_expressions(self.expressions, names, groups, channel_names(channels))
        slopes = tuple(self.filters[index].slope for index in sources)
        return BankWeights(
            tuple(names), weights32, np.array(biases, np.float32), tuple(sources), combine,
            slopes,
        )  # fmt: skip

    def _label(self, filt: Filter | None = None) -> str:
        label = str(self.source) if self.source else f"bank {self.name!r}"
        return f"{label}, line {filt.line}" if filt is not None and filt.line else label


def _filter_label(index: int, name: str | None) -> str:
    return f"filters[{index}] ({name!r})" if name else f"filters[{index}]"


# --- parsing --------------------------------------------------------------------------


class _Located(dict[Any, Any]):
    """A mapping that remembers its line in the YAML source and which keys it wrote itself."""

    line: int | None = None

    def __init__(self) -> None:
        super().__init__()
        self.written: set[Any] = set()


class _BankLoader(yaml.SafeLoader):
    """PyYAML's safe loader, recording mapping lines and refusing duplicate keys.

    While composing, it counts what each node holds with aliases expanded, so a "billion
    laughs" document is refused before anything is built from it, and it bounds nesting
    before Python's recursion limit would.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._nesting = 0
        self._sizes: dict[int, tuple[int, int]] = {}  # id(node): (values, depth), expanded

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        if self.check_event(yaml.AliasEvent):
            alias: Any = super().compose_node(parent, index)
            if id(alias) not in self._sizes:
                raise BankError(f"{_mark(mark)}: an alias inside the node it refers to")
            return alias
        self._nesting += 1
        if self._nesting > MAX_BANK_NESTING:
            raise BankError(f"{_mark(mark)}: nested more than {MAX_BANK_NESTING} levels deep")
        node: Any = super().compose_node(parent, index)
        self._nesting -= 1
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        sizes = [self._sizes[id(child)] for child in children]
        values = 1 + sum(size[0] for size in sizes)
        depth = 1 + max((size[1] for size in sizes), default=0)
        if values > MAX_BANK_VALUES:
            raise BankError(
                f"{_mark(mark)}: holds more than {MAX_BANK_VALUES:,} values "
                "(numbers, texts, lists and mappings, with aliases expanded)"
            )
        if depth > MAX_BANK_NESTING:
            raise BankError(
                f"{_mark(mark)}: nested more than {MAX_BANK_NESTING} levels deep "
                "(with aliases expanded)"
            )
        self._sizes[id(node)] = (values, depth)
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError, TypeError) as error:  # e.g. a date that is not one
            raise BankError(
                f"{_mark(node.start_mark)}: cannot read {_shorten(str(node.value))}: {error}"
            ) from None


def _mark(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _shorten(text: str, length: int = 40) -> str:
    return repr(text if len(text) <= length else text[: length - 3] + "...")


def _construct_int(loader: _BankLoader, node: yaml.ScalarNode) -> Any:
    """YAML integers, refusing ones so long that reading them is slow (``1:0:0:...``)."""
    if len(node.value) > MAX_NUMBER_LENGTH:
        raise BankError(
            f"{_mark(node.start_mark)}: a number of {len(node.value):,} characters "
            f"(at most {MAX_NUMBER_LENGTH})"
        )
    return loader.construct_yaml_int(node)


def _construct_mapping(loader: _BankLoader, node: yaml.MappingNode) -> Any:
    mapping = _Located()
    mapping.line = node.start_mark.line + 1
    yield mapping
    written = sum(1 for key_node, _ in node.value if key_node.tag != "tag:yaml.org,2002:merge")
    loader.flatten_mapping(node)  # merged (<<) pairs first, then the ones written here
    first_written = len(node.value) - written
    for position, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise BankError(
                f"line {key_node.start_mark.line + 1}: a mapping key must be a plain value"
            ) from None
        if position >= first_written:  # merged keys may be overridden, written ones not
            if key in mapping.written:
                raise BankError(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
            mapping.written.add(key)
        mapping[key] = loader.construct_object(value_node, deep=True)


_BankLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_BankLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
# YAML 1.1 (PyYAML) reads 1e-3 as text; YAML 1.2 and JSON read it as a number, as people expect.
_BankLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _reject_duplicate_json_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    mapping: dict[str, Any] = {}
    for key, value in pairs:
        if key in mapping:
            raise BankError(f"duplicate key {key!r}")
        mapping[key] = value
    return mapping


def _reject_json_constant(name: str) -> float:
    raise BankError(f"{name} is not a finite number")


def _json_int(text: str) -> int:
    if len(text) > MAX_NUMBER_LENGTH:
        raise BankError(f"a number of {len(text):,} characters (at most {MAX_NUMBER_LENGTH})")
    return int(text)


# A JSON string (escapes included) or a bracket: enough to measure nesting before parsing.
_JSON_NESTING_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _check_json_nesting(text: str) -> None:
    """Refuse nesting beyond MAX_BANK_NESTING before json.loads recurses into it."""
    depth = 0
    for match in _JSON_NESTING_TOKENS.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > MAX_BANK_NESTING:
                line = text.count("\n", 0, match.start()) + 1
                column = match.start() - text.rfind("\n", 0, match.start())
                raise BankError(f"line {line}, column {column}: nested more than {MAX_BANK_NESTING}"
                                " levels deep")  # fmt: skip
        elif token in ("]", "}"):
            depth -= 1


def _check_values(document: object) -> None:
    """Refuse a parsed JSON document of more than MAX_BANK_VALUES values (YAML counts its own)."""
    pending, values = [document], 0
    while pending:
        value = pending.pop()
        values += 1
        if values > MAX_BANK_VALUES:
            raise BankError(
                f"holds more than {MAX_BANK_VALUES:,} values (numbers, texts, lists and mappings)"
            )
        if isinstance(value, dict):
            pending.extend(value.values())
            values += len(value)  # the keys
        elif isinstance(value, list):
            pending.extend(value)


def parse_document(text: str, *, json_syntax: bool) -> Any:
    """Parse bank text as JSON or (safe) YAML, raising BankError with line/column on errors.

    Documents beyond the limits (MAX_BANK_VALUES values, MAX_BANK_NESTING levels) are
    refused while parsing, before they can take memory or time.
    """
    try:
        if json_syntax:
            return _parse_json(text)
        return yaml.load(text, Loader=_BankLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{_mark(mark)}: " if mark else ""
        problem = error.problem or error.context or "syntax error"
        raise BankError(f"{where}invalid YAML: {problem}") from None
    except yaml.reader.ReaderError as error:  # a character YAML does not allow, e.g. NUL
        line = text.count("\n", 0, error.position) + 1
        column = error.position - text.rfind("\n", 0, error.position)
        raise BankError(
            f"line {line}, column {column}: invalid YAML: the character "
            f"U+{int(error.character):04X} is not allowed"
        ) from None
    except yaml.YAMLError as error:
        raise BankError(f"invalid YAML: {str(error).splitlines()[0]}") from None
    except RecursionError:  # the nesting limit should come first; never a traceback
        raise BankError(f"nested too deeply (the limit is {MAX_BANK_NESTING} levels)") from None


def _parse_json(text: str) -> Any:
    _check_json_nesting(text)
    try:
        document = json.loads(
            text,
            object_pairs_hook=_reject_duplicate_json_keys,
            parse_constant=_reject_json_constant,
            parse_int=_json_int,
        )
    except json.JSONDecodeError as error:
        raise BankError(
            f"line {error.lineno}, column {error.colno}: invalid JSON: {error.msg}"
        ) from None
    _check_values(document)
    return document


class _Where:
    """Where in a bank file a value sits, for error messages."""

    def __init__(self, file: str, filter_label: str | None = None, line: int | None = None):
        self.file, self.filter_label, self.line = file, filter_label, line

    def at(self, filter_label: str | None, value: object) -> _Where:
        """The place of ``value`` (a YAML mapping knows its line), within ``filter_label``."""
        return _Where(self.file, filter_label, getattr(value, "line", None) or self.line)

    def error(self, problem: str, hint: str | None = None) -> BankError:
        parts = [self.file + (f", line {self.line}" if self.line else "")]
        if self.filter_label:
            parts.append(self.filter_label)
        parts.append(problem)
        return BankError(": ".join(parts), hint=hint)


def _check_keys(
    mapping: Mapping[Any, Any], allowed: Sequence[str], what: str, where: _Where
) -> None:
    for key in mapping:
        if key not in allowed:
            raise where.error(
                f"unknown key {key!r} in {what}",
                hint=did_you_mean(str(key), allowed) or f"allowed keys: {', '.join(allowed)}",
            )


def _number(value: object, what: str, where: _Where) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise where.error(f"{what} must be a number, got {_show(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise where.error(f"{what} must be a finite number, got {_show(value)}")
    if abs(number) > FLOAT32_MAX:
        raise where.error(f"{what} is {number:g}, beyond float32's range (±{FLOAT32_MAX:.3g})")
    return number


def _show(value: object) -> str:
    text = repr(value if not isinstance(value, dict) else dict(value))
    kinds = {dict: "mapping", list: "list", str: "text", bool: "a boolean", type(None): "null"}
    kind = next((name for cls, name in kinds.items() if isinstance(value, cls)), None)
    kind = kind or type(value).__name__
    shown = text if len(text) <= 40 else text[:37] + "..."
    return f"{shown} ({kind})"


def _matrix(value: object, what: str, where: _Where) -> np.ndarray:
    """A non-empty rectangular list of lists of finite numbers, as a float64 2-D array."""
    if not isinstance(value, list) or not value:
        raise where.error(f"{what} must be a non-empty list of rows, got {_show(value)}")
    width = None
    for row_index, row in enumerate(value):
        if not isinstance(row, list) or not row:
            raise where.error(
                f"{what}: row {row_index + 1} must be a non-empty list of numbers, got {_show(row)}"
            )
        if width is None:
            width = len(row)
            _check_shape(len(value), width, what, where)
        elif len(row) != width:
            raise where.error(
                f"{what}: row {row_index + 1} has {len(row)} values but row 1 has {width} "
                "(rows must all be the same length)"
            )
        for col_index, item in enumerate(row):
            _number(item, f"{what}[{row_index + 1}][{col_index + 1}]", where)
    return np.array(value, dtype=np.float64)


def _layer(value: object, what: str, where: _Where) -> np.ndarray:
    """A 2-D layer: a matrix, a built-in kernel name, {name: {parameters}}, or kernel
    arithmetic: {sum: [{weight: w, kernel: layer}, ...]} or {rotate: {kernel: layer,
    angle: degrees}}."""
    if isinstance(value, list):
        return _matrix(value, what, where)
    params: Any
    if isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) == "sum":
        return _sum_layer(value["sum"], f"{what}.sum", where)
    if isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) == "rotate":
        return _rotated_layer(value["rotate"], f"{what}.rotate", where)
    if isinstance(value, str):
        name, params = value, {}
    elif isinstance(value, Mapping) and len(value) == 1:
        name, params = next(iter(value.items()))
        if params is None:
            params = {}
        if not isinstance(name, str) or not isinstance(params, Mapping):
            raise where.error(
                f"{what}: a parameterised kernel is written {{name: {{parameter: value}}}}, "
                f"e.g. {{gaussian: {{sigma: 2.0}}}}; got {_show(value)}"
            )
    else:
        raise where.error(
            f"{what} must be a 2-D matrix, a built-in kernel name or {{name: {{parameters}}}}; "
            f"got {_show(value)}"
        )
    try:
        layer = kernels.builtin_kernel(name, **{str(k): v for k, v in params.items()})
    except KernelError as error:
        raise where.error(f"{what}: {error.message}", hint=error.hint) from None
    _check_shape(layer.shape[0], layer.shape[1], what, where)  # fixed sizes (sobel_x) too
    return layer


def _sum_layer(terms: object, what: str, where: _Where) -> np.ndarray:
    """Σ weight·kernel over the terms, centres aligned (kernels.weighted_sum)."""
    if not isinstance(terms, list) or not terms:
        raise where.error(
            f"{what} must be a non-empty list of {{weight: number, kernel: layer}} terms; got "
            f"{_show(terms)}",
            hint="e.g. sum: [{weight: 2, kernel: identity}, {weight: -1, kernel: box}]",
        )
    parts: list[tuple[float, np.ndarray]] = []
    for index, term in enumerate(terms):
        label = f"{what}[{index}]"
        if not isinstance(term, Mapping) or "kernel" not in term:
            raise where.error(
                f"{label} must be a mapping {{weight: number, kernel: layer}}; got {_show(term)}"
            )
        _check_keys(term, SUM_KEYS, label, where)
        weight = _number(term.get("weight", 1.0), f"{label}.weight", where)
        parts.append((weight, _layer(term["kernel"], f"{label}.kernel", where)))
    try:
        return kernels.weighted_sum(parts)
    except KernelError as error:
        raise where.error(f"{what}: {error.message}", hint=error.hint) from None


def _rotated_layer(spec: object, what: str, where: _Where) -> np.ndarray:
    """A layer rotated counter-clockwise by ``angle`` degrees (kernels.rotate)."""
    if not isinstance(spec, Mapping) or "kernel" not in spec or "angle" not in spec:
        raise where.error(
            f"{what} must be a mapping {{kernel: layer, angle: degrees}}; got {_show(spec)}"
        )
    _check_keys(spec, ROTATE_KEYS, what, where)
    angle = _number(spec["angle"], f"{what}.angle", where)
    layer = _layer(spec["kernel"], f"{what}.kernel", where)
    rotated = kernels.rotate(layer, angle)
    _check_shape(rotated.shape[0], rotated.shape[1], what, where)
    return rotated


def layer_recipe(value: object) -> str:
    """How a (valid) layer was written, as a short formula: ``2·identity − gaussian(sigma=2)``."""
    if isinstance(value, list):
        return f"matrix {len(value)}×{len(value[0])}"
    if isinstance(value, str):
        return value
    assert isinstance(value, Mapping)
    name, params = next(iter(value.items()))
    if name == "sum":
        text = ""
        for term in params:
            weight = float(term.get("weight", 1.0))
            inner = layer_recipe(term["kernel"])
            if " + " in inner or " − " in inner:  # a sum inside a sum
                inner = f"({inner})"
            sign = "−" if weight < 0 else "+"
            factor = "" if abs(weight) == 1 else f"{abs(weight):g}·"
            text += (f"{'−' if weight < 0 else ''}" if not text else f" {sign} ") + factor + inner
        return text
    if name == "rotate":
        return f"rotate({layer_recipe(params['kernel'])}, {float(params['angle']):g}°)"
    arguments = ", ".join(f"{key}={param!r}" for key, param in (params or {}).items())
    return f"{name}({arguments})"


def _check_shape(height: int, width: int, what: str, where: _Where) -> None:
    """The kernel size limit (--max-kernel), as a BankError that says where."""
    try:
        kernels.check_kernel_shape(height, width, what)
    except KernelError as error:
        raise where.error(error.message, hint=error.hint) from None


def _channel_index(key: object, where: _Where) -> int:
    if isinstance(key, bool):
        pass
    elif isinstance(key, int) and 0 <= key <= MAX_CHANNEL_INDEX:
        return key
    elif isinstance(key, str) and key.isascii() and key.isdigit() and int(key) <= MAX_CHANNEL_INDEX:
        return int(key)
    elif isinstance(key, str) and key in CHANNEL_KEYS:
        return CHANNEL_KEYS[key]
    raise where.error(
        f"unknown channel {key!r}",
        hint=did_you_mean(str(key), CHANNEL_KEYS)
        or f"channels are red|r, green|g, blue|b, alpha|a or an index 0..{MAX_CHANNEL_INDEX}",
    )


def _text(value: object, what: str, where: _Where) -> str:
    """Text that can be printed: a string with no unpaired surrogates (JSON allows "\\ud800")."""
    if not isinstance(value, str):
        raise where.error(f"{what} must be text, got {_show(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise where.error(
            f"{what} holds {value[error.start]!r}, half of a UTF-16 surrogate pair"
        ) from None
    return value


def _name(value: object, what: str, where: _Where) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.match(value) or not value.strip("."):
        raise where.error(
            f"{what} must be a name of letters, digits, '_', '-', '.' or '+' (not only dots); "
            f"got {_show(value)}"
        )
    return value


def _parse_filter(document: object, index: int, where: _Where) -> Filter:
    label = _filter_label(index, None)
    if not isinstance(document, Mapping):
        raise where.at(label, document).error(f"must be a mapping, got {_show(document)}")
    raw_name = document.get("name")
    where = where.at(_filter_label(index, raw_name if isinstance(raw_name, str) else None),
                     document)  # fmt: skip
    _check_keys(document, FILTER_KEYS, "a filter", where)
    name = _name(raw_name, "name", where) if "name" in document else f"filter{index}"
    sources = [key for key in SOURCE_KEYS if key in document]
    if len(sources) != 1:
        raise where.error(
            "needs exactly one of channels, kernel or weights"
            + (f"; got {', '.join(sources)}" if sources else "")
        )
    flags = {}
    for flag in ("normalize", "depthwise"):
        flags[flag] = document.get(flag, False)
        if not isinstance(flags[flag], bool):
            raise where.error(f"{flag} must be true or false, got {_show(flags[flag])}")
    if flags["depthwise"] and sources[0] != "kernel":
        raise where.error(
            "depthwise: true needs kernel: (one 2-D layer applied to each channel on its own)"
        )
    layers = kernel = weights = None
    recipe = ""
    if sources[0] == "kernel":
        kernel = _layer(document["kernel"], "kernel", where)
        if not isinstance(document["kernel"], list):
            recipe = layer_recipe(document["kernel"])
    elif sources[0] == "channels":
        spec = document["channels"]
        if not isinstance(spec, Mapping) or not spec:
            raise where.error(
                f"channels must be a non-empty mapping of channel to layer, got {_show(spec)}"
            )
        layers = {}
        for key, value in spec.items():
            channel = _channel_index(key, where)
            if channel in layers:
                raise where.error(f"channel {key!r} is given twice (as another name)")
            layers[channel] = _layer(value, f"channels.{key}", where)
        _same_shapes(layers.items(), "channels", where)
    else:
        spec = document["weights"]
        if not isinstance(spec, list) or not spec or len(spec) > MAX_CHANNEL_INDEX + 1:
            raise where.error(
                f"weights must be a list of 2-D layers, one per input channel; got {_show(spec)}"
            )
        stack = [_layer(value, f"weights[{i}]", where) for i, value in enumerate(spec)]
        _same_shapes(enumerate(stack), "weights", where)
        weights = np.stack(stack)
    description = _text(document.get("description", ""), "description", where)
    given = (
        [kernel] if kernel is not None else [weights] if weights is not None else layers.values()
    )
    if flags["normalize"] and not any(np.any(layer) for layer in given):
        raise where.error("normalize: true on a filter whose weights are all zero")
    return Filter(
        name=name,
        description=description.strip(),
        layers=MappingProxyType(layers) if layers is not None else None,
        kernel=kernel,
        weights=weights,
        bias=_number(document.get("bias", 0.0), "bias", where),
        scale=_number(document.get("scale", 1.0), "scale", where),
        normalize=flags["normalize"],
        depthwise=flags["depthwise"],
        line=where.line,
        recipe=recipe,
        slope=_number(document["slope"], "slope", where) if "slope" in document else None,
    )


def _weights_written(filt: Filter) -> int:
    kh, kw = filt.kernel_shape
    if filt.weights is not None:
        return int(filt.weights.size)
    return kh * kw * (len(filt.layers) if filt.layers is not None else 1)


def _same_shapes(layers: Any, what: str, where: _Where) -> None:
    shapes = {key: layer.shape for key, layer in layers}
    if len(set(shapes.values())) > 1:
        listing = ", ".join(f"{key}: {h}×{w}" for key, (h, w) in shapes.items())
        raise where.error(f"the layers of {what} differ in size ({listing})")


def _parse_defaults(document: object, where: _Where) -> dict[str, Any]:
    if not isinstance(document, Mapping):
        raise where.error(f"defaults must be a mapping, got {_show(document)}")
    where = where.at("defaults", document)
    _check_keys(document, DEFAULT_KEYS, "defaults", where)
    defaults: dict[str, Any] = {}
    for key, value in document.items():
        if key == "padding":
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                defaults[key] = value
                continue
            choices: Sequence[str] = PADDINGS
        elif key in ("stride", "dilation"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise where.error(f"{key} must be an integer ≥ 1, got {_show(value)}")
            defaults[key] = value
            continue
        elif key in ("cval", "slope"):
            defaults[key] = _number(value, key, where)
            continue
        else:
            choices = BORDERS if key == "border" else ACTIVATIONS
        if value not in choices:
            raise where.error(
                f"{key} must be one of {', '.join(map(str, choices))}"
                + (" or an integer ≥ 0" if key == "padding" else "")
                + f"; got {_show(value)}",
                hint=choice_hint(value, tuple(choices)),
            )
        defaults[key] = value
    return defaults


def bank_from_document(document: object, *, name: str, source: Path | None = None) -> Bank:
    """Validate a parsed bank document (a mapping, as from YAML or JSON) into a :class:`Bank`."""
    where = _Where(str(source) if source else f"bank {name!r}")
    if not isinstance(document, Mapping):
        raise where.error(
            f"a bank must be a mapping with a 'filters' list, got {_show(document)}",
            hint="start the file with 'filters:' (YAML) or '{\"filters\": [...]}' (JSON)",
        )
    where = where.at(None, document)
    _check_keys(document, BANK_KEYS, "the bank", where)
    if "name" in document:
        name = _name(document["name"], "name", where)
    description = _text(document.get("description", ""), "description", where)
    filter_docs = document.get("filters")
    if not isinstance(filter_docs, list) or not filter_docs:
        raise where.error(
            "the bank needs a non-empty 'filters' list"
            + ("" if filter_docs is None else f", got {_show(filter_docs)}")
        )
    if len(filter_docs) > MAX_FILTERS:
        raise where.error(f"the bank has {len(filter_docs)} filters; the limit is {MAX_FILTERS}")
    parsed: list[Filter] = []
    written = 0  # weights held so far: each builtin kernel is built as it is read
    for index, doc in enumerate(filter_docs):
        parsed.append(_parse_filter(doc, index, where))
        written += _weights_written(parsed[-1])
        if written > MAX_BANK_WEIGHTS:
            raise where.at(_filter_label(index, parsed[-1].name), doc).error(
                f"the bank's filters hold more than {MAX_BANK_WEIGHTS:,} weights so far"
            )
    filters = tuple(parsed)
    seen: dict[str, int] = {}
    for index, filt in enumerate(filters):
        if filt.name in seen:
            raise where.at(_filter_label(index, filt.name), filter_docs[index]).error(
                f"duplicate filter name (also filters[{seen[filt.name]}])"
            )
        seen[filt.name] = index
        if filt.kernel_shape != filters[0].kernel_shape:
            (h, w), (h0, w0) = filt.kernel_shape, filters[0].kernel_shape
            raise where.at(_filter_label(index, filt.name), filter_docs[index]).error(
                f"is {h}×{w} but {_filter_label(0, filters[0].name)} is {h0}×{w0}; "
                "all filters of a bank share one kernel size",
                hint="pad the smaller kernel with zeros yourself, or put it in another bank",
            )
    defaults = _parse_defaults(document.get("defaults", {}), where)
    expressions = _parse_expressions(document.get("expressions", []), where)
    norm = None
    if "input" in document:
        try:
            norm = parse_input(document["input"])
        except ParameterError as error:
            raise where.at("input", document["input"]).error(error.message, error.hint) from None
    return Bank(
        name=name,
        filters=filters,
        description=description.strip(),
        defaults=MappingProxyType(defaults),
        source=source,
        expressions=expressions,
        input=norm,
        provenance=MappingProxyType(_parse_provenance(document.get("provenance", {}), where)),
    )


def _parse_expressions(document: object, where: _Where) -> tuple[Expression, ...]:
    """The ``expressions:`` list: {name: NAME, expr: EXPRESSION, output: true|false}."""
    if not isinstance(document, list):
        raise where.error(
            f"expressions must be a list of {{name: NAME, expr: EXPRESSION}}; got {_show(document)}"
        )
    if len(document) > MAX_EXPRESSIONS:
        raise where.error(
            f"the bank has {len(document)} expressions; the limit is {MAX_EXPRESSIONS}"
        )
    if not document:
        return ()
    from convvol.expressions import parse_expression

    parsed = []
    for index, item in enumerate(document):
        raw = item.get("name") if isinstance(item, Mapping) else None
        label = f"expressions[{index}]" + (f" ({raw!r})" if isinstance(raw, str) else "")
        place = where.at(label, item)
        if not isinstance(item, Mapping):
            raise place.error(
                f"must be a mapping {{name: NAME, expr: EXPRESSION}}; got {_show(item)}"
            )
        _check_keys(item, EXPRESSION_KEYS, "an expression", place)
        for key in ("name", "expr"):
            if key not in item:
                raise place.error(
                    f"needs {key}: (an expression is {{name: NAME, expr: EXPRESSION}})"
                )
        output = item.get("output", True)
        if not isinstance(output, bool):
            raise place.error(f"output must be true or false, got {_show(output)}")
        origin = place.error("").message.rstrip(": ")
        name = _text(item["name"], "name", place)
        text = item["expr"]
        if isinstance(text, bool) or not isinstance(text, str | int | float):
            raise place.error(f"expr must be text, got {_show(text)}")
        parsed.append(parse_expression(name, str(text), origin, output=output))
    return tuple(parsed)


def _parse_provenance(document: object, where: _Where) -> dict[str, str]:
    """``provenance:``: where imported weights came from, texts kept as written."""
    if not isinstance(document, Mapping):
        raise where.error(f"provenance must be a mapping of texts, got {_show(document)}")
    provenance = {}
    for key, value in document.items():
        if not isinstance(key, str) or isinstance(value, bool | list | dict | type(None)):
            raise where.error(f"provenance.{key} must be text or a number, got {_show(value)}")
        provenance[key] = _text(str(value), f"provenance.{key}", where)
    return provenance


def read_bank_file(path: Path) -> Bank:
    """Read, parse and validate one bank file."""
    label = str(path)
    if path.is_dir():
        raise BankError(f"{label}: is a directory, not a bank file")
    try:
        with path.open("rb") as stream:  # at most the limit: /dev/zero is a file too
            raw = stream.read(MAX_BANK_BYTES + 1)
    except FileNotFoundError:
        raise BankError(f"{label}: no such bank file") from None
    except OSError as error:
        raise BankError(f"{label}: cannot read: {error.strerror or error}") from None
    return bank_from_bytes(
        raw, name=path.stem, json_syntax=path.suffix.lower() == ".json", source=path
    )


def bank_from_bytes(
    raw: bytes, *, name: str, json_syntax: bool = False, source: Path | None = None
) -> Bank:
    """Parse and validate a bank file's bytes (UTF-8 JSON or YAML); what read_bank_file does.

    ``source`` names the file in messages (else ``bank 'name'``).
    """
    label = str(source) if source else f"bank {name!r}"
    if len(raw) > MAX_BANK_BYTES:
        raise BankError(
            f"{label}: larger than {MAX_BANK_BYTES // 2**20} MiB, the limit for a bank file",
            hint="is this really a bank file? Larger kernels are better made by built-ins "
            "such as {gaussian: {sigma: 20}}",
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise BankError(
            f"{label}: not UTF-8 text (byte {error.start}): is this really a bank file?"
        ) from None
    try:
        document = parse_document(text, json_syntax=json_syntax)
    except BankError as error:
        raise BankError(f"{label}, {error.message}", hint=error.hint) from None
    return bank_from_document(document, name=name, source=source)


# --- the search path ------------------------------------------------------------------


def bundled_directory() -> Path:
    """The banks shipped with convvol (the repository's top-level ``filters/``)."""
    from importlib import resources  # costly imports: only when a name is looked up

    packaged = Path(str(resources.files("convvol") / "filters"))
    if packaged.is_dir():
        return packaged
    # An editable install or a source checkout: src/convvol/ → repository root.
    return Path(__file__).resolve().parents[2] / "filters"


def search_path() -> list[Path]:
    """Where bank names are looked up, first match wins.

    ``./filters/``, then each directory of ``CONVVOL_FILTERS`` (os.pathsep-separated),
    then the bundled banks.
    """
    extra = [Path(p) for p in os.environ.get("CONVVOL_FILTERS", "").split(os.pathsep) if p]
    return [Path("filters"), *extra, bundled_directory()]


def available_banks() -> dict[str, Path]:
    """Every bank name on the search path with the file that wins for it."""
    found: dict[str, Path] = {}
    for directory in search_path():
        if not directory.is_dir():
            continue
        candidates = [p for p in directory.iterdir() if p.suffix.lower() in BANK_SUFFIXES]
        # Within a directory, edges.yaml beats edges.yml beats edges.json.
        candidates.sort(key=lambda p: (p.stem, BANK_SUFFIXES.index(p.suffix.lower())))
        for path in candidates:
            if path.is_file():
                found.setdefault(path.stem, path)
    return found


def find_bank(name_or_path: str | os.PathLike[str]) -> Path:
    """The file for a bank path or a bank name on the search path (raises BankError)."""
    path = Path(name_or_path)
    text = str(name_or_path)
    if path.is_file():
        return path
    looks_like_path = path.suffix.lower() in BANK_SUFFIXES or os.sep in text or "/" in text
    if looks_like_path:
        if path.is_dir():
            raise BankError(f"{text}: is a directory, not a bank file")
        if path.exists():  # a pipe, as from <(...), or a device: read, within the limit
            return path
        raise BankError(f"{text}: no such bank file")
    banks = available_banks()
    if text in banks:
        return banks[text]
    searched = ", ".join(str(d) for d in search_path())
    raise BankError(
        f"{text}: no bank file and no bank of that name on the search path ({searched})",
        hint=did_you_mean(text, banks) or "convvol list-filters shows the banks there are",
    )


def load_bank(
    name_or_path: str | os.PathLike[str],
    *,
    max_kernel: int | None = None,
    layout: str | None = None,
) -> Bank:
    """Load a bank by file path or by name on the search path (``edges`` → ``edges.yaml``),
    or one conv layer of a weight file (``conv1.npy``, ``model.pt#conv1.weight``; see
    :func:`convvol.io.weights.weight_bank`, whose ``layout`` may be forced).

    ``max_kernel`` raises (or lowers) the limit on a kernel's side, by default
    :data:`convvol.kernels.MAX_KERNEL_SIDE` (1025) pixels.

    >>> load_bank("edges").filters[0].name
    'red_vertical'
    """
    from convvol.io.formats import is_weight_file

    def read() -> Bank:
        text = os.fspath(name_or_path)
        if is_weight_file(text):
            from convvol.io import weights  # costly imports (zip, json) only where used

            bank: Bank = weights.weight_bank(text, layout=layout)
            return bank
        if layout is not None:
            raise BankError(f"{text}: --layout applies to weight files, not to bank files")
        return read_bank_file(find_bank(name_or_path))

    if max_kernel is None:
        return read()
    with kernels.kernel_side_limit(max_kernel):
        return read()
