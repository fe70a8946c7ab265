"""Property-based fuzzing (hypothesis) of everything a robot's world hands the node:
message conversion, camera models, poses, masks, localize requests, frame validation.
Every generated input is converted or refused with the module's own error and a reason,
never an escaped exception of another kind."""
from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import require_interfaces

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed "
                                 "(`make setup` installs it)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytestmark = pytest.mark.ros
require_interfaces()

from geometry_msgs.msg import Pose  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402

from panoptic_mapping.core.frames import Frame, FrameError, validate_frame  # noqa: E402
from panoptic_mapping.ros.compressed import decode_color, decode_depth  # noqa: E402
from panoptic_mapping.ros.conversions import (  # noqa: E402
    InputError,
    camera_info_to_intrinsics,
    camera_info_to_lens,
    pose_to_matrix,
)
from panoptic_mapping.ros.masks import msg_to_masks  # noqa: E402
from panoptic_mapping.ros.requests import decode_localize_request  # noqa: E402
from panoptic_mapping_interfaces.msg import Masks  # noqa: E402
from panoptic_mapping_interfaces.srv import LocalizeInstances  # noqa: E402

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
ENCODINGS = ["rgb8", "bgr8", "mono8", "16UC1", "32FC1", "32SC1", "rgba8", "bayer_rggb8", "",
             "yuv422"]
floats = st.floats(allow_nan=True, allow_infinity=True, width=64)


@st.composite
def images(draw, max_side: int = 12) -> Image:
    """Images whose header and data may or may not agree."""
    w, h = draw(st.integers(0, max_side)), draw(st.integers(0, max_side))
    enc = draw(st.sampled_from(ENCODINGS))
    bpp = {"rgb8": 3, "bgr8": 3, "mono8": 1, "16UC1": 2, "32FC1": 4, "32SC1": 4}.get(enc, 2)
    step = max(0, w * bpp + draw(st.integers(-3, 5)))
    size = max(0, step * h + draw(st.integers(-8, 8)))
    data = draw(st.binary(min_size=size, max_size=size))
    return Image(width=w, height=h, encoding=enc, step=step, data=data,
                 is_bigendian=draw(st.integers(0, 1)))


@st.composite
def camera_infos(draw) -> CameraInfo:
    msg = CameraInfo(width=draw(st.integers(0, 5000)), height=draw(st.integers(0, 5000)))
    k = [draw(floats) for _ in range(9)]
    if draw(st.booleans()):  # near a real camera half of the time
        fx = draw(st.floats(1e-6, 1e9))
        k = [fx, 0.0, draw(st.floats(-1e6, 1e6)), 0.0, fx, draw(st.floats(-1e6, 1e6)),
             0.0, 0.0, draw(st.sampled_from([1.0, 0.0, 2.0]))]
    msg.k = k
    return msg


def _refused_or_fine(call, error=InputError):
    try:
        return call()
    except error as exc:
        assert str(exc), "a refusal must say why"
        return None


@FUZZ
@given(images())
def test_any_image_decodes_or_is_refused_with_a_reason(msg):
    for decode in (decode_color, decode_depth):
        out = _refused_or_fine(lambda: decode(msg, 10_000))
        if out is not None:
            assert out.shape[:2] == (msg.height, msg.width)
            if decode is decode_depth:
                assert np.isfinite(out).all() and (out >= 0).all()


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8",
                                                 "16UC1; compressedDepth png", "", "tiff"]))
def test_any_compressed_payload_decodes_or_is_refused(data, fmt):
    msg = CompressedImage(format=fmt, data=data)
    _refused_or_fine(lambda: decode_color(msg, 10_000))
    _refused_or_fine(lambda: decode_depth(msg, 10_000))


@FUZZ
@given(camera_infos())
def test_any_camera_info_gives_a_plausible_camera_or_a_reason(msg):
    out = _refused_or_fine(lambda: camera_info_to_intrinsics(msg))
    if out is not None:
        K, w, h = out
        assert np.isfinite(K).all() and K[0, 0] > 0 and K[1, 1] > 0
        # the principal point within the image widened by half its size on each side
        # (check_intrinsics' margin: a cropped or shifted sensor still maps)
        assert -0.5 * w <= K[0, 2] <= 1.5 * w and -0.5 * h <= K[1, 2] <= 1.5 * h


