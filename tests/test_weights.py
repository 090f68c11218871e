"""Trained CNN weights: every format gives the same bank and output, equal to a float64
cross-correlation; hostile files are refused with one line; the network's input
normalisation and activations; list-tensors, import-bank, show-filter --rgb."""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import struct
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

import convvol
from convvol.bank import load_bank
from convvol.cli import cli
from convvol.errors import BankError
from convvol.io import torch_files
from convvol.jobs import filter_volume
from convvol.normalize import PRESETS, InputNorm
from convvol.settings import BORDERS
from reference import reference_convolve

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "weights"
FORMATS = [
    "conv1.weight.npy", "conv.npz", "conv.safetensors", "conv_zip.pt", "conv_legacy.pt",
    "conv.onnx", "conv.h5",
]  # fmt: skip
PNET = FIXTURES / "facenet_pnet.pt"  # facenet-pytorch 2.6.0's data/pnet.pt (MIT)
RNG = np.random.default_rng(7)
VOLUME = RNG.random((9, 11, 3)).astype(np.float32)


def expected_layer() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(19)  # as tests/fixtures/make_weights.py makes them
    weights = rng.normal(0, 0.5, (10, 3, 3, 3)).astype(np.float32)
    return weights, rng.normal(0, 0.1, 10).astype(np.float32)


def run(*args: str | os.PathLike[str]) -> Result:
    return CliRunner().invoke(cli, [str(arg) for arg in args], catch_exceptions=False)


# --- every format, one layer ----------------------------------------------------------


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_gives_the_same_bank_and_output(name: str) -> None:
    weights, bias = expected_layer()
    bank = load_bank(FIXTURES / name)
    resolved = bank.resolve(3)
    assert np.array_equal(resolved.weights, weights)
    assert np.array_equal(resolved.bias, bias)
    assert resolved.names == tuple(f"conv1_{i}" for i in range(10))
    assert bank.provenance["file"] == name
    out = convvol.apply_bank(VOLUME, bank, border="constant", padding=1)
    expected = reference_convolve(VOLUME, weights, bias, padding=1, border="constant")
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    first = convvol.apply_bank(VOLUME, load_bank(FIXTURES / FORMATS[0]), border="constant",
                               padding=1)  # fmt: skip
    assert np.array_equal(out, first)


def test_equal_to_torch_conv2d_where_torch_is_installed() -> None:
    torch = pytest.importorskip("torch")
    weights, bias = expected_layer()
    image = torch.from_numpy(VOLUME.transpose(2, 0, 1)[None].copy())
    expected = torch.nn.functional.conv2d(image, torch.from_numpy(weights),
                                          torch.from_numpy(bias), padding=1)  # fmt: skip
    out = convvol.apply_bank(VOLUME, load_bank(FIXTURES / "conv_zip.pt"), border="constant",
                             padding=1)  # fmt: skip
    np.testing.assert_allclose(out, expected[0].numpy().transpose(1, 2, 0), atol=1e-5)


def test_the_real_mtcnn_pnet_through_the_restricted_unpickler() -> None:
    bank = load_bank(f"{PNET}#conv1.weight")
    assert len(bank.filters) == 10
    assert bank.kernel_shape == (3, 3)
    assert bank.defaults["activation"] == "prelu"
    assert bank.provenance["prelu"] == "prelu1.weight"
    assert bank.filters[0].weights is not None
    assert bank.filters[0].weights[0, 0, 1] == pytest.approx(0.83591545)
    assert bank.filters[0].slope == pytest.approx(-0.6254063)
    assert load_bank(f"{PNET}#conv2").resolve(10).weights.shape == (16, 10, 3, 3)
    assert load_bank(f"{PNET}#conv4_1.weight").kernel_shape == (1, 1)


def test_the_bundled_pnet_bank_is_the_wheels_conv1() -> None:
    bundled = load_bank("mtcnn_pnet")
    original = load_bank(PNET)
    assert np.array_equal(bundled.resolve(3).weights, original.resolve(3).weights)
    assert np.array_equal(bundled.resolve(3).bias, original.resolve(3).bias)
    slopes = [np.array([f.slope for f in bank.filters], np.float32) for bank in (bundled, original)]
    assert np.array_equal(*slopes)
    assert bundled.input == PRESETS["mtcnn"]


