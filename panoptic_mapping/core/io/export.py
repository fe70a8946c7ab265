"""Map export as plain arrays: a labeled point cloud, an instance table, PLY files.

The mapper gathers its per-point arrays (positions, colours, instance and semantic ids,
confidences) and hands them to the functions below; nothing here knows about the map's
internal structures, so the export is testable on worked examples.

* :func:`downsample_labeled_points` keeps one point per occupied voxel (mean position and
  colour, majority-voted labels); :func:`voxel_means` does the same for one view's
  unlabeled points (the mapper reduces each keyframe once, not at every cloud),
* :func:`instance_table` summarises every instance: label, confidence, centroid and an
  oriented bounding box (:func:`oriented_box`),
* :func:`instance_points` takes one instance's points out of a cloud (optionally coarser),
* :func:`write_ply` / :func:`read_ply` store a :class:`LabeledCloud` as binary PLY.

This module is ROS-free (the core import boundary test covers it).
"""
from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from panoptic_mapping.core.io.files import apply_umask
from panoptic_mapping.params import param, validate_fields
from panoptic_mapping.core.geometry import pack_voxel_keys, rotation_to_quaternion, voxel_coords

__all__ = [
    "ExportConfig",
    "LabeledCloud",
    "InstanceRecord",
    "downsample_labeled_points",
    "voxel_means",
    "oriented_box",
    "instance_table",
    "instance_points",
    "write_ply",
    "read_ply",
]

OBB_METHODS = ("gravity", "pca")

# Label given to an instance absent from the ``labels`` mapping: the vocabulary's
# "no label" (``Vocabulary.name(0) == ""``).
_NO_LABEL: tuple[str, int, float] = ("", 0, 0.0)


@dataclass
class ExportConfig:
    """What the map export writes: the labeled cloud and the instance table."""

    voxel_size_m: float = param(0.01, "Resolution [m] of the exported labeled point cloud: "
                                "one point per occupied voxel of this size.", minimum=0.001)
    min_points_per_instance: int = param(20, "Instances with fewer (downsampled) points are "
                                         "left out of the instance table.", minimum=1)
    cloud_cache_mb: float = param(
        128.0, "Memory [MB] for the labeled cloud's per-keyframe reductions (one point per "
        "cloud voxel a keyframe with depth sees, ~2 MB for a 640x480 keyframe at 1 cm), "
        "kept so the next cloud reads each keyframe once; beyond it the least recently "
        "used are dropped and recomputed when asked for. 0: none kept.", minimum=0.0)
    obb_method: str = param(
        "gravity",
        "Oriented bounding box of each instance: 'gravity' = upright box (yaw from the PCA "
        "of the x-y spread, z extent from the min/max height; what tabletop manipulation "
        "wants), 'pca' = full 3-D PCA box (tighter for tilted objects).",
        choices=OBB_METHODS)

    def __post_init__(self) -> None:
        # Direct construction gets the same checks as a loaded file.
        validate_fields(self, "export")


# --------------------------------------------------------------------------- data types


@dataclass(eq=False)
class LabeledCloud:
    """A point cloud with per-point labels; all arrays have the same length N.

    Attributes:
        xyz: (N, 3) float32 positions in the map frame [m].
        rgb: (N, 3) uint8 colours.
        instance: (N,) uint32 instance ids (0 = no instance).
        semantic: (N,) uint32 semantic label ids (0 = no label).
        confidence: (N,) float32 confidence of the instance label, in [0, 1].
    """

    xyz: np.ndarray
    rgb: np.ndarray
    instance: np.ndarray
    semantic: np.ndarray
    confidence: np.ndarray

    def __post_init__(self) -> None:
        # Coerce once here so that writers and consumers can rely on the documented dtypes.
        self.xyz = np.asarray(self.xyz, dtype=np.float32).reshape(-1, 3)
        self.rgb = np.asarray(self.rgb, dtype=np.uint8).reshape(-1, 3)
        self.instance = np.asarray(self.instance, dtype=np.uint32).reshape(-1)
        self.semantic = np.asarray(self.semantic, dtype=np.uint32).reshape(-1)
        self.confidence = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
        n = len(self.xyz)
        lengths = {name: len(getattr(self, name))
                   for name in ("rgb", "instance", "semantic", "confidence")}
        bad = {k: v for k, v in lengths.items() if v != n}
        if bad:
            raise ValueError(f"LabeledCloud arrays differ in length: xyz has {n} points, {bad}")

    def __len__(self) -> int:
        return len(self.xyz)

    @classmethod
    def empty(cls) -> "LabeledCloud":
        return cls(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros(0), np.zeros(0))