@FUZZ
@given(camera_infos(), st.sampled_from(["plumb_bob", "rational_polynomial", "equidistant",
                                        "fisheye", ""]),
       st.lists(st.one_of(floats, st.floats(-0.5, 0.5)), max_size=9))
def test_any_distortion_is_a_lens_or_a_reason(msg, model, d):
    msg.distortion_model, msg.d = model, d
    out = _refused_or_fine(lambda: camera_info_to_intrinsics(msg, "undistort"))
    if out is None:
        return
    lens = _refused_or_fine(lambda: camera_info_to_lens(msg, out[0], "undistort"))
    if lens is not None:  # a lens that inverts over the whole image, as the maps need
        assert np.isfinite(lens.coefficients).all() and not lens.is_identity


@FUZZ
@given(st.lists(floats, min_size=7, max_size=7))
def test_any_pose_is_rigid_or_refused(v):
    pose = Pose()
    p, q = pose.position, pose.orientation
    p.x, p.y, p.z, q.x, q.y, q.z, q.w = v
    T = _refused_or_fine(lambda: pose_to_matrix(pose))
    if T is not None:
        R = T[:3, :3]
        assert np.isfinite(T).all()
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-6)
        assert math.isclose(np.linalg.det(R), 1.0, abs_tol=1e-6)


@FUZZ
@given(images(max_side=6), st.lists(floats, max_size=6), st.integers(0, 4),
       st.lists(floats, max_size=30))
def test_any_masks_message_is_unpacked_or_refused(labels, scores, dim, emb):
    msg = Masks(labels=labels, scores=[float(np.float32(s)) if math.isfinite(s) and abs(s) < 1e30
                                       else s for s in scores],
                embedding_dim=dim)
    msg.embeddings = [float(np.float32(e)) if math.isfinite(e) and abs(e) < 1e30 else e
                      for e in emb]
    out = _refused_or_fine(lambda: msg_to_masks(msg, (labels.height, labels.width)))
    if out is not None and out.labels is not None:
        assert out.labels.shape == (labels.height, labels.width)
        assert 0 < out.labels.max() <= out.count


@FUZZ
@given(images(max_side=8), images(max_side=8), camera_infos(),
       st.lists(floats, min_size=7, max_size=7), st.sampled_from(["map", "", "odom"]))
def test_any_localize_request_is_decoded_or_refused(image, depth, info, pose, frame):
    req = LocalizeInstances.Request(image=image, camera_info=info, depth=depth)
    req.camera_pose.header.frame_id = frame
    p, q = req.camera_pose.pose.position, req.camera_pose.pose.orientation
    p.x, p.y, p.z, q.x, q.y, q.z, q.w = pose
    _refused_or_fine(lambda: decode_localize_request(req, "map", 10_000))


@FUZZ
@given(st.integers(0, 8), st.integers(0, 8), st.sampled_from([np.uint8, np.float32, np.int64]),
       st.lists(floats, min_size=9, max_size=9), st.lists(floats, min_size=16, max_size=16),
       st.booleans(), st.booleans(), st.floats(allow_nan=True, allow_infinity=True))
def test_any_frame_is_valid_or_refused(h, w, dtype, k, pose, with_depth, with_masks, stamp):
    rng = np.random.default_rng(h * 31 + w)
    frame = Frame(rgb=(rng.random((h, w, 3)) * 255).astype(dtype),
                  K=np.array(k).reshape(3, 3), camera_to_world=np.array(pose).reshape(4, 4),
                  stamp=stamp,
                  depth=rng.random((h, w)).astype(np.float32) if with_depth else None,
                  masks=rng.integers(0, 3, (h, w)) if with_masks else None)
    out = _refused_or_fine(lambda: validate_frame(frame), FrameError)
    if out is not None:
        assert out.rgb.dtype == np.uint8 and np.isfinite(out.camera_to_world).all()
