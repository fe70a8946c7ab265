"""sensor_msgs/CompressedImage: decoding (the node's input) and encoding (tests, replay).

Two wire formats, as ROS 2's image_transport plugins publish them:

* **compressed** (compressed_image_transport; colour): ``data`` is a plain JPEG or PNG
  file; ``format`` is ``"<encoding>; <jpeg|png> compressed <target>"`` (e.g. ``"rgb8;
  jpeg compressed bgr8"``) or, from older publishers and many camera drivers, just
  ``"jpeg"`` / ``"png"``; an empty format is taken from the data's signature. The stream
  holds true colours whatever the target order says; it decodes to RGB uint8. Only 8-bit
  colour is taken (rgb8, bgr8, mono8, rgba8, bgra8).
* **compressedDepth** (compressed_depth_image_transport; depth): ``format`` is
  ``"<16UC1|32FC1>; compressedDepth png"`` (``"...; compressedDepth"`` from older
  publishers); ``data`` is a 12-byte header - int32 compression format (0: the only one
  defined, inverse depth), float32 depthQuantA, float32 depthQuantB, little-endian as on
  every platform that runs ROS 2 - followed by a 16-bit grey PNG. For 16UC1 the PNG holds
  the millimetres (the header's numbers are unused); for 32FC1 it holds the quantised
  inverse depth ``q = uint16(A / d + B)`` (truncated; 0 = no depth), decoded as
  ``d = A / (q - B)``. The publisher's defaults ``depth_quantization`` z0 = 100 and
  ``depth_max`` = 10 m give A = z0 (z0 + 1) = 10100, B = 1 - A / depth_max = -1009: depths
  from 0.152 m to 10 m, with an error below d^2 / (A - d) (0.1 mm at 1 m, 1 cm at 10 m).
  The ``rvl`` codec is refused (png only).

Decoding costs at most what the largest raw image allowed (``input.max_image_pixels``)
costs: a payload larger than twice that raw image is refused before anything is parsed,
and the image's size is read from its header and checked before its pixels are decoded.
Every refusal is an :class:`~panoptic_mapping.ros.conversions.InputError` that names the
problem (format string, signature, header, size, corrupt data). Decoding and its checks
only; depth comes out in metres, 0 where unknown, like
:func:`~panoptic_mapping.ros.conversions.image_to_depth`.
"""
from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage, Image

from panoptic_mapping.ros.conversions import (
    InputError,
    check_image_size,
    image_to_depth,
    image_to_rgb,
)

__all__ = ["COLOR_CODECS", "DEPTH_HEADER_BYTES", "decode_color", "decode_depth",
           "compressed_to_rgb", "compressed_to_depth",
           "rgb_to_compressed", "depth_to_compressed", "max_payload_bytes",
           "color_codec", "depth_format"]

COLOR_CODECS = ("jpeg", "png")
COLOR_SOURCE_ENCODINGS = ("rgb8", "bgr8", "mono8", "rgba8", "bgra8")
DEPTH_HEADER = struct.Struct("<iff")  # compression format, depthQuantA, depthQuantB
DEPTH_HEADER_BYTES = DEPTH_HEADER.size  # 12
INV_DEPTH = 0  # compressed_depth_image_transport's compressionFormat (UNDEFINED = -1)
_SIGNATURES = {"jpeg": b"\xff\xd8\xff", "png": b"\x89PNG\r\n\x1a\n"}
_PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG"}
_HEADROOM_BYTES = 64 * 1024  # container overhead of a tiny image (headers, tables)


def max_payload_bytes(max_pixels: int, bytes_per_pixel: int) -> int:
    """Largest compressed payload taken: twice the raw size of the largest image allowed
    (a JPEG at quality 100 or a PNG of noise is at most about the raw size), plus 64 KiB."""
    return 2 * bytes_per_pixel * int(max_pixels) + _HEADROOM_BYTES


def _codec_of_data(data: bytes) -> str | None:
    return next((c for c, sig in _SIGNATURES.items() if data.startswith(sig)), None)


def _describe_start(data: bytes) -> str:
    kind = _codec_of_data(data)
    start = data[:8].hex(" ")
    return f"starts with {start or 'nothing'}" + (f" (a {kind.upper()} stream)" if kind else "")


