"""Message decoding: encodings, padding, units and every rejection reason."""
from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import require_interfaces
from panoptic_mapping.core.geometry import check_rigid, pose_matrix, quaternion_to_rotation

pytestmark = pytest.mark.ros
require_interfaces()

from geometry_msgs.msg import Pose, Transform  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from panoptic_mapping.ros.conversions import (  # noqa: E402
    InputError,
    camera_info_to_intrinsics,
    camera_info_to_lens,
    image_to_depth,
    image_to_rgb,
    numpy_to_image,
    pose_to_matrix,
    transform_to_matrix,
)
from panoptic_mapping.ros.requests import decode_localize_request  # noqa: E402
from panoptic_mapping_interfaces.srv import LocalizeInstances  # noqa: E402


def test_quaternion_worked_examples():
    # 90 degrees about z: x -> y, y -> -x.
    s = math.sqrt(0.5)
    R = quaternion_to_rotation([0, 0, s, s])
    np.testing.assert_allclose(R @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(R @ [0, 1, 0], [-1, 0, 0], atol=1e-12)
    # a non-unit quaternion is normalised, not rejected
    np.testing.assert_allclose(quaternion_to_rotation([0, 0, 2, 2]), R, atol=1e-12)
    T = pose_matrix([1, 2, 3], [0, 0, 0, 1])
    np.testing.assert_allclose(T @ [0, 0, 0, 1], [1, 2, 3, 1])
    with pytest.raises(ValueError, match="quaternion"):
        quaternion_to_rotation([0, 0, 0, 0])
    with pytest.raises(ValueError, match="NaN"):
        check_rigid(np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="rotation"):
        check_rigid(np.diag([2.0, 1.0, 1.0, 1.0]))


def rgb_image(encoding: str, pixels: np.ndarray, pad: int = 0) -> Image:
    msg = numpy_to_image(pixels, encoding)
    if pad:  # rows padded to a larger step, as some drivers send them
        rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
        msg.data = np.pad(rows, ((0, 0), (0, pad))).tobytes()
        msg.step += pad
    return msg


@pytest.mark.parametrize("pad", [0, 3])
def test_colour_encodings(pad):
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    np.testing.assert_array_equal(image_to_rgb(rgb_image("rgb8", rgb, pad)), rgb)
    np.testing.assert_array_equal(image_to_rgb(rgb_image("bgr8", rgb[..., ::-1], pad)), rgb)
    mono = rgb[..., 0]
    out = image_to_rgb(rgb_image("mono8", mono, pad))
    assert out.shape == (2, 3, 3) and (out == mono[..., None]).all()


def test_depth_units_and_invalid_values():
    mm = np.array([[1000, 0], [2500, 65535]], dtype=np.uint16)
    np.testing.assert_allclose(image_to_depth(numpy_to_image(mm, "16UC1")),
                               [[1.0, 0.0], [2.5, 65.535]], rtol=1e-6)
    m = np.array([[1.5, np.nan], [np.inf, -1.0]], dtype=np.float32)
    np.testing.assert_array_equal(image_to_depth(numpy_to_image(m, "32FC1")),
                                  [[1.5, 0.0], [0.0, 0.0]])


def test_rejections_have_reasons():
    with pytest.raises(InputError, match="unsupported colour encoding 'rgba16'"):
        msg = Image(encoding="rgba16", width=1, height=1, step=8, data=bytes(8))
        image_to_rgb(msg)
    with pytest.raises(InputError, match="unsupported depth encoding 'mono8'"):
        image_to_depth(numpy_to_image(np.zeros((2, 2), np.uint8), "mono8"))
    short = numpy_to_image(np.zeros((4, 4, 3), np.uint8), "rgb8")
    short.data = bytes(10)
    with pytest.raises(InputError, match="too short"):
        image_to_rgb(short)
    with pytest.raises(InputError, match="focal"):
        camera_info_to_intrinsics(CameraInfo(width=4, height=4))
    bad_pose = Pose()
    bad_pose.position.x = float("nan")
    with pytest.raises(InputError, match="pose"):
        pose_to_matrix(bad_pose)


def test_transform_to_matrix():
    t = Transform()
    t.translation.x, t.translation.z = 1.0, -2.0
    t.rotation.z, t.rotation.w = math.sin(math.pi / 4), math.cos(math.pi / 4)  # 90° about z
    T = transform_to_matrix(t)
    np.testing.assert_allclose(T @ [1.0, 0.0, 0.0, 1.0], [1.0, 1.0, -2.0, 1.0], atol=1e-12)
    t.rotation.w = float("inf")
    with pytest.raises(InputError):
        transform_to_matrix(t)
    with pytest.raises(InputError):
        transform_to_matrix(Transform(rotation=type(t.rotation)(w=0.0)))


def valid_request(width: int = 8, height: int = 6) -> LocalizeInstances.Request:
    req = LocalizeInstances.Request()
    req.image = numpy_to_image(np.zeros((height, width, 3), np.uint8), "rgb8")
    req.camera_info.width, req.camera_info.height = width, height
    req.camera_info.k = [5.0, 0.0, width / 2, 0.0, 5.0, height / 2, 0.0, 0.0, 1.0]
    req.camera_pose.header.frame_id = "map"
    req.camera_pose.pose.orientation.w = 1.0
    return req


def test_localize_request_decoding():
    q = decode_localize_request(valid_request(), "map")
    assert q.rgb.shape == (6, 8, 3) and q.depth is None
    np.testing.assert_array_equal(q.camera_to_map, np.eye(4))
    req = valid_request()
    req.camera_pose.header.frame_id = ""
    assert decode_localize_request(req, "map").camera_to_map is None  # tf lookup wanted


@pytest.mark.parametrize("mutate, reason", [
    (lambda r: setattr(r, "camera_info", CameraInfo()), "camera_info is missing"),
    (lambda r: setattr(r.camera_info, "width", 16), "image is 8x6 but camera_info is 16x6"),
    (lambda r: setattr(r.image, "encoding", "yuv422"), "unsupported colour encoding"),
    (lambda r: setattr(r.camera_pose.pose.position, "z", float("nan")), "pose"),
    (lambda r: setattr(r.camera_pose.header, "frame_id", "odom"), "frame 'odom'"),
    (lambda r: setattr(r, "depth", numpy_to_image(np.ones((3, 3), np.float32), "32FC1")),
     "depth is 3x3"),
    (lambda r: setattr(r, "min_confidence", 1.5), "min_confidence"),
])
def test_localize_request_rejections(mutate, reason):
    req = valid_request()
    mutate(req)
    with pytest.raises(InputError, match=reason):
        decode_localize_request(req, "map")


def test_an_oversized_image_is_refused_before_it_is_decoded():
    """A 4096x3072 request must cost nothing: the header decides, the data is never read
    (here it is not even there)."""
    req = valid_request()
    req.image.width, req.image.height = 4096, 3072
    req.camera_info.width, req.camera_info.height = 4096, 3072
    with pytest.raises(InputError, match="4096x3072 = 12582912 pixels, more than "
                                         r"input.max_image_pixels \(2500000\)"):
        decode_localize_request(req, "map", 2_500_000)
    assert decode_localize_request(valid_request(), "map", 48).rgb.shape == (6, 8, 3)
    with pytest.raises(InputError, match="more than"):
        decode_localize_request(valid_request(), "map", 47)


def _distorted_info(model: str = "plumb_bob", d=(0.1, -0.05, 0.0, 0.0, 0.0)) -> CameraInfo:
    info = CameraInfo(width=64, height=48, distortion_model=model, d=list(d))
    info.k = [50.0, 0.0, 31.5, 0.0, 50.0, 23.5, 0.0, 0.0, 1.0]
    info.p = [48.0, 0.0, 30.0, 0.0, 0.0, 48.0, 22.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def test_camera_info_distortion_by_input_lens():
    info = _distorted_info()
    K, _, _ = camera_info_to_intrinsics(info, "undistort")
    lens = camera_info_to_lens(info, K, "undistort")
    assert lens.model == "plumb_bob" and lens.coefficients == (0.1, -0.05, 0.0, 0.0, 0.0)
    assert K[0, 0] == 50.0  # raw images: k describes them
    assert camera_info_to_lens(info, K, "ignore") is None
    K_rect, _, _ = camera_info_to_intrinsics(info, "rectified")
    assert camera_info_to_lens(info, K_rect, "rectified") is None
    np.testing.assert_allclose(K_rect, [[48, 0, 30], [0, 48, 22], [0, 0, 1]])  # p's camera
    info.p = [0.0] * 12  # no rectified camera given: k
    assert camera_info_to_intrinsics(info, "rectified")[0][0, 0] == 50.0
    # a zero d is a pinhole camera whatever the driver calls its model
    assert camera_info_to_lens(_distorted_info("custom", [0.0] * 5), K, "undistort") is None
    with pytest.raises(InputError, match="'custom' is not supported.*input.lens:=rectified"):
        camera_info_to_lens(_distorted_info("custom"), K, "undistort")
    with pytest.raises(InputError, match="does not invert"):
        camera_info_to_lens(_distorted_info(d=(-2.0, 0.0, 0.0, 0.0, 0.0)), K, "undistort")


def test_localize_request_carries_the_lens():
    req = valid_request(64, 48)
    req.camera_info = _distorted_info()
    assert decode_localize_request(req, "map", lens_mode="undistort").lens.coefficients[0] == 0.1
    assert decode_localize_request(req, "map").lens is None  # 'ignore' by default


def test_a_matched_camera_set_brings_its_lens_to_the_frame():
    from panoptic_mapping.ros.camera_input import decode_camera
    info = _distorted_info()
    image = numpy_to_image(np.zeros((48, 64, 3), np.uint8), "rgb8")
    depth = numpy_to_image(np.full((48, 64), 1500, np.uint16), "16UC1")
    rgb, K, d, lens = decode_camera(image, info, depth, 10_000, "undistort")
    assert rgb.shape == (48, 64, 3) and d.shape == (48, 64) and K[0, 0] == 50.0
    assert lens.coefficients[:2] == (0.1, -0.05)
    assert decode_camera(image, info, depth, 10_000, "ignore")[3] is None
    rgb, K, d, lens = decode_camera(image, info, None, 10_000, "rectified")
    assert lens is None and K[0, 0] == 48.0 and d is None
