"""Filter banks: the YAML/JSON format, how it is validated, and where banks are found.

Read top to bottom, these tests document the bank format:

* a bank is a mapping with a ``filters`` list (plus optional ``name``, ``description``
  and ``defaults``);
* each filter is given by exactly one of ``channels:`` (named per-channel layers, the rest
  zero), ``kernel:`` (one layer on every channel) or ``weights:`` (every layer, in channel
  order), and may add ``scale``, ``bias``, ``normalize`` and ``depthwise``;
* ``Bank.resolve(C)`` completes every filter for a C-channel volume into N×C×kh×kw
  float32 weights, N biases and N output names;
* every invalid bank raises :class:`convvol.BankError` naming the file, the filter and
  the problem (with the line, in YAML);
* bank names are looked up in ``./filters/``, then ``CONVVOL_FILTERS``, then the bundled
  banks.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from convvol import Bank, BankError, builtin_kernel, load_bank
from convvol.bank import BankWeights, available_banks, bundled_directory

REPO_FILTERS = Path(__file__).resolve().parents[1] / "filters"
BUNDLED_FILES = sorted(
    path for path in REPO_FILTERS.iterdir() if path.suffix in (".yaml", ".yml", ".json")
)

# The example from the format's documentation, verbatim.
SPEC_EXAMPLE = """\
name: edges                  # optional, defaults to the file's stem
description: Edge detectors, channel by channel
defaults: {padding: same, border: reflect, stride: 1, dilation: 1, activation: none}
filters:
  - name: red_vertical
    description: vertical edges in the red channel only
    channels:                # per-channel 2-D layers; channels not named are zero
      red: [[1, 0, -1], [1, 0, -1], [1, 0, -1]]
  - name: luminance_edges
    kernel: sobel_x          # a built-in name or a 2-D matrix; the same layer on every channel
    scale: 0.3333            # optional: multiply all weights
  - name: custom
    weights:                 # explicit 3-D filter: one kh×kw layer per input channel
      - [[0, 0, 0], [0, 1, 0], [0, 0, 0]]
      - [[0, 0, 0], [0, 0, 0], [0, 0, 0]]
      - [[0, 0, 0], [0, 0, 0], [0, 0, 0]]
    bias: 0.5
"""

RED_VERTICAL = np.array([[1, 0, -1], [1, 0, -1], [1, 0, -1]], dtype=np.float64)
ZERO_3X3 = np.zeros((3, 3))


@pytest.fixture(autouse=True)
def isolated_search_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in an empty directory without CONVVOL_FILTERS: only bundled banks exist."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CONVVOL_FILTERS", raising=False)


def write(path: Path, text: str) -> Path:
    """Write a bank file (dedented), creating its directory; return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, filename: str = "bank.yaml") -> Bank:
    """Write ``text`` to ``tmp_path/filename`` and load it as a bank."""
    return load_bank(write(tmp_path / filename, text))


def resolve(tmp_path: Path, text: str, channels: int = 3, filename: str = "bank.yaml"):
    """Load a bank from text and complete it for ``channels`` channels."""
    return load(tmp_path, text, filename).resolve(channels)


# --- the three ways to write a filter ------------------------------------------------


def test_spec_example_resolves_to_n_by_c_by_kh_by_kw_float32(tmp_path: Path) -> None:
    """The documented example: three filters over RGB give 3×3×3×3 weights and 3 biases."""
    bank = load(tmp_path, SPEC_EXAMPLE)
    resolved = bank.resolve(3)

    assert isinstance(resolved, BankWeights)
    assert resolved.names == ("red_vertical", "luminance_edges", "custom")
    assert resolved.weights.shape == (3, 3, 3, 3)
    assert resolved.weights.dtype == np.float32
    assert resolved.bias.dtype == np.float32
    np.testing.assert_array_equal(resolved.bias, [0.0, 0.0, 0.5])

    red_vertical, luminance, custom = resolved.weights
    np.testing.assert_array_equal(red_vertical, [RED_VERTICAL, ZERO_3X3, ZERO_3X3])
    for layer in luminance:
        np.testing.assert_allclose(layer, builtin_kernel("sobel_x") * 0.3333, rtol=1e-6)
    np.testing.assert_array_equal(custom, [builtin_kernel("identity"), ZERO_3X3, ZERO_3X3])


def test_channels_form_places_layers_and_zeroes_the_channels_not_named(tmp_path: Path) -> None:
    resolved = resolve(
        tmp_path,
        """
        filters:
          - name: green_and_alpha
            channels:
              green: [[1, 2], [3, 4]]
              alpha: [[5, 6], [7, 8]]
        """,
        channels=4,
    )
    np.testing.assert_array_equal(
        resolved.weights[0],
        [np.zeros((2, 2)), [[1, 2], [3, 4]], np.zeros((2, 2)), [[5, 6], [7, 8]]],
    )


