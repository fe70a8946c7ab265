"""Import posed RGB-D sequences from common public layouts into the benchmark's scene folder
(the format :func:`panoptic_mapping.bench.scenes.load_scene` reads), without ground truth.

    python -m panoptic_mapping.bench.importers FORMAT SRC DST [--max-frames N] [--stride K]
        [--width W] [--holdout-every M] [--camera NAME | --intrinsics FX,FY,CX,CY] ...

Formats (``FORMAT``):

* ``tum`` - TUM RGB-D (``rgb.txt``, ``depth.txt``, ``groundtruth.txt``, ``rgb/``,
  ``depth/``). Each colour image is paired with the depth image nearest in time and the
  ground-truth pose nearest in time, each within ``--tolerance`` seconds (default 0.02;
  depth pairs are one-to-one, greedily by time difference, as TUM's ``associate.py``
  does); unmatched colour images are skipped and counted. Depth: 16-bit PNG, 5000 units
  per metre, 0 = missing. The pose (``tx ty tz qx qy qz qw``) is the colour camera's
  optical frame in the world. Intrinsics: ``--camera fr1|fr2|fr3`` (TUM's calibrated
  colour cameras) or ``tum`` (the default 525 / 319.5 / 239.5 of the registered depth);
  picked from a ``freiburg1/2/3`` in the folder name when not given, else ``tum``. TUM
  ships raw images: with camera fr1 or fr2 the scene records that camera's published
  lens distortion (``--lens none`` leaves it out), and the benchmark's mapper undistorts
  the frames as the node does with camera_info's ``d``.
* ``7scenes`` - the ``frame-NNNNNN.color.{png,jpg}``, ``frame-NNNNNN.depth.png`` (16-bit,
  millimetres; 0 and 65535 = missing) and ``frame-NNNNNN.pose.txt`` (4x4 camera-to-world)
  layout of 7-Scenes, 3DMatch and several public samples. Intrinsics: ``--intrinsics``,
  else ``--camera`` (``7scenes``: 585 / 320 / 240, 7-Scenes' nominal values), else
  ``camera-intrinsics.txt`` (a 3x3 matrix) in SRC or its parent; none of them is an
  error. The intrinsics are those of the depth image; a colour image of another size is
  resized to it. (7-Scenes' colour and depth come from two unregistered cameras; they are
  paired as they are.) Frame N gets the stamp N / ``--fps`` (default 30).
* ``scannet`` - a ScanNet export (``color/N.jpg``, ``depth/N.png`` 16-bit mm,
  ``pose/N.txt`` 4x4 camera-to-world, ``intrinsic/intrinsic_depth.txt`` and
  ``intrinsic_color.txt``, 4x4). Colour is resized to the depth resolution; the
  intrinsics are ``intrinsic_depth.txt`` (``--scannet-intrinsics depth``, the default:
  the geometry comes from the depth image) or ``intrinsic_color.txt`` scaled to the depth
  resolution (``color``). ScanNet marks lost tracking with ``-inf`` poses: those frames
  are skipped and counted.

Common steps: frames are listed in order, every ``--stride``-th is taken, frames whose pose
is missing, not finite or not rigid (rotation off by more than 1e-2; rigid ones are
re-orthonormalised) are skipped and counted, at most ``--max-frames`` are imported. Every
``--holdout-every``-th imported frame (positions M-1, 2M-1, ...; default 8, 0 = none)
becomes a held-out view (``novel/``) instead of a training frame. ``--width`` downscales
to a working width: colour by area averaging, depth by nearest neighbour (no mixed depths
at edges), intrinsics scaled with pixel centres kept (``c' = (c + 0.5) s - 0.5``,
``f' = f s``). Stamps are seconds since the first imported frame. The scene carries no
ground truth; ``scene.json``'s ``config["import"]`` records the source, the options and
the counts.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from panoptic_mapping.bench.lens import NAMED_LENSES, parse_lens
from panoptic_mapping.bench.scenes import FORMAT_VERSION, _save_frame
from panoptic_mapping.bench.types import SceneFrame
from panoptic_mapping.core.geometry import quaternion_to_rotation

__all__ = ["FORMATS", "CAMERAS", "ImportOptions", "ImportReport", "SequenceImportError",
           "import_sequence", "import_tum", "import_7scenes", "import_scannet",
           "associate", "validate_pose", "scale_intrinsics", "resize_rgbd", "main"]

FORMATS = ("tum", "7scenes", "scannet")

#: Named pinhole cameras (fx, fy, cx, cy) at 640x480.
CAMERAS: dict[str, tuple[float, float, float, float]] = {
    "tum": (525.0, 525.0, 319.5, 239.5),  # TUM's default for the registered depth
    "fr1": (517.3, 516.5, 318.6, 255.3),  # TUM freiburg1 colour camera
    "fr2": (520.9, 521.0, 325.1, 249.7),  # TUM freiburg2 colour camera
    "fr3": (535.4, 539.2, 320.1, 247.6),  # TUM freiburg3 colour camera (undistorted)
    "7scenes": (585.0, 585.0, 320.0, 240.0),  # 7-Scenes' nominal Kinect values
}
CAMERA_SIZE = (640, 480)  # (width, height) the named cameras are given for

# Depth units per metre of each layout.
DEPTH_SCALE = {"tum": 5000.0, "7scenes": 1000.0, "scannet": 1000.0}
_INVALID_DEPTH = 65535  # 7-Scenes' "no measurement"
_RIGID_TOL = 1e-2


class SequenceImportError(ValueError):
    """A source folder that cannot be imported, with the reason."""


@dataclass
class ImportOptions:
    """How to import (see the module docstring).

    Attributes:
        max_frames: import at most this many frames (training + held-out); None = all.
        stride: take every stride-th frame of the source.
        width: working width in pixels (downscale; height keeps the aspect); None = native.
        holdout_every: every holdout_every-th imported frame is a held-out view; 0 = none.
        camera: a name of :data:`CAMERAS` (intrinsics at 640x480, scaled to the native size).
        intrinsics: (fx, fy, cx, cy) at the native resolution; overrides everything.
        tolerance: TUM: largest time difference [s] of a colour/depth or colour/pose pair.
        depth_scale: depth units per metre; None = the layout's (TUM 5000, else 1000).
        fps: frame rate of layouts without time stamps (7scenes, scannet).
        scannet_intrinsics: "depth" or "color" (see the module docstring).
        lens: the lens distortion the images carry, recorded in scene.json for the
            benchmark to undistort: a name of ``bench.lens.NAMED_LENSES``,
            ``MODEL:c1,c2,...`` or "none"; None = the camera's own (TUM fr1, fr2).
    """

    max_frames: int | None = None
    stride: int = 1
    width: int | None = None
    holdout_every: int = 8
    camera: str | None = None
    intrinsics: tuple[float, float, float, float] | None = None
    tolerance: float = 0.02
    depth_scale: float | None = None
    fps: float = 30.0
    scannet_intrinsics: str = "depth"
    lens: str | None = None

    def check(self) -> None:
        if self.max_frames is not None and self.max_frames < 1:
            raise SequenceImportError(f"--max-frames must be >= 1, got {self.max_frames}")
        if self.stride < 1:
            raise SequenceImportError(f"--stride must be >= 1, got {self.stride}")
        if self.width is not None and self.width < 8:
            raise SequenceImportError(f"--width must be >= 8, got {self.width}")
        if self.holdout_every < 0 or self.holdout_every == 1:
            raise SequenceImportError("--holdout-every must be 0 (none) or >= 2")
        if self.camera is not None and self.camera not in CAMERAS:
            raise SequenceImportError(f"unknown camera {self.camera!r}; known: {', '.join(CAMERAS)}")
        if self.intrinsics is not None:
            fx, fy, _, _ = self.intrinsics
            if not np.isfinite(self.intrinsics).all() or fx <= 0 or fy <= 0:
                raise SequenceImportError(f"--intrinsics need finite fx, fy > 0: {self.intrinsics}")
        if self.tolerance <= 0 or self.fps <= 0:
            raise SequenceImportError("--tolerance and --fps must be > 0")
        if self.depth_scale is not None and self.depth_scale <= 0:
            raise SequenceImportError("--depth-scale must be > 0")
        if self.scannet_intrinsics not in ("depth", "color"):
            raise SequenceImportError("--scannet-intrinsics must be 'depth' or 'color'")
        if self.lens not in (None, "none"):
            try:
                parse_lens(self.lens)
            except ValueError as exc:
                raise SequenceImportError(str(exc)) from None


@dataclass
class ImportReport:
    """What an import did (also written to scene.json's ``config["import"]``)."""

    format: str
    source: str
    destination: str
    frames: int = 0  # training frames written
    novel_frames: int = 0  # held-out views written
    candidates: int = 0  # source frames after association and stride
    skipped_invalid_pose: int = 0  # not finite or not rigid (e.g. ScanNet's -inf)
    skipped_missing: int = 0  # a colour or depth image or a pose file missing
    unmatched_depth: int = 0  # TUM: no depth image within the tolerance
    unmatched_pose: int = 0  # TUM: no ground-truth pose within the tolerance
    width: int = 0
    height: int = 0
    native_width: int = 0
    native_height: int = 0
    K: list = field(default_factory=list)  # (3, 3) of the written images
    intrinsics_source: str = ""
    camera: str = ""  # the named camera the intrinsics came from, if any
    lens: dict | None = None  # {"model", "coefficients"} the images carry, or None
    depth_scale: float = 0.0
    options: dict = field(default_factory=dict)

    def summary(self) -> str:
        skipped = (f"skipped {self.skipped_invalid_pose} with invalid poses, "
                   f"{self.skipped_missing} with missing files")
        if self.format == "tum":
            skipped += (f", {self.unmatched_depth} without depth and {self.unmatched_pose} "
                        f"without a pose within the tolerance")
        return (f"imported {self.frames} training frames + {self.novel_frames} held-out views "
                f"({self.width}x{self.height}, from {self.native_width}x{self.native_height}) "
                f"of {self.candidates} candidates from {self.format} {self.source} into "
                f"{self.destination}; {skipped}; intrinsics: {self.intrinsics_source}")


@dataclass
class _Candidate:
    """One source frame before it is read: files, stamp and a way to get its pose."""

    name: str
    stamp: float
    color: Path
    depth: Path | None
    pose: Callable[[], np.ndarray | None]  # None: missing


# ----------------------------------------------------------------------------- geometry


def validate_pose(T: np.ndarray | None, tol: float = _RIGID_TOL) -> np.ndarray | None:
    """A camera-to-world (4, 4) made exactly rigid, or None if it is not a valid pose.

    Valid: finite, last row (0, 0, 0, 1) within ``tol``, rotation with |R R^T - I| and
    |det R - 1| within ``tol``; the rotation is then re-orthonormalised (SVD) so that text
    files with few decimals pass the mapper's strict check.
    """
    if T is None:
        return None
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        return None
    R = T[:3, :3]
    if (np.abs(R @ R.T - np.eye(3)).max() > tol or abs(np.linalg.det(R) - 1.0) > tol
            or np.abs(T[3] - (0.0, 0.0, 0.0, 1.0)).max() > tol):
        return None
    u, _, vt = np.linalg.svd(R)
    out = np.eye(4)
    out[:3, :3] = u @ vt
    out[:3, 3] = T[:3, 3]
    return out


def scale_intrinsics(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """K of an image resized by (sx, sy), pixel centres at integer coordinates:
    f' = f s and c' = (c + 0.5) s - 0.5."""
    K = np.asarray(K, dtype=np.float64).copy()
    K[0, 0] *= sx
    K[1, 1] *= sy
    K[0, 1] *= sx
    K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return K


def _nearest_indices(n_out: int, n_in: int) -> np.ndarray:
    """Source index of each output pixel centre when n_in pixels become n_out."""
    return np.clip(np.floor((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64),
                   0, n_in - 1)


def resize_rgbd(rgb: np.ndarray, depth: np.ndarray | None, size: tuple[int, int]
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize colour (area averaging when shrinking, bilinear otherwise) and depth (nearest
    neighbour) to ``size`` = (width, height)."""
    w, h = size
    if rgb.shape[1] != w or rgb.shape[0] != h:
        shrink = w <= rgb.shape[1] and h <= rgb.shape[0]
        rgb = np.asarray(Image.fromarray(rgb).resize(
            (w, h), Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR))
    if depth is not None and (depth.shape[1] != w or depth.shape[0] != h):
        depth = depth[np.ix_(_nearest_indices(h, depth.shape[0]),
                             _nearest_indices(w, depth.shape[1]))]
    return rgb, depth


# ----------------------------------------------------------------------------- files


def _read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except OSError as exc:
        raise SequenceImportError(f"{path}: cannot read the colour image ({exc})") from exc


def _read_depth(path: Path, units_per_m: float, invalid: int | None = None) -> np.ndarray:
    """(H, W) float32 metres of a 16-bit depth PNG; 0 (and ``invalid``) = missing."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("I;16", "I;16B", "I;16L", "I"):
                raise SequenceImportError(f"{path}: depth must be a 16-bit single-channel PNG, "
                                   f"got mode {im.mode}")
            raw = np.asarray(im).astype(np.int64)
    except OSError as exc:
        raise SequenceImportError(f"{path}: cannot read the depth image ({exc})") from exc
    if raw.ndim != 2:
        raise SequenceImportError(f"{path}: depth must be single-channel, got shape {raw.shape}")
    bad = raw <= 0
    if invalid is not None:
        bad |= raw == invalid
    depth = (raw / units_per_m).astype(np.float32)
    depth[bad] = 0.0
    return depth


def _read_matrix(path: Path) -> np.ndarray | None:
    """A whitespace-separated matrix text file (``-inf``/``nan`` allowed), None if absent."""
    if not path.is_file():
        return None
    try:
        return np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError:
        return np.full((4, 4), np.nan)  # unparsable: counted as an invalid pose


def _read_list(path: Path) -> list[tuple[float, list[str]]]:
    """TUM list file: ``stamp field...`` per line, ``#`` comments."""
    if not path.is_file():
        raise SequenceImportError(f"{path} is missing (not a TUM RGB-D sequence folder?)")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        try:
            rows.append((float(parts[0]), parts[1:]))
        except ValueError as exc:
            raise SequenceImportError(f"{path}:{n}: cannot parse {line!r}") from exc
    return rows


def associate(first: Sequence[float], second: Sequence[float], tolerance: float
              ) -> dict[int, int]:
    """One-to-one association of two stamp lists, greedily by time difference (as TUM's
    ``associate.py``): {index in first: index in second}, pairs within ``tolerance``."""
    a = np.asarray(first, dtype=np.float64)
    b = np.asarray(second, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        return {}
    order = np.argsort(b)
    bs = b[order]
    pairs = []
    lo = np.searchsorted(bs, a - tolerance, side="left")
    hi = np.searchsorted(bs, a + tolerance, side="right")
    for i, (l, h) in enumerate(zip(lo, hi)):
        for j in range(l, h):
            d = abs(a[i] - bs[j])
            if d <= tolerance:
                pairs.append((d, i, int(order[j])))
    pairs.sort()
    out: dict[int, int] = {}
    used: set[int] = set()
    for _, i, j in pairs:
        if i not in out and j not in used:
            out[i] = j
            used.add(j)
    return out


def _nearest(stamps: np.ndarray, t: float, tolerance: float) -> int | None:
    """Index of the stamp (sorted array) nearest ``t`` within ``tolerance``, or None."""
    if stamps.size == 0:
        return None
    i = int(np.searchsorted(stamps, t))
    best = min((j for j in (i - 1, i) if 0 <= j < stamps.size), key=lambda j: abs(stamps[j] - t))
    return best if abs(stamps[best] - t) <= tolerance else None


def _named_K(name: str, width: int, height: int) -> np.ndarray:
    fx, fy, cx, cy = CAMERAS[name]
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    if (width, height) != CAMERA_SIZE:
        K = scale_intrinsics(K, width / CAMERA_SIZE[0], height / CAMERA_SIZE[1])
    return K


def _given_K(opts: ImportOptions) -> np.ndarray | None:
    if opts.intrinsics is None:
        return None
    fx, fy, cx, cy = opts.intrinsics
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


# ----------------------------------------------------------------------------- layouts


def _tum(src: Path, opts: ImportOptions, report: ImportReport
         ) -> tuple[list[_Candidate], Callable[[int, int], tuple[np.ndarray, str]]]:
    rgb = _read_list(src / "rgb.txt")
    depth = _read_list(src / "depth.txt")
    gt = _read_list(src / "groundtruth.txt")
    gt_stamps = np.array([t for t, _ in gt])
    order = np.argsort(gt_stamps, kind="stable")
    gt_stamps, gt = gt_stamps[order], [gt[i] for i in order]
    pairs = associate([t for t, _ in rgb], [t for t, _ in depth], opts.tolerance)
    cands = []
    for i, (t, fields) in enumerate(rgb):
        if i not in pairs:
            report.unmatched_depth += 1
            continue
        g = _nearest(gt_stamps, t, opts.tolerance)
        if g is None:
            report.unmatched_pose += 1
            continue
        values = gt[g][1]

        def pose(values=values) -> np.ndarray | None:
            try:
                v = np.array([float(x) for x in values[:7]])
                if v.size != 7:
                    return np.full((4, 4), np.nan)
                T = np.eye(4)
                T[:3, :3] = quaternion_to_rotation(v[3:7])
                T[:3, 3] = v[:3]
                return T
            except ValueError:
                return np.full((4, 4), np.nan)

        cands.append(_Candidate(fields[0], t, src / fields[0], src / depth[pairs[i]][1][0],
                                pose))

    def intrinsics(width: int, height: int) -> tuple[np.ndarray, str]:
        if opts.intrinsics is not None:
            return _given_K(opts), "given (--intrinsics)"
        if opts.camera is not None:
            report.camera = opts.camera
            return _named_K(opts.camera, width, height), f"camera {opts.camera} (--camera)"
        m = re.search(r"(?:freiburg|fr)([123])", src.resolve().name)
        name = f"fr{m.group(1)}" if m else "tum"
        how = "from the folder name" if m else "TUM default; pass --camera fr1|fr2|fr3"
        report.camera = name
        return _named_K(name, width, height), f"camera {name} ({how})"

    return cands, intrinsics


_FRAME_RE = re.compile(r"^frame-(\d+)\.color\.(png|jpg|jpeg)$", re.IGNORECASE)


def _7scenes(src: Path, opts: ImportOptions, report: ImportReport
             ) -> tuple[list[_Candidate], Callable[[int, int], tuple[np.ndarray, str]]]:
    found = sorted((int(m.group(1)), p) for p in src.iterdir()
                   if p.is_file() and (m := _FRAME_RE.match(p.name)))
    if not found:
        subs = sorted(p.name for p in src.iterdir() if p.is_dir()
                      and any(_FRAME_RE.match(q.name) for q in p.iterdir()))
        hint = f"; pass one sequence folder, e.g. {src / subs[0]}" if subs else ""
        raise SequenceImportError(f"{src}: no frame-NNNNNN.color.png/jpg files{hint}")
    cands = []
    for n, color in found:
        stem = color.name.split(".")[0]
        depth = src / f"{stem}.depth.png"
        pose_path = src / f"{stem}.pose.txt"
        cands.append(_Candidate(stem, n / opts.fps, color,
                                depth if depth.is_file() else None,
                                lambda p=pose_path: _read_matrix(p)))

    def intrinsics(width: int, height: int) -> tuple[np.ndarray, str]:
        if opts.intrinsics is not None:
            return _given_K(opts), "given (--intrinsics)"
        if opts.camera is not None:
            return _named_K(opts.camera, width, height), f"camera {opts.camera} (--camera)"
        for folder in (src, src.parent):
            path = folder / "camera-intrinsics.txt"
            if path.is_file():
                K = _read_matrix(path)
                if K is None or K.shape[0] < 3 or K.shape[1] < 3 or not np.isfinite(K).all():
                    raise SequenceImportError(f"{path}: expected a 3x3 matrix")
                return K[:3, :3], str(path)
        raise SequenceImportError(f"{src}: no camera-intrinsics.txt here or in the parent folder; "
                           "pass --intrinsics FX,FY,CX,CY or --camera 7scenes "
                           f"({', '.join(str(v) for v in CAMERAS['7scenes'])} at 640x480)")

    return cands, intrinsics


def _scannet(src: Path, opts: ImportOptions, report: ImportReport
             ) -> tuple[list[_Candidate], Callable[[int, int], tuple[np.ndarray, str]]]:
    if not (src / "color").is_dir():
        raise SequenceImportError(f"{src}: no color/ folder (not a ScanNet export?)")
    found = sorted((int(p.stem), p) for p in (src / "color").iterdir()
                   if p.is_file() and p.stem.isdigit()
                   and p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not found:
        raise SequenceImportError(f"{src / 'color'}: no N.jpg colour images")
    cands = []
    for n, color in found:
        depth = src / "depth" / f"{n}.png"
        cands.append(_Candidate(str(n), n / opts.fps, color, depth if depth.is_file() else None,
                                lambda p=src / "pose" / f"{n}.txt": _read_matrix(p)))

    def intrinsics(width: int, height: int) -> tuple[np.ndarray, str]:
        """K at the depth resolution (width, height)."""
        if opts.intrinsics is not None:
            return _given_K(opts), "given (--intrinsics)"
        if opts.camera is not None:
            return _named_K(opts.camera, width, height), f"camera {opts.camera} (--camera)"
        name = "intrinsic_depth.txt" if opts.scannet_intrinsics == "depth" else \
            "intrinsic_color.txt"
        path = src / "intrinsic" / name
        K = _read_matrix(path)
        if K is None or K.shape[0] < 3 or K.shape[1] < 3 or not np.isfinite(K[:3, :3]).all():
            raise SequenceImportError(f"{path} is missing or not a 4x4/3x3 matrix; pass "
                               "--intrinsics FX,FY,CX,CY")
        K = K[:3, :3]
        if opts.scannet_intrinsics == "color":
            cw, ch = _image_size(found[0][1])
            K = scale_intrinsics(K, width / cw, height / ch)
            return K, f"{path} scaled from {cw}x{ch} to {width}x{height}"
        return K, str(path)

    return cands, intrinsics


def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


_LAYOUTS = {"tum": _tum, "7scenes": _7scenes, "scannet": _scannet}


# ----------------------------------------------------------------------------- driver


def import_sequence(fmt: str, src: str | Path, dst: str | Path,
                    options: ImportOptions | None = None, *, overwrite: bool = False
                    ) -> ImportReport:
    """Import the sequence in ``src`` (layout ``fmt``) into the scene folder ``dst``.

    Raises:
        SequenceImportError: an unknown format, a folder that does not fit the layout, bad
            options, unreadable images, no frame with a valid pose, or ``dst`` not empty
            (unless ``overwrite``: then its scene.json, frames/ and novel/ are replaced).
    """
    opts = options or ImportOptions()
    opts.check()
    if fmt not in _LAYOUTS:
        raise SequenceImportError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise SequenceImportError(f"{src} is not a folder")
    if dst.exists() and any(dst.iterdir()):
        if not overwrite:
            raise SequenceImportError(f"{dst} exists and is not empty (pass --overwrite to replace "
                               "its scene)")
        for name in ("frames", "novel"):
            shutil.rmtree(dst / name, ignore_errors=True)
        (dst / "scene.json").unlink(missing_ok=True)
    units = opts.depth_scale or DEPTH_SCALE[fmt]
    report = ImportReport(format=fmt, source=str(src), destination=str(dst),
                          depth_scale=units, options=asdict(opts))
    candidates, intrinsics = _LAYOUTS[fmt](src, opts, report)
    candidates = candidates[::opts.stride]
    report.candidates = len(candidates)
    invalid = _INVALID_DEPTH if fmt == "7scenes" else None

    frames: list[dict] = []
    novel: list[dict] = []
    K_out = size = None
    t0 = None
    for cand in candidates:
        if opts.max_frames is not None and len(frames) + len(novel) >= opts.max_frames:
            break
        raw_pose = cand.pose()
        if (raw_pose is None or cand.depth is None or not cand.depth.is_file()
                or not cand.color.is_file()):
            report.skipped_missing += 1
            continue
        pose = validate_pose(raw_pose)
        if pose is None:
            report.skipped_invalid_pose += 1
            continue
        rgb = _read_rgb(cand.color)
        depth = _read_depth(cand.depth, units, invalid)
        dh, dw = depth.shape
        if K_out is None:  # the first frame fixes the sizes and the intrinsics
            K_native, report.intrinsics_source = intrinsics(dw, dh)
            report.native_width, report.native_height = dw, dh
            if opts.width is not None and opts.width > dw:
                raise SequenceImportError(f"--width {opts.width} is larger than the native width {dw}"
                                   " (only downscaling is supported)")
            w = opts.width or dw
            h = max(1, int(round(dh * w / dw)))
            size = (w, h)
            K_out = scale_intrinsics(K_native, w / dw, h / dh) if (w, h) != (dw, dh) \
                else np.asarray(K_native, dtype=np.float64)
        elif (dw, dh) != (report.native_width, report.native_height):
            raise SequenceImportError(f"{cand.depth}: {dw}x{dh}, the first depth image was "
                               f"{report.native_width}x{report.native_height}")
        rgb, _ = resize_rgbd(rgb, None, (dw, dh))  # colour at the depth resolution
        rgb, depth = resize_rgbd(rgb, depth, size)
        t0 = cand.stamp if t0 is None else t0
        position = len(frames) + len(novel)
        held_out = opts.holdout_every and position % opts.holdout_every == \
            opts.holdout_every - 1
        target = novel if held_out else frames
        frame = SceneFrame(index=len(target), rgb=np.ascontiguousarray(rgb), depth=depth,
                           instance=None, semantic=None, K=K_out, camera_to_world=pose,
                           stamp=float(cand.stamp - t0))
        target.append(_save_frame(frame, len(target), dst, "novel" if held_out else "frames"))
    if not frames:
        raise SequenceImportError(f"{src}: no frame could be imported ({report.candidates} "
                           f"candidates, {report.skipped_invalid_pose} with invalid poses, "
                           f"{report.skipped_missing} with missing files)")
    report.frames, report.novel_frames = len(frames), len(novel)
    report.width, report.height = size
    report.K = np.asarray(K_out).tolist()
    report.lens = _recorded_lens(opts, report.camera)
    meta = {
        # the parent too: sequences often sit in folders named seq-01 or data
        "format_version": FORMAT_VERSION,
        "name": f"{fmt}-{src.resolve().parent.name}-{src.resolve().name}",
        "classes": ["void"], "thing_classes": [], "instance_class": {},
        "config": {"width": size[0], "height": size[1], "num_frames": len(frames),
                   "num_novel_frames": len(novel), "ground_truth": False,
                   **({"lens": report.lens} if report.lens else {}),
                   "import": asdict(report)},
        "frames": frames, "novel_frames": novel,
    }
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "scene.json").write_text(json.dumps(meta, indent=1))
    return report


def _recorded_lens(opts: ImportOptions, camera: str) -> dict | None:
    """The lens distortion to record (normalised coordinates: any resolution), or None."""
    if opts.lens == "none":
        return None
    name = opts.lens or (camera if camera in NAMED_LENSES else None)
    if name is None:
        return None
    lens = parse_lens(name)
    return {"model": lens.model, "coefficients": list(lens.coefficients)}


def import_tum(src, dst, options: ImportOptions | None = None, **kw) -> ImportReport:
    """:func:`import_sequence` of a TUM RGB-D sequence folder."""
    return import_sequence("tum", src, dst, options, **kw)


def import_7scenes(src, dst, options: ImportOptions | None = None, **kw) -> ImportReport:
    """:func:`import_sequence` of a ``frame-NNNNNN.*`` (7-Scenes / 3DMatch) folder."""
    return import_sequence("7scenes", src, dst, options, **kw)


def import_scannet(src, dst, options: ImportOptions | None = None, **kw) -> ImportReport:
    """:func:`import_sequence` of a ScanNet export folder."""
    return import_sequence("scannet", src, dst, options, **kw)


# ----------------------------------------------------------------------------- CLI


def _floats4(text: str) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"expected FX,FY,CX,CY, got {text!r}")
    return values  # type: ignore[return-value]


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, ImportOptions]:
    d = ImportOptions()
    p = argparse.ArgumentParser(
        prog="python -m panoptic_mapping.bench.importers",
        description="Import a posed RGB-D sequence (TUM RGB-D, 7-Scenes-style frame-NNNNNN "
                    "files, ScanNet export) into a benchmark scene folder without ground "
                    "truth.")
    p.add_argument("format", choices=FORMATS)
    p.add_argument("src", type=Path, help="the sequence folder")
    p.add_argument("dst", type=Path, help="the scene folder to write")
    p.add_argument("--max-frames", type=int, default=None, metavar="N",
                   help="import at most N frames (training + held-out)")
    p.add_argument("--stride", type=int, default=d.stride, metavar="K",
                   help="take every K-th source frame (default 1)")
    p.add_argument("--width", type=int, default=None, metavar="W",
                   help="downscale to this width (intrinsics scaled; default: native)")
    p.add_argument("--holdout-every", type=int, default=d.holdout_every, metavar="M",
                   help=f"every M-th imported frame is a held-out view (default "
                        f"{d.holdout_every}; 0 = none)")
    p.add_argument("--camera", choices=tuple(CAMERAS), default=None,
                   help="named intrinsics (given at 640x480, scaled to the native size)")
    p.add_argument("--intrinsics", type=_floats4, default=None, metavar="FX,FY,CX,CY",
                   help="pinhole intrinsics at the native depth resolution (overrides all)")
    p.add_argument("--tolerance", type=float, default=d.tolerance,
                   help="TUM: largest colour/depth and colour/pose time difference [s]")
    p.add_argument("--depth-scale", type=float, default=None,
                   help="depth units per metre (default: TUM 5000, otherwise 1000)")
    p.add_argument("--fps", type=float, default=d.fps,
                   help="frame rate of layouts without stamps (default 30)")
    p.add_argument("--scannet-intrinsics", choices=("depth", "color"),
                   default=d.scannet_intrinsics)
    p.add_argument("--lens", default=None, metavar="NAME|MODEL:C1,...|none",
                   help="the lens distortion the images carry, recorded for the benchmark "
                        f"to undistort ({', '.join(NAMED_LENSES)}, or e.g. "
                        "plumb_bob:0.1,-0.2,0,0,0); default: TUM fr1/fr2's own; none: no lens")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the scene already in DST")
    a = p.parse_args(argv)
    opts = ImportOptions(max_frames=a.max_frames, stride=a.stride, width=a.width,
                         holdout_every=a.holdout_every, camera=a.camera,
                         intrinsics=a.intrinsics, tolerance=a.tolerance,
                         depth_scale=a.depth_scale, fps=a.fps,
                         scannet_intrinsics=a.scannet_intrinsics, lens=a.lens)
    return a, opts


def main(argv: list[str] | None = None) -> int:
    args, opts = parse_args(argv)
    try:
        report = import_sequence(args.format, args.src, args.dst, opts,
                                 overwrite=args.overwrite)
    except SequenceImportError as exc:
        print(f"importers: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
