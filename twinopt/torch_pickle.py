"""Read a checkpoint written by ``torch.save`` into NumPy arrays, without PyTorch.

``load(path_or_file)`` returns the saved object with every tensor as a NumPy array (its own
C-contiguous memory, torch's dtype and shape, 0-d for a scalar), every dict and OrderedDict as a
plain ``dict`` in its order, and lists, tuples, numbers, strings, bools and None as they are. A JAX
user can so continue a run that ``train_torch.py`` saved with no torch installed: this module imports
only the standard library and NumPy (``twinopt`` never imports torch or jax).

It is as safe as ``torch.load(weights_only=True)``: a pickle can call any importable function, so
the unpickler resolves only an allow-list of globals (``_ALLOWED``), each mapped to inert stand-ins
defined here, and raises :class:`UnsafeCheckpoint` naming any other global (``os system``,
``__builtin__ eval``, ``torch.nn.modules.linear Linear``...); nothing in the file is ever run. A prescan
of the opcodes (``_OPCODES``) keeps bogus lengths and memo indices from allocating gigabytes. A file
that is not a readable checkpoint raises :class:`NotATorchCheckpoint` with the path and the reason;
a checkpoint that is well formed but holds what NumPy cannot represent here (bfloat16, complex,
quantized tensors, ...) raises :class:`UnsupportedCheckpoint` naming the dtype.

Format facts relied on (torch >= 1.6 "zip" serialization, torch/serialization.py ``_save``):

* The file is a zip archive; every record lies in one folder, the *prefix* (the file's stem, or
  ``archive`` when saved to a file object). ``<prefix>/data.pkl`` is the pickled object, protocol 2
  unless the caller chose another.
* Each storage (the flat memory under one or more tensors) is the raw bytes of the record
  ``<prefix>/data/<key>``. ``<prefix>/byteorder`` says "little" or "big";
  files without it were written little-endian (torch's default when loading them too).
* In data.pkl a storage is a persistent id ``('storage', <GLOBAL torch FloatStorage ...>, key,
  location, numel)``: the class names the dtype, numel counts elements; location ("cpu", "cuda:0")
  does not matter here. Tensors viewing one storage share the key (torch.save refuses to write one
  storage under two dtypes).
* A tensor is ``torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride,
  requires_grad, backward_hooks[, metadata])``: offset and strides count elements, hooks are always
  an empty OrderedDict, metadata (present only when not empty) holds the ``neg``/``conj`` view bits.
* A module's ``state_dict()`` is an OrderedDict whose ``_metadata`` attribute (module versions)
  comes as pickle BUILD state; it is dropped, as the result holds plain dicts.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import pickletools
import zipfile

import numpy as np

__all__ = ["load", "UnsafeCheckpoint", "NotATorchCheckpoint", "UnsupportedCheckpoint"]


class UnsafeCheckpoint(ValueError):
    """The pickle refers to a global outside the allow-list (it would run code on load)."""


class NotATorchCheckpoint(ValueError):
    """Not a zip-format torch.save file, or a damaged one (truncated, malformed pickle, missing data)."""


class UnsupportedCheckpoint(ValueError):
    """A well-formed checkpoint holding something NumPy cannot represent here (e.g. bfloat16)."""


# torch's legacy (pre-1.6, or _use_new_zipfile_serialization=False) files start with this pickled
# magic number; recognised only to say why they are refused.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"

# The typed-storage classes torch pickles for each dtype, as little-endian NumPy dtypes.
_STORAGE_DTYPES = {
    "DoubleStorage": "<f8", "FloatStorage": "<f4", "HalfStorage": "<f2", "LongStorage": "<i8",
    "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "u1",
}
# Other torch storage classes are pure data too, but refused (UnsupportedCheckpoint, not Unsafe):
# NumPy has no bfloat16 or quantized dtypes, and nothing here needs complex ones. Named for the error.
_UNSUPPORTED_STORAGES = {
    "BFloat16Storage": "bfloat16 (NumPy has no bfloat16)", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "QInt8Storage": "qint8", "QUInt8Storage": "quint8",
    "QInt32Storage": "qint32", "QUInt4x2Storage": "quint4x2", "QUInt2x4Storage": "quint2x4",
    "UntypedStorage": "untyped (a dtype newer than the typed storage classes)",
}


class _Inert:
    """Base of the stand-ins the unpickler hands out: no pickle BUILD may write into them."""

    __slots__ = ()

    def __setstate__(self, state):
        raise NotATorchCheckpoint(f"pickle BUILD on a {type(self).__name__[1:]}, which torch never writes")


class _StorageType(_Inert):
    __slots__ = ("name", "dtype")

    def __init__(self, name, dtype):
        self.name, self.dtype = name, np.dtype(dtype)


class _Storage(_Inert):
    __slots__ = ("key", "type", "array")  # array: the whole storage, 1-D, native byte order

    def __init__(self, key, storage_type, array):
        self.key, self.type, self.array = key, storage_type, array


class _Tensor(_Inert):
    __slots__ = ("array",)

    def __init__(self, array):
        self.array = array


class _OrderedDict(collections.OrderedDict):
    def __setstate__(self, state):
        pass  # state_dict()'s _metadata (module versions): nowhere to keep it in a plain dict


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    """Copy the strided view of a storage that torch's function of this name would build."""
    def ints(value):
        return isinstance(value, tuple) and all(type(v) is int and v >= 0 for v in value)

    if not (isinstance(storage, _Storage) and type(storage_offset) is int and storage_offset >= 0
            and ints(size) and ints(stride) and len(size) == len(stride) and isinstance(requires_grad, bool)):
        raise NotATorchCheckpoint(f"a malformed tensor record (offset {storage_offset!r}, size {size!r}, "
                                  f"stride {stride!r}, requires_grad {requires_grad!r})")
    if not (isinstance(backward_hooks, collections.OrderedDict) and not backward_hooks):
        raise NotATorchCheckpoint("a tensor record with backward hooks (torch never saves hooks)")
    if metadata is not None and not isinstance(metadata, dict):
        raise NotATorchCheckpoint(f"malformed tensor metadata {metadata!r}")
    flags = {key for key, value in (metadata or {}).items() if value}
    if flags - {"neg"}:
        raise UnsupportedCheckpoint(f"it holds a tensor with view flags {sorted(flags)}, which are not applied here")
    flat = storage.array
    if 0 in size:
        array = np.empty(size, flat.dtype)
    else:
        # Bounds check before as_strided, which would read any memory it is pointed at.
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= flat.size:
            raise NotATorchCheckpoint(f"a tensor of size {size}, stride {stride}, offset {storage_offset} reads past "
                                      f"the end of storage data/{storage.key} ({flat.size} elements)")
        strides = tuple(s * flat.itemsize if n > 1 else 0 for n, s in zip(size, stride))
        view = np.lib.stride_tricks.as_strided(flat[storage_offset:], size, strides, writeable=False)
        array = np.array(view, order="C", copy=True)
    if "neg" in flags:  # a lazily negated view (torch._neg_view): the storage holds the values unnegated
        array = np.negative(array)
    return _Tensor(array)