@pytest.mark.parametrize(
    ("key", "index"),
    [
        pytest.param("red", 0, id="red"),
        pytest.param("r", 0, id="r"),
        pytest.param("green", 1, id="green"),
        pytest.param("g", 1, id="g"),
        pytest.param("blue", 2, id="blue"),
        pytest.param("b", 2, id="b"),
        pytest.param("alpha", 3, id="alpha"),
        pytest.param("a", 3, id="a"),
        pytest.param(0, 0, id="index-0"),
        pytest.param(7, 7, id="index-7"),
    ],
)
def test_channel_keys_are_colour_names_initials_or_indices(
    tmp_path: Path, key: str | int, index: int
) -> None:
    """YAML channel keys: red|r, green|g, blue|b, alpha|a or an integer index."""
    resolved = resolve(tmp_path, f"filters:\n  - channels:\n      {key}: [[2.5]]\n", channels=8)
    expected = np.zeros((8, 1, 1))
    expected[index] = 2.5
    np.testing.assert_array_equal(resolved.weights[0], expected)


def test_json_channel_index_is_a_string_key(tmp_path: Path) -> None:
    """JSON keys are always strings, so an index is written "7"."""
    document = {"filters": [{"name": "eighth", "channels": {"7": [[1]], "r": [[-1]]}}]}
    resolved = resolve(tmp_path, json.dumps(document), channels=8, filename="bank.json")
    np.testing.assert_array_equal(resolved.weights[0, :, 0, 0], [-1, 0, 0, 0, 0, 0, 0, 1])


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_kernel_form_repeats_the_layer_on_every_channel(tmp_path: Path, channels: int) -> None:
    resolved = resolve(
        tmp_path, "filters:\n  - name: lap\n    kernel: laplacian\n", channels=channels
    )
    assert resolved.names == ("lap",)
    assert resolved.weights.shape == (1, channels, 3, 3)
    for layer in resolved.weights[0]:
        np.testing.assert_array_equal(layer, builtin_kernel("laplacian"))


def test_kernel_form_takes_a_matrix(tmp_path: Path) -> None:
    resolved = resolve(tmp_path, "filters:\n  - kernel: [[0, 1], [2, 3]]\n")
    np.testing.assert_array_equal(resolved.weights[0], [[[0, 1], [2, 3]]] * 3)


def test_weights_form_gives_every_layer_in_channel_order(tmp_path: Path) -> None:
    resolved = resolve(
        tmp_path,
        """
        filters:
          - name: luma
            weights: [[[0.299]], [[0.587]], [[0.114]]]   # red, green, blue
        """,
    )
    np.testing.assert_allclose(resolved.weights[0, :, 0, 0], [0.299, 0.587, 0.114], rtol=1e-6)


def test_parameterised_builtin_is_a_one_entry_mapping(tmp_path: Path) -> None:
    """kernel: {gaussian: {sigma: 2.0}} builds gaussian(sigma=2.0): 13×13 (2·ceil(3σ)+1)."""
    resolved = resolve(tmp_path, "filters:\n  - kernel: {gaussian: {sigma: 2.0}}\n", channels=1)
    assert resolved.weights.shape == (1, 1, 13, 13)
    np.testing.assert_allclose(resolved.weights[0, 0], builtin_kernel("gaussian", sigma=2.0))


def test_builtin_names_work_inside_channels_and_weights_layers(tmp_path: Path) -> None:
    resolved = resolve(
        tmp_path,
        """
        filters:
          - name: per_channel
            channels:
              red: sobel_x
              blue: {box: {size: 3}}
          - name: explicit
            weights: [identity, sobel_y, [[0, 0, 0], [0, 2, 0], [0, 0, 0]]]
        """,
    )
    per_channel, explicit = resolved.weights
    np.testing.assert_allclose(
        per_channel, [builtin_kernel("sobel_x"), ZERO_3X3, builtin_kernel("box")], rtol=1e-6
    )
    np.testing.assert_array_equal(
        explicit,
        [builtin_kernel("identity"), builtin_kernel("sobel_y"), 2 * builtin_kernel("identity")],
    )


@pytest.mark.parametrize(
    "filter_yaml",
    [
        pytest.param("kernel: [[1, 2, 3], [4, 5, 6]]", id="kernel-matrix"),
        pytest.param("kernel: {box: {size: [2, 3]}}", id="kernel-builtin"),
        pytest.param("channels: {green: [[1, 2, 3], [4, 5, 6]]}", id="channels"),
        pytest.param(
            "weights: [[[1, 2, 3], [4, 5, 6]], [[0, 0, 0], [0, 0, 0]], [[1, 1, 1], [1, 1, 1]]]",
            id="weights",
        ),
    ],
)
def test_kernels_may_be_rectangular_and_even(tmp_path: Path, filter_yaml: str) -> None:
    bank = load(tmp_path, f"filters:\n  - {filter_yaml}\n")
    assert bank.kernel_shape == (2, 3)
    assert bank.resolve(3).weights.shape == (1, 3, 2, 3)


def test_all_filters_share_one_rectangular_size(tmp_path: Path) -> None:
    resolved = resolve(
        tmp_path,
        """
        filters:
          - {name: wide, kernel: [[1, 2, 3], [4, 5, 6]]}
          - {name: box, kernel: {box: {size: [2, 3]}}}
        """,
    )
    assert resolved.weights.shape == (2, 3, 2, 3)
    np.testing.assert_allclose(resolved.weights[1], np.full((3, 2, 3), 1 / 6), rtol=1e-6)


# --- bank metadata, scale, bias, normalize --------------------------------------------


def test_bank_name_defaults_to_the_file_stem(tmp_path: Path) -> None:
    bank = load(tmp_path, "filters:\n  - kernel: identity\n", filename="my_edges.yaml")
    assert bank.name == "my_edges"