def color_codec(fmt: str, data: bytes = b"") -> str:
    """'jpeg' or 'png' from a colour CompressedImage's format string (or, when it is empty,
    from the data's signature); InputError naming the format otherwise."""
    text = fmt.strip()
    if not text:
        codec = _codec_of_data(data)
        if codec is None:
            raise InputError(f"CompressedImage has an empty format and its data is neither "
                             f"JPEG nor PNG ({_describe_start(data)})")
        return codec
    lower = text.lower()
    if "compresseddepth" in lower:
        raise InputError(f"CompressedImage format '{fmt}' is the compressedDepth (depth) "
                         f"transport; the colour image needs 'compressed' (jpeg or png)")
    if ";" in text:
        source, rest = (p.strip() for p in text.split(";", 1))
        codec = rest.split()[0].lower() if rest.split() else ""
    else:
        source, codec = None, lower
    codec = "jpeg" if codec == "jpg" else codec
    if codec not in COLOR_CODECS:
        raise InputError(f"unsupported CompressedImage format '{fmt}' (supported: jpeg, "
                         f"png, e.g. 'rgb8; jpeg compressed bgr8' or 'png')")
    if source is not None and source.lower() not in COLOR_SOURCE_ENCODINGS:
        raise InputError(f"CompressedImage format '{fmt}' holds a '{source}' image; colour "
                         f"must be 8-bit ({', '.join(COLOR_SOURCE_ENCODINGS)})")
    return codec


def depth_format(fmt: str) -> str:
    """The depth encoding ('16UC1' or '32FC1') of a compressedDepth format string;
    InputError naming the format for anything else."""
    example = "'16UC1; compressedDepth png' or '32FC1; compressedDepth png'"
    if ";" not in fmt:
        raise InputError(f"CompressedImage format '{fmt}' is not a compressedDepth format "
                         f"(expected {example})")
    encoding, rest = (p.strip() for p in fmt.split(";", 1))
    words = rest.split()
    if not words or words[0] != "compressedDepth":
        raise InputError(f"CompressedImage format '{fmt}' is not a compressedDepth format "
                         f"(expected {example}); depth must come from the compressedDepth "
                         f"transport")
    codec = words[1] if len(words) > 1 else "png"  # older publishers: png, unnamed
    if codec != "png" or len(words) > 2:
        raise InputError(f"compressedDepth codec '{' '.join(words[1:])}' in format '{fmt}' "
                         f"is not supported (png only: set the publisher's format to png)")
    if encoding in ("16UC1", "mono16"):
        return "16UC1"
    if encoding == "32FC1":
        return "32FC1"
    raise InputError(f"compressedDepth format '{fmt}' has depth encoding '{encoding}' "
                     f"(supported: 16UC1 in mm, 32FC1 in m)")


def _open_checked(data: bytes, codec: str, max_pixels: int, what: str) -> PILImage.Image:
    """The image's header parsed (no pixels decoded yet) and its size checked."""
    if not data.startswith(_SIGNATURES[codec]):
        raise InputError(f"{what}: the format says {codec} but the data "
                         f"{_describe_start(data)}, not the {codec.upper()} signature")
    try:
        img = PILImage.open(io.BytesIO(data), formats=[_PIL_FORMATS[codec]])
    except Exception as exc:  # noqa: BLE001 - any failure on foreign bytes is bad input
        detail = ("" if isinstance(exc, PILImage.UnidentifiedImageError)  # names a BytesIO
                  else f" ({exc})")
        raise InputError(f"{what}: corrupt {codec.upper()} header{detail}") from exc
    width, height = img.size
    if width == 0 or height == 0:
        raise InputError(f"{what} is empty (width or height is 0)")
    if width * height > max_pixels:
        raise InputError(f"{what} is {width}x{height} = {width * height} pixels, more than "
                         f"input.max_image_pixels ({max_pixels})")
    return img


def _load(img: PILImage.Image, codec: str, what: str) -> None:
    try:
        img.load()
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt streams, zlib errors
        raise InputError(f"{what}: corrupt {codec.upper()} data ({exc})") from exc


