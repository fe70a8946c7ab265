"""Map persistence: round trip, failure modes, atomic writes, safe (weights_only) loading."""
from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch

from panoptic_mapping.core.io import persistence
from panoptic_mapping.core.io.persistence import FORMAT, VERSION, MapFileError, load_map, save_map


def nested_state() -> dict:
    rng = np.random.default_rng(0)
    big = torch.arange(1000, dtype=torch.float32)
    return {
        "voxels": {
            "keys": rng.integers(-2**62, 2**62, 50, dtype=np.int64),
            "colour": rng.integers(0, 256, (50, 3), dtype=np.uint8),
            "occupied": rng.random(50) > 0.5,
            "weights": rng.random((50, 4)).astype(np.float32),
            "ids": np.arange(6, dtype=np.uint32).reshape(2, 3),
            "depth_mm": np.array([1, 65535], dtype=np.uint16),
            "transposed": np.arange(12, dtype=np.float64).reshape(3, 4).T,  # non-contiguous
            "big_endian": np.arange(3, dtype=">i4"),
            "empty": np.zeros((0, 3), dtype=np.float32),
            "scalar_array": np.array(2.5),
            "names": np.array(["cup", "bowl"]),
        },
        "field": {
            "grid": torch.randn(2, 3, 4),
            "index": torch.tensor([1, 2, 3], dtype=torch.int64),
            "mask": torch.tensor([True, False]),
            "half": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
            "slice": big[10:20],  # a view of a larger storage
            "params": torch.nn.Parameter(torch.ones(2)),
        },
        "instances": {
            1: {"label": "cup", "confidence": 0.75, "frames": [3, 4, 5]},
            2: {"label": "bowl", "confidence": 1.0, "frames": []},
        },
        "meta": {
            "name": "tabletop", "frame_count": 42, "voxel_size": 0.01, "done": True,
            "nothing": None, "blob": b"\x00\xff", "pose": (1.0, 2.0, 3.0),
            "np_scalar": np.float32(0.5), "np_int": np.int64(-7),
            "mixed": [1, "two", 3.0, [4, (5, np.arange(2))], {"six": 6}],
        },
    }


def assert_same(a, b, where="state"):
    """Deep equality that also checks types, dtypes and shapes."""
    if isinstance(a, torch.nn.Parameter):
        a = a.detach()
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a == b, where
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and b.device.type == "cpu", where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --------------------------------------------------------------------------- round trip


def test_round_trip_of_a_nested_state(tmp_path):
    state = nested_state()
    path = tmp_path / "map.pt"
    size = save_map(path, state)
    assert size == path.stat().st_size > 0
    loaded = load_map(path, required_sections=("voxels", "field"))
    assert_same(state, loaded)
    assert files_in(tmp_path) == ["map.pt"]  # no temp file left behind
    loaded["voxels"]["weights"][0, 0] = 5.0  # arrays come back writeable


def test_file_is_plain_data_loadable_with_weights_only(tmp_path):
    path = tmp_path / "map.pt"
    save_map(path, nested_state())
    raw = torch.load(path, weights_only=True)
    header = raw["header"]
    assert header["format"] == FORMAT and header["version"] == VERSION == 1
    assert header["sections"] == ["voxels", "field", "instances", "meta"]
    assert datetime.fromisoformat(header["created"]).tzinfo is not None
    assert raw["checksum"].startswith("sha256:")


def test_a_tensor_view_saves_only_its_elements(tmp_path):
    big = torch.zeros(1_000_000)
    size = save_map(tmp_path / "view.pt", {"t": big[:10]})
    assert size < 100_000
    assert torch.equal(load_map(tmp_path / "view.pt")["t"], torch.zeros(10))


