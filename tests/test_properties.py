"""Properties over random inputs (hypothesis).

- Random bank documents, valid and mangled, as parsed structures and as the bytes of a file:
  the loader raises nothing but ConvvolError, and what it accepts resolves to finite weights.
- Random valid banks and volumes: the result is finite, float32 and of the shape the
  formulas of docs/semantics.md predict (or, for padding 'valid' with a kernel wider than
  the image, the one documented error).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from convvol import apply_bank, bank_from_document
from convvol.bank import (
    BANK_KEYS,
    CHANNEL_KEYS,
    DEFAULT_KEYS,
    FILTER_KEYS,
    Bank,
    bank_from_bytes,
)
from convvol.errors import ConvvolError, ParameterError
from convvol.kernels import BUILTIN_KERNELS
from convvol.settings import ACTIVATIONS, BORDERS

# Modest example counts: the whole suite stays within a few minutes on two cores.
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ENGINE = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- random documents, valid-looking and not ------------------------------------------------

WORDS = [*BANK_KEYS, *FILTER_KEYS, *DEFAULT_KEYS, *CHANNEL_KEYS, *BUILTIN_KERNELS,
         "sigma", "size", "same", "valid", "full", "reflect", "constant", "relu", "<<"]  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-3, max_value=9),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-10, max_value=10),
    st.sampled_from(WORDS),
    st.text(max_size=8),
)
keys = st.one_of(st.sampled_from(WORDS), st.text(max_size=6), st.integers(-2, 9), st.none())
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(keys, children, max_size=5),
    ),
    max_leaves=40,
)


def loads_or_refuses(load: Any, *args: Any, **kwargs: Any) -> Bank | None:
    """The loader's result, None if it refused with ConvvolError; anything else fails."""
    try:
        return load(*args, **kwargs)  # type: ignore[no-any-return]
    except ConvvolError:
        return None


def check_resolves(bank: Bank) -> None:
    for channels in (1, 3, 4, bank.default_channels):
        try:
            resolved = bank.resolve(channels)
        except ConvvolError:
            continue
        assert resolved.weights.dtype == np.float32
        assert np.isfinite(resolved.weights).all()
        assert resolved.weights.shape[:2] == (len(resolved.names), channels)


@FAST
@given(document=documents)
def test_random_documents_raise_only_convvol_errors(document: object) -> None:
    bank = loads_or_refuses(bank_from_document, document, name="random")
    if bank is not None:
        check_resolves(bank)


@FAST
@given(filters=st.lists(documents, min_size=1, max_size=4), top=documents)
def test_random_filters_inside_a_bank_raise_only_convvol_errors(
    filters: list[object], top: object
) -> None:
    document = {"filters": filters}
    if isinstance(top, dict):
        document.update({key: value for key, value in top.items() if key != "filters"})
    bank = loads_or_refuses(bank_from_document, document, name="random")
    if bank is not None:
        check_resolves(bank)


# --- valid banks, then mangled -----------------------------------------------------------------

numbers = st.floats(min_value=-100, max_value=100, allow_subnormal=False)


@st.composite
def matrices(draw: st.DrawFn, height: int, width: int) -> list[list[float]]:
    return [[draw(numbers) for _ in range(width)] for _ in range(height)]


@st.composite
def layers(draw: st.DrawFn, height: int, width: int) -> object:
    """A 2-D layer as a bank writes it: a matrix, or a built-in of that size."""
    kind = draw(st.sampled_from(["matrix", "box", "gaussian", "identity"]))
    if kind == "matrix":
        return draw(matrices(height, width))
    if kind == "gaussian":
        return {"gaussian": {"sigma": draw(st.floats(0.3, 3)), "size": [height, width]}}
    return {kind: {"size": [height, width]}}


@st.composite
def valid_banks(draw: st.DrawFn, channels: int) -> dict[str, Any]:
    """A bank document that loads and runs on a volume of ``channels`` channels."""
    height, width = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    filters = []
    for index in range(draw(st.integers(1, 3))):
        form = draw(st.sampled_from(["kernel", "channels", "weights"]))
        entry: dict[str, Any] = {"name": f"f{index}"}
        if form == "kernel":
            entry["kernel"] = draw(layers(height, width))
            entry["depthwise"] = draw(st.booleans())
        elif form == "channels":
            picked = draw(st.lists(st.integers(0, channels - 1), min_size=1, max_size=3,
                                   unique=True))  # fmt: skip
            keys = draw(st.sampled_from([["red", "green", "blue", "alpha"], ["r", "g", "b", "a"]]))
            entry["channels"] = {
                (keys[c] if c < 4 and draw(st.booleans()) else str(c)): draw(layers(height, width))
                for c in picked
            }
        else:
            entry["weights"] = [draw(layers(height, width)) for _ in range(channels)]
        if draw(st.booleans()):
            entry["bias"] = draw(numbers)
        if draw(st.booleans()):
            entry["scale"] = draw(st.floats(-5, 5))
        filters.append(entry)
    defaults: dict[str, Any] = {
        "padding": draw(st.one_of(st.sampled_from(["same", "valid", "full"]), st.integers(0, 4))),
        "border": draw(st.sampled_from(BORDERS)),
        "stride": draw(st.integers(1, 3)),
        "dilation": draw(st.integers(1, 3)),
        "activation": draw(st.sampled_from(ACTIVATIONS)),
    }
    if defaults["border"] == "constant":
        defaults["cval"] = draw(numbers)
    return {"name": "valid", "defaults": defaults, "filters": filters}