def test_an_onnx_conv_brings_its_padding_stride_and_dilation() -> None:
    bank = load_bank(FIXTURES / "conv.onnx")  # pads=[1, 1, 1, 1]
    assert dict(bank.defaults) == {"padding": 1, "border": "constant", "stride": 1,
                                   "dilation": 1}  # fmt: skip
    weights, bias = expected_layer()
    expected = reference_convolve(VOLUME, weights, bias, padding=1, border="constant")
    np.testing.assert_allclose(convvol.apply_bank(VOLUME, bank), expected, atol=1e-5)
    assert load_bank(FIXTURES / "conv.npz").defaults == {}  # a state dict does not say


def test_a_prefix_names_the_layer_and_a_typo_gets_a_hint() -> None:
    assert load_bank(f"{FIXTURES / 'conv.npz'}#conv1").name == "conv1"
    with pytest.raises(BankError, match="no tensor named 'conv7'") as caught:
        load_bank(f"{FIXTURES / 'conv.npz'}#conv7")
    assert "list-tensors" in (caught.value.hint or "") or "conv1" in (caught.value.hint or "")


def test_layout_can_be_forced(tmp_path: Path) -> None:
    weights, _ = expected_layer()
    np.save(tmp_path / "keras.npy", weights.transpose(2, 3, 1, 0))  # HWIO
    bank = load_bank(tmp_path / "keras.npy", layout="hwio")
    assert np.array_equal(bank.resolve(3).weights, weights)
    np.save(tmp_path / "one.npy", np.arange(9.0).reshape(3, 3))
    one = load_bank(tmp_path / "one.npy")  # a single kh×kw kernel: every channel
    assert one.filters[0].kernel is not None
    assert one.resolve(2).weights.shape == (1, 2, 3, 3)


def test_grouped_onnx_conv_reads_its_groups_channels_only(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    depthwise = RNG.normal(size=(6, 1, 3, 3)).astype(np.float32)  # 3 groups, 2 per channel
    node = helper.make_node("Conv", ["x", "dw"], ["y"], name="dw", group=3)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 8, 8])],
        initializer=[numpy_helper.from_array(depthwise, "dw")],
    )  # fmt: skip
    path = tmp_path / "dw.onnx"
    onnx.save(helper.make_model(graph), str(path))
    resolved = load_bank(path).resolve(3)
    assert resolved.weights.shape == (6, 3, 3, 3)
    for index in range(6):
        group = index // 2
        assert np.array_equal(resolved.weights[index, group], depthwise[index, 0])
        assert not np.delete(resolved.weights[index], group, axis=0).any()