def test_explicit_bank_name_wins_over_the_stem(tmp_path: Path) -> None:
    bank = load(tmp_path, SPEC_EXAMPLE, filename="whatever.yaml")
    assert bank.name == "edges"


def test_descriptions_of_bank_and_filters(tmp_path: Path) -> None:
    bank = load(tmp_path, SPEC_EXAMPLE)
    assert bank.description == "Edge detectors, channel by channel"
    assert [f.description for f in bank.filters] == [
        "vertical edges in the red channel only",
        "",
        "",
    ]


def test_description_is_optional(tmp_path: Path) -> None:
    bank = load(tmp_path, "filters:\n  - kernel: identity\n")
    assert bank.description == ""
    assert dict(bank.defaults) == {}


def test_defaults_are_kept_as_a_mapping(tmp_path: Path) -> None:
    bank = load(
        tmp_path,
        """
        defaults:
          padding: valid
          border: constant
          cval: 0.25
          stride: 2
          dilation: 3
          activation: relu
        filters:
          - kernel: identity
        """,
    )
    assert dict(bank.defaults) == {
        "padding": "valid",
        "border": "constant",
        "cval": 0.25,
        "stride": 2,
        "dilation": 3,
        "activation": "relu",
    }


def test_padding_default_may_be_a_number_of_pixels(tmp_path: Path) -> None:
    bank = load(tmp_path, "defaults: {padding: 2}\nfilters:\n  - kernel: identity\n")
    assert bank.defaults["padding"] == 2


def test_bias_is_per_filter_and_defaults_to_zero(tmp_path: Path) -> None:
    resolved = resolve(
        tmp_path,
        """
        filters:
          - {name: plain, kernel: identity}
          - {name: lifted, kernel: identity, bias: -0.25}
        """,
    )
    np.testing.assert_array_equal(resolved.bias, [0.0, -0.25])


def test_scale_multiplies_every_weight_but_not_the_bias(tmp_path: Path) -> None:
    resolved = resolve(tmp_path, "filters:\n  - {kernel: [[1, -2], [3, 4]], scale: 0.5, bias: 1}\n")
    np.testing.assert_array_equal(resolved.weights[0], [[[0.5, -1], [1.5, 2]]] * 3)
    np.testing.assert_array_equal(resolved.bias, [1.0])


def test_normalize_scales_the_whole_filter_to_sum_one(tmp_path: Path) -> None:
    """[1 2 1] on three channels sums to 12: every weight is divided by 12."""
    resolved = resolve(tmp_path, "filters:\n  - {kernel: [[1, 2, 1]], normalize: true}\n")
    np.testing.assert_allclose(resolved.weights[0], [[[1 / 12, 2 / 12, 1 / 12]]] * 3, rtol=1e-6)
    assert resolved.weights.sum() == pytest.approx(1.0)


def test_normalize_of_a_zero_sum_filter_scales_positives_to_one_and_negatives_to_minus_one(
    tmp_path: Path,
) -> None:
    resolved = resolve(
        tmp_path,
        """
        filters:
          - normalize: true
            channels:
              red: [[1, 0, -1], [2, 0, -2], [1, 0, -1]]
        """,
    )
    red = resolved.weights[0, 0]
    np.testing.assert_allclose(red, [[0.25, 0, -0.25], [0.5, 0, -0.5], [0.25, 0, -0.25]])
    assert red[red > 0].sum() == pytest.approx(1.0)
    assert red[red < 0].sum() == pytest.approx(-1.0)
    assert not resolved.weights[0, 1:].any()


def test_normalize_false_leaves_weights_alone(tmp_path: Path) -> None:
    resolved = resolve(tmp_path, "filters:\n  - {kernel: [[1, 2, 1]], normalize: false}\n")
    np.testing.assert_array_equal(resolved.weights[0], [[[1, 2, 1]]] * 3)


def test_scale_applies_after_normalize(tmp_path: Path) -> None:
    resolved = resolve(
        tmp_path, "filters:\n  - {kernel: [[1, 1]], normalize: true, scale: 3}\n", channels=1
    )
    np.testing.assert_allclose(resolved.weights[0, 0], [[1.5, 1.5]])


# --- depthwise ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channels", "names"),
    [
        pytest.param(1, ["blur_gray"], id="gray"),
        pytest.param(3, ["blur_red", "blur_green", "blur_blue"], id="rgb"),
        pytest.param(4, ["blur_red", "blur_green", "blur_blue", "blur_alpha"], id="rgba"),
        pytest.param(8, [f"blur_{index}" for index in range(8)], id="8-channels"),
    ],
)
def test_depthwise_gives_one_output_per_input_channel_named_filter_channel(
    tmp_path: Path, channels: int, names: list[str]
) -> None:
    resolved = resolve(
        tmp_path,
        "filters:\n  - {name: blur, kernel: box, depthwise: true, bias: 0.125}\n",
        channels=channels,
    )
    assert list(resolved.names) == names
    assert resolved.weights.shape == (channels, channels, 3, 3)
    np.testing.assert_array_equal(resolved.bias, [0.125] * channels)
    for output in range(channels):
        for channel in range(channels):
            expected = builtin_kernel("box") if channel == output else ZERO_3X3
            np.testing.assert_allclose(resolved.weights[output, channel], expected, rtol=1e-6)