@dataclass(eq=False)
class InstanceRecord:
    """One row of the instance table.

    Attributes:
        id: instance id (>= 1).
        label, label_id, semantic_confidence: the instance's semantic label.
        confidence: confidence that the instance is a real object.
        centroid: (3,) mean of its points [m].
        box_center: (3,) centre of its oriented bounding box [m].
        box_rotation: (3, 3) box axes as columns (right-handed, det +1), map frame.
        box_size: (3,) full edge lengths along the box axes [m].
        num_points: number of its points in the (downsampled) labeled cloud.
    """

    id: int
    label: str
    label_id: int
    semantic_confidence: float
    confidence: float
    centroid: np.ndarray
    box_center: np.ndarray
    box_rotation: np.ndarray
    box_size: np.ndarray
    num_points: int

    def box_quaternion(self) -> np.ndarray:
        """(4,) the box orientation as a unit quaternion (x, y, z, w), w >= 0."""
        return rotation_to_quaternion(self.box_rotation)

    def as_dict(self) -> dict[str, Any]:
        """Plain-type form (lists and scalars), e.g. for a JSON instance table."""
        return {
            "id": int(self.id), "label": self.label, "label_id": int(self.label_id),
            "semantic_confidence": float(self.semantic_confidence),
            "confidence": float(self.confidence),
            "centroid": np.asarray(self.centroid, dtype=float).tolist(),
            "box_center": np.asarray(self.box_center, dtype=float).tolist(),
            "box_quaternion_xyzw": self.box_quaternion().tolist(),
            "box_size": np.asarray(self.box_size, dtype=float).tolist(),
            "num_points": int(self.num_points),
        }


# --------------------------------------------------------------------------- downsampling


def _as_ids(values: Any, name: str, n: int) -> np.ndarray:
    """(n,) uint32 ids; out-of-range values raise instead of silently wrapping."""
    a = np.asarray(values).reshape(-1)
    if len(a) != n:
        raise ValueError(f"{name} has {len(a)} entries for {n} points")
    if a.size and a.dtype.kind not in "iub":  # (an empty list arrives as float64)
        raise ValueError(f"{name} must be an integer array, got {a.dtype}")
    if a.size and a.dtype.kind in "iu" and (a.min() < 0 or a.max() > np.iinfo(np.uint32).max):
        raise ValueError(f"{name} ids must lie in [0, 2^32 - 1]")
    return a.astype(np.uint32, copy=False)


