"""`.pth` (zip and legacy formats) and `.safetensors` read without PyTorch; a pickle that names anything but tensors
and containers is refused before it runs. Fixtures: real `torch.save` files
(tests/fixtures/torch_reference/README.md)."""
import json
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from kerasvid.weights import torch_files

HERE = os.path.join(os.path.dirname(__file__), "fixtures", "torch_reference")


def _expected():
    with np.load(os.path.join(HERE, "checkpoint_expected.npz")) as f:
        return {k.replace("__", "."): f[k] for k in f.files}


@pytest.mark.parametrize("name", ["checkpoint_zip.pth", "checkpoint_legacy.pth"])
def test_real_checkpoints_read_exactly(name):
    obj = torch_files.read_pth(os.path.join(HERE, name))
    assert (obj["epoch"], obj["arch"], obj["mAP"]) == (7, "resnet152", 0.228)
    expected = _expected()
    assert list(obj["state_dict"]) == list(expected)
    for key, want in expected.items():
        got = obj["state_dict"][key]
        assert got.dtype == want.dtype and got.shape == want.shape, key  # float16, float64, int64 kept
        np.testing.assert_array_equal(got, want, err_msg=key)
    # The non-contiguous view (a transpose) and the view at an offset into the same storage.
    np.testing.assert_array_equal(obj["state_dict"]["module.fc.bias"], obj["state_dict"]["module.fc.weight"][:4, 1])


def test_load_state_dict_strips_module_and_reads_state_dict():
    state = torch_files.load_state_dict(os.path.join(HERE, "checkpoint_legacy.pth"))
    assert list(state) == [k[len("module."):] for k in _expected()]
    np.testing.assert_array_equal(state["conv1.weight"], _expected()["module.conv1.weight"])


def test_bare_tensor():
    got = torch_files.read_pth(os.path.join(HERE, "tensor_zip.pth"))
    np.testing.assert_array_equal(got, _expected()["module.conv1.weight"])
    with pytest.raises(ValueError, match="not a dict of tensors"):
        torch_files.load_state_dict(os.path.join(HERE, "tensor_zip.pth"))


class _RunsCode:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def _zip_checkpoint(path, data_pkl):
    """A zip `.pth` whose object pickle is `data_pkl` (the real file's other entries kept)."""
    with zipfile.ZipFile(os.path.join(HERE, "checkpoint_zip.pth")) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            data = data_pkl if item.filename.endswith("data.pkl") else src.read(item)
            dst.writestr(item.filename, data)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("func", [os.system, exec, eval])
def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path, fmt, func):
    marker = tmp_path / "ran"
    command = f"open({str(marker)!r}, 'w').write('x')" if func in (exec, eval) else f"touch {marker}"
    payload = pickle.dumps({"state_dict": {"w": _RunsCode(func, command)}}, protocol=2)
    path = tmp_path / "evil.pth"
    if fmt == "zip":
        _zip_checkpoint(path, payload)
    else:  # legacy: the magic number and protocol pickles, then the object
        path.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, 2) + pickle.dumps(1001, 2) + pickle.dumps({}, 2) + payload)
    with pytest.raises(torch_files.UnsafeCheckpointError, match="Refusing to load .*(system|exec|eval)"):
        torch_files.load_state_dict(path)
    assert not marker.exists()
    # The payload is live: an unrestricted unpickler would have run it.
    pickle.loads(payload)
    assert marker.exists()


def test_a_view_past_its_storage_is_refused(tmp_path):
    with zipfile.ZipFile(os.path.join(HERE, "checkpoint_zip.pth")) as src:
        data = bytearray(src.read("checkpoint_zip/data.pkl"))
    # conv1.weight: size (2, 3, 1, 2, 2), strides (12, 4, 4, 2, 1) over a storage of 24 floats; size[-1] 2 -> 9.
    at = data.index(bytes([ord("("), ord("K"), 2, ord("K"), 3, ord("K"), 1, ord("K"), 2, ord("K"), 2]))
    data[at + 10] = 9
    path = tmp_path / "oob.pth"
    _zip_checkpoint(path, bytes(data))
    with pytest.raises(ValueError, match="reads past its storage of 24 elements"):
        torch_files.read_pth(path)