def test_keras_3_archive_and_prelu_alpha(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    weights, bias = expected_layer()
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        h5["layers/conv2d/vars/0"] = weights.transpose(2, 3, 1, 0)
        h5["layers/conv2d/vars/1"] = bias
        h5["layers/p_re_lu/vars/0"] = np.full((1, 1, 10), 0.2, np.float32)
    with zipfile.ZipFile(tmp_path / "model.keras", "w") as archive:
        archive.writestr("model.weights.h5", buffer.getvalue())
    bank = load_bank(tmp_path / "model.keras")
    assert np.array_equal(bank.resolve(3).weights, weights)
    assert np.array_equal(bank.resolve(3).bias, bias)
    assert bank.defaults["activation"] == "prelu"
    assert bank.filters[3].slope == pytest.approx(0.2)


# --- hostile files: one line, exit 2, nothing run, nothing written --------------------


class Payload:
    """The classic: unpickling calls os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def payload_pickle(marker: Path) -> bytes:
    return pickle.dumps(collections.OrderedDict(w=Payload(marker)), protocol=2)


def write_zip(path: Path, data_pkl: bytes, **entries: bytes) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("m/data.pkl", data_pkl)
        for name, data in entries.items():
            archive.writestr(f"m/data/{name}", data)


def refused(result: Result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("convvol: error")]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize("legacy", [False, True])
def test_a_pickle_naming_os_system_runs_nothing(tmp_path: Path, legacy: bool) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    if legacy:
        with path.open("wb") as stream:
            for header in (torch_files.LEGACY_MAGIC, 1001, {"little_endian": True}):
                pickle.dump(header, stream, protocol=2)
            stream.write(payload_pickle(marker))
    else:
        write_zip(path, payload_pickle(marker))
    result = run("import-bank", path, "-o", tmp_path / "out.yaml")
    refused(result, "evil.pt", "system", "refused")
    assert not marker.exists()
    assert not (tmp_path / "out.yaml").exists()
    refused(run("apply", VOLUME_FILE(tmp_path), "-f", path, "-o", tmp_path / "o.png"))
    assert not marker.exists()
    assert not (tmp_path / "o.png").exists()


def test_protocol_5_buffers_are_refused(tmp_path: Path) -> None:
    data = pickle.dumps(collections.OrderedDict(a=bytearray(b"xy")), protocol=5)
    write_zip(tmp_path / "p5.pt", data)
    refused(run("list-tensors", tmp_path / "p5.pt"), "p5.pt", "BYTEARRAY8")


def test_a_memo_bomb_is_refused_before_unpickling(tmp_path: Path) -> None:
    """LONG_BINPUT at index 1.5e9 would make the unpickler allocate a 12 GB memo."""
    data = b"\x80\x02]" + b"r" + (1_500_000_000).to_bytes(4, "little") + b"."
    write_zip(tmp_path / "memo.pt", data)
    refused(run("list-tensors", tmp_path / "memo.pt"), "memo.pt", "memo index 1,500,000,000")


def VOLUME_FILE(directory: Path) -> Path:
    path = directory / "volume.npy"
    np.save(path, VOLUME)
    return path


def test_a_zip_bomb_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch_files, "MAX_PICKLE_BYTES", 2**20)
    path = tmp_path / "bomb.pt"
    write_zip(path, b"\x80\x02" + b"\x00" * (8 * 2**20))  # 8 MiB that deflate to 8 KiB
    assert path.stat().st_size < 64 * 1024
    refused(run("list-tensors", path), "bomb.pt", "zip bomb")


def test_a_tensor_larger_than_its_file_is_refused(tmp_path: Path) -> None:
    weights, _ = expected_layer()
    header = json.dumps({"w": {"dtype": "F32", "shape": [10, 3, 300, 300],
                               "data_offsets": [0, 10 * 3 * 300 * 300 * 4]}}).encode()  # fmt: skip
    (tmp_path / "big.safetensors").write_bytes(
        struct.pack("<Q", len(header)) + header + weights.tobytes()
    )
    refused(run("list-tensors", tmp_path / "big.safetensors"), "'w'", "does not hold")
    np.save(tmp_path / "cut.npy", weights)
    data = (tmp_path / "cut.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:-100])
    refused(run("validate", tmp_path / "cut.npy"), "cut.npy", "more than the file holds")
    legacy = (FIXTURES / "conv_legacy.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(legacy[:-50])
    refused(run("validate", tmp_path / "cut.pt"), "cut.pt", "past the end")
    with zipfile.ZipFile(FIXTURES / "conv_zip.pt") as source:
        pkl = source.read("conv/data.pkl")
    write_zip(tmp_path / "short.pt", pkl, **{"0": b"\x00" * 40, "1": b"\x00" * 40})
    refused(run("validate", tmp_path / "short.pt"), "short.pt", "declares")


def test_absurd_shapes_beyond_max_kernel_are_refused_before_reading(tmp_path: Path) -> None:
    np.save(tmp_path / "wide.npy", np.zeros((1, 1, 3, 40), np.float32))
    refused(run("validate", tmp_path / "wide.npy", "--max-kernel", "31"), "wide.npy", "40")
    assert run("validate", tmp_path / "wide.npy", "--max-kernel", "41").exit_code == 0


def test_nan_weights_are_refused(tmp_path: Path) -> None:
    weights, bias = expected_layer()
    weights[2, 1, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", **{"conv1.weight": weights, "conv1.bias": bias})
    refused(run("import-bank", f"{tmp_path / 'nan.npz'}#conv1", "-o", tmp_path / "b.yaml"),
            "nan.npz", "NaN")  # fmt: skip
    assert not (tmp_path / "b.yaml").exists()


def test_onnx_external_data_outside_its_folder_is_refused(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(FIXTURES / "conv.onnx"))
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    weight.data_location = onnx.TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", "../secret.bin"
    (tmp_path / "model").mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\x00" * 1080)
    path = tmp_path / "model" / "m.onnx"
    path.write_bytes(model.SerializeToString())
    refused(run("validate", path), "m.onnx", "outside the model's folder")
    entry.value = "inside.bin"  # the same, beside the model: read
    path.write_bytes(model.SerializeToString())
    weights, _ = expected_layer()
    (tmp_path / "model" / "inside.bin").write_bytes(weights.tobytes())
    assert np.array_equal(load_bank(path).resolve(3).weights, weights)


def test_a_damaged_hdf5_file_that_makes_libhdf5_loop_is_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hang.h5 (from the mutation fuzzing) makes libhdf5 iterate a group for ever."""
    pytest.importorskip("h5py")
    from convvol.io import weights

    monkeypatch.setattr(weights, "HDF5_SECONDS", 10.0)
    refused(run("list-tensors", FIXTURES / "hang.h5"), "hang.h5", "did not finish")


def test_garbage_is_one_line_for_every_format(tmp_path: Path) -> None:
    for suffix in (".npy", ".npz", ".safetensors", ".pt", ".onnx", ".h5", ".keras"):
        path = tmp_path / f"junk{suffix}"
        path.write_bytes(b"\x00junk" * 7)
        refused(run("list-tensors", path), f"junk{suffix}")
    refused(run("list-tensors", tmp_path / "missing.pt"), "no such weight file")


# --- the network's input and activations ----------------------------------------------


def normalised_reference(volume: np.ndarray, norm: InputNorm, **settings: object) -> np.ndarray:
    weights, bias = expected_layer()
    channels = volume[..., ::-1] if norm.order == "bgr" else volume
    network = (channels.astype(np.float64) - norm.mean) / np.asarray(norm.std)
    return reference_convolve(network, weights, bias, **settings)


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("order", ["rgb", "bgr"])
def test_input_normalisation_pads_after_normalising(border: str, order: str) -> None:
    norm = replace(PRESETS["imagenet"], order=order)
    bank = replace(load_bank(FIXTURES / "conv.npz"), input=norm)
    cval = 0.25 if border == "constant" else 0.0
    out = convvol.apply_bank(VOLUME, bank, padding=2, border=border, cval=cval, dilation=2)
    expected = normalised_reference(VOLUME, norm, padding=2, border=border, cval=cval,
                                    dilation=2)  # fmt: skip
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=2e-5)