def predicted_side(size: int, kernel: int, padding: object, stride: int, dilation: int) -> int:
    """The formulas of docs/semantics.md for the output's height or width."""
    reach = dilation * (kernel - 1)
    if padding == "same":
        return math.ceil(size / stride)
    pad = {"valid": 0, "full": reach}.get(padding, padding)  # type: ignore[arg-type]
    span = size + 2 * int(pad) - reach  # type: ignore[call-overload]
    return (span - 1) // stride + 1 if span > 0 else 0


@ENGINE
@given(data=st.data(), channels=st.integers(1, 5), height=st.integers(1, 12),
       width=st.integers(1, 12))  # fmt: skip
def test_valid_banks_and_volumes_give_finite_results_of_the_predicted_shape(
    data: st.DataObject, channels: int, height: int, width: int
) -> None:
    document = data.draw(valid_banks(channels))
    bank = bank_from_document(document, name="valid")
    volume = data.draw(
        st.lists(numbers, min_size=height * width * channels, max_size=height * width * channels)
    )
    volume_array = np.array(volume, np.float32).reshape(height, width, channels)
    defaults = document["defaults"]
    kh, kw = bank.kernel_shape
    outputs = sum(channels if f.depthwise else 1 for f in bank.filters)
    expected = (
        predicted_side(height, kh, defaults["padding"], defaults["stride"], defaults["dilation"]),
        predicted_side(width, kw, defaults["padding"], defaults["stride"], defaults["dilation"]),
        outputs,
    )
    if min(expected[:2]) < 1:
        with pytest.raises(ParameterError, match="the output would be empty"):
            apply_bank(volume_array, bank)
        return
    result = apply_bank(volume_array, bank)
    assert result.dtype == np.float32
    assert result.shape == expected
    assert np.isfinite(result).all()
    if defaults["activation"] in ("relu", "abs", "sigmoid"):
        assert (result >= 0).all()
    if defaults["activation"] in ("sigmoid", "tanh"):
        assert (np.abs(result) <= 1).all()


@st.composite
def mangled(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A valid bank written as YAML or JSON, then cut, spliced and scribbled on."""
    document = draw(valid_banks(draw(st.integers(1, 4))))
    as_json = draw(st.booleans())
    text = json.dumps(document) if as_json else _yaml(document)
    data = bytearray(text.encode())
    for _ in range(draw(st.integers(0, 4))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["delete", "insert", "replace", "cut"]))
        if action == "cut":
            del data[position:]
        elif action == "delete":
            del data[position : position + draw(st.integers(1, 8))]
        else:
            piece = draw(st.one_of(
                st.sampled_from([b"&a ", b"*a", b"!!python/name:os.system ", b"[[", b"]]",
                                 b"{", b"}", b"- ", b"\n", b"\t", b": ", b"<<: *a", b"\x00",
                                 b"\xff", b"1e999", b"nan", b"yes", b'"', b"'", b"#", b"---"]),
                st.binary(max_size=4),
            ))  # fmt: skip
            end = position + (len(piece) if action == "replace" else 0)
            data[position:end] = piece
    return bytes(data), as_json


def _yaml(document: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(document, default_flow_style=None, sort_keys=False)


@FAST
@given(mangled=mangled())
def test_mangled_bank_files_raise_only_convvol_errors(mangled: tuple[bytes, bool]) -> None:
    data, as_json = mangled
    for json_syntax in (as_json, not as_json):
        bank = loads_or_refuses(bank_from_bytes, data, name="mangled", json_syntax=json_syntax)
        if bank is not None:
            check_resolves(bank)


@FAST
@given(data=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_raise_only_convvol_errors(data: bytes) -> None:
    for json_syntax in (False, True):
        bank = loads_or_refuses(bank_from_bytes, data, name="noise", json_syntax=json_syntax)
        if bank is not None:
            check_resolves(bank)


@FAST
@given(document=documents)
def test_random_documents_survive_the_round_trip_through_json(document: object) -> None:
    """What the YAML or JSON parser could produce from a document, the loader handles."""
    try:
        text = json.dumps(document, allow_nan=True)
    except (TypeError, ValueError):  # keys json cannot write
        assume(False)
        return
    bank = loads_or_refuses(bank_from_bytes, text.encode(), name="json", json_syntax=True)
    if bank is not None:
        check_resolves(bank)