def test_depthwise_outputs_sit_between_the_other_filters_in_bank_order(tmp_path: Path) -> None:
    resolved = resolve(
        tmp_path,
        """
        filters:
          - {name: first, kernel: identity}
          - {name: sharp, kernel: sharpen, depthwise: true}
          - {name: last, kernel: identity}
        """,
    )
    assert resolved.names == ("first", "sharp_red", "sharp_green", "sharp_blue", "last")


# --- YAML and JSON --------------------------------------------------------------------


def test_json_and_yaml_of_the_same_bank_give_identical_weights(tmp_path: Path) -> None:
    text = SPEC_EXAMPLE + (
        "  - name: indexed_channel\n"
        "    channels: {2: [[0, 1, 0], [0, 1, 0], [0, 1, 0]], r: laplacian}\n"
        "    normalize: true\n"
        "  - name: soft\n"
        "    kernel: {gaussian: {sigma: 0.8, size: 3}}\n"
        "    depthwise: true\n"
    )
    from_yaml = load(tmp_path, text, filename="same.yaml")
    document = yaml.safe_load(text)  # the same document; JSON writes the index key 2 as "2"
    from_json = load(tmp_path, json.dumps(document, indent=2), filename="same.json")

    assert from_json.name == from_yaml.name == "edges"
    assert from_json.description == from_yaml.description
    assert dict(from_json.defaults) == dict(from_yaml.defaults)
    yaml_weights, json_weights = from_yaml.resolve(3), from_json.resolve(3)
    assert json_weights.names == yaml_weights.names
    np.testing.assert_array_equal(json_weights.weights, yaml_weights.weights)
    np.testing.assert_array_equal(json_weights.bias, yaml_weights.bias)


def test_yml_suffix_is_yaml(tmp_path: Path) -> None:
    bank = load(tmp_path, "filters:\n  - kernel: identity\n", filename="short.yml")
    assert bank.name == "short"


def test_yaml_anchors_and_aliases_reuse_a_layer(tmp_path: Path) -> None:
    resolved = resolve(
        tmp_path,
        """
        filters:
          - name: red_and_blue
            channels:
              red: &vertical [[1, 0, -1], [1, 0, -1], [1, 0, -1]]
              blue: *vertical
        """,
    )
    np.testing.assert_array_equal(resolved.weights[0], [RED_VERTICAL, ZERO_3X3, RED_VERTICAL])


def test_yaml_merge_key_lets_a_filter_override_a_shared_template(tmp_path: Path) -> None:
    """Standard YAML: keys written next to ``<<: *anchor`` override the merged ones."""
    resolved = resolve(
        tmp_path,
        """
        filters:
          - &edge {name: dx, kernel: sobel_x, scale: 0.125}
          - <<: *edge
            name: dy
            kernel: sobel_y
        """,
    )
    assert resolved.names == ("dx", "dy")
    np.testing.assert_allclose(resolved.weights[1, 0], builtin_kernel("sobel_y") * 0.125)


# --- invalid banks ----------------------------------------------------------------------

ONE_FILTER = "filters:\n  - kernel: identity\n"


def invalid(
    case_id: str, text: str, *fragments: str, hint: str | None = None, json_file: bool = False
) -> object:
    """A row of the table: a broken bank, what str(error) must contain, what error.hint must."""
    filename = "broken.json" if json_file else "broken.yaml"
    return pytest.param(filename, text, fragments, hint, id=case_id)