def test_input_normalisation_is_the_same_on_every_path(tmp_path: Path) -> None:
    bank = replace(load_bank(FIXTURES / "conv.onnx"), input=PRESETS["mtcnn"])
    options = {"border": "constant", "padding": 1}
    whole = convvol.run_layers(VOLUME, [bank], **options).volume
    np.save(tmp_path / "v.npy", VOLUME)
    filter_volume(tmp_path / "v.npy", [bank], tmp_path / "strips.npy", budget=1, **options)
    assert np.array_equal(np.load(tmp_path / "strips.npy"), whole)
    da = pytest.importorskip("dask.array")
    from convvol.dask_arrays import apply_banks_dask

    lazy = apply_banks_dask(da.from_array(VOLUME, chunks=(3, 11, 3)), [bank], **options)
    assert np.array_equal(lazy.compute(), whole)
    result = run("apply", tmp_path / "v.npy", "-f", FIXTURES / "conv.onnx", "--input-norm",
                 "mtcnn", "--border", "constant", "--padding", "1",
                 "-o", tmp_path / "c.npy")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert np.array_equal(np.load(tmp_path / "c.npy"), whole)
    mean, std = "0.5,0.5,0.5", ",".join([str(128 / 255)] * 3)
    result = run("apply", tmp_path / "v.npy", "-f", FIXTURES / "conv.onnx", "--input-mean", mean,
                 "--input-std", std, "--border", "constant", "--padding", "1",
                 "-o", tmp_path / "m.npy")  # fmt: skip
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(tmp_path / "m.npy"), whole, atol=1e-6)