# The opcodes of pickled data (protocols 0-4). A prescan refuses the rest (extension codes, protocol-5
# out-of-band buffers, text persistent ids) before the C unpickler runs, and with them lengths past the
# end and memo indices no pickler writes, which would make it allocate gigabytes. The opcodes that call
# (REDUCE, NEWOBJ, INST, OBJ...) stay: what they call comes from find_class, so a file pickling an object
# is refused there, as UnsafeCheckpoint naming its class.
_OPCODES = set("""PROTO FRAME STOP MARK POP POP_MARK DUP PUT BINPUT LONG_BINPUT MEMOIZE GET BINGET LONG_BINGET
    NONE NEWTRUE NEWFALSE INT BININT BININT1 BININT2 LONG LONG1 LONG4 FLOAT BINFLOAT STRING BINSTRING
    SHORT_BINSTRING UNICODE BINUNICODE SHORT_BINUNICODE BINUNICODE8 BINBYTES SHORT_BINBYTES BINBYTES8 EMPTY_LIST
    APPEND APPENDS LIST EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_DICT DICT SETITEM SETITEMS EMPTY_SET ADDITEMS
    FROZENSET GLOBAL STACK_GLOBAL REDUCE BUILD NEWOBJ NEWOBJ_EX INST OBJ BINPERSID""".split())


def _check_opcodes(data):
    for op, arg, pos in pickletools.genops(data):
        if op.name not in _OPCODES:
            raise NotATorchCheckpoint(f"data.pkl has opcode {op.name} at byte {pos}, which torch.save never writes")
        if op.name.endswith("PUT") and arg > pos:  # a pickler numbers memo entries 0, 1, 2... as it writes
            raise NotATorchCheckpoint(f"data.pkl has memo index {arg} at byte {pos}")


