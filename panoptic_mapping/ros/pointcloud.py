"""PointCloud2 packing and reading for the labeled cloud.

Layout of ``~/labeled_cloud`` (unorganised: height 1, little endian, point_step 28):

======================  ========  ======  ==========================================
field                   datatype  offset  meaning
======================  ========  ======  ==========================================
``x``, ``y``, ``z``     FLOAT32   0/4/8   position in the map frame [m]
``rgb``                 FLOAT32   12      colour packed as 0x00RRGGBB (PCL convention)
``instance``            UINT32    16      map instance id (0 = none)
``semantic``            UINT32    20      vocabulary label id (0 = none)
``confidence``          FLOAT32   24      confidence of the instance label in [0, 1]
======================  ========  ======  ==========================================

``~/query_cloud`` and the cloud of a ``query_points`` answer (point_step 20): ``x``, ``y``,
``z`` FLOAT32 at 0/4/8, ``relevance`` FLOAT32 at 12 (in [0, 1]), ``instance`` UINT32 at 16.

:func:`read_points` reads any PointCloud2 the way ``sensor_msgs_py.point_cloud2.read_points``
does (a numpy structured array with one named field per PointField, honouring offsets,
point_step, row_step and endianness); ``sensor_msgs_py`` is not installable from PyPI, so
this reader stands in for it (the tests check both agree where it exists).
"""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField

from panoptic_mapping.core.io.export import LabeledCloud

__all__ = ["LABELED_CLOUD_FIELDS", "POINT_STEP", "pack_rgb", "unpack_rgb",
           "labeled_cloud_to_msg", "RELEVANCE_CLOUD_FIELDS", "relevance_cloud_to_msg",
           "read_points", "msg_to_labeled_cloud", "subsample"]

# PointField datatype -> numpy type (sensor_msgs_py's mapping)
_DATATYPES = {
    PointField.INT8: np.int8, PointField.UINT8: np.uint8, PointField.INT16: np.int16,
    PointField.UINT16: np.uint16, PointField.INT32: np.int32, PointField.UINT32: np.uint32,
    PointField.FLOAT32: np.float32, PointField.FLOAT64: np.float64,
}

LABELED_CLOUD_FIELDS = (
    ("x", 0, PointField.FLOAT32), ("y", 4, PointField.FLOAT32), ("z", 8, PointField.FLOAT32),
    ("rgb", 12, PointField.FLOAT32), ("instance", 16, PointField.UINT32),
    ("semantic", 20, PointField.UINT32), ("confidence", 24, PointField.FLOAT32),
)
POINT_STEP = 28
_DTYPE = np.dtype({"names": [n for n, _, _ in LABELED_CLOUD_FIELDS],
                   "formats": ["<f4", "<f4", "<f4", "<f4", "<u4", "<u4", "<f4"],
                   "offsets": [o for _, o, _ in LABELED_CLOUD_FIELDS],
                   "itemsize": POINT_STEP})


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 colours -> (N,) float32 whose bits are 0x00RRGGBB."""
    c = np.asarray(rgb, dtype=np.uint32).reshape(-1, 3)
    packed = (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]
    return packed.astype("<u4").view("<f4")


def unpack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(N,) float32 packed colours -> (N, 3) uint8."""
    bits = np.ascontiguousarray(rgb, dtype="<f4").view("<u4")
    return np.stack([(bits >> 16) & 0xFF, (bits >> 8) & 0xFF, bits & 0xFF], 1).astype(np.uint8)


def subsample(cloud: LabeledCloud, max_points: int) -> LabeledCloud:
    """At most ``max_points`` points, evenly spread over the cloud (0 = all)."""
    n = len(cloud)
    if max_points <= 0 or n <= max_points:
        return cloud
    keep = np.linspace(0, n - 1, max_points).round().astype(np.int64)
    return LabeledCloud(cloud.xyz[keep], cloud.rgb[keep], cloud.instance[keep],
                        cloud.semantic[keep], cloud.confidence[keep])


def labeled_cloud_to_msg(cloud: LabeledCloud, header=None) -> PointCloud2:
    """A PointCloud2 (layout above) of a :class:`LabeledCloud`."""
    n = len(cloud)
    data = np.zeros(n, dtype=_DTYPE)
    data["x"], data["y"], data["z"] = cloud.xyz[:, 0], cloud.xyz[:, 1], cloud.xyz[:, 2]
    data["rgb"] = pack_rgb(cloud.rgb)
    data["instance"] = cloud.instance
    data["semantic"] = cloud.semantic
    data["confidence"] = cloud.confidence
    return _points_msg(data, LABELED_CLOUD_FIELDS, header)


