"""twinopt.torch_pickle reads torch.save files without torch, exactly as torch.load(weights_only=True)
does, and refuses what it must: pickled code, damaged files, dtypes NumPy lacks."""

import collections
import io
import os
import pickle
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from twinopt import training
from twinopt.torch_pickle import NotATorchCheckpoint, UnsafeCheckpoint, UnsupportedCheckpoint, load

torch = pytest.importorskip("torch")
import torch_opt  # noqa: E402  (after the skip: torch_opt needs torch)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def save(obj, path, **kwargs):
    torch.save(obj, path, **kwargs)
    return path


def as_numpy(tree):
    """What load() should return: torch.load's tree with tensors as arrays and plain dicts."""
    if isinstance(tree, torch.Tensor):
        return tree.resolve_neg().numpy().copy()
    if isinstance(tree, dict):
        return {key: as_numpy(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(as_numpy(item) for item in tree)
    return tree


def assert_same(got, want, where="obj"):
    """Exact equality of structure (types, key order), values (bitwise), dtypes and shapes."""
    assert type(got) is type(want), f"{where}: {type(got)} is not {type(want)}"
    if isinstance(want, np.ndarray):
        assert (got.dtype, got.shape) == (want.dtype, want.shape), where
        assert got.flags.c_contiguous and got.flags.owndata and got.flags.writeable, where
        assert got.tobytes() == want.tobytes(), where
    elif isinstance(want, dict):
        assert list(got) == list(want), where
        for key in want:
            assert_same(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}[{i}]")
    else:
        assert got == want, where


def assert_loads_like_torch(path):
    got = load(path)
    assert_same(got, as_numpy(torch.load(path, weights_only=True)))
    return got


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 3)
        self.norm = torch.nn.BatchNorm2d(3)  # buffers, and an int64 0-d num_batches_tracked
        self.fc = torch.nn.Linear(12, 5)

    def forward(self, x):
        return self.fc(self.norm(self.conv(x)).flatten(1))


def trained(make_opt, dtype=torch.float32, steps=3):
    torch.manual_seed(0)
    net = Net().to(dtype)
    opt = make_opt(net.parameters())
    for _ in range(steps):
        opt.zero_grad()
        net(torch.randn(4, 2, 4, 4, dtype=dtype)).square().mean().backward()
        opt.step()
    return net, opt


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_model_state_dict(dtype, tmp_path):
    net, _ = trained(lambda params: torch.optim.SGD(params, lr=0.1), dtype)
    got = assert_loads_like_torch(save(net.state_dict(), tmp_path / "model.pt"))
    assert got["fc.weight"].dtype == np.dtype(str(dtype).removeprefix("torch."))
    assert got["norm.num_batches_tracked"].shape == () and got["norm.num_batches_tracked"].dtype == np.int64


OPTIMIZERS = {
    "torch.optim.Adam": lambda p: torch.optim.Adam(p, lr=1e-3, betas=(0.8, 0.99)),
    "torch.optim.SGD-momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    "torch_opt.NAdam": lambda p: torch_opt.OPTIMIZERS["nadam"](p),
    "torch_opt.AggMo": lambda p: torch_opt.OPTIMIZERS["aggmo"](p),
    "torch_opt.Lookahead(Adam)": lambda p: torch_opt.Lookahead(torch_opt.OPTIMIZERS["adam"](p), k=2, alpha=0.5),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_state_dict(name, tmp_path):
    """Scalar step tensors, nested dicts with int keys, lists, tuples (betas), None, bools, floats."""
    _, opt = trained(OPTIMIZERS[name])
    assert_loads_like_torch(save(opt.state_dict(), tmp_path / "opt.pt"))


def test_views_share_one_storage(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    views = {"base": base, "t": base.t(), "slice": base[1:3, ::2], "row": base[2], "element": base[1, 4],
             "expanded": base[1:2].expand(3, 6), "empty": base[:, 6:], "neg": torch._neg_view(base[3])}
    path = save(views, tmp_path / "views.pt")
    assert [n for n in zipfile.ZipFile(path).namelist() if "/data/" in n] == ["views/data/0"]
    got = assert_loads_like_torch(path)
    assert got["t"].strides == (16, 4) and got["element"] == 10 and got["neg"][0] == -18
    assert not np.shares_memory(got["base"], got["row"])


def test_integer_bool_and_half_tensors(tmp_path):
    obj = [torch.arange(-3, 3, dtype=dtype) for dtype in (torch.int64, torch.int32, torch.int16, torch.int8)]
    obj += [torch.arange(250, 256, dtype=torch.uint8), torch.tensor([True, False, True]),
            torch.tensor(False), torch.tensor(7), torch.linspace(-1, 1, 5, dtype=torch.float16), torch.zeros(0, 3)]
    assert_loads_like_torch(save((obj, tuple(obj[:2])), tmp_path / "ints.pt"))


def checkpoint_like_train_torch(dtype):
    """The dict train_torch.py saves, mid-epoch (epoch_state set), built here without a run."""
    net, opt = trained(lambda p: torch_opt.Lookahead(torch_opt.OPTIMIZERS["adam"](p), k=5, alpha=0.5), dtype, 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
    for _ in range(2):
        opt.zero_grad()
        net(torch.randn(4, 2, 4, 4, dtype=dtype)).square().mean().backward()
        opt.step()
        scheduler.step()
    state = training.new_epoch_state()
    state.update(losses=[2.5, 2.25], correct=3, seen=8, time_s=0.5)
    config = {"dataset": "mnist", "mlp_hidden": [8], "lookahead": True, "optimizer_kwargs": {}, "seed": 0}
    return {"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": 1, "step": 2,
            "scheduler": scheduler.state_dict(), "epoch_state": state, "config": config}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_checkpoint_dict_like_train_torch(dtype, tmp_path):
    got = assert_loads_like_torch(save(checkpoint_like_train_torch(dtype), tmp_path / "step_00000002.pt"))
    assert got["optimizer"]["inner_state"][0]["step"].shape == () and got["scheduler"]["lr_lambdas"] == [None]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_checkpoint_written_by_train_torch(dtype, data_dir, tmp_path, monkeypatch):
    """A real run stopped mid-epoch (so epoch_state is saved too)."""
    from torch_train import train as train_torch
    from script_helpers import argv

    monkeypatch.setenv("TWINOPT_FAULT", "sigint@2")
    default_dtype = torch.get_default_dtype()
    try:
        with pytest.raises(SystemExit):
            train_torch.main(argv(data_dir, tmp_path, "-num_epochs", "1", "-optimizer", "adam", "-lookahead",
                                  "-schedule", "cosine", "-dtype", dtype))
    finally:
        torch.set_default_dtype(default_dtype)  # train_torch sets it for the process
    got = assert_loads_like_torch(tmp_path / "checkpoints" / "step_00000002.pt")
    assert got["step"] == 2 and len(got["epoch_state"]["losses"]) == 2
    assert got["model"]["fc1.weight"].dtype == np.dtype(dtype)


def test_byteorder_record_is_honoured(tmp_path):
    """A big-endian file (byteorder "big", every storage byte-swapped) reads the same; a file with no
    byteorder record is little-endian."""
    obj = {"f": torch.linspace(0, 1, 7, dtype=torch.float64), "i": torch.arange(5, dtype=torch.int32),
           "h": torch.ones(3, dtype=torch.float16), "b": torch.tensor([True, False])}
    itemsizes = {f"ckpt/data/{i}": tensor.element_size() for i, tensor in enumerate(obj.values())}
    written = save(obj, tmp_path / "ckpt.pt")
    for order in ("none", "big"):
        with zipfile.ZipFile(written) as src, zipfile.ZipFile(tmp_path / f"{order}.pt", "w") as dst:
            assert src.read("ckpt/byteorder") == b"little"
            for name in src.namelist():
                data = src.read(name)
                if name in itemsizes and order == "big":
                    data = np.frombuffer(data, f"u{itemsizes[name]}").byteswap().tobytes()
                if name != "ckpt/byteorder":
                    dst.writestr(name, data)
            if order == "big":
                dst.writestr("ckpt/byteorder", "big")
        got = load(tmp_path / f"{order}.pt")
        assert_same(got, as_numpy(obj))
        assert got["f"].dtype.isnative


def test_file_objects_paths_and_pickle_protocol_4(tmp_path):
    shared = [1, torch.ones(2)]
    obj = {"x": torch.arange(6.0).reshape(2, 3)[:, 1], "s": {1, 2}, "t": (None, True, 1.5, "a", b"b"),
           "shared": [shared, shared]}
    path = save(obj, tmp_path / "p4.pt", pickle_protocol=4)
    got = load(str(path))
    assert_same(got, as_numpy(obj))
    assert got["shared"][0] is got["shared"][1]  # shared in the pickle, shared in the result
    assert_same(load(io.BytesIO(path.read_bytes())), as_numpy(obj))


def test_works_without_torch_importable(tmp_path):
    """The module imports neither torch nor jax and needs neither."""
    path = save(checkpoint_like_train_torch(torch.float32), tmp_path / "ckpt.pt")
    code = ("import sys; sys.modules.update(torch=None, jax=None); from twinopt.torch_pickle import load; "
            f"c = load({str(path)!r}); print(c['model']['fc.weight'].shape, c['step'])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["(5,", "12)", "2"]


class Exploit:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4")
@pytest.mark.parametrize("protocol", [2, 4])  # GLOBAL, then STACK_GLOBAL
def test_pickled_code_is_never_run(protocol, tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    monkeypatch.chdir(tmp_path)
    path = save({"w": torch.ones(2), "x": Exploit(os.system, f"touch {marker}")}, tmp_path / "evil.pt",
                pickle_protocol=protocol)
    with pytest.raises(UnsafeCheckpoint, match=r"evil\.pt holds pickled code \(GLOBAL '(posix|os) system'\), "
                                               "which is never run"):
        load(path)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):  # torch refuses it too
        torch.load(path, weights_only=True)
    assert not marker.exists()


@pytest.mark.parametrize("obj, name", [
    (Exploit(eval, "1 + 1"), "__builtin__ eval"),  # protocol 2 names builtins as Python 2 did
    (torch.nn.Linear(2, 2), "torch.nn.modules.linear Linear"),
    (Exploit(collections.Counter, "abc"), "collections Counter"),
    (Exploit(torch._utils._rebuild_tensor_v2, Exploit(os.getcwd), 0, (1,), (1,), False, {}), "posix getcwd"),
])
def test_any_other_global_is_refused(obj, name, tmp_path):
    with pytest.raises(UnsafeCheckpoint, match=f"GLOBAL '{name}'"):
        load(save(obj, tmp_path / "x.pt"))


def test_bfloat16_and_complex_are_refused_by_dtype(tmp_path):
    with pytest.raises(UnsupportedCheckpoint, match="dtype bfloat16"):
        load(save(torch.ones(2, dtype=torch.bfloat16), tmp_path / "bf16.pt"))
    with pytest.raises(UnsupportedCheckpoint, match="dtype complex64"):
        load(save(torch.ones(2, dtype=torch.complex64), tmp_path / "c64.pt"))


# Records of a good file replaced (None: left out) to damage it: record suffix -> content.
DAMAGED = {
    "no-data-pkl": {"data.pkl": None},
    "short-storage": {"data/0": np.arange(3, dtype="<f4").tobytes()},
    "byteorder": {"byteorder": b"middle"},
    "pickle-cut": {"data.pkl": b"\x80\x02}q\x00(X\x01\x00\x00\x00w"},
    "memo-index": {"data.pkl": b"\x80\x02]r\xff\xff\xff\x7f."},  # would make pickle allocate 16 GiB
    "bytearray": {"data.pkl": pickle.dumps(bytearray(b"x"), protocol=5)},
}


@pytest.mark.parametrize("content, reason", [
    (b"", "not a zip archive"),
    (b"step,loss\n1,2.5\n", "not a zip archive"),
    ("truncated", "not a zip archive"),
    ("legacy", "legacy format"),
    ("crc", "Bad CRC-32"),
    ("no-data-pkl", "holds no <folder>/data.pkl"),
    ("short-storage", "holds 12 bytes, not 4 x 4"),
    ("byteorder", "byteorder says 'middle'"),
    ("pickle-cut", "pickle exhausted before seeing STOP"),
    ("memo-index", "memo index 2147483647"),
    ("bytearray", "opcode BYTEARRAY8"),
    ("past-end", "reads past the end of storage"),
    ("hooks", "backward hooks"),
])
def test_not_a_checkpoint(content, reason, tmp_path):
    path = tmp_path / "bad.pt"
    good = save({"w": torch.arange(4, dtype=torch.float32)}, tmp_path / "good.pt").read_bytes()
    if content == "truncated":
        content = good[: len(good) // 2]
    elif content == "legacy":
        content = save(torch.ones(2), tmp_path / "old.pt", _use_new_zipfile_serialization=False).read_bytes()
    elif content == "crc":  # flip one byte of the stored storage record, leaving its CRC
        content = bytearray(good)
        content[content.index(np.arange(4, dtype="<f4")[1:].tobytes())] ^= 1
    elif content in ("past-end", "hooks"):  # tensor records torch.save would not write
        storage = torch.arange(4, dtype=torch.float32).untyped_storage()
        typed = torch.storage.TypedStorage(wrap_storage=storage, dtype=torch.float32, _internal=True)
        hooks = collections.OrderedDict(a=1) if content == "hooks" else collections.OrderedDict()
        rebuild = Exploit(torch._utils._rebuild_tensor_v2, typed, 2, (3,) if content == "past-end" else (1,),
                          (1,), False, hooks)
        content = save(rebuild, tmp_path / "record.pt").read_bytes()
    elif content in DAMAGED:
        buffer = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(good)) as src, zipfile.ZipFile(buffer, "w") as dst:
            for name in src.namelist():
                data = next((new for end, new in DAMAGED[content].items() if name.endswith("/" + end)),
                            src.read(name))
                if data is not None:
                    dst.writestr(name, data)
        content = buffer.getvalue()
    path.write_bytes(content)
    with pytest.raises(NotATorchCheckpoint, match=f"{re.escape(str(path))}.*{re.escape(reason)}"):
        load(path)
    assert load(tmp_path / "good.pt")["w"].tolist() == [0, 1, 2, 3]


def test_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "none.pt")
