"""Frames are validated at the door: every rejection names its reason."""
from __future__ import annotations

import numpy as np
import pytest

from panoptic_mapping.core.frames import Frame, FrameError, validate_frame

K = np.array([[40.0, 0, 16], [0, 40.0, 12], [0, 0, 1]])


def good(**overrides) -> Frame:
    fields = dict(rgb=np.zeros((24, 32, 3), np.uint8), K=K, camera_to_world=np.eye(4),
                  stamp=1.0, depth=np.ones((24, 32), np.float32),
                  masks=np.ones((24, 32), np.int32), mask_embeddings=np.ones((1, 8), np.float32),
                  mask_scores=np.ones(1, np.float32))
    fields.update(overrides)
    return Frame(**fields)


def test_a_pose_orthonormal_to_a_real_trackers_precision_is_made_exactly_rigid():
    """A KinectFusion pose's rotation is orthonormal to ~1e-4 (float32 and drift): taken,
    and stored as the nearest proper rotation; one off by 2 % is refused by name."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    T = np.eye(4)
    T[:3, :3] = q + 1.3e-4 * rng.normal(size=(3, 3))
    T[:3, 3] = (1.0, 2.0, 3.0)
    R = validate_frame(good(camera_to_world=T)).camera_to_world[:3, :3]
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-12)
    assert np.abs(R - q).max() < 1e-3
    T[:3, :3] = q * 1.02
    with pytest.raises(FrameError, match="off identity by 0.04"):
        validate_frame(good(camera_to_world=T))


def test_valid_frame_passes_and_is_canonical():
    f = validate_frame(good(masks=np.ones((24, 32), np.uint8)))
    assert f.masks.dtype == np.int32 and f.num_masks == 1 and f.shape == (24, 32)
    assert f.nbytes() > 24 * 32 * 3


@pytest.mark.parametrize("overrides, reason", [
    ({"rgb": np.zeros((24, 32), np.uint8)}, "rgb must be"),
    ({"rgb": np.zeros((24, 32, 3), np.float32)}, "rgb must be"),
    ({"K": np.zeros((3, 3))}, "focal"),
    # camera_info a driver sent after a reset: no lens has these fields of view
    ({"K": np.array([[1e-6, 0, 16], [0, 1e-6, 12], [0, 0, 1]])}, "field of view"),
    ({"K": np.array([[1e9, 0, 16], [0, 1e9, 12], [0, 0, 1]])}, "field of view"),
    ({"K": np.array([[40.0, 0, -1e6], [0, 40.0, 12], [0, 0, 1]])}, "principal point"),
    ({"camera_to_world": np.full((4, 4), np.nan)}, "NaN"),
    ({"camera_to_world": np.diag([1.0, 1.0, 2.0, 1.0])}, "rotation"),
    ({"stamp": float("inf")}, "stamp"),
    ({"depth": np.ones((12, 32), np.float32)}, "depth is"),
    ({"depth": np.full((24, 32), np.nan, np.float32)}, "finite"),
    ({"masks": np.zeros((24, 32), np.int32), "mask_embeddings": None, "mask_scores": None},
     "empty"),
    ({"masks": np.full((24, 32), -1, np.int32)}, ">= 0"),
    ({"mask_embeddings": np.ones((2, 8), np.float32)}, "M = 1"),
    ({"mask_scores": np.ones(3, np.float32)}, "mask_scores"),
    ({"depth_confidence": np.ones((12, 32), np.float32)}, "depth_confidence must be"),
    ({"depth_confidence": np.full((24, 32), 1.5, np.float32)}, r"in \[0, 1\]"),
    ({"depth_confidence": np.full((24, 32), np.nan, np.float32)}, r"in \[0, 1\]"),
    ({"depth": None, "depth_confidence": np.ones((24, 32), np.float32)}, "beside depth"),
])
def test_rejections(overrides, reason):
    with pytest.raises(FrameError, match=reason):
        validate_frame(good(**overrides))