def test_input_mapping_in_a_bank_file(tmp_path: Path) -> None:
    text = (FIXTURES.parent.parent.parent / "filters" / "mtcnn_pnet.yaml").read_text()
    assert "input:" in text
    (tmp_path / "bad.yaml").write_text(
        "filters: [{kernel: [[1]]}]\ninput: {mean: [0.5], std: [0], order: rgb}\n"
    )
    refused(run("validate", tmp_path / "bad.yaml"), "bad.yaml", "std must be > 0")
    (tmp_path / "typo.yaml").write_text("filters: [{kernel: [[1]]}]\ninput: {mena: [0.5]}\n")
    refused(run("validate", tmp_path / "typo.yaml"), "unknown key 'mena'")


@pytest.mark.parametrize("activation", ["leaky_relu", "prelu", "sigmoid", "tanh"])
def test_activations(activation: str) -> None:
    bank = load_bank(FIXTURES / "conv.safetensors")
    if activation == "prelu":
        slopes = np.linspace(-0.5, 0.5, 10)
        filters = [replace(f, slope=float(s)) for f, s in zip(bank.filters, slopes, strict=True)]
        bank = replace(bank, filters=tuple(filters))
    out = convvol.apply_bank(VOLUME, bank, activation=activation, slope=0.2)
    weights, bias = expected_layer()
    linear = reference_convolve(VOLUME, weights, bias)
    expected = {
        "leaky_relu": np.where(linear < 0, 0.2 * linear, linear),
        "prelu": np.where(linear < 0, np.linspace(-0.5, 0.5, 10) * linear, linear),
        "sigmoid": 1 / (1 + np.exp(-linear)),
        "tanh": np.tanh(linear),
    }[activation]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_sigmoid_does_not_overflow() -> None:
    volume = np.array([[[-1e30, 0.0, 1e30]]], np.float32)
    out = convvol.apply_bank(volume, load_bank("grayscale"), activation="sigmoid")
    assert np.isfinite(out).all()


def test_mtcnn_pnet_conv1_as_the_network_runs_it() -> None:
    """(255·x − 127.5)/128, zero padding, the conv, PReLU: what facenet-pytorch computes."""
    bank = load_bank("mtcnn_pnet")
    image = VOLUME
    out = convvol.apply_bank(image, bank, padding="valid")
    original = load_bank(PNET)
    resolved = original.resolve(3)
    linear = reference_convolve((255 * image.astype(np.float64) - 127.5) / 128,
                                resolved.weights, resolved.bias, padding="valid")  # fmt: skip
    slopes = np.array([f.slope for f in original.filters])
    np.testing.assert_allclose(out, np.where(linear < 0, slopes * linear, linear), atol=2e-5)


# --- the commands ---------------------------------------------------------------------


def test_list_tensors_json_and_table() -> None:
    result = run("list-tensors", PNET, "--json")
    assert result.exit_code == 0
    entries = json.loads(result.output)
    assert entries[0] == {"name": "conv1.weight", "shape": [10, 3, 3, 3], "dtype": "float32",
                          "looks_like_conv": True}  # fmt: skip
    assert [e["name"] for e in entries if e["looks_like_conv"]] == [
        "conv1.weight", "conv2.weight", "conv3.weight", "conv4_1.weight", "conv4_2.weight"
    ]  # fmt: skip
    table = run("list-tensors", FIXTURES / "conv.h5").output
    assert "conv1/conv1/kernel:0\t3×3×3×10\tfloat32\tyes" in table


