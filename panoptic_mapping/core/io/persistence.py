"""Versioned, atomic, checksummed save/load of a map state.

A map state is a nested dict of numpy arrays, torch tensors, Python scalars, strings,
bytes, lists, tuples and dicts. It is written with :func:`torch.save` as

    {"header": {"format", "version", "created", "sections"}, "checksum": "sha256:...",
     "state": <encoded state>}

where the encoded state holds only types that ``torch.load(..., weights_only=True)``
accepts, so that loading a map never executes pickled code:

* tensors are stored as they are (moved to the CPU),
* numpy arrays and numpy scalars become ``("ndarray", dtype.str, shape, uint8 tensor of
  the raw bytes)`` (torch has no uint16/uint32/unicode... counterpart for every numpy
  dtype; raw bytes + the dtype string round-trip all of them exactly),
* tuples become ``("tuple", [items])``; every other tuple in the encoded tree is one of
  these tags, so a user's tuple can never be mistaken for an array,
* lists, dicts, str, bytes, int, float, complex, bool and None are kept as they are.

The checksum is a sha256 over the header and the encoded state (structure, scalars and
every tensor's bytes), so corruption that the zip container does not catch is detected.
Writing goes through a temp file in the target's directory, fsync and ``os.replace``:
the target is either the old map or the new one, never a half-written file.

This module is ROS-free (the core import boundary test covers it).
"""
from __future__ import annotations

import hashlib
import os
import pickle
import re
import tempfile
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from panoptic_mapping.core.device import numpy_tensor
from panoptic_mapping.core.io.files import apply_umask

__all__ = ["FORMAT", "VERSION", "MapFileError", "save_map", "load_map"]

FORMAT = "panoptic_mapping.map"
VERSION = 1

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's (zip) container
_PLAIN = (str, bytes, int, float, complex, bool, type(None))


class MapFileError(Exception):
    """A map file cannot be loaded; the message names the file and the problem."""


# --------------------------------------------------------------------------- encoding


def _tensor_to_cpu(t: torch.Tensor) -> torch.Tensor:
    """A CPU, contiguous tensor holding exactly its own elements.

    torch.save writes a view's whole storage; a slice of a large buffer is copied first
    so that the file holds only what the state references.
    """
    t = t.detach().cpu().resolve_conj().resolve_neg()
    if not t.is_contiguous() or t.untyped_storage().nbytes() != t.numel() * t.element_size():
        t = t.contiguous().clone()
    return t


def _encode_array(a: np.ndarray, where: str) -> tuple:
    if a.dtype.hasobject or a.dtype.fields is not None:
        raise TypeError(f"cannot save {where}: numpy dtype {a.dtype} (object or structured)")
    raw = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    return ("ndarray", a.dtype.str, list(a.shape), numpy_tensor(raw))


def _encode(value: Any, where: str) -> Any:
    """The weights_only-safe form of ``value``; ``where`` names it in errors."""
    if isinstance(value, torch.Tensor):
        return _tensor_to_cpu(value)
    if isinstance(value, np.ndarray):
        return _encode_array(value, where)
    if isinstance(value, np.generic):  # numpy scalar: a 0-d array, read back with [()]
        return ("npscalar",) + _encode_array(np.asarray(value), where)[1:]
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"cannot save {where}: key {key!r} is not a str or int")
            out[key] = _encode(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, list):
        return [_encode(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, tuple):
        return ("tuple", [_encode(item, f"{where}[{i}]") for i, item in enumerate(value)])
    raise TypeError(f"cannot save {where}: unsupported type {type(value).__name__}")


def _decode_array(dtype: str, shape: list[int], raw: torch.Tensor) -> np.ndarray:
    return raw.numpy().view(np.dtype(dtype)).reshape(shape)


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode(item) for item in value]
    if isinstance(value, tuple):
        tag = value[0]
        if tag == "ndarray":
            return _decode_array(*value[1:])
        if tag == "npscalar":
            return _decode_array(*value[1:])[()]
        if tag == "tuple":
            return tuple(_decode(item) for item in value[1])
        raise ValueError(f"unknown tag {tag!r}")
    return value


# --------------------------------------------------------------------------- checksum


def _digest(value: Any, h: "hashlib._Hash") -> None:
    """Feed the structure, scalars and tensor bytes of an encoded tree into ``h``.

    Every item is prefixed by its type and length, so that two different trees never
    hash the same byte sequence.
    """
    if isinstance(value, torch.Tensor):
        t = value.contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, dict):
        h.update(f"D{len(value)};".encode())
        for key, item in value.items():
            _digest(key, h)
            _digest(item, h)
    elif isinstance(value, (list, tuple)):
        h.update(f"{'L' if isinstance(value, list) else 'U'}{len(value)};".encode())
        for item in value:
            _digest(item, h)
    elif isinstance(value, (str, bytes)):
        data = value.encode() if isinstance(value, str) else value
        h.update(f"{type(value).__name__[0]}{len(data)};".encode())
        h.update(data)
    else:  # int, float, complex, bool, None: repr is exact and tells the type apart
        text = repr(value)
        h.update(f"{type(value).__name__}{len(text)};{text}".encode())


