"""Tiny synthetic posed RGB-D sequences written in the public layouts the importers read
(TUM RGB-D, 7-Scenes-style frame-NNNNNN files, ScanNet export), for test_importers.py and
test_scene_dir.py. Nothing of any public dataset: three boxes before a wall, rendered with
helpers.render_boxes by a camera sliding sideways (OpenCV axes, no rotation)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from helpers import render_boxes

W, H = 64, 48
K = np.array([[40.0, 0.0, 31.5], [0.0, 40.0, 23.5], [0.0, 0.0, 1.0]])
BOXES = [(-0.45, -0.15, -0.2, 0.25, 1.2), (0.05, 0.3, -0.3, 0.1, 1.6),
         (0.4, 0.8, 0.0, 0.4, 2.0)]  # x0, x1, y0, y1, z (m), nearest first
WALL_Z = 2.5
COLOURS = np.array([[200, 200, 190], [220, 60, 50], [50, 160, 70], [60, 80, 210]], np.uint8)


@dataclass
class SyntheticFrame:
    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32 m
    labels: np.ndarray  # (H, W) int32: 1 = wall, 2.. = boxes
    camera_to_world: np.ndarray  # (4, 4)


def frames(n: int = 8, shape: tuple[int, int] = (H, W), K_: np.ndarray = K
           ) -> list[SyntheticFrame]:
    """n views of the boxes, the camera sliding from x = -0.2 to x = 0.2 m."""
    out = []
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    texture = ((xx // 4 + yy // 4) % 2 * 12).astype(np.int16)[..., None]
    for tx in np.linspace(-0.2, 0.2, n):
        depth, which = render_boxes(K_, shape, float(tx), BOXES, WALL_Z)
        labels = (which + 2).astype(np.int32)
        rgb = np.clip(COLOURS[which + 1].astype(np.int16) + texture, 0, 255).astype(np.uint8)
        pose = np.eye(4)
        pose[0, 3] = tx
        out.append(SyntheticFrame(rgb, depth, labels, pose))
    return out


def _png16(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(values, np.uint16)).save(path)


def _rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=95) if path.suffix == ".jpg" else \
        Image.fromarray(rgb).save(path)


def quaternion_xyzw(R: np.ndarray) -> np.ndarray:
    """(x, y, z, w) of a rotation (trace > -1)."""
    w = np.sqrt(max(1.0 + np.trace(R), 1e-12)) / 2
    return np.array([(R[2, 1] - R[1, 2]) / (4 * w), (R[0, 2] - R[2, 0]) / (4 * w),
                     (R[1, 0] - R[0, 1]) / (4 * w), w])


def write_tum(root: Path, seq: list[SyntheticFrame], *, t0: float = 1305031102.175304,
              dt: float = 1 / 30, depth_offset: float = 0.004, drop_depth: int | None = None,
              gap_in_poses: int | None = None) -> list[float]:
    """A TUM RGB-D sequence folder; returns the colour stamps.

    Depth stamps lag by depth_offset; drop_depth: that frame has no depth image at all;
    gap_in_poses: no ground-truth pose near that frame's stamp. Ground truth runs at
    100 Hz (translation linear in time between frames, as the frames' x)."""
    stamps = [t0 + i * dt for i in range(len(seq))]
    rgb_lines, depth_lines = ["# color images", "# timestamp filename"], ["# depth maps"]
    for i, (t, f) in enumerate(zip(stamps, seq)):
        _rgb(root / "rgb" / f"{t:.6f}.png", f.rgb)
        rgb_lines.append(f"{t:.6f} rgb/{t:.6f}.png")
        if i != drop_depth:
            td = t + depth_offset
            _png16(root / "depth" / f"{td:.6f}.png", np.round(f.depth * 5000))
            depth_lines.append(f"{td:.6f} depth/{td:.6f}.png")
    gt = ["# ground truth trajectory", "# timestamp tx ty tz qx qy qz qw"]
    xs = [f.camera_to_world[0, 3] for f in seq]
    for t in np.arange(stamps[0] - 0.02, stamps[-1] + 0.02, 0.01):
        if gap_in_poses is not None and abs(t - stamps[gap_in_poses]) < 0.035:
            continue
        x = float(np.interp(t, stamps, xs))
        q = quaternion_xyzw(seq[0].camera_to_world[:3, :3])
        gt.append(f"{t:.4f} {x:.6f} 0.0 0.0 {q[0]:.6f} {q[1]:.6f} {q[2]:.6f} {q[3]:.6f}")
    (root / "rgb.txt").write_text("\n".join(rgb_lines) + "\n")
    (root / "depth.txt").write_text("\n".join(depth_lines) + "\n")
    (root / "groundtruth.txt").write_text("\n".join(gt) + "\n")
    return stamps


def write_7scenes(root: Path, seq: list[SyntheticFrame], *, intrinsics: np.ndarray | None = K,
                  bad_pose: int | None = None, colour_ext: str = "png") -> None:
    """frame-NNNNNN.{color.png,depth.png,pose.txt} (+ camera-intrinsics.txt in the parent:
    a 3DMatch-style scene folder with one sequence); depth in mm with 65535 = invalid in the
    top-left pixel; bad_pose: that frame's pose is NaN."""
    root.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(seq):
        _rgb(root / f"frame-{i:06d}.color.{colour_ext}", f.rgb)
        mm = np.round(f.depth * 1000)
        mm[0, 0] = 65535
        _png16(root / f"frame-{i:06d}.depth.png", mm)
        pose = np.full((4, 4), np.nan) if i == bad_pose else f.camera_to_world
        np.savetxt(root / f"frame-{i:06d}.pose.txt", pose, fmt="%.8e")
    if intrinsics is not None:
        np.savetxt(root.parent / "camera-intrinsics.txt", intrinsics, fmt="%.6f")


def write_scannet(root: Path, seq: list[SyntheticFrame], colour: list[np.ndarray],
                  K_colour: np.ndarray, *, inf_pose: int | None = None) -> None:
    """A ScanNet export: color/N.jpg (the given, larger images), depth/N.png (mm),
    pose/N.txt (inf_pose: that frame's pose is -inf, as ScanNet writes lost tracking),
    intrinsic/intrinsic_{color,depth}.txt (4x4)."""
    for i, (f, c) in enumerate(zip(seq, colour)):
        _rgb(root / "color" / f"{i}.jpg", c)
        _png16(root / "depth" / f"{i}.png", np.round(f.depth * 1000))
        (root / "pose").mkdir(parents=True, exist_ok=True)
        pose = np.full((4, 4), -np.inf) if i == inf_pose else f.camera_to_world
        np.savetxt(root / "pose" / f"{i}.txt", pose, fmt="%f")
    (root / "intrinsic").mkdir(parents=True, exist_ok=True)
    for name, k in (("intrinsic_color.txt", K_colour), ("intrinsic_depth.txt", K)):
        m = np.eye(4)
        m[:3, :3] = k
        np.savetxt(root / "intrinsic" / name, m, fmt="%f")


def write_masks(root: Path, label_images: list[np.ndarray], *, embeddings: int | None = None,
                novel: list[np.ndarray] = (), bits: int = 16) -> None:
    """NNNNNN.png per image (novel/ for the held-out ones); embeddings=D adds (M, D) float32
    rows, one direction per mask id (so ids mean the same thing in every frame)."""
    rng = np.random.default_rng(0)
    table = rng.standard_normal((64, embeddings or 1)).astype(np.float32)
    for sub, images in (("", label_images), ("novel", novel)):
        for i, labels in enumerate(images):
            path = root / sub / f"{i:06d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(labels.astype(np.uint16 if bits == 16 else np.uint8)).save(path)
            if embeddings:
                np.save(path.with_suffix(".npy"), table[:int(labels.max())])