INVALID_BANKS = [
    # The document as a whole.
    invalid("not-a-mapping", "- kernel: identity\n", "must be a mapping", hint="filters:"),
    invalid("a-string", "just some text\n", "must be a mapping"),
    invalid("empty-file", "", "must be a mapping"),
    invalid("json-list", "[1, 2]", "must be a mapping", json_file=True),
    invalid("missing-filters", "name: lonely\n", "non-empty 'filters' list"),
    invalid("empty-filters", "filters: []\n", "non-empty 'filters' list"),
    invalid("filters-not-a-list", "filters: {kernel: box}\n", "non-empty 'filters' list"),
    invalid(
        "unknown-bank-key",
        "filter:\n  - kernel: identity\n",
        "unknown key 'filter'",
        hint="did you mean 'filters'",
    ),
    # The shape of a filter.
    invalid("filter-not-a-mapping", "filters:\n  - identity\n", "filters[0]", "must be a mapping"),
    invalid(
        "two-sources",
        "filters:\n  - {name: both, kernel: identity, channels: {red: identity}}\n",
        "filters[0] ('both')",
        "needs exactly one of channels, kernel or weights; got channels, kernel",
    ),
    invalid(
        "no-source",
        "filters:\n  - name: nothing\n",
        "filters[0] ('nothing')",
        "needs exactly one of channels, kernel or weights",
    ),
    invalid(
        "unknown-filter-key",
        "filters:\n  - {name: typo, kernal: identity}\n",
        "filters[0] ('typo')",
        "unknown key 'kernal'",
        hint="did you mean 'kernel'",
    ),
    invalid(
        "filter-name-with-a-slash",
        "filters:\n  - {name: 'a/b', kernel: identity}\n",
        "name must be",
        "'a/b'",
    ),
    # channels:
    invalid(
        "unknown-channel",
        "filters:\n  - {name: c, channels: {rde: identity}}\n",
        "filters[0] ('c')",
        "unknown channel 'rde'",
        hint="'red'",
    ),
    invalid("negative-channel", "filters:\n  - channels: {-1: box}\n", "unknown channel -1"),
    invalid(
        "same-channel-twice",
        "filters:\n  - channels: {red: box, r: box}\n",
        "channel 'r' is given twice",
    ),
    invalid("empty-channels", "filters:\n  - channels: {}\n", "channels must be a non-empty"),
    # kernel: and built-in kernels
    invalid(
        "unknown-kernel",
        "filters:\n  - {name: k, kernel: sobelx}\n",
        "filters[0] ('k')",
        "unknown built-in kernel 'sobelx'",
        hint="'sobel_x'",
    ),
    invalid(
        "bad-kernel-parameter",
        "filters:\n  - kernel: {gaussian: {sigma: -1}}\n",
        "gaussian: sigma must be",
    ),
    invalid(
        "unknown-kernel-parameter",
        "filters:\n  - kernel: {gaussian: {sigm: 2}}\n",
        "kernel 'gaussian' has no parameter 'sigm'",
        hint="'sigma'",
    ),
    invalid(
        "kernel-parameters-not-a-mapping",
        "filters:\n  - kernel: {box: 5}\n",
        "{name: {parameter: value}}",
    ),
    invalid("kernel-is-a-number", "filters:\n  - kernel: 3\n", "must be a 2-D matrix"),
    # Matrices.
    invalid(
        "ragged-rows",
        "filters:\n  - kernel: [[1, 2, 3], [1, 2]]\n",
        "kernel: row 2 has 2 values but row 1 has 3",
    ),
    invalid("empty-row", "filters:\n  - kernel: [[1], []]\n", "row 2 must be a non-empty list"),
    invalid("empty-matrix", "filters:\n  - kernel: []\n", "non-empty list of rows"),
    invalid(
        "weights-given-as-2d",
        "filters:\n  - weights: [[1, 2], [3, 4]]\n",
        "weights[0]: row 1 must be a non-empty list",
    ),
    invalid(
        "weights-layers-differ-in-size",
        "filters:\n  - weights: [[[1]], [[1, 2]], [[1]]]\n",
        "the layers of weights differ in size",
    ),
    invalid(
        "channels-layers-differ-in-size",
        "filters:\n  - channels: {red: [[1]], green: sobel_x}\n",
        "the layers of channels differ in size",
    ),
    # Numbers.
    invalid(
        "string-weight",
        "filters:\n  - kernel: [[1, '2']]\n",
        "kernel[1][2] must be a number",
        "'2'",
    ),
    invalid(
        "yaml-yes-weight",
        "filters:\n  - kernel: [[yes]]\n",
        "kernel[1][1] must be a number",
        "a boolean",
    ),
    invalid(
        "string-scale",
        "filters:\n  - {kernel: identity, scale: double}\n",
        "scale must be a number",
    ),
    invalid(
        "boolean-bias",
        "filters:\n  - {kernel: identity, bias: yes}\n",
        "bias must be a number",
        "a boolean",
    ),
    invalid(
        "yaml-nan",
        "filters:\n  - kernel: [[1, .nan]]\n",
        "kernel[1][2] must be a finite number",
    ),
    invalid(
        "yaml-inf",
        "filters:\n  - {kernel: identity, bias: .inf}\n",
        "bias must be a finite number",
    ),
    invalid(
        "yaml-minus-inf",
        "filters:\n  - {kernel: identity, scale: -.inf}\n",
        "scale must be a finite number",
    ),
    invalid(
        "json-nan",
        '{"filters": [{"kernel": [[NaN]]}]}',
        "NaN is not a finite number",
        json_file=True,
    ),
    invalid(
        "json-infinity",
        '{"filters": [{"kernel": "identity", "bias": -Infinity}]}',
        "Infinity is not a finite number",
        json_file=True,
    ),
    # Flags.
    invalid(
        "depthwise-without-kernel",
        "filters:\n  - {channels: {red: identity}, depthwise: true}\n",
        "depthwise: true needs kernel",
    ),
    invalid(
        "depthwise-not-a-boolean",
        "filters:\n  - {kernel: identity, depthwise: 1}\n",
        "depthwise must be true or false",
    ),
    invalid(
        "normalize-is-a-string",
        "filters:\n  - {kernel: identity, normalize: 'true'}\n",
        "normalize must be true or false",
    ),
    invalid(
        "normalize-is-a-number",
        "filters:\n  - {kernel: identity, normalize: 1}\n",
        "normalize must be true or false",
    ),
    # Filters against each other.
    invalid(
        "kernel-size-mismatch",
        "filters:\n  - {name: small, kernel: [[1]]}\n  - {name: large, kernel: sobel_x}\n",
        "filters[1] ('large'): is 3×3 but filters[0] ('small') is 1×1",
        "share one kernel size",
    ),
    invalid(
        "duplicate-filter-names",
        "filters:\n  - {name: twin, kernel: identity}\n  - {name: twin, kernel: box}\n",
        "filters[1] ('twin')",
        "duplicate filter name (also filters[0])",
    ),
    # Duplicate keys.
    invalid(
        "duplicate-yaml-key",
        "filters:\n  - kernel: identity\n    kernel: sobel_x\n",
        "line 3",
        "duplicate key 'kernel'",
    ),
    invalid(
        "duplicate-json-key",
        '{"filters": [{"kernel": "identity", "kernel": "box"}]}',
        "duplicate key 'kernel'",
        json_file=True,
    ),
    # defaults:
    invalid(
        "defaults-unknown-key",
        "defaults: {strides: 2}\n" + ONE_FILTER,
        "defaults",
        "unknown key 'strides'",
        hint="did you mean 'stride'",
    ),
    invalid(
        "defaults-stride-0",
        "defaults: {stride: 0}\n" + ONE_FILTER,
        "stride must be an integer ≥ 1, got 0",
    ),
    invalid(
        "defaults-dilation-float",
        "defaults: {dilation: 1.5}\n" + ONE_FILTER,
        "dilation must be an integer ≥ 1",
    ),
    invalid(
        "defaults-border-mirror",
        "defaults: {border: mirror}\n" + ONE_FILTER,
        "border must be one of reflect, symmetric, edge, wrap, constant",
        "'mirror'",
    ),
    invalid(
        "defaults-border-typo",
        "defaults: {border: reflekt}\n" + ONE_FILTER,
        "border must be one of",
        hint="did you mean 'reflect'",
    ),
    invalid(
        "defaults-activation-typo",
        "defaults: {activation: rleu}\n" + ONE_FILTER,
        "activation must be one of none, relu, abs",
        hint="'relu'",
    ),
    invalid(
        "defaults-padding-negative",
        "defaults: {padding: -1}\n" + ONE_FILTER,
        "padding must be one of same, valid, full or an integer ≥ 0",
    ),
    invalid(
        "defaults-cval-nan",
        "defaults: {cval: .nan}\n" + ONE_FILTER,
        "cval must be a finite number",
    ),
    invalid(
        "defaults-not-a-mapping",
        "defaults: [stride, 2]\n" + ONE_FILTER,
        "defaults must be a mapping",
    ),
    # Syntax.
    invalid(
        "yaml-syntax-error",
        "filters:\n  - kernel: [[1, 2]\n  - kernel: identity\n",
        "invalid YAML",
        "line 3",
    ),
    invalid("yaml-tab-indent", "filters:\n\t- kernel: identity\n", "invalid YAML", "line 2"),
    invalid(
        "json-syntax-error",
        '{\n  "filters": [\n    {"kernel": "identity",}\n  ]\n}\n',
        "invalid JSON",
        "line 3, column",
        json_file=True,
    ),
]