def _points_msg(data: np.ndarray, fields, header=None) -> PointCloud2:
    """An unorganised, dense, little-endian PointCloud2 of a structured array (N,) whose
    layout ``fields`` ((name, offset, datatype), ...) describes."""
    msg = PointCloud2()
    if header is not None:
        msg.header = header
    msg.height, msg.width = 1, len(data)
    msg.fields = [PointField(name=name, offset=offset, datatype=dt, count=1)
                  for name, offset, dt in fields]
    msg.is_bigendian = False
    msg.point_step = data.dtype.itemsize
    msg.row_step = msg.point_step * len(data)
    msg.is_dense = True
    msg.data = data.tobytes()
    return msg


RELEVANCE_CLOUD_FIELDS = (
    ("x", 0, PointField.FLOAT32), ("y", 4, PointField.FLOAT32), ("z", 8, PointField.FLOAT32),
    ("relevance", 12, PointField.FLOAT32), ("instance", 16, PointField.UINT32),
)
_RELEVANCE_DTYPE = np.dtype({"names": [n for n, _, _ in RELEVANCE_CLOUD_FIELDS],
                             "formats": ["<f4", "<f4", "<f4", "<f4", "<u4"],
                             "offsets": [o for _, o, _ in RELEVANCE_CLOUD_FIELDS],
                             "itemsize": 20})


def relevance_cloud_to_msg(xyz: np.ndarray, relevance: np.ndarray, instance: np.ndarray,
                           header=None) -> PointCloud2:
    """A PointCloud2 of points (N, 3) with their relevance (N,) and instance ids (N,)."""
    n = len(relevance)
    data = np.zeros(n, dtype=_RELEVANCE_DTYPE)
    xyz = np.asarray(xyz).reshape(n, 3)
    data["x"], data["y"], data["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    data["relevance"] = relevance
    data["instance"] = instance
    return _points_msg(data, RELEVANCE_CLOUD_FIELDS, header)


def _dtype_of(msg: PointCloud2, field_names=None) -> np.dtype:
    order = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for f in msg.fields:
        if field_names is not None and f.name not in field_names:
            continue
        if f.datatype not in _DATATYPES:
            raise ValueError(f"PointField '{f.name}' has unknown datatype {f.datatype}")
        base = np.dtype(_DATATYPES[f.datatype]).newbyteorder(order)
        names.append(f.name)
        formats.append(base if f.count <= 1 else (base, f.count))
        offsets.append(f.offset)
    if field_names is not None:
        missing = [n for n in field_names if n not in names]
        if missing:
            raise ValueError(f"fields {missing} are not in the cloud "
                             f"({[f.name for f in msg.fields]})")
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": msg.point_step})


def read_points(msg: PointCloud2, field_names=None, skip_nans: bool = False) -> np.ndarray:
    """(N,) structured array of the cloud's points (sensor_msgs_py's ``read_points``).

    Args:
        field_names: the fields to read (default all), in the cloud's field order.
        skip_nans: drop points whose x, y or z is NaN.
    """
    dtype = _dtype_of(msg, field_names)
    raw = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if len(raw) < msg.row_step * msg.height:
        raise ValueError(f"cloud data too short: {len(raw)} bytes for {msg.height} rows of "
                         f"{msg.row_step} bytes")
    used = msg.width * msg.point_step
    rows = raw[:msg.row_step * msg.height].reshape(msg.height, msg.row_step)[:, :used]
    points = np.ascontiguousarray(rows).reshape(-1).view(dtype)
    if skip_nans:
        keep = np.ones(len(points), bool)
        for axis in ("x", "y", "z"):
            if axis in points.dtype.names:
                keep &= ~np.isnan(points[axis])
        points = points[keep]
    return points


def msg_to_labeled_cloud(msg: PointCloud2) -> LabeledCloud:
    """The :class:`LabeledCloud` of a ``~/labeled_cloud`` message."""
    p = read_points(msg, ["x", "y", "z", "rgb", "instance", "semantic", "confidence"])
    xyz = np.stack([p["x"], p["y"], p["z"]], 1)
    return LabeledCloud(xyz, unpack_rgb(p["rgb"]), p["instance"], p["semantic"],
                        p["confidence"])
