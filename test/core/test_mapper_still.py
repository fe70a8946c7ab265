"""A camera standing still: its frames show the map nothing new, so only one in
``still_keep_every`` is mapped (a still camera keeps watching for changes)."""
from __future__ import annotations

import numpy as np

from helpers import make_frame
from panoptic_mapping.core.geometry import pose_matrix
from panoptic_mapping.core.mapper import Mapper, MapperConfig

K = np.array([[40.0, 0, 16], [0, 40.0, 12], [0, 0, 1]])


def at(x: float, yaw_deg: float = 0.0) -> np.ndarray:
    half = np.radians(yaw_deg) / 2
    return pose_matrix([x, 0.0, 0.0], [0.0, np.sin(half), 0.0, np.cos(half)])


def ingest(mapper: Mapper, pose: np.ndarray) -> bool:
    masks = np.ones((24, 32), np.int32)
    return mapper.ingest(make_frame(K, (24, 32), camera_to_world=pose, masks=masks,
                                    mask_scores=np.ones(1, np.float32))).skipped


def test_still_frames_are_skipped_but_one_in_keep_every_is_mapped():
    m = Mapper(MapperConfig(device="cpu", still_keep_every=3))
    skipped = [ingest(m, at(0.001 * k)) for k in range(7)]  # 1 mm a frame: still
    # the first is mapped; then of each run of still frames every 3rd
    assert skipped == [False, True, True, False, True, True, False]
    st = m.stats()
    assert st["frames"] == 7 and st["frames_skipped_still"] == 4
    assert m.instances.frames_integrated == 3
    assert not ingest(m, at(0.05))  # moved 5 cm: mapped
    assert not ingest(m, at(0.05, yaw_deg=2.0))  # turned 2 degrees: mapped
    assert ingest(m, at(0.0502, yaw_deg=2.1))  # still again


def test_every_frame_is_mapped_with_keep_every_one():
    m = Mapper(MapperConfig(device="cpu", still_keep_every=1))
    assert not any(ingest(m, at(0.0)) for _ in range(4))
    assert m.stats()["frames_skipped_still"] == 0