def _checksum(header: dict[str, Any], state: Any) -> str:
    h = hashlib.sha256()
    _digest(header, h)
    _digest(state, h)
    return "sha256:" + h.hexdigest()


# --------------------------------------------------------------------------- save


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable; not every platform can open a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_map(path: str | Path, state: Mapping[str, Any]) -> int:
    """Write ``state`` to ``path`` atomically; returns the number of bytes written.

    Args:
        path: target file (its directory is created if needed).
        state: nested dict; top-level keys (the sections) must be strings. Values may be
            numpy arrays (not object/structured dtypes), torch tensors (saved on the CPU,
            without autograd history), str, bytes, int, float, complex, bool, None,
            lists, tuples and dicts with str or int keys.

    Raises:
        TypeError: ``state`` holds an unsupported value (the message gives its path).
        OSError: the file cannot be written; an existing map at ``path`` is unchanged.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a dict of sections, got {type(state).__name__}")
    bad = [key for key in state if not isinstance(key, str)]
    if bad:
        raise TypeError(f"section names must be strings, got {bad!r}")
    encoded = _encode(state, "state")
    header = {"format": FORMAT, "version": VERSION,
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "sections": list(state)}
    payload = {"header": header, "checksum": _checksum(header, encoded), "state": encoded}

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        apply_umask(fd)  # mkstemp's files are private; a map is written like any file
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())  # data on disk before the rename makes it visible
            size = f.tell()
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_directory(path.parent)
    _remove_stale_temporaries(path, started)
    return size


def _remove_stale_temporaries(path: Path, before: float) -> None:
    """Delete what saves of ``path`` killed mid-write (SIGKILL, power cut) left behind.

    Only temporaries last written before this save started: a save still running in
    another process keeps writing its own, so its modification time is recent.
    """
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            if tmp.stat().st_mtime < before:
                tmp.unlink()
        except OSError:
            pass  # gone already, or not ours to delete: the save itself succeeded


# --------------------------------------------------------------------------- load


def _is_foreign_zip(path: Path) -> bool:
    """True for an intact zip archive without torch's data.pkl (e.g. a numpy .npz)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return not any(name.endswith("data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False  # not an intact zip: truncated or corrupt


def _reason(exc: BaseException) -> str:
    """The informative sentence of a torch.load error (they run to several paragraphs)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # torch bolds parts of its messages
    found = re.search(r"WeightsUnpickler error: (.*)", text)
    text = (found.group(1) if found else text).strip()
    return text.split(". ")[0].rstrip(".") or type(exc).__name__


def _read_container(path: Path) -> Any:
    """The unpickled top-level object of ``path``, or MapFileError."""
    if not path.exists():
        raise MapFileError(f"map file {path}: missing (no such file)")
    if not path.is_file():
        raise MapFileError(f"map file {path}: not a regular file")
    with open(path, "rb") as f:
        magic = f.read(len(_ZIP_MAGIC))
    if magic != _ZIP_MAGIC:
        raise MapFileError(f"map file {path}: not a panoptic_mapping map (not a torch.save "
                           f"archive)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses anything but plain data: a foreign pickle, or garbage
        raise MapFileError(f"map file {path}: not a panoptic_mapping map or corrupt (its "
                           f"content cannot be loaded safely: {_reason(exc)})") from exc
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        if _is_foreign_zip(path):
            raise MapFileError(f"map file {path}: not a panoptic_mapping map (a zip archive "
                               f"but not a torch.save one)") from exc
        raise MapFileError(f"map file {path}: corrupt or truncated ({_reason(exc)})") from exc


def _check_header(path: Path, payload: Any) -> dict[str, Any]:
    header = payload.get("header") if isinstance(payload, dict) else None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise MapFileError(f"map file {path}: not a panoptic_mapping map (no "
                           f"'{FORMAT}' header)")
    version = header.get("version")
    if version != VERSION:
        raise MapFileError(f"map file {path}: incompatible version {version!r} (this build "
                           f"reads {VERSION})")
    if "state" not in payload or "checksum" not in payload:
        raise MapFileError(f"map file {path}: corrupt (state or checksum missing)")
    return header


def load_map(path: str | Path, required_sections: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load a map written by :func:`save_map`.

    Numpy arrays come back as numpy arrays of the same dtype and shape, tensors as CPU
    tensors, tuples as tuples. The file is read with ``torch.load(weights_only=True)``:
    no pickled code is ever executed.

    Args:
        path: the map file.
        required_sections: top-level keys that must be present.

    Raises:
        MapFileError: the file is missing, not a panoptic_mapping map, corrupt or
            truncated, of an incompatible version, or lacks a required section.
    """
    path = Path(path)
    payload = _read_container(path)
    header = _check_header(path, payload)
    if _checksum(header, payload["state"]) != payload["checksum"]:
        raise MapFileError(f"map file {path}: corrupt (checksum mismatch)")
    try:
        state = _decode(payload["state"])
    except (ValueError, TypeError, IndexError) as exc:
        raise MapFileError(f"map file {path}: corrupt ({exc})") from exc
    for name in required_sections:
        if name not in state:
            raise MapFileError(f"map file {path}: missing section '{name}' (it has "
                               f"{', '.join(map(repr, state)) or 'none'})")
    return state