def test_import_bank_round_trips_exactly(tmp_path: Path) -> None:
    target = tmp_path / "conv1.yaml"
    result = run("import-bank", f"{PNET}#conv1", "-o", target, "--input-norm", "mtcnn")
    assert result.exit_code == 0, result.output
    text = target.read_text()
    assert "sha256: a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f" in text
    imported, original = load_bank(target), load_bank(PNET)
    assert np.array_equal(imported.resolve(3).weights, original.resolve(3).weights)
    assert np.array_equal(imported.resolve(3).bias, original.resolve(3).bias)
    assert imported.provenance["tensor"] == "conv1.weight"
    assert imported.input == PRESETS["mtcnn"]
    assert imported.defaults["activation"] == "prelu"
    assert not list(tmp_path.glob(".*convvol-part"))
    stdout = run("import-bank", FIXTURES / "conv.npz")
    assert stdout.exit_code == 0
    assert stdout.output.startswith("# Imported by convvol import-bank from conv.npz#conv1")


def test_import_bank_refuses_to_overwrite_its_source(tmp_path: Path) -> None:
    source = tmp_path / "w.npy"
    np.save(source, expected_layer()[0])
    refused(run("import-bank", source, "-o", tmp_path / "w.npz"), ".yaml")
    refused(run("import-bank", "filters/blur.yaml", "-o", tmp_path / "x.yaml"),
            "not a weight file")  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.npy"]


def test_layout_applies_to_weight_files_only() -> None:
    refused(run("validate", "blur", "--layout", "hwio"), "--layout")


def test_show_filter_rgb_draws_colour_patches(tmp_path: Path) -> None:
    result = run("show-filter", FIXTURES / "conv_zip.pt", "--image", tmp_path / "p.png", "--rgb")
    assert result.exit_code == 0, result.output
    picture = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    weights, _ = expected_layer()
    magnify = 56 // 3
    assert picture.shape[0] < 200  # one row of ten patches
    limit = np.abs(weights).max()
    patch = np.rint((0.5 + 0.5 * weights[0] / limit) * 255).transpose(1, 2, 0)
    found = False
    for y in range(picture.shape[0] - 3 * magnify):
        for x in range(0, 60):
            block = picture[y : y + 3 * magnify : magnify, x : x + 3 * magnify : magnify]
            if block.shape == patch.shape and np.array_equal(block, patch.astype(np.uint8)):
                found = True
                break
        if found:
            break
    assert found, "the first filter's patch is not on the picture"
    refused(run("show-filter", "blur", "--rgb"), "--image")


def test_show_filter_rgb_needs_three_channels(tmp_path: Path) -> None:
    result = run("show-filter", f"{PNET}#conv2", "--image", tmp_path / "p.png", "--rgb")
    refused(result, "3-channel")
    assert not (tmp_path / "p.png").exists()


def test_hundreds_of_filters_wrap_into_a_bounded_picture() -> None:
    from convvol import pictures
    from convvol.bank import BankWeights

    weights = RNG.normal(size=(500, 3, 11, 11)).astype(np.float32)
    names = tuple(f"f{i}" for i in range(500))
    picture = pictures.filter_patches(BankWeights(names, weights, np.zeros(500, np.float32)))
    assert picture.shape[1] <= pictures.MAX_PATCHES_WIDTH
    assert picture.shape[0] <= pictures.MAX_SIDE + 100
    zero = BankWeights(("z",), np.zeros((1, 3, 2, 2), np.float32), np.zeros(1, np.float32))
    grey = pictures.filter_patches(zero)
    assert (grey == 128).all(axis=2).any()  # zero weights are mid-grey


def test_every_weight_suffix_has_a_reader():
    """-f tells a weight file by its suffix (io/formats.py) without importing the readers."""
    from convvol.io.formats import WEIGHT_SUFFIXES
    from convvol.io.weights import WEIGHT_FORMATS

    assert tuple(WEIGHT_FORMATS) == WEIGHT_SUFFIXES