@pytest.mark.parametrize(("filename", "text", "fragments", "hint"), INVALID_BANKS)
def test_invalid_bank_raises_bank_error_naming_file_and_problem(
    tmp_path: Path, filename: str, text: str, fragments: tuple[str, ...], hint: str | None
) -> None:
    path = write(tmp_path / filename, text)
    with pytest.raises(BankError) as caught:
        load_bank(path)
    message = str(caught.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message
    if hint is not None:
        assert caught.value.hint is not None
        assert hint in caught.value.hint


def test_yaml_errors_give_the_line_where_the_offending_filter_starts(tmp_path: Path) -> None:
    path = write(
        tmp_path / "lines.yaml",
        """\
        # line 1: a comment
        name: lines
        description: the second filter, starting on line 7, is wrong
        filters:
          - name: fine
            kernel: identity
          - name: broken
            kernel: [[1, 2, 3], [4, 5]]
        """,
    )
    with pytest.raises(BankError, match=r"line 7\b.*filters\[1\] \('broken'\).*row 2"):
        load_bank(path)


def test_json_errors_name_the_filter_by_index_and_name(tmp_path: Path) -> None:
    document = {
        "filters": [
            {"name": "red", "channels": {"red": [[1]]}},
            {"name": "blue", "channels": {"bleu": [[1]]}},
        ]
    }
    path = write(tmp_path / "colours.json", json.dumps(document))
    with pytest.raises(BankError) as caught:
        load_bank(path)
    assert "colours.json" in str(caught.value)
    assert "filters[1] ('blue')" in str(caught.value)
    assert "unknown channel 'bleu'" in str(caught.value)
    assert "'blue'" in (caught.value.hint or "")


def test_unnamed_filter_is_named_by_its_index(tmp_path: Path) -> None:
    path = write(tmp_path / "b.yaml", "filters:\n  - kernel: identity\n  - kernel: nope\n")
    with pytest.raises(BankError, match=r"filters\[1\]: kernel: unknown built-in kernel"):
        load_bank(path)


def test_non_utf8_bytes_are_a_bank_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"description: caf\xe9\nfilters:\n  - kernel: identity\n")
    with pytest.raises(BankError, match="not UTF-8") as caught:
        load_bank(path)
    assert "latin1.yaml" in str(caught.value)


def test_a_utf8_byte_order_mark_is_allowed(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"filters": [{"kernel": "box"}]}).encode())
    assert load_bank(path).name == "bom"


def test_a_directory_is_not_a_bank(tmp_path: Path) -> None:
    directory = tmp_path / "folder.yaml"
    directory.mkdir()
    with pytest.raises(BankError, match="is a directory") as caught:
        load_bank(directory)
    assert "folder.yaml" in str(caught.value)


