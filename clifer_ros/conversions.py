"""sensor_msgs Image/CompressedImage <-> numpy, and clifer_core results -> messages.

What cv_bridge does, without it (PyPI's cv-bridge is a broken ROS 1 port). Frames
leave this module as RGB uint8 arrays, the colour order clifer_core uses
throughout. Decoding is a zero-copy ``np.frombuffer`` view wherever the encoding
allows; encoding fills ``msg.data`` with ``array('B')``, which rclpy takes ten
times faster than ``bytes`` (docs/design.md §7.5).
"""

from __future__ import annotations

import io
import math
import warnings
from array import array

import cv2
import numpy as np

DEFAULT_MAX_PIXELS = 3840 * 2160
"""Largest frame decoded by default: a 4K UHD camera frame (about 25 MB as RGB)."""
SUPPORTED_ENCODINGS = ("bgr8", "rgb8", "mono8", "bgra8", "rgba8", "mono16", "uyvy", "yuv422", "yuyv", "yuv422_yuy2")

_CHANNELS = {"bgr8": 3, "rgb8": 3, "mono8": 1, "bgra8": 4, "rgba8": 4, "mono16": 1}
_YUV_TO_RGB = {
    "uyvy": cv2.COLOR_YUV2RGB_UYVY, "yuv422": cv2.COLOR_YUV2RGB_UYVY,
    "yuyv": cv2.COLOR_YUV2RGB_YUYV, "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUYV,
}
_TO_RGB = {
    "bgr8": lambda a: cv2.cvtColor(a, cv2.COLOR_BGR2RGB),
    "rgb8": lambda a: a,
    "bgra8": lambda a: cv2.cvtColor(a, cv2.COLOR_BGRA2RGB),
    "rgba8": lambda a: cv2.cvtColor(a, cv2.COLOR_RGBA2RGB),
    "mono8": lambda a: cv2.cvtColor(a, cv2.COLOR_GRAY2RGB),
    "mono16": lambda a: cv2.cvtColor((a >> 8).astype(np.uint8), cv2.COLOR_GRAY2RGB),
}


class ImageConversionError(ValueError):
    """An image message cannot be turned into a frame (encoding, size or payload)."""


def check_pixel_count(width: int, height: int, max_pixels: int) -> None:
    """ImageConversionError unless a ``width`` x ``height`` frame is within ``max_pixels``."""
    if width * height > max_pixels:
        raise ImageConversionError(f"image of {width}x{height} = {width * height} pixels exceeds the limit of "
                                   f"{max_pixels} (max_image_pixels)")


def compressed_size(payload: bytes) -> tuple[int, int]:
    """``(width, height)`` from a compressed image's header alone, without decoding its pixels.

    Pillow reads only the header when opening; a payload whose header it
    cannot read is refused rather than handed to a decoder blind.
    """
    from PIL import Image as PilImage

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PilImage.DecompressionBombWarning)
            with PilImage.open(io.BytesIO(payload)) as header:
                return header.size
    except PilImage.DecompressionBombError as error:
        raise ImageConversionError(f"compressed image too large: {error}") from error
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageConversionError("cannot decode compressed image: no size can be read from its header "
                                   f"({len(payload)} bytes, {type(error).__name__})") from error


