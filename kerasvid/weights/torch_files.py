"""PyTorch `.pth` and `.safetensors` files read into numpy, without PyTorch and without running code.

A `.pth` file is a pickle, and unpickling can call any importable function: a crafted file runs code on load. This
reader unpickles with a restricted `pickle.Unpickler` whose `find_class` answers only the names a checkpoint of
tensors needs (`torch._utils._rebuild_tensor_v2` and its siblings, the `torch.<Type>Storage` markers,
`collections.OrderedDict`, `torch.Size`, numpy scalars, `_codecs.encode` for protocol-2 bytes), each mapped to a
function of this module that only builds numpy arrays and containers; any other name raises `UnsafeCheckpointError`
before anything is called.

Formats (PyTorch `torch/serialization.py`, as documented by its `torch.save`):
- zip (PyTorch >= 1.6): `<archive>/data.pkl` (the pickle; tensors refer to storages by a persistent id
  `("storage", <Type>Storage, key, location, numel)`), `<archive>/data/<key>` (each storage's raw bytes),
  `<archive>/byteorder` ("little" or "big"; absent in files before 1.10: little).
- legacy (before 1.6, `_use_new_zipfile_serialization=False`): consecutive pickles: magic number, protocol version
  (1001), system info, the object (persistent ids `("storage", <Type>Storage, key, location, numel, view)`), the list
  of storage keys; then per key an int64 element count and the raw bytes.
A tensor is `_rebuild_tensor_v2(storage, offset, size, stride, ...)`: a strided view of its storage (offsets and
strides in elements), so non-contiguous views and views into a shared storage are read as PyTorch wrote them.

`.safetensors`: an 8-byte little-endian header length N, N bytes of JSON `{name: {"dtype", "shape",
"data_offsets": [begin, end]}, "__metadata__": {...}}`, then the raw little-endian data (offsets relative to it).

Example:
    >>> state = load_state_dict("resnet_rgb.pth.tar")   # {"conv1.weight": array (64, 3, 7, 7), ...}
"""
import collections
import io
import json
import os
import pickle
import struct
import zipfile

import numpy as np


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A `.pth` file refers to something other than tensors, storages and plain containers (it could run code)."""


# torch.<Name>Storage -> numpy dtype ("bfloat16": read as uint16 and widened to float32).
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16, "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_, "ComplexFloatStorage": np.complex64,
    "ComplexDoubleStorage": np.complex128, "UntypedStorage": np.uint8,
}
# torch.<dtype> (the dtype argument of `_rebuild_tensor_v3`).
_TORCH_DTYPES = {
    "float32": np.float32, "float": np.float32, "float64": np.float64, "double": np.float64, "float16": np.float16,
    "half": np.float16, "bfloat16": "bfloat16", "int64": np.int64, "long": np.int64, "int32": np.int32,
    "int": np.int32, "int16": np.int16, "short": np.int16, "int8": np.int8, "uint8": np.uint8, "bool": np.bool_,
    "complex64": np.complex64, "complex128": np.complex128,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class _NoState:
    """The reader's own objects take no pickled state (a BUILD opcode on them is refused)."""

    def __setstate__(self, state):
        raise UnsafeCheckpointError(f"Refusing pickled state for {type(self).__name__}")


class _StorageType(_NoState):
    """The stand-in for a `torch.<Name>Storage` class or a `torch.<dtype>`: only its numpy dtype matters."""

    def __init__(self, name, dtype):
        self.name, self.dtype = name, dtype

    def __repr__(self):
        return f"torch.{self.name}"


class _Storage(_NoState):
    """A storage a tensor views: its numpy dtype and element count; `data` (flat numpy) once its bytes are read."""

    def __init__(self, dtype, numel):
        self.dtype, self.numel, self.data = dtype, int(numel), None

    @property
    def itemsize(self):
        return 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize

    def set_bytes(self, raw, byteorder="little"):
        if len(raw) < self.numel * self.itemsize:
            raise ValueError(f"A storage of {self.numel} elements of {self.dtype} needs {self.numel * self.itemsize} "
                             f"bytes, the file holds {len(raw)}")
        raw = raw[:self.numel * self.itemsize]
        order = "<" if byteorder == "little" else ">"
        if self.dtype == "bfloat16":  # the upper half of a float32
            bits = np.frombuffer(raw, np.dtype(order + "u2")).astype(np.uint32) << 16
            self.data = bits.view(np.float32)
        else:
            dt = np.dtype(self.dtype)
            self.data = np.frombuffer(raw, dt.newbyteorder(order) if dt.itemsize > 1 else dt).astype(dt)