def test_cuda_tensors_are_stored_on_cpu(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    save_map(tmp_path / "map.pt", {"t": torch.ones(3, device="cuda")})
    assert load_map(tmp_path / "map.pt")["t"].device.type == "cpu"


def test_unsupported_values_are_named_and_nothing_is_written(tmp_path):
    path = tmp_path / "map.pt"
    with pytest.raises(TypeError, match=r"state\['meta'\]\['when'\].*set"):
        save_map(path, {"meta": {"when": {1, 2}}})
    with pytest.raises(TypeError, match="object"):
        save_map(path, {"a": np.array([object()])})
    with pytest.raises(TypeError, match="section names must be strings"):
        save_map(path, {1: "x"})
    assert files_in(tmp_path) == []


# --------------------------------------------------------------------------- failure modes


def expect_error(path: Path, message: str, **kwargs) -> MapFileError:
    with pytest.raises(MapFileError, match=message) as info:
        load_map(path, **kwargs)
    assert str(path) in str(info.value)
    return info.value


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.pt", "missing")


def test_truncated_file(tmp_path):
    path = tmp_path / "map.pt"
    save_map(path, nested_state())
    data = path.read_bytes()
    for keep in (len(data) // 2, len(data) - 10, 10):
        path.write_bytes(data[:keep])
        expect_error(path, "corrupt or truncated")


def test_random_bytes(tmp_path):
    path = tmp_path / "map.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    expect_error(path, "not a panoptic_mapping map")
    path.write_bytes(b"")
    expect_error(path, "not a panoptic_mapping map")


def test_files_of_other_formats(tmp_path):
    checkpoint = tmp_path / "weights.pt"
    torch.save({"weight": torch.ones(3)}, checkpoint)
    expect_error(checkpoint, r"not a panoptic_mapping map \(no 'panoptic_mapping.map' header")
    arrays = tmp_path / "arrays.npz"
    np.savez(arrays, a=np.ones(3))
    expect_error(arrays, "not a panoptic_mapping map")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    expect_error(text, "not a panoptic_mapping map")


def test_wrong_version(tmp_path, monkeypatch):
    path = tmp_path / "map.pt"
    monkeypatch.setattr(persistence, "VERSION", 2)
    save_map(path, {"a": 1})
    monkeypatch.undo()
    expect_error(path, r"incompatible version 2 \(this build reads 1\)")


def test_missing_required_section(tmp_path):
    path = tmp_path / "map.pt"
    save_map(path, {"voxels": np.zeros(3), "meta": {}})
    assert set(load_map(path, required_sections=("voxels",))) == {"voxels", "meta"}
    expect_error(path, "missing section 'instances'", required_sections=("voxels", "instances"))


def test_modified_content_fails_the_checksum(tmp_path):
    path = tmp_path / "map.pt"
    save_map(path, {"voxels": np.arange(10, dtype=np.int64)})
    payload = torch.load(path, weights_only=True)
    payload["state"]["voxels"][3][5] += 1  # one raw byte of the array
    torch.save(payload, path)
    expect_error(path, r"corrupt \(checksum mismatch\)")


def test_flipped_byte_in_array_data_is_detected(tmp_path):
    path = tmp_path / "map.pt"
    save_map(path, {"voxels": np.full(4096, 7, dtype=np.uint8)})
    data = bytearray(path.read_bytes())
    at = bytes(data).find(b"\x07" * 4096)
    assert at > 0
    data[at + 100] ^= 0xFF
    path.write_bytes(bytes(data))
    # torch's zip reader does not verify CRCs (torch 2.x): the checksum is what notices
    expect_error(path, "corrupt")


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_loading_never_executes_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"
    marker = tmp_path / "pwned"
    torch.save({"header": {"format": FORMAT, "version": VERSION}, "checksum": "",
                "state": {"x": _Evil(marker)}}, path)
    expect_error(path, "cannot be loaded safely")
    assert not marker.exists()


# --------------------------------------------------------------------------- atomicity


def test_failed_replace_leaves_the_old_map_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "map.pt"
    save_map(path, {"version": "old"})
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(persistence.os, "replace", fail)
    with pytest.raises(OSError, match="simulated crash"):
        save_map(path, {"version": "new", "data": np.zeros(1000)})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert files_in(tmp_path) == ["map.pt"]
    assert load_map(path) == {"version": "old"}


def test_failure_while_writing_leaves_the_old_map_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "map.pt"
    save_map(path, {"version": "old"})
    before = path.read_bytes()

    def half_write(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt  # even an interrupt must not leave debris

    monkeypatch.setattr(persistence.torch, "save", half_write)
    with pytest.raises(KeyboardInterrupt):
        save_map(path, {"version": "new"})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert files_in(tmp_path) == ["map.pt"]


def test_save_creates_the_directory_and_overwrites(tmp_path):
    path = tmp_path / "maps" / "run1" / "map.pt"
    save_map(path, {"a": 1})
    save_map(path, {"a": 2})
    assert load_map(path) == {"a": 2}
    assert files_in(path.parent) == ["map.pt"]
    assert not any(name.endswith(".tmp") for name in os.listdir(path.parent))


def test_a_save_removes_what_a_killed_save_left_behind(tmp_path):
    """A SIGKILL mid-save leaves its temporary file (no handler runs); the next save of the
    same map deletes it, but neither a save in progress elsewhere nor other files."""
    path = tmp_path / "map.pt"
    killed = tmp_path / ".map.pt.abc123.tmp"
    killed.write_bytes(b"PK\x03\x04 half a map")
    os.utime(killed, (1.0, 1.0))  # written long before this save started
    running = tmp_path / ".map.pt.def456.tmp"  # another process writing right now
    running.write_bytes(b"PK")
    os.utime(running, (time.time() + 60, time.time() + 60))
    other = tmp_path / ".other.pt.xyz.tmp"
    other.write_bytes(b"x")
    os.utime(other, (1.0, 1.0))
    save_map(path, {"a": 1})
    assert files_in(tmp_path) == sorted([".map.pt.def456.tmp", ".other.pt.xyz.tmp", "map.pt"])


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_map_and_ply_files_follow_the_process_umask(tmp_path, umask, mode):
    """mkstemp makes private files; a saved map gets what open() would have given it."""
    from panoptic_mapping.core.io.export import _atomic_write
    from panoptic_mapping.core.io.files import process_umask

    old = os.umask(umask)
    try:
        assert process_umask() == umask
        save_map(tmp_path / "map.pt", {"a": np.zeros(3)})
        _atomic_write(tmp_path / "cloud.ply", [b"ply\n"])
    finally:
        os.umask(old)
    assert (tmp_path / "map.pt").stat().st_mode & 0o777 == mode
    assert (tmp_path / "cloud.ply").stat().st_mode & 0o777 == mode