def test_safetensors_read_a_file_written_by_hand(tmp_path):
    """The format written with struct/json here (not by the module's writer): a BF16 tensor, an int64 and metadata."""
    f32 = np.arange(6, dtype="<f4").reshape(2, 3)
    bf16 = np.array([0x3FC0, 0xC000], "<u2")  # bfloat16 bits of 1.5 and -2.0
    i64 = np.array([-5, 7], "<i8")
    blobs = [f32.tobytes(), bf16.tobytes(), i64.tobytes()]
    ends = np.cumsum([len(b) for b in blobs])
    header = {"a.weight": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, int(ends[0])]},
              "b": {"dtype": "BF16", "shape": [2], "data_offsets": [int(ends[0]), int(ends[1])]},
              "c": {"dtype": "I64", "shape": [2], "data_offsets": [int(ends[1]), int(ends[2])]},
              "__metadata__": {"format": "pt"}}
    text = json.dumps(header).encode()
    path = tmp_path / "hand.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    arrays, metadata = torch_files.read_safetensors(path)
    assert metadata == {"format": "pt"}
    np.testing.assert_array_equal(arrays["a.weight"], f32)
    np.testing.assert_array_equal(arrays["b"], np.array([1.5, -2.0], np.float32))
    assert arrays["c"].dtype == np.int64 and arrays["c"].tolist() == [-5, 7]
    assert list(torch_files.load_state_dict(path)) == ["a.weight", "b", "c"]
    renamed = tmp_path / "published-name.pth"  # known by its content, whatever its name
    renamed.write_bytes(path.read_bytes())
    assert list(torch_files.load_state_dict(renamed)) == ["a.weight", "b", "c"]


def test_safetensors_round_trip_and_bad_files(tmp_path):
    arrays = {"x": np.random.default_rng(0).normal(size=(3, 4)).astype(np.float16), "y": np.arange(5, dtype=np.int32),
              "z": np.asfortranarray(np.ones((2, 3))), "s": np.float64(2.5)}
    path = tmp_path / "w.safetensors"
    torch_files.write_safetensors(path, arrays, {"source": "test"})
    back, metadata = torch_files.read_safetensors(path)
    assert metadata == {"source": "test"} and sorted(back) == sorted(arrays)
    for key, value in arrays.items():
        assert back[key].dtype == np.asarray(value).dtype
        np.testing.assert_array_equal(back[key], value)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header["x"]["data_offsets"][1] += 2  # one element more than the shape holds
    text = json.dumps(header).encode()
    (tmp_path / "bad.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    with pytest.raises(ValueError, match="'x' of shape \\(3, 4\\)"):
        torch_files.read_safetensors(tmp_path / "bad.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(struct.pack("<Q", 4) + b"{no}")
    with pytest.raises(ValueError, match="not JSON"):
        torch_files.read_safetensors(tmp_path / "junk.safetensors")


def test_neither_format(tmp_path):
    path = tmp_path / "x.pth"
    path.write_bytes(pickle.dumps([1, 2], 2))
    with pytest.raises(ValueError, match="neither a zip nor a legacy PyTorch file"):
        torch_files.read_pth(path)


def test_no_torch_needed():
    import sys
    assert "torch" not in sys.modules


def test_big_endian_files(tmp_path):
    """A checkpoint saved on a big-endian machine (`byteorder` "big"): the same values."""
    itemsize = {"0": 4, "1": 4, "2": 8, "3": 4, "4": 2, "5": 8}  # the fixture's storages: f32, f32, i64, f32, f16, f64
    path = tmp_path / "big.pth"
    with zipfile.ZipFile(os.path.join(HERE, "checkpoint_zip.pth")) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            key = item.filename.split("/data/")[-1] if "/data/" in item.filename else None
            if item.filename.endswith("/byteorder"):
                data = b"big"
            elif key in itemsize:
                data = np.frombuffer(data, f"u{itemsize[key]}").byteswap().tobytes()
            dst.writestr(item.filename, data)
    state = torch_files.load_state_dict(path)
    for key, want in _expected().items():
        np.testing.assert_array_equal(state[key[len("module."):]], want)


def _unicode(text):
    return b"X" + struct.pack("<I", len(text)) + text.encode()


def test_pickled_state_for_a_rebuilt_tensor_is_refused(tmp_path):
    """A BUILD opcode that would overwrite a tensor's offset (to read outside its storage) is refused."""
    storage = b"(" + _unicode("storage") + b"ctorch\nFloatStorage\n" + _unicode("0") + _unicode("cpu") + b"K\x18tQ"
    tensor = (b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage + b"K\x00K\x18\x85K\x01\x85\x89"
              b"ccollections\nOrderedDict\n)Rt" + b"R")
    good = b"\x80\x02" + tensor + b"."
    path = tmp_path / "t.pth"
    _zip_checkpoint(path, good)
    np.testing.assert_array_equal(torch_files.read_pth(path), _expected()["module.conv1.weight"].ravel())
    _zip_checkpoint(path, b"\x80\x02" + tensor + b"}" + _unicode("offset") + b"J" + struct.pack("<i", -1000) + b"sb.")
    with pytest.raises(torch_files.UnsafeCheckpointError, match="pickled state for _Tensor"):
        torch_files.read_pth(path)
