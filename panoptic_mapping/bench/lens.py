"""Scenes seen through a distorting lens (``--lens``): what a raw camera image looks like.

The rendered scenes are pinhole images. :func:`distort_scene` turns every view (colour,
depth and the ground truth) into the raw image a lens with the given distortion would
have taken with the same intrinsics, so the benchmark can measure what ignoring
``camera_info.d`` costs and what undistorting (``Frame.lens``) recovers. Colour is
resampled bilinearly, depth and labels at the nearest pixel; raw pixels whose ray leaves
the rendered view get nothing (black, no depth, void).
"""
from __future__ import annotations

import dataclasses

from panoptic_mapping.bench.types import Scene, SceneFrame
from panoptic_mapping.core.lens import LensDistortion, check_lens, undistortion_for

__all__ = ["NAMED_LENSES", "parse_lens", "distort_scene", "scene_lens"]

#: Published colour-camera calibrations (ROS plumb_bob order k1, k2, p1, p2, k3): the TUM
#: RGB-D benchmark's freiburg1 and freiburg2 Kinects, whose raw images it ships.
NAMED_LENSES: dict[str, tuple[str, tuple[float, ...]]] = {
    "fr1": ("plumb_bob", (0.2624, -0.9531, -0.0054, 0.0026, 1.1633)),
    "fr2": ("plumb_bob", (0.2312, -0.7849, -0.0033, -0.0001, 0.9172)),
}


def parse_lens(text: str) -> LensDistortion:
    """A lens from a name of :data:`NAMED_LENSES` or ``MODEL:c1,c2,...``; raises
    ValueError with the reason."""
    if text in NAMED_LENSES:
        model, coefficients = NAMED_LENSES[text]
    else:
        model, _, values = text.partition(":")
        try:
            coefficients = tuple(float(v) for v in values.split(",") if v.strip())
        except ValueError:
            raise ValueError(f"--lens {text!r}: expected a name ({', '.join(NAMED_LENSES)}) "
                             "or MODEL:c1,c2,...") from None
    lens = check_lens(model, coefficients)
    if lens is None:
        raise ValueError(f"--lens {text!r} has no distortion")
    return lens


def _distorted(frame: SceneFrame, lens: LensDistortion) -> SceneFrame:
    u = undistortion_for(frame.K, lens, frame.rgb.shape[:2], grow=False)
    return dataclasses.replace(
        frame, rgb=u.image_to_raw(frame.rgb), depth=u.to_raw(frame.depth),
        instance=None if frame.instance is None else u.to_raw(frame.instance),
        semantic=None if frame.semantic is None else u.to_raw(frame.semantic))


def distort_scene(scene: Scene, lens: LensDistortion) -> Scene:
    """The scene with every view as the lens's raw image (same intrinsics and poses)."""
    for frame in (scene.frames[0], *scene.novel_frames[:1]):
        h, w = frame.rgb.shape[:2]
        check_lens(lens.model, lens.coefficients, w, h, frame.K)
    return dataclasses.replace(scene, frames=[_distorted(f, lens) for f in scene.frames],
                               novel_frames=[_distorted(f, lens) for f in scene.novel_frames])


def scene_lens(scene: Scene) -> LensDistortion | None:
    """The lens distortion a recorded scene's images carry (scene.json's
    ``config["lens"]``, written by the importers for TUM fr1/fr2 or ``--lens``), or None."""
    spec = (scene.config or {}).get("lens")
    if not spec:
        return None
    return check_lens(spec["model"], spec["coefficients"])
