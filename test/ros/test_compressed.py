"""sensor_msgs/CompressedImage decoding: worked examples of both image_transport wire
formats, round trips through the encoders, and every refusal with its reason."""
from __future__ import annotations

import io
import struct

import numpy as np
import pytest

from conftest import require_interfaces

pytestmark = pytest.mark.ros
require_interfaces()

from PIL import Image as PILImage  # noqa: E402
from sensor_msgs.msg import CompressedImage  # noqa: E402

from panoptic_mapping.ros.compressed import (  # noqa: E402
    color_codec,
    compressed_to_depth,
    compressed_to_rgb,
    decode_color,
    decode_depth,
    depth_format,
    depth_to_compressed,
    max_payload_bytes,
    rgb_to_compressed,
)
from panoptic_mapping.ros.conversions import InputError, numpy_to_image  # noqa: E402

MAX = 2_500_000


def smooth_rgb(h: int = 48, w: int = 64) -> np.ndarray:
    """Gradients (what a camera sees more than noise; JPEG's error stays small)."""
    y, x = np.mgrid[:h, :w]
    return np.stack([4 * x, 5 * y, 2 * (x + y)], -1).clip(0, 255).astype(np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def compressed_depth(fmt: str, q: np.ndarray, a: float = 0.0, b: float = 0.0,
                     kind: int = 0) -> CompressedImage:
    """A compressedDepth message built by hand: the 12-byte header, then the PNG."""
    return CompressedImage(format=fmt, data=struct.pack("<iff", kind, a, b) + png_bytes(q))


# ----------------------------------------------------------------------- colour


@pytest.mark.parametrize("fmt", ["rgb8; png compressed bgr8", "bgr8; png compressed bgr8",
                                 "png", "PNG", ""])
def test_png_colour_is_exact_whatever_the_format_string_says(fmt):
    rgb = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    msg = rgb_to_compressed(rgb, "png")
    assert msg.format == "rgb8; png compressed bgr8"  # compressed_image_transport's form
    msg.format = fmt  # the stream holds true colours; an empty format: from the signature
    np.testing.assert_array_equal(compressed_to_rgb(msg, MAX), rgb)
    np.testing.assert_array_equal(decode_color(msg, MAX), rgb)


def test_mono_png_and_jpeg_become_grey_rgb():
    grey = smooth_rgb()[..., 1]
    msg = rgb_to_compressed(grey, "png")
    assert msg.format == "mono8; png compressed mono8"
    out = compressed_to_rgb(msg, MAX)
    assert out.shape == (48, 64, 3) and (out == grey[..., None]).all()
    out = compressed_to_rgb(rgb_to_compressed(grey, "jpeg", quality=95), MAX)
    assert np.abs(out[..., 0].astype(int) - grey).mean() < 2


@pytest.mark.parametrize("fmt", ["rgb8; jpeg compressed bgr8", "jpeg", "jpg", ""])
def test_jpeg_colour_is_close(fmt):
    rgb = smooth_rgb()
    msg = rgb_to_compressed(rgb, "jpeg", quality=90)
    msg.format = fmt
    out = compressed_to_rgb(msg, MAX)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    err = np.abs(out.astype(int) - rgb)
    assert err.mean() < 3 and err.max() < 40, (err.mean(), err.max())


def test_colour_format_strings():
    assert color_codec("rgb8; jpeg compressed bgr8") == "jpeg"
    assert color_codec("mono8; png compressed mono8") == "png"
    assert color_codec("", b"\xff\xd8\xff\xe0") == "jpeg"
    for fmt, reason in [
            ("tiff", "unsupported CompressedImage format 'tiff'"),
            ("rgb8; tiff compressed bgr8", "unsupported CompressedImage format 'rgb8; tiff"),
            ("h264", "unsupported CompressedImage format 'h264'"),
            ("16UC1; png compressed mono16", "holds a '16UC1' image; colour must be 8-bit"),
            ("rgb16; png compressed bgr16", "holds a 'rgb16' image"),
            ("16UC1; compressedDepth png", "is the compressedDepth (depth) transport")]:
        with pytest.raises(InputError, match=reason.replace("(", r"\(").replace(")", r"\)")):
            color_codec(fmt)
    with pytest.raises(InputError, match="empty format and its data is neither JPEG nor PNG"):
        color_codec("", b"GIF89a")


def test_corrupt_colour_is_refused_with_the_reason():
    rgb = smooth_rgb()
    jpeg, png = rgb_to_compressed(rgb, "jpeg"), rgb_to_compressed(rgb, "png")
    data = bytes(png.data)

    def refused(fmt, payload, reason):
        with pytest.raises(InputError, match=reason):
            compressed_to_rgb(CompressedImage(format=fmt, data=payload), MAX)

    refused("jpeg", bytes(range(64)), r"the format says jpeg but the data starts with "
                                      r"00 01 02 .*not the JPEG signature")
    refused("rgb8; jpeg compressed bgr8", data,
            r"format says jpeg but the data starts with 89 50 4e 47 .*\(a PNG stream\)")
    refused("jpeg", bytes(jpeg.data)[:300], r"corrupt JPEG header \(Truncated File Read\)")
    refused("jpeg", bytes(jpeg.data)[:-200], r"corrupt JPEG data \(image file is truncated")
    refused("png", data[:40], "corrupt PNG")
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF  # inside the compressed pixels: zlib's check fails
    refused("png", bytes(flipped), "corrupt PNG data")
    refused("png", data[:8] + b"\x00" * 64, "corrupt PNG header")
    refused("png", b"", "data starts with nothing")
    refused("png", png_bytes(np.zeros((4, 4), np.uint16)), r"pixel mode 'I;16'.*not an 8-bit")


def test_size_is_checked_from_the_header_before_any_pixel_is_decoded(monkeypatch):
    # a 2000x2000 PNG of zeros is a few kB; decoded it would be 12 MB
    bomb = CompressedImage(format="png", data=png_bytes(np.zeros((2000, 2000, 3), np.uint8)))
    assert len(bomb.data) < 50_000
    depth = compressed_depth("16UC1; compressedDepth png", np.zeros((2000, 2000), np.uint16))

    def no_decoding(self):
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(PILImage.Image, "load", no_decoding)
    from PIL import ImageFile
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(InputError, match=r"compressed image is 2000x2000 = 4000000 pixels, "
                                         r"more than input.max_image_pixels \(1000000\)"):
        compressed_to_rgb(bomb, 1_000_000)
    with pytest.raises(InputError, match=r"compressed depth is 2000x2000 = 4000000 pixels"):
        compressed_to_depth(depth, 1_000_000)


def test_implausibly_large_payload_is_refused_unread():
    assert max_payload_bytes(100, 3) == 600 + 65536
    msg = CompressedImage(format="jpeg", data=b"\xff\xd8\xff" + bytes(70_000))
    with pytest.raises(InputError, match=r"compressed image is 70003 bytes, more than twice "
                                         r"the largest raw image .*refused before decoding"):
        compressed_to_rgb(msg, 100)
    msg = CompressedImage(format="16UC1; compressedDepth png", data=bytes(70_000))
    with pytest.raises(InputError, match=r"compressed depth is 70000 bytes"):
        compressed_to_depth(msg, 100)


# ----------------------------------------------------------------------- depth


def test_compressed_depth_16uc1_worked_example_and_round_trip():
    # by hand: header (format 0, unused quantisation numbers), then the millimetres as PNG
    mm = np.array([[0, 1], [1000, 65535]], np.uint16)
    depth = compressed_to_depth(compressed_depth("16UC1; compressedDepth png", mm), MAX)
    np.testing.assert_array_equal(depth, np.float32([[0, 0.001], [1.0, 65.535]]))
    assert depth.dtype == np.float32
    # older publishers: no codec named; mono16 is 16-bit depth as well
    for fmt in ("16UC1; compressedDepth", "mono16; compressedDepth png"):
        np.testing.assert_array_equal(compressed_to_depth(compressed_depth(fmt, mm), MAX),
                                      depth)
    # the encoder: exact up to depth_max (farther becomes 0, as the publisher does)
    rng = np.random.default_rng(1)
    mm = rng.integers(0, 10_001, (30, 40)).astype(np.uint16)
    msg = depth_to_compressed(mm, "16UC1")
    assert msg.format == "16UC1; compressedDepth png"
    assert struct.unpack_from("<iff", bytes(msg.data)) == (0, 0.0, 0.0)
    np.testing.assert_array_equal(compressed_to_depth(msg, MAX),
                                  mm.astype(np.float32) * np.float32(0.001))
    far = depth_to_compressed(np.uint16([[9999, 10000, 10001, 20000]]), "16UC1")
    np.testing.assert_array_equal(compressed_to_depth(far, MAX),
                                  np.float32([[9999, 10000, 0, 0]]) * np.float32(0.001))
    np.testing.assert_array_equal(decode_depth(msg, MAX), compressed_to_depth(msg, MAX))


def test_compressed_depth_32fc1_worked_example():
    # the publisher's defaults: depth_quantization z0 = 100, depth_max = 10 m
    # A = z0 (z0 + 1) = 10100, B = 1 - A / 10 = -1009; d = A / (q - B); q = 0: unknown
    a, b = 10100.0, -1009.0
    q = np.array([[0, 1], [9091, 65535]], np.uint16)
    depth = compressed_to_depth(compressed_depth("32FC1; compressedDepth png", q, a, b), MAX)
    np.testing.assert_allclose(depth, [[0.0, 10.0], [1.0, a / (65535 - b)]], rtol=1e-6)
    # the encoder writes that header and q = trunc(A / d + B)
    msg = depth_to_compressed(np.float32([[1.0, 2.0, 10.0, 0.1]]), "32FC1")
    fmt, qa, qb = struct.unpack_from("<iff", bytes(msg.data))
    assert (msg.format, fmt, qa, qb) == ("32FC1; compressedDepth png", 0, a, b)
    q = np.asarray(PILImage.open(io.BytesIO(bytes(msg.data)[12:])))
    # 10 m is depth_max (not below it): unknown; 0.1 m is nearer than A / (65535 - B)
    np.testing.assert_array_equal(q, [[9091, 4041, 0, 0]])


def test_compressed_depth_32fc1_error_stays_within_the_quantisation_bound():
    rng = np.random.default_rng(2)
    d = rng.uniform(0.16, 9.99, (60, 80)).astype(np.float32)
    d[0, :6] = [0.0, np.nan, np.inf, -1.0, 10.0, 0.1]  # unknown, out of range: 0
    for z0, depth_max in ((100.0, 10.0), (50.0, 5.0)):
        a, b = z0 * (z0 + 1), 1 - z0 * (z0 + 1) / depth_max
        out = compressed_to_depth(depth_to_compressed(d, "32FC1", depth_max=depth_max,
                                                      depth_quantization=z0), MAX)
        with np.errstate(divide="ignore", invalid="ignore"):
            valid = np.isfinite(d) & (d > 0) & (d < depth_max)
            ok = valid & (a / d + b < 65535)  # nearer: no uint16 holds it
        assert not ok[0, :5].any()
        assert (out[~ok] == 0).all() and (out[ok] > 0).all()
        err = out[ok] - d[ok]
        bound = d[ok] ** 2 / (a - d[ok])  # truncation: the decoded depth is never nearer
        assert (err >= -1e-6 * d[ok]).all() and (err <= bound + 1e-6 * d[ok]).all()
        assert err.max() > 0.3 * bound.max()  # the bound is tight, not vacuous


def test_depth_format_strings():
    assert depth_format("16UC1; compressedDepth png") == "16UC1"
    assert depth_format("32FC1; compressedDepth") == "32FC1"
    for fmt, reason in [
            ("16UC1; compressedDepth rvl", r"codec 'rvl' in format '16UC1; compressedDepth "
                                           r"rvl' is not supported \(png only"),
            ("rgb8; jpeg compressed bgr8", "is not a compressedDepth format"),
            ("png", "'png' is not a compressedDepth format"),
            ("8UC1; compressedDepth png", "has depth encoding '8UC1'")]:
        with pytest.raises(InputError, match=reason):
            depth_format(fmt)


def test_corrupt_compressed_depth_is_refused_with_the_reason():
    q = np.full((4, 5), 9091, np.uint16)
    good = compressed_depth("32FC1; compressedDepth png", q, 10100.0, -1009.0)
    data = bytes(good.data)

    def refused(payload, reason, fmt="32FC1; compressedDepth png"):
        with pytest.raises(InputError, match=reason):
            compressed_to_depth(CompressedImage(format=fmt, data=payload), MAX)

    refused(data[:12], "12 bytes: no room for the 12-byte compressedDepth header")
    refused(struct.pack("<iff", -1, 1.0, 0.0) + data[12:], "compression format -1")
    refused(struct.pack("<iff", 0, float("nan"), 0.0) + data[12:],
            "unusable quantisation parameters depthQuantA=nan")
    refused(struct.pack("<iff", 0, 0.0, 0.0) + data[12:], "depthQuantA=0.0")
    refused(data[:12] + b"\xff\xd8\xff" + data[15:], "format says png but the data starts "
                                                     "with ff d8 ff")
    refused(data[:60], "corrupt PNG")
    refused(data[12:], "the data starts with a PNG, not with the 12-byte compressedDepth "
                       "header")
    refused(struct.pack("<iff", 0, 0, 0) + png_bytes(np.zeros((4, 5), np.uint8)),
            "pixel mode 'L'; compressedDepth 16UC1 needs a 16-bit grey PNG",
            fmt="16UC1; compressedDepth png")


def test_raw_images_keep_their_checks_and_depth_is_size_checked_too():
    rgb = smooth_rgb(6, 8)
    np.testing.assert_array_equal(decode_color(numpy_to_image(rgb, "rgb8"), MAX), rgb)
    with pytest.raises(InputError, match=r"image is 8x6 = 48 pixels, more than"):
        decode_color(numpy_to_image(rgb, "rgb8"), 47)
    depth = numpy_to_image(np.ones((6, 8), np.float32), "32FC1")
    assert decode_depth(depth, MAX).shape == (6, 8)
    with pytest.raises(InputError, match=r"depth is 8x6 = 48 pixels, more than"):
        decode_depth(depth, 47)