class _StorageView(_NoState):
    """A legacy-format view into a root storage (PyTorch < 0.4 storage views): `offset` and `size` in elements."""

    def __init__(self, root, offset, size):
        self.root, self.offset, self.size = root, int(offset), int(size)


class _Tensor(_NoState):
    """A tensor to materialise once its storage's bytes are read: `(storage, offset, size, stride)` in elements."""

    def __init__(self, storage, offset, size, stride, dtype=None):
        if isinstance(storage, _StorageView):
            offset, storage = offset + storage.offset, storage.root
        if not isinstance(storage, _Storage):
            raise UnsafeCheckpointError(f"A tensor must view a storage, got {type(storage).__name__}")
        self.storage, self.offset = storage, int(offset)
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)
        self.dtype = dtype

    def array(self):
        data = self.storage.data
        if len(self.size) != len(self.stride) or any(s < 0 for s in self.size + self.stride) or self.offset < 0:
            raise ValueError(f"Bad tensor view: size {self.size}, stride {self.stride}, offset {self.offset}")
        # The last element a view reads must lie inside its storage (a crafted file must not read past it).
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) if all(self.size) else -1
        if last >= data.size:
            raise ValueError(f"A tensor of size {self.size}, stride {self.stride} at offset {self.offset} reads past "
                             f"its storage of {data.size} elements")
        if not all(self.size):
            return np.zeros(self.size, data.dtype)
        view = np.lib.stride_tricks.as_strided(data[self.offset:], self.size,
                                               tuple(s * data.itemsize for s in self.stride), writeable=False)
        return np.array(view)  # a contiguous copy that owns its memory


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, *unused):
    return _Tensor(storage, storage_offset, size, stride, dtype)


def _rebuild_parameter(data, *unused):
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    if func not in (_rebuild_tensor, _rebuild_tensor_v3):
        raise UnsafeCheckpointError(f"_rebuild_from_type_v2 of {func!r}")
    return func(*args)


def _codecs_encode(text, encoding="utf-8"):
    # Protocol-2 pickles store bytes as _codecs.encode(str, "latin1").
    if str(encoding).lower().replace("-", "") not in ("latin1", "utf8"):
        raise UnsafeCheckpointError(f"_codecs.encode with encoding {encoding!r}")
    return str(text).encode(encoding)