def image_to_array(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """View a ``sensor_msgs/Image`` as a numpy array in its own encoding.

    Returns ``(H, W, C)`` for colour encodings, ``(H, W)`` for mono8/mono16
    (native byte order), and ``(H, W, 2)`` raw bytes for the packed YUV 4:2:2
    encodings. Rows padded beyond ``width * pixel size`` (``step``) are honoured.
    """
    encoding = msg.encoding.lower()
    if encoding not in SUPPORTED_ENCODINGS:
        raise ImageConversionError(
            f"unsupported image encoding {msg.encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        )
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise ImageConversionError(f"empty image ({width}x{height})")
    check_pixel_count(width, height, max_pixels)
    if encoding in _YUV_TO_RGB:
        channels, itemsize = 2, 1
        if width % 2:
            raise ImageConversionError(f"{encoding} needs an even width, got {width}")
    else:
        channels, itemsize = _CHANNELS[encoding], (2 if encoding == "mono16" else 1)
    row_bytes = width * channels * itemsize
    if step < row_bytes:
        raise ImageConversionError(f"step {step} is smaller than one row ({row_bytes} bytes for {width} px {encoding})")
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    if buffer.size < step * (height - 1) + row_bytes:
        raise ImageConversionError(f"truncated image: {buffer.size} bytes for {height} rows of step {step}")
    rows = np.lib.stride_tricks.as_strided(buffer, shape=(height, row_bytes), strides=(step, 1))
    if itemsize == 2:
        dtype = np.dtype(">u2" if msg.is_bigendian else "<u2")
        pixels = np.ascontiguousarray(rows).view(dtype).astype(np.uint16, copy=False)
        return pixels.reshape(height, width)
    shaped = rows.reshape(height, width, channels)
    return shaped[..., 0] if channels == 1 else shaped


def image_to_rgb(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a ``sensor_msgs/Image`` of any supported encoding to an RGB uint8 frame (at most ``max_pixels``)."""
    encoding = msg.encoding.lower()
    pixels = image_to_array(msg, max_pixels)
    if encoding in _YUV_TO_RGB:
        return cv2.cvtColor(np.ascontiguousarray(pixels), _YUV_TO_RGB[encoding])
    return _TO_RGB[encoding](np.ascontiguousarray(pixels))


def compressed_to_rgb(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG, PNG...) to an RGB uint8 frame.

    The size in the header is checked against ``max_pixels`` before decoding:
    a small file can claim (and decode to) gigabytes.
    """
    if "compresseddepth" in msg.format.lower():
        raise ImageConversionError(f"depth images are not faces (format {msg.format!r})")
    payload = np.frombuffer(msg.data, dtype=np.uint8)
    if payload.size == 0:
        raise ImageConversionError("empty compressed image")
    check_pixel_count(*compressed_size(payload), max_pixels)
    decoded = cv2.imdecode(payload, cv2.IMREAD_COLOR)
    if decoded is None:
        raise ImageConversionError(f"cannot decode compressed image (format {msg.format!r}, {payload.size} bytes)")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def array_to_image(pixels: np.ndarray, encoding: str, header=None):
    """Build a ``sensor_msgs/Image`` from a numpy array already in ``encoding``.

    ``pixels`` is ``(H, W, C)`` (or ``(H, W)`` for mono8/mono16, ``(H, W, 2)``
    for YUV 4:2:2); 16-bit data is written little-endian.
    """
    from sensor_msgs.msg import Image

    encoding = encoding.lower()
    if encoding not in SUPPORTED_ENCODINGS:
        raise ImageConversionError(f"unsupported image encoding {encoding!r}")
    pixels = np.asarray(pixels)
    expected_dtype = np.uint16 if encoding == "mono16" else np.uint8
    if pixels.dtype != expected_dtype:
        raise ImageConversionError(f"{encoding} needs {np.dtype(expected_dtype).name} pixels, got {pixels.dtype}")
    channels = 2 if encoding in _YUV_TO_RGB else _CHANNELS[encoding]
    if (channels == 1 and pixels.ndim != 2) or (channels > 1 and (pixels.ndim != 3 or pixels.shape[2] != channels)):
        raise ImageConversionError(f"{encoding} needs shape (H, W{'' if channels == 1 else f', {channels}'}), got {pixels.shape}")
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    contiguous = np.ascontiguousarray(pixels.astype("<u2", copy=False) if encoding == "mono16" else pixels)
    msg.step = int(contiguous.strides[0])
    msg.data = array("B", contiguous.tobytes())
    return msg


def rgb_to_image(frame_rgb: np.ndarray, encoding: str = "bgr8", header=None):
    """Encode an RGB uint8 frame as a ``sensor_msgs/Image`` in ``bgr8``, ``rgb8`` or ``mono8``."""
    conversions = {
        "bgr8": lambda a: cv2.cvtColor(a, cv2.COLOR_RGB2BGR),
        "rgb8": lambda a: a,
        "mono8": lambda a: cv2.cvtColor(a, cv2.COLOR_RGB2GRAY),
        "bgra8": lambda a: cv2.cvtColor(a, cv2.COLOR_RGB2BGRA),
        "rgba8": lambda a: cv2.cvtColor(a, cv2.COLOR_RGB2RGBA),
    }
    if encoding not in conversions:
        raise ImageConversionError(f"cannot encode RGB frames as {encoding!r}; use one of {', '.join(conversions)}")
    return array_to_image(conversions[encoding](np.ascontiguousarray(frame_rgb)), encoding, header)


def estimate_to_msg(estimate, header):
    """One ``clifer_core.pipeline.FaceEstimate`` -> ``clifer/ExpressionEstimate``."""
    from clifer.msg import ExpressionEstimate
    from sensor_msgs.msg import RegionOfInterest

    x0, y0, x1, y1 = estimate.roi
    msg = ExpressionEstimate()
    msg.header = header
    msg.face_id = estimate.face_id
    msg.person_id = estimate.person_id or ""
    msg.roi = RegionOfInterest(x_offset=int(x0), y_offset=int(y0), width=int(x1 - x0), height=int(y1 - y0))
    msg.expression = estimate.label
    msg.labels = list(estimate.labels)
    msg.probabilities = [float(p) for p in estimate.probabilities]
    msg.confidence = float(estimate.confidence)
    msg.valence = float(estimate.valence) if estimate.valence is not None else math.nan
    msg.arousal = float(estimate.arousal) if estimate.arousal is not None else math.nan
    msg.memory = estimate.memory
    msg.novelty = float(estimate.novelty) if estimate.novelty is not None else math.nan
    return msg


def estimates_to_array_msg(estimates, header):
    """All of a frame's estimates -> ``clifer/ExpressionEstimateArray`` stamped with ``header``."""
    from clifer.msg import ExpressionEstimateArray

    msg = ExpressionEstimateArray()
    msg.header = header
    msg.estimates = [estimate_to_msg(estimate, header) for estimate in estimates]
    return msg