# (module, name) -> what the unpickler gets for it. Everything else is refused.
_ALLOWED = {
    ("collections", "OrderedDict"): _OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    **{("torch", name): _StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive, prefix, byteorder, where):
        super().__init__(file)
        self.archive, self.prefix, self.byteorder, self.where = archive, prefix, byteorder, where
        self.storages = {}  # key -> _Storage, so views of one storage share it

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[module, name]
        if module == "torch" and name in _UNSUPPORTED_STORAGES:
            raise UnsupportedCheckpoint(f"it holds a tensor of dtype {_UNSUPPORTED_STORAGES[name]} (torch.{name}), "
                                        "which this reader does not support")
        raise UnsafeCheckpoint(f"{self.where} holds pickled code (GLOBAL '{module} {name}'), which is never run: "
                               "only tensors, dicts, lists, tuples, numbers, strings, bools and None are read")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)
                and isinstance(pid[2], str) and type(pid[4]) is int and pid[4] >= 0):
            raise NotATorchCheckpoint(f"unknown persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if key in self.storages:
            storage = self.storages[key]
            if storage.type is not storage_type:
                raise UnsupportedCheckpoint(f"its storage data/{key} is used as both {storage.type.name} and "
                                            f"{storage_type.name}")
            return storage
        name = f"{self.prefix}/data/{key}"
        try:
            raw = self.archive.read(name)
        except KeyError:
            raise NotATorchCheckpoint(f"the record {name} is missing") from None
        dtype = storage_type.dtype.newbyteorder("<" if self.byteorder == "little" else ">")
        if len(raw) != numel * dtype.itemsize:
            raise NotATorchCheckpoint(f"the record {name} holds {len(raw)} bytes, not {numel} x {dtype.itemsize}")
        array = np.frombuffer(raw, dtype)  # read-only; each tensor copies its part out of it
        if not dtype.isnative:
            array = array.astype(dtype.newbyteorder("="))
        if storage_type.name == "BoolStorage":
            array = array != 0  # any nonzero byte is True, as in torch
        storage = self.storages[key] = _Storage(key, storage_type, array)
        return storage


def _plain(obj, memo):
    """The unpickled tree with stand-ins replaced: tensors by arrays, OrderedDicts by dicts.
    memo (by id) keeps shared objects shared and lets cycles through lists and dicts end."""
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, _Tensor):
        result = obj.array
    elif isinstance(obj, _Storage):  # a storage saved on its own: its elements, 1-D
        result = obj.array.copy()
    elif isinstance(obj, _Inert):
        raise NotATorchCheckpoint(f"a bare torch.{obj.name} class outside a storage record")
    elif isinstance(obj, dict):
        result = memo[id(obj)] = {}
        for key, value in obj.items():
            result[_plain(key, memo)] = _plain(value, memo)
    elif isinstance(obj, list):
        result = memo[id(obj)] = []
        result.extend(_plain(value, memo) for value in obj)
    elif isinstance(obj, (tuple, set, frozenset)):  # sets: pickle protocol >= 4 has opcodes for them
        result = type(obj)(_plain(value, memo) for value in obj)
    else:
        return obj  # int, float, str, bool, None, bytes: immutable and already plain
    memo[id(obj)] = result
    return result


def load(path_or_file):
    """Read a torch.save checkpoint (a path or a binary file object) without torch; see the module doc.

    Raises UnsafeCheckpoint (pickled code), NotATorchCheckpoint (not a readable zip-format torch file),
    UnsupportedCheckpoint (a dtype NumPy lacks), all ValueErrors; OSError if the path cannot be opened.
    """
    if isinstance(path_or_file, (str, bytes, os.PathLike)):
        where = os.fsdecode(path_or_file)
        with open(path_or_file, "rb") as file:
            return _load(file, where)
    return _load(path_or_file, str(getattr(path_or_file, "name", "<file object>")))


def _load(file, where):
    try:
        return _read(file, where)
    except UnsafeCheckpoint:
        raise  # its message names the file already
    except UnsupportedCheckpoint as err:
        raise UnsupportedCheckpoint(f"{where} cannot be read without torch: {err}") from None
    except NotATorchCheckpoint as err:
        raise NotATorchCheckpoint(f"{where} is not a readable torch checkpoint ({err})") from None
    except MemoryError:
        raise
    except Exception as err:  # zipfile, zlib and pickle raise many types on damaged input
        raise NotATorchCheckpoint(f"{where} is not a readable torch checkpoint "
                                  f"(truncated or damaged: {type(err).__name__}: {err})") from None


def _read(file, where):
    start = file.tell()
    head = file.read(len(_LEGACY_MAGIC))
    file.seek(start)
    try:
        archive = zipfile.ZipFile(file)
    except zipfile.BadZipFile as err:
        raise NotATorchCheckpoint(
            "written in torch.save's legacy format (torch < 1.6 or _use_new_zipfile_serialization=False), "
            "which this reader does not read" if head == _LEGACY_MAGIC else f"not a zip archive: {err}") from None
    with archive:
        names = archive.namelist()
        pickles = [name for name in names if name.count("/") == 1 and name.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise NotATorchCheckpoint(f"the zip archive holds {len(pickles) or 'no'} <folder>/data.pkl"
                                      + (f" ({', '.join(pickles)})" if pickles else ""))
        prefix = pickles[0].split("/")[0]
        byteorder = "little"
        if f"{prefix}/byteorder" in names:
            byteorder = archive.read(f"{prefix}/byteorder").decode("ascii", "replace")
            if byteorder not in ("little", "big"):
                raise NotATorchCheckpoint(f"{prefix}/byteorder says {byteorder!r}, not 'little' or 'big'")
        # read() checks the CRC of the whole record; the unpickler may stop before a damaged tail.
        data = archive.read(pickles[0])
        _check_opcodes(data)
        return _plain(_Unpickler(io.BytesIO(data), archive, prefix, byteorder, where).load(), {})