def _check_payload(data: bytes, max_pixels: int, bytes_per_pixel: int, what: str) -> None:
    limit = max_payload_bytes(max_pixels, bytes_per_pixel)
    if len(data) > limit:
        raise InputError(f"{what} is {len(data)} bytes, more than twice the largest raw "
                         f"image input.max_image_pixels ({max_pixels}) allows ({limit} "
                         f"bytes); refused before decoding")


def compressed_to_rgb(msg: CompressedImage, max_pixels: int) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a jpeg or png CompressedImage (module docstring)."""
    what = "compressed image"
    data = bytes(msg.data)
    _check_payload(data, max_pixels, 3, what)
    codec = color_codec(msg.format, data)
    img = _open_checked(data, codec, max_pixels, what)
    if img.mode not in ("RGB", "L", "RGBA", "LA", "P", "PA", "1", "CMYK", "YCbCr"):
        raise InputError(f"{what}: a {codec.upper()} of pixel mode '{img.mode}' "
                         f"(16-bit or float) is not an 8-bit colour image")
    _load(img, codec, what)
    try:
        rgb = img.convert("RGB") if img.mode != "RGB" else img
        return np.array(rgb, dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{what}: corrupt {codec.upper()} data ({exc})") from exc


def compressed_to_depth(msg: CompressedImage, max_pixels: int) -> np.ndarray:
    """Depth float32 (H, W) in metres, 0 where unknown, from a compressedDepth
    CompressedImage (16UC1 in mm or 32FC1 inverse-depth quantised; module docstring)."""
    what = "compressed depth"
    encoding = depth_format(msg.format)
    data = bytes(msg.data)
    _check_payload(data, max_pixels, 2, what)
    if len(data) <= DEPTH_HEADER_BYTES:
        raise InputError(f"{what} is {len(data)} bytes: no room for the {DEPTH_HEADER_BYTES}"
                         f"-byte compressedDepth header and a PNG")
    fmt, quant_a, quant_b = DEPTH_HEADER.unpack_from(data)
    if data.startswith(_SIGNATURES["png"]):
        raise InputError(f"{what}: the data starts with a PNG, not with the "
                         f"{DEPTH_HEADER_BYTES}-byte compressedDepth header (a plain PNG: "
                         f"use the 'compressed' transport's topic for colour, or a raw depth "
                         f"Image)")
    if fmt != INV_DEPTH:
        raise InputError(f"{what}: compressedDepth header has compression format {fmt} "
                         f"(expected {INV_DEPTH}, inverse depth); corrupt or another codec")
    if encoding == "32FC1" and not (np.isfinite(quant_a) and np.isfinite(quant_b)
                                    and quant_a > 0):
        raise InputError(f"{what}: compressedDepth header has unusable quantisation "
                         f"parameters depthQuantA={quant_a}, depthQuantB={quant_b}")
    img = _open_checked(data[DEPTH_HEADER_BYTES:], "png", max_pixels, what)
    if img.mode not in ("I;16", "I;16B", "I;16L", "I"):
        raise InputError(f"{what}: the PNG has pixel mode '{img.mode}'; compressedDepth "
                         f"{encoding} needs a 16-bit grey PNG")
    _load(img, "png", what)
    q = np.asarray(img)
    if q.dtype != np.uint16:
        if q.min(initial=0) < 0 or q.max(initial=0) > 65535:
            raise InputError(f"{what}: PNG values outside 16 bits")
        q = q.astype(np.uint16)
    if encoding == "16UC1":
        return q.astype(np.float32) * np.float32(0.001)
    a, b = np.float32(quant_a), np.float32(quant_b)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        depth = a / (q.astype(np.float32) - b)
    depth[(q == 0) | ~np.isfinite(depth) | (depth < 0)] = 0.0
    return depth


# ------------------------------------------------------------------------ either kind


def decode_color(msg: Image | CompressedImage, max_pixels: int) -> np.ndarray:
    """RGB uint8 (H, W, 3) from an Image or a jpeg/png CompressedImage, refused with
    InputError when larger than ``max_pixels`` (before its pixels are decoded) or
    unusable. The node's frame assembler calls it, never a callback."""
    if isinstance(msg, CompressedImage):
        return compressed_to_rgb(msg, max_pixels)
    check_image_size(msg, max_pixels)
    return image_to_rgb(msg)