def _numpy_scalar(dtype, raw=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafeCheckpointError(f"numpy scalar of dtype {dtype!r}")
    return np.frombuffer(raw, dtype)[0]


def _numpy_dtype(name, align=False, copy=False):
    dtype = np.dtype(name)
    if dtype.hasobject:
        raise UnsafeCheckpointError(f"numpy dtype {name!r} holds Python objects")
    return dtype


class _Constructed(_NoState):
    """`cls()` for the allowed classes that pickle rebuilds by REDUCE/NEWOBJ (OrderedDict, torch.Size, ...)."""


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Tensor"): _Constructed,
    ("torch.nn.parameter", "Parameter"): _Constructed,
    ("torch", "Size"): tuple,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set, ("builtins", "frozenset"): frozenset, ("builtins", "complex"): complex,
    ("builtins", "slice"): slice, ("builtins", "bytearray"): bytearray,
    ("__builtin__", "set"): set, ("__builtin__", "frozenset"): frozenset,
    ("_codecs", "encode"): _codecs_encode,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar, ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _numpy_dtype,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles tensors, storages and plain containers; refuses every other global (no code runs)."""

    def __init__(self, file, storage_for):
        super().__init__(file, encoding="latin1")
        self._storage_for = storage_for

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        if module == "torch.storage" and name in ("UntypedStorage", "_LegacyStorage", "TypedStorage"):
            return _StorageType(name, np.uint8)
        if module == "torch" and name in _TORCH_DTYPES:
            return _StorageType(name, _TORCH_DTYPES[name])
        raise UnsafeCheckpointError(
            f"Refusing to load {module}.{name}: a checkpoint may only hold tensors, storages and plain containers "
            f"(a pickle that names other objects can run code). Re-save its state_dict with torch.save, or convert "
            f"it to .safetensors.")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise UnsafeCheckpointError(f"Unsupported persistent id {pid!r:.80} (only tensor storages are read)")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise UnsafeCheckpointError(f"Unsupported storage type {storage_type!r:.80}")
        storage = self._storage_for(key, storage_type.dtype, pid[4])
        view = pid[5] if len(pid) > 5 else None
        if view is not None:  # legacy storage view: (view_key, offset, size)
            return _StorageView(storage, view[1], view[2])
        return storage


def _materialise(obj):
    """Replaces every `_Tensor` of a loaded structure by its numpy array (containers keep their type)."""
    if isinstance(obj, _Tensor):
        array = obj.array()
        if obj.dtype is not None and obj.dtype.dtype != obj.storage.dtype:  # v3: a dtype other than its storage's
            array = array.view("uint16" if obj.dtype.dtype == "bfloat16" else obj.dtype.dtype)
        return array
    if isinstance(obj, dict):
        return type(obj)((k, _materialise(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v) for v in obj)
    if isinstance(obj, (_Storage, _StorageView, _StorageType)) or obj is _Constructed:
        raise UnsafeCheckpointError(f"A bare {type(obj).__name__} outside a tensor is not supported")
    return obj


def _read_zip(path):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise ValueError(f"{path!r} is a zip file but not a PyTorch checkpoint (no single <archive>/data.pkl)")
        root = pickles[0][:-len("data.pkl")]
        byteorder = "little"
        if root + "byteorder" in names:
            byteorder = archive.read(root + "byteorder").decode().strip()
            if byteorder not in ("little", "big"):
                raise ValueError(f"{path!r}: unknown byteorder {byteorder!r}")
        storages = {}

        def storage_for(key, dtype, numel):
            if key not in storages:
                entry = f"{root}data/{key}"
                if entry not in names:
                    raise ValueError(f"{path!r}: the storage {entry!r} is missing")
                storage = _Storage(dtype, numel)
                storage.set_bytes(archive.read(entry), byteorder)
                storages[key] = storage
            return storages[key]

        obj = _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), storage_for).load()
    return _materialise(obj)


def _read_legacy(path):
    with open(path, "rb") as f:
        def plain():
            return _RestrictedUnpickler(f, _no_storage).load()

        magic = plain()
        if magic != _LEGACY_MAGIC:
            raise ValueError(f"{path!r} is neither a zip nor a legacy PyTorch file (magic number {magic!r:.40}); "
                             f"tar checkpoints of PyTorch < 0.4 are not supported")
        protocol = plain()
        if protocol != _LEGACY_PROTOCOL:
            raise ValueError(f"{path!r}: unsupported legacy protocol version {protocol!r}")
        plain()  # system info: byte order, type sizes
        storages = {}

        def storage_for(key, dtype, numel):
            return storages.setdefault(key, _Storage(dtype, numel))

        obj = _RestrictedUnpickler(f, storage_for).load()
        keys = plain()
        for key in keys:
            storage = storages.get(str(key))
            if storage is None:
                raise ValueError(f"{path!r}: the storage list names {key!r}, which no tensor uses")
            (count,) = struct.unpack("<q", f.read(8))
            storage.numel = count
            storage.set_bytes(f.read(count * storage.itemsize))
    return _materialise(obj)


def _no_storage(key, dtype, numel):
    raise UnsafeCheckpointError("A storage outside the checkpoint's object pickle")


def read_pth(path):
    """Reads a PyTorch `.pth` / `.pt` / `.pth.tar` file (zip or legacy format) without PyTorch.

    Args:
        path: the file.

    Returns:
        The saved object with every tensor as a numpy array (bfloat16 as float32) and containers as saved
        (dict, OrderedDict, list, tuple), e.g. `{"epoch": 7, "state_dict": OrderedDict(name -> array)}`.

    Raises:
        UnsafeCheckpointError: the pickle names anything but tensors, storages and plain containers (nothing of it
            runs: it is refused when the name is read).
        ValueError: a file in neither format, or inconsistent storages.
    """
    path = os.fspath(path)
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    return _read_legacy(path)


_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": "bfloat16", "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U8": np.uint8, "U16": np.uint16, "U32": np.uint32, "U64": np.uint64,
    "BOOL": np.bool_,
}


def read_safetensors(path):
    """Reads a `.safetensors` file: `(arrays, metadata)`, arrays a dict name -> numpy (BF16 as float32).

    Raises:
        ValueError: a header that does not parse, an unknown dtype, or offsets outside the data or not matching
            the shape.
    """
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path!r} is not a .safetensors file (shorter than its 8-byte header length)")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8:
        raise ValueError(f"{path!r}: header length {n} exceeds the file size {len(raw)}")
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path!r}: the .safetensors header is not JSON ({err})") from err
    data = raw[8 + n:]
    metadata = header.pop("__metadata__", {}) or {}
    arrays = {}
    for name, spec in header.items():
        kind = spec.get("dtype")
        if kind not in _SAFETENSORS_DTYPES:
            raise ValueError(f"{path!r}: tensor {name!r} has dtype {kind!r}; known: {sorted(_SAFETENSORS_DTYPES)}")
        shape = tuple(int(s) for s in spec["shape"])
        begin, end = (int(v) for v in spec["data_offsets"])
        storage = _Storage(_SAFETENSORS_DTYPES[kind], int(np.prod(shape, dtype=np.int64)))
        if not 0 <= begin <= end <= len(data) or end - begin != storage.numel * storage.itemsize:
            raise ValueError(f"{path!r}: tensor {name!r} of shape {shape} and dtype {kind} has data offsets "
                             f"[{begin}, {end}) in a data block of {len(data)} bytes")
        storage.set_bytes(data[begin:end])
        arrays[name] = storage.data.reshape(shape)
    return arrays, metadata


def _is_safetensors(path):
    """Whether the file starts as a `.safetensors` file does (a length, then a JSON object), whatever its name."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and not zipfile.is_zipfile(path)


def write_safetensors(path, arrays, metadata=None):
    """Writes a dict name -> numpy array as `.safetensors` (little-endian, contiguous, in name order).

    Args:
        path: the file to write.
        arrays: name -> numpy array of a dtype `.safetensors` knows (float16/32/64, int8-64, uint8-64, bool).
        metadata: optional dict str -> str (the header's `__metadata__`).
    """
    codes = {np.dtype(v): k for k, v in _SAFETENSORS_DTYPES.items() if v != "bfloat16"}
    header, blobs, offset = {}, [], 0
    for name in sorted(arrays):
        a = np.asarray(arrays[name])
        if a.dtype not in codes:
            raise ValueError(f"write_safetensors: {name!r} has dtype {a.dtype}, which .safetensors does not store")
        blob = np.ascontiguousarray(a, a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": codes[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def load_state_dict(path, strip_prefixes=("module.",)):
    """A checkpoint's weights: dict name -> numpy array, from `.pth` (any format) or `.safetensors` (by name or by
    content).

    A training checkpoint that holds its weights under "state_dict" (e.g. `{"epoch", "arch", "state_dict"}`) gives
    that dict; `module.` prefixes (`torch.nn.DataParallel`) are stripped; entries that are not tensors are refused.

    Args:
        path: `.pth`, `.pt`, `.pth.tar` or `.safetensors` file.
        strip_prefixes: key prefixes to remove.

    Returns:
        dict name -> numpy array, in the file's order.

    Raises:
        UnsafeCheckpointError: see `read_pth`.
        ValueError: the file holds no dict of tensors.
    """
    path = os.fspath(path)
    if path.endswith(".safetensors") or _is_safetensors(path):
        state = read_safetensors(path)[0]
    else:
        state = read_pth(path)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path!r} holds a {type(state).__name__}, not a dict of tensors (a state_dict)")
    out = {}
    for key, value in state.items():
        if not isinstance(value, np.ndarray):
            raise ValueError(f"{path!r}: the entry {key!r} is a {type(value).__name__}, not a tensor")
        for prefix in strip_prefixes:
            if key.startswith(prefix):
                key = key[len(prefix):]
        if key in out:
            raise ValueError(f"{path!r}: two entries are named {key!r} once {strip_prefixes} are stripped")
        out[key] = value
    return out