@pytest.mark.parametrize("given", ["missing.yaml", "sub/missing", "missing.json"])
def test_a_missing_file_path_is_a_bank_error(given: str) -> None:
    with pytest.raises(BankError, match="no such bank file") as caught:
        load_bank(given)
    assert given in str(caught.value)


def test_an_absolute_missing_path_is_a_bank_error(tmp_path: Path) -> None:
    with pytest.raises(BankError, match="no such bank file"):
        load_bank(tmp_path / "nowhere" / "edges.yaml")


def test_an_unknown_bank_name_suggests_a_close_one() -> None:
    with pytest.raises(BankError) as caught:
        load_bank("edgse")
    assert "edgse" in str(caught.value)
    assert "search path" in str(caught.value)
    assert "did you mean 'edges'" in (caught.value.hint or "")


# --- YAML safety -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "tagged",
    [
        pytest.param("!!python/object/apply:os.mkdir ['pwned']", id="object-apply"),
        pytest.param("!!python/name:os.system", id="python-name"),
        pytest.param("!!python/object/new:os.mkdir ['pwned']", id="object-new"),
    ],
)
def test_python_tags_are_refused_not_executed(tmp_path: Path, tagged: str) -> None:
    path = write(tmp_path / "evil.yaml", f"filters:\n  - kernel: {tagged}\n")
    with pytest.raises(BankError, match="invalid YAML") as caught:
        load_bank(path)
    assert "evil.yaml" in str(caught.value)
    assert not (tmp_path / "pwned").exists()


def test_os_system_tag_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "evil.yaml", "filters: !!python/object/apply:os.system ['exit 0']\n")
    with pytest.raises(BankError, match=r"evil\.yaml.*line 1"):
        load_bank(path)


# --- resolving against a volume's depth -----------------------------------------------


def test_channels_filter_reading_blue_fails_on_one_channel(tmp_path: Path) -> None:
    bank = load(
        tmp_path,
        "filters:\n  - name: blue_only\n    channels: {blue: identity}\n",
        filename="blue.yaml",
    )
    with pytest.raises(BankError) as caught:
        bank.resolve(1)
    message = str(caught.value)
    assert "blue.yaml" in message
    assert "filters[0] ('blue_only')" in message
    assert "blue" in message.split("('blue_only')", 1)[1]
    assert "1 channel" in message


def test_channels_filter_runs_on_any_depth_that_has_its_channels(tmp_path: Path) -> None:
    bank = load(tmp_path, "filters:\n  - channels: {green: identity}\n")
    for channels in (2, 3, 4, 5):
        assert bank.resolve(channels).weights.shape == (1, channels, 3, 3)


def test_weights_filter_needs_exactly_its_number_of_channels(tmp_path: Path) -> None:
    bank = load(
        tmp_path,
        "filters:\n  - name: rgb_only\n    weights: [identity, identity, identity]\n",
        filename="rgb.yaml",
    )
    assert bank.resolve(3).weights.shape == (1, 3, 3, 3)
    with pytest.raises(BankError) as caught:
        bank.resolve(4)
    message = str(caught.value)
    assert "rgb.yaml" in message
    assert "filters[0] ('rgb_only')" in message
    assert "3 layers" in message
    assert "4 channels" in message


def test_output_names_must_be_unique_after_depthwise_expansion(tmp_path: Path) -> None:
    bank = load(
        tmp_path,
        """
        filters:
          - {name: blur, kernel: box, depthwise: true}
          - {name: blur_red, kernel: box}
        """,
    )
    with pytest.raises(BankError, match="'blur_red'"):
        bank.resolve(3)


def test_normalizing_an_all_zero_filter_fails_when_loaded(tmp_path: Path) -> None:
    with pytest.raises(BankError, match=r"line 2: filters\[0\] \('empty'\).*all zero"):
        load(tmp_path, "filters:\n  - {name: empty, kernel: [[0, 0]], normalize: true}\n")


# --- numbers that parse but cannot be weights ------------------------------------------


@pytest.mark.parametrize(
    ("filename", "text"),
    [
        pytest.param(
            "huge.yaml", "filters:\n  - kernel: [[1" + "0" * 400 + "]]\n", id="yaml-weight"
        ),
        pytest.param(
            "huge.json",
            '{"filters": [{"kernel": "box", "bias": 1' + "0" * 400 + "}]}",
            id="json-bias",
        ),
    ],
)
def test_an_integer_too_large_for_a_float_is_a_bank_error(
    tmp_path: Path, filename: str, text: str
) -> None:
    path = write(tmp_path / filename, text)
    with pytest.raises(BankError) as caught:
        load_bank(path)
    assert filename in str(caught.value)


@pytest.mark.parametrize(
    "filter_yaml",
    [
        pytest.param("kernel: [[1.0e+39]]", id="weight"),
        pytest.param("{kernel: [[2]], scale: 1.0e+39}", id="scale"),
        pytest.param("{kernel: [[1.0e+300]], scale: 1.0e+300}", id="weight-times-scale"),
    ],
)
def test_weights_beyond_float32_are_a_bank_error_not_infinity(
    tmp_path: Path, filter_yaml: str
) -> None:
    """Finite in the file but infinite as float32 weights: refused at load or resolve."""
    path = write(tmp_path / "overflow.yaml", f"filters:\n  - {filter_yaml}\n")
    with pytest.raises(BankError) as caught:
        load_bank(path).resolve(3)
    assert "overflow.yaml" in str(caught.value)