def _vote(group: np.ndarray, label: np.ndarray, weight: np.ndarray,
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Majority label of each group.

    Args:
        group: (N,) int64 group of each point, covering 0..G-1 (every group non-empty).
        label: (N,) uint32 label of each point.
        weight: (N,) float64 weight (confidence) of each point.

    Returns:
        (G,) winning label (ties: higher summed weight, then the lower label), its
        (G,) count and (G,) summed weight.
    """
    # One sort of (group, label) pairs packed into one int64: labels fit in 32 bits and
    # a group index (< number of points) in the 31 bits above them.
    pair = (group << 32) | label.astype(np.int64)
    pairs, inv, counts = np.unique(pair, return_inverse=True, return_counts=True)
    wsum = np.bincount(inv.reshape(-1), weights=weight, minlength=len(pairs))
    # np.unique sorted the pairs by group, then label: each group is one contiguous run.
    pair_group = pairs >> 32
    pair_label = pairs & 0xFFFFFFFF
    starts = np.flatnonzero(np.concatenate(([True], pair_group[1:] != pair_group[:-1])))
    # Per-run maxima (O(M) reduceat; a lexsort of the pairs is ~20x slower): most points,
    # then among those the most weight, then the first, i.e. the lowest label.
    best = counts == np.maximum.reduceat(counts, starts)[pair_group]
    best_w = np.where(best, wsum, -np.inf)
    best &= best_w == np.maximum.reduceat(best_w, starts)[pair_group]
    idx = np.flatnonzero(best)
    first = idx[np.concatenate(([True], pair_group[idx[1:]] != pair_group[idx[:-1]]))]
    return pair_label[first].astype(np.uint32), counts[first], wsum[first]


def voxel_means(xyz: np.ndarray, rgb: np.ndarray, voxel_size: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """One point per occupied voxel of edge ``voxel_size``: the mean position and colour
    of the points in it, ordered by voxel key (deterministic).

    Args:
        xyz: (N, 3) finite positions [m]. rgb: (N, 3) colours, 0..255.
    Returns:
        (M, 3) float64 positions and (M, 3) uint8 colours, M <= N.
    """
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be > 0, got {voxel_size}")
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    rgb = np.asarray(rgb).reshape(-1, 3)
    if len(xyz) == 0:
        return np.zeros((0, 3)), np.zeros((0, 3), np.uint8)
    keys = pack_voxel_keys(voxel_coords(xyz, voxel_size))
    _, voxel, count = np.unique(keys, return_inverse=True, return_counts=True)
    voxel = voxel.reshape(-1)
    m = len(count)
    sums = np.stack([np.bincount(voxel, weights=c, minlength=m)
                     for c in (*xyz.T, *rgb.T.astype(np.float64))], axis=1)
    means = sums / count[:, None]
    return means[:, :3], np.clip(np.rint(means[:, 3:]), 0, 255).astype(np.uint8)


def downsample_labeled_points(xyz: np.ndarray, rgb: np.ndarray, instance: np.ndarray,
                              semantic: np.ndarray, confidence: np.ndarray,
                              voxel_size: float) -> LabeledCloud:
    """One labeled point per occupied voxel of edge ``voxel_size``.

    Each voxel's point has the mean position and the mean colour of the points in it,
    the instance id and the semantic id that most of them carry (ties: the id with the
    higher summed confidence, then the lower id), and the confidence
    ``mean confidence of the winning instance's points * winning share``, which equals
    ``summed confidence of the winning points / points in the voxel``: a voxel split
    between instances is less certain than a unanimous one.

    Args:
        xyz: (N, 3) positions [m]. Points with a non-finite position or confidence are
            dropped (they belong to no voxel).
        rgb: (N, 3) colours, 0..255.
        instance, semantic: (N,) non-negative integer ids (< 2^32).
        confidence: (N,) per-point confidences.
        voxel_size: voxel edge [m], > 0.

    Returns:
        A :class:`LabeledCloud` of M <= N points, ordered by voxel key (deterministic).
    """
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be > 0, got {voxel_size}")
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    n = len(xyz)
    rgb = np.asarray(rgb).reshape(-1, 3)
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    if len(rgb) != n or len(conf) != n:
        raise ValueError(f"rgb ({len(rgb)}) and confidence ({len(conf)}) need one entry per "
                         f"point ({n})")
    inst = _as_ids(instance, "instance", n)
    sem = _as_ids(semantic, "semantic", n)
    keep = np.isfinite(xyz).all(axis=1) & np.isfinite(conf)
    if not keep.all():
        xyz, rgb, conf, inst, sem = xyz[keep], rgb[keep], conf[keep], inst[keep], sem[keep]
    if len(xyz) == 0:
        return LabeledCloud.empty()

    keys = pack_voxel_keys(voxel_coords(xyz, voxel_size))
    _, voxel, count = np.unique(keys, return_inverse=True, return_counts=True)
    voxel = voxel.reshape(-1)  # numpy 2.0.x returned the input's shape here
    m = len(count)

    def mean(values: np.ndarray) -> np.ndarray:  # (N, C) -> (M, C) per-voxel means
        return np.stack([np.bincount(voxel, weights=values[:, c], minlength=m)
                         for c in range(values.shape[1])], axis=1) / count[:, None]

    out_xyz = mean(xyz)
    out_rgb = np.clip(np.rint(mean(rgb.astype(np.float64))), 0, 255)
    out_inst, _, inst_wsum = _vote(voxel, inst, conf)
    out_sem, _, _ = _vote(voxel, sem, conf)
    return LabeledCloud(out_xyz.astype(np.float32), out_rgb.astype(np.uint8), out_inst,
                        out_sem, (inst_wsum / count).astype(np.float32))


# --------------------------------------------------------------------------- boxes


def _is_isotropic(eigenvalues: np.ndarray) -> bool:
    """True if the two largest eigenvalues are (numerically) equal, or all are ~0."""
    top = eigenvalues[-1]
    return bool(top <= 1e-18 or eigenvalues[-1] - eigenvalues[-2] <= 1e-9 * top)


def _gravity_axes(d: np.ndarray) -> np.ndarray:
    """(3, 3) upright box axes for centred points (N, 3): yaw from the x-y PCA.

    The yaw is folded into [-90, 90) degrees (a box is symmetric under a half turn), and
    an isotropic footprint (a single point, a square, a disc) gets yaw 0, so that
    degenerate inputs give the map axes rather than an arbitrary eigenvector.
    """
    xy = d[:, :2]
    w, v = np.linalg.eigh(xy.T @ xy / len(d))
    yaw = 0.0 if _is_isotropic(w) else math.atan2(v[1, 1], v[0, 1])
    if yaw >= math.pi / 2:
        yaw -= math.pi
    elif yaw < -math.pi / 2:
        yaw += math.pi
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _pca_axes(d: np.ndarray) -> np.ndarray:
    """(3, 3) box axes for centred points (N, 3): principal axes, largest spread first.

    Each of the first two axes points so that its largest component is positive (a
    deterministic sign), and the third is their cross product (det +1).
    """
    w, v = np.linalg.eigh(d.T @ d / len(d))
    if w[-1] <= 1e-18:  # a single point (repeated): no spread to orient by
        return np.eye(3)
    axes = v[:, ::-1].copy()
    for k in range(2):
        if axes[np.argmax(np.abs(axes[:, k])), k] < 0:
            axes[:, k] = -axes[:, k]
    axes[:, 2] = np.cross(axes[:, 0], axes[:, 1])
    return axes


def oriented_box(points: np.ndarray, method: str = "gravity",
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Oriented bounding box of points (N, 3), N >= 1.

    Args:
        points: (N, 3) finite positions.
        method: "gravity" (upright box: yaw from the principal axis of the x-y spread,
            z extent from min/max) or "pca" (full 3-D principal axes).

    Returns:
        center (3,), rotation (3, 3) whose columns are the box axes (det +1), and size
        (3,) full edge lengths. The extents are the min/max of the points projected on
        the axes, so the box contains every point; degenerate inputs (one point,
        collinear, coplanar) give zero sizes along the degenerate axes, never NaN.
    """
    if method not in OBB_METHODS:
        raise ValueError(f"unknown box method {method!r} (choose from {list(OBB_METHODS)})")
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(p) == 0:
        raise ValueError("oriented_box needs at least one point")
    if not np.isfinite(p).all():
        raise ValueError("oriented_box got non-finite points")
    mean = p.mean(axis=0)
    d = p - mean  # centred first: PCA of map-frame coordinates far from 0 loses precision
    rotation = _gravity_axes(d) if method == "gravity" else _pca_axes(d)
    local = d @ rotation
    lo, hi = local.min(axis=0), local.max(axis=0)
    return mean + rotation @ ((lo + hi) / 2), rotation, hi - lo


# --------------------------------------------------------------------------- instances


def instance_table(cloud: LabeledCloud, labels: Mapping[int, tuple[str, int, float]],
                   confidences: Mapping[int, float],
                   cfg: ExportConfig | None = None) -> list[InstanceRecord]:
    """One :class:`InstanceRecord` per instance of ``cloud``, sorted by id.

    Id 0 (no instance) and instances with fewer than ``cfg.min_points_per_instance``
    points are left out.

    Args:
        cloud: the (downsampled) labeled cloud.
        labels: instance id -> (label name, label id, semantic confidence); an id
            missing here gets ("", 0, 0.0), the vocabulary's "no label".
        confidences: instance id -> instance confidence; an id missing here gets the
            mean confidence of its points.
        cfg: export configuration (box method, minimum size).
    """
    cfg = ExportConfig() if cfg is None else cfg
    if len(cloud) == 0:
        return []
    order = np.argsort(cloud.instance, kind="stable")
    ids, starts, counts = np.unique(cloud.instance[order], return_index=True,
                                    return_counts=True)
    records = []
    # A Python loop over instances (tens to hundreds), not over points.
    for iid, start, count in zip(ids.tolist(), starts.tolist(), counts.tolist()):
        if iid == 0 or count < cfg.min_points_per_instance:
            continue
        rows = order[start:start + count]
        pts = cloud.xyz[rows].astype(np.float64)
        center, rotation, size = oriented_box(pts, cfg.obb_method)
        name, label_id, sem_conf = labels.get(iid, _NO_LABEL)
        conf = confidences.get(iid)
        if conf is None:
            conf = float(cloud.confidence[rows].mean())
        records.append(InstanceRecord(
            id=iid, label=str(name), label_id=int(label_id),
            semantic_confidence=float(sem_conf), confidence=float(conf),
            centroid=pts.mean(axis=0), box_center=center, box_rotation=rotation,
            box_size=size, num_points=count))
    return records


def instance_points(cloud: LabeledCloud, instance_id: int, voxel_size: float = 0.0
                    ) -> LabeledCloud:
    """The points of one instance, optionally voxel-downsampled.

    Args:
        cloud: a labeled cloud of N points.
        instance_id: the instance whose points are taken (>= 1).
        voxel_size: voxel edge [m] of a further downsampling (see
            :func:`downsample_labeled_points`: mean position and colour per voxel,
            confidence the voxel's mean); 0 keeps the cloud's own points.

    Returns:
        A :class:`LabeledCloud` of the M <= N points whose instance is ``instance_id``, in
        the cloud's order (downsampled: ordered by voxel key); empty when it has none.
    """
    if instance_id < 1:
        raise ValueError(f"instance_id must be >= 1 (0 is 'no instance'), got {instance_id}")
    if not (voxel_size >= 0 and math.isfinite(voxel_size)):
        raise ValueError(f"voxel_size must be finite and >= 0, got {voxel_size}")
    rows = np.flatnonzero(cloud.instance == instance_id)
    xyz, rgb = cloud.xyz[rows], cloud.rgb[rows]
    instance, semantic, confidence = (cloud.instance[rows], cloud.semantic[rows],
                                      cloud.confidence[rows])
    if voxel_size == 0 or len(rows) == 0:
        return LabeledCloud(xyz, rgb, instance, semantic, confidence)
    return downsample_labeled_points(xyz, rgb, instance, semantic, confidence, voxel_size)


# --------------------------------------------------------------------------- PLY

# (name, PLY type, numpy type) of each vertex property, in file order.
_PLY_PROPERTIES = (
    ("x", "float", "<f4"), ("y", "float", "<f4"), ("z", "float", "<f4"),
    ("red", "uchar", "u1"), ("green", "uchar", "u1"), ("blue", "uchar", "u1"),
    ("instance", "uint", "<u4"), ("semantic", "uint", "<u4"),
    ("confidence", "float", "<f4"),
)
_PLY_DTYPE = np.dtype([(name, np_type) for name, _, np_type in _PLY_PROPERTIES])
# PLY spells the same types two ways; both are accepted when reading.
_PLY_TYPE_ALIASES = {"float32": "float", "uint8": "uchar", "uint32": "uint"}
_PLY_MAX_HEADER = 64 * 1024


def _ply_header(n: int) -> bytes:
    lines = ["ply", "format binary_little_endian 1.0",
             "comment panoptic_mapping labeled cloud", f"element vertex {n}"]
    lines += [f"property {ply_type} {name}" for name, ply_type, _ in _PLY_PROPERTIES]
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def _atomic_write(path: Path, chunks: list[bytes]) -> None:
    """Write ``chunks`` to ``path`` via a temp file in the same directory + os.replace.

    Readers never see a half-written file; on failure the temp file is removed and an
    existing ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        apply_umask(fd)  # mkstemp's files are private; a map is written like any file
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_ply(path: str | Path, cloud: LabeledCloud) -> None:
    """Write ``cloud`` as binary little-endian PLY (atomically).

    Vertex properties: x y z (float), red green blue (uchar), instance semantic (uint),
    confidence (float); readable by :func:`read_ply`, CloudCompare, Open3D, MeshLab.
    """
    data = np.empty(len(cloud), dtype=_PLY_DTYPE)
    for k, axis in enumerate("xyz"):
        data[axis] = cloud.xyz[:, k]
    for k, channel in enumerate(("red", "green", "blue")):
        data[channel] = cloud.rgb[:, k]
    data["instance"] = cloud.instance
    data["semantic"] = cloud.semantic
    data["confidence"] = cloud.confidence
    _atomic_write(Path(path), [_ply_header(len(cloud)), data.tobytes()])


def _parse_ply_header(path: Path, lines: list[str]) -> int:
    """Number of vertices declared by a header in this module's layout, else ValueError."""
    if not lines or lines[0] != "ply":
        raise ValueError(f"{path}: not a PLY file (no 'ply' magic line)")
    n_vertices: int | None = None
    properties: list[tuple[str, str]] = []
    for line in lines[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            if words[1:] != ["binary_little_endian", "1.0"]:
                raise ValueError(f"{path}: unsupported PLY format '{' '.join(words[1:])}' "
                                 f"(only binary_little_endian 1.0)")
        elif words[0] == "element":
            if len(words) != 3 or words[1] != "vertex" or n_vertices is not None:
                raise ValueError(f"{path}: unsupported element '{line}' (only one "
                                 f"'element vertex N')")
            try:
                n_vertices = int(words[2])
            except ValueError:
                raise ValueError(f"{path}: bad vertex count in '{line}'") from None
            if n_vertices < 0:
                raise ValueError(f"{path}: bad vertex count in '{line}'")
        elif words[0] == "property" and len(words) == 3:
            properties.append((words[2], _PLY_TYPE_ALIASES.get(words[1], words[1])))
        else:
            raise ValueError(f"{path}: unsupported PLY header line '{line}'")
    if n_vertices is None:
        raise ValueError(f"{path}: PLY header declares no vertex element")
    expected = [(name, ply_type) for name, ply_type, _ in _PLY_PROPERTIES]
    if properties != expected:
        raise ValueError(f"{path}: unsupported vertex properties "
                         f"{' '.join(f'{t} {n}' for n, t in properties)} (expected "
                         f"{' '.join(f'{t} {n}' for n, t in expected)})")
    return n_vertices


def read_ply(path: str | Path) -> LabeledCloud:
    """Read a PLY file written by :func:`write_ply`.

    Raises:
        ValueError: the file is not a binary little-endian PLY with exactly this
            module's vertex layout, or its data is truncated or has trailing bytes.
        OSError: the file cannot be read.
    """
    path = Path(path)
    blob = path.read_bytes()
    end = blob.find(b"end_header", 0, _PLY_MAX_HEADER)
    newline = blob.find(b"\n", end) if end >= 0 else -1
    if end < 0 or newline < 0:
        magic = "ply" if blob.startswith(b"ply") else "no 'ply' magic"
        raise ValueError(f"{path}: not a PLY file ({magic}; no 'end_header' in the first "
                         f"{_PLY_MAX_HEADER} bytes)")
    header = blob[:end].decode("ascii", errors="replace").splitlines()
    n = _parse_ply_header(path, [line.strip() for line in header])
    body = memoryview(blob)[newline + 1:]
    expected = n * _PLY_DTYPE.itemsize
    if len(body) != expected:
        problem = "truncated" if len(body) < expected else "trailing bytes after the data"
        raise ValueError(f"{path}: {problem}: {n} vertices need {expected} bytes, "
                         f"found {len(body)}")
    data = np.frombuffer(body, dtype=_PLY_DTYPE, count=n)
    return LabeledCloud(
        xyz=np.stack([data["x"], data["y"], data["z"]], axis=1),
        rgb=np.stack([data["red"], data["green"], data["blue"]], axis=1),
        instance=data["instance"].copy(), semantic=data["semantic"].copy(),
        confidence=data["confidence"].copy())