def decode_depth(msg: Image | CompressedImage, max_pixels: int) -> np.ndarray:
    """Depth float32 (H, W) in metres (0: unknown) from an Image or a compressedDepth
    CompressedImage, refused like :func:`decode_color`."""
    if isinstance(msg, CompressedImage):
        return compressed_to_depth(msg, max_pixels)
    check_image_size(msg, max_pixels, "depth")
    return image_to_depth(msg)


# ------------------------------------------------------------------------ encoders


def rgb_to_compressed(pixels: np.ndarray, codec: str = "jpeg", *, quality: int = 90,
                      png_level: int = 3, header=None) -> CompressedImage:
    """A CompressedImage as compressed_image_transport publishes it, from RGB uint8
    (H, W, 3) (format ``"rgb8; <codec> compressed bgr8"``) or grey (H, W) (``"mono8; <codec>
    compressed mono8"``). ``quality``: JPEG quality 1-100; ``png_level``: zlib level 0-9."""
    if codec not in COLOR_CODECS:
        raise ValueError(f"codec must be one of {COLOR_CODECS}, got {codec!r}")
    arr = np.ascontiguousarray(pixels, dtype=np.uint8)
    if arr.ndim == 2:
        img, source, target = PILImage.fromarray(arr), "mono8", "mono8"
    elif arr.ndim == 3 and arr.shape[2] == 3:
        img, source, target = PILImage.fromarray(arr), "rgb8", "bgr8"
    else:
        raise ValueError(f"pixels must be (H, W, 3) RGB or (H, W) grey, got {arr.shape}")
    buf = io.BytesIO()
    if codec == "jpeg":
        img.save(buf, format="JPEG", quality=int(quality))
    else:
        img.save(buf, format="PNG", compress_level=int(png_level))
    msg = CompressedImage(format=f"{source}; {codec} compressed {target}", data=buf.getvalue())
    if header is not None:
        msg.header = header
    return msg


def depth_to_compressed(depth: np.ndarray, encoding: str = "32FC1", *,
                        depth_max: float = 10.0, depth_quantization: float = 100.0,
                        png_level: int = 3, header=None) -> CompressedImage:
    """A compressedDepth CompressedImage as compressed_depth_image_transport publishes it.

    Args:
        depth: (H, W) millimetres (uint16) for '16UC1', metres (float32) for '32FC1'.
        depth_max: [m] farther depths become 0 (unknown), as the publisher does; for 32FC1
            it also sets the quantisation (B = 1 - A / depth_max).
        depth_quantization: z0 of the publisher, A = z0 (z0 + 1).
    32FC1 depths that are not finite, not positive, or nearer than A / (65535 - B) (the
    nearest a uint16 can hold) become 0 (unknown; the C++ publisher's result there is
    undefined).
    """
    if encoding not in ("16UC1", "32FC1"):
        raise ValueError(f"encoding must be 16UC1 or 32FC1, got {encoding!r}")
    arr = np.asarray(depth)
    if arr.ndim != 2:
        raise ValueError(f"depth must be (H, W), got {arr.shape}")
    quant_a = quant_b = 0.0
    if encoding == "16UC1":
        q = np.array(arr, dtype=np.uint16)
        q[q > np.uint16(min(int(depth_max * 1000.0), 65535))] = 0
    else:
        d = arr.astype(np.float32)
        a = np.float32(depth_quantization) * (np.float32(depth_quantization) + np.float32(1))
        b = np.float32(1) - a / np.float32(depth_max)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            inv = a / d + b
        ok = np.isfinite(d) & (d > 0) & (d < depth_max) & (inv >= 0) & (inv < 65536)
        q = np.zeros(d.shape, np.uint16)
        q[ok] = inv[ok].astype(np.uint16)  # truncation, as the C++ conversion
        quant_a, quant_b = float(a), float(b)
    buf = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(q)).save(buf, format="PNG",  # mode I;16
                                                     compress_level=int(png_level))
    data = DEPTH_HEADER.pack(INV_DEPTH, quant_a, quant_b) + buf.getvalue()
    msg = CompressedImage(format=f"{encoding}; compressedDepth png", data=data)
    if header is not None:
        msg.header = header
    return msg