def test_a_tiny_gaussian_sigma_gives_finite_weights_or_a_bank_error(tmp_path: Path) -> None:
    path = write(tmp_path / "tiny.yaml", "filters:\n  - kernel: {gaussian: {sigma: 1.0e-200}}\n")
    try:
        bank = load_bank(path)
    except BankError:
        return
    assert np.isfinite(bank.resolve(1).weights).all()


def test_an_unusual_digit_as_channel_key_is_a_bank_error(tmp_path: Path) -> None:
    """'²' is a Unicode digit (str.isdigit) but not an integer: an unknown channel."""
    path = write(tmp_path / "super.json", '{"filters": [{"channels": {"\\u00b2": [[1]]}}]}')
    with pytest.raises(BankError, match="unknown channel"):
        load_bank(path)


# --- the search path ------------------------------------------------------------------


def described(description: str) -> str:
    return f"description: {description}\nfilters:\n  - kernel: identity\n"


def test_a_name_finds_the_bundled_bank() -> None:
    bank = load_bank("edges")
    assert bank.source is not None
    assert bank.source.parent.resolve() == bundled_directory().resolve()
    assert bank.filters[0].name == "red_vertical"


def test_convvol_filters_shadows_bundled_and_cwd_filters_shadows_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "env" / "edges.yaml", described("from CONVVOL_FILTERS"))
    monkeypatch.setenv("CONVVOL_FILTERS", str(tmp_path / "env"))
    assert load_bank("edges").description == "from CONVVOL_FILTERS"

    write(tmp_path / "filters" / "edges.yaml", described("from ./filters"))
    assert load_bank("edges").description == "from ./filters"
    assert available_banks()["edges"] == Path("filters") / "edges.yaml"


def test_cwd_filters_is_relative_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "project" / "filters" / "local.yaml", described("project bank"))
    with pytest.raises(BankError):
        load_bank("local")
    monkeypatch.chdir(tmp_path / "project")
    assert load_bank("local").description == "project bank"


def test_convvol_filters_holds_several_directories_first_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "one" / "shared.yaml", described("shared from one"))
    write(tmp_path / "two" / "shared.yaml", described("shared from two"))
    write(tmp_path / "two" / "only_two.yaml", described("only in two"))
    monkeypatch.setenv(
        "CONVVOL_FILTERS", os.pathsep.join([str(tmp_path / "one"), str(tmp_path / "two")])
    )
    assert load_bank("shared").description == "shared from one"
    assert load_bank("only_two").description == "only in two"


def test_missing_and_empty_entries_in_convvol_filters_are_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "real" / "mine.yaml", described("mine"))
    entries = ["", str(tmp_path / "does-not-exist"), str(tmp_path / "real"), ""]
    monkeypatch.setenv("CONVVOL_FILTERS", os.pathsep.join(entries))
    assert load_bank("mine").description == "mine"
    assert load_bank("edges").source.parent.resolve() == bundled_directory().resolve()


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_a_name_finds_yaml_yml_and_json_files(tmp_path: Path, suffix: str) -> None:
    text = (
        json.dumps({"description": "found", "filters": [{"kernel": "identity"}]})
        if suffix == ".json"
        else described("found")
    )
    write(tmp_path / "filters" / f"mybank{suffix}", text)
    bank = load_bank("mybank")
    assert bank.name == "mybank"
    assert bank.description == "found"
    assert bank.source == Path("filters") / f"mybank{suffix}"


def test_available_banks_lists_each_name_once_with_the_winning_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "filters" / "sharpen.yml", described("local sharpen"))
    write(tmp_path / "env" / "extra.json", json.dumps({"filters": [{"kernel": "box"}]}))
    write(tmp_path / "env" / "notes.txt", "not a bank")
    monkeypatch.setenv("CONVVOL_FILTERS", str(tmp_path / "env"))

    banks = available_banks()
    assert banks["sharpen"] == Path("filters") / "sharpen.yml"
    assert banks["extra"] == tmp_path / "env" / "extra.json"
    assert banks["edges"].parent.resolve() == bundled_directory().resolve()
    assert "notes" not in banks


def test_bundled_set_has_at_least_eight_banks_including_edges() -> None:
    banks = available_banks()
    assert len(banks) >= 8
    edges = load_bank("edges")
    names = [f.name for f in edges.filters]
    assert "red_vertical" in names
    assert "blue_horizontal" in names


def test_bundled_directory_holds_the_repository_banks() -> None:
    bundled = {path.name for path in bundled_directory().iterdir()}
    assert {path.name for path in BUNDLED_FILES} <= bundled


@pytest.mark.parametrize("path", BUNDLED_FILES, ids=[path.name for path in BUNDLED_FILES])
def test_every_bundled_bank_loads_resolves_for_rgb_and_is_described(path: Path) -> None:
    bank = load_bank(path)
    assert bank.description.strip()
    resolved = bank.resolve(3)
    assert len(resolved.names) == resolved.weights.shape[0] == resolved.bias.shape[0] >= 1
    assert resolved.weights.shape[1] == 3
    assert np.isfinite(resolved.weights).all()
    assert load_bank(path.stem).name == bank.name
