"""Image <-> numpy conversion (what cv_bridge would do), on real sensor_msgs messages."""

from __future__ import annotations

from array import array

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from clifer_ros.conversions import (
    ImageConversionError,
    array_to_image,
    compressed_to_rgb,
    image_to_array,
    image_to_rgb,
    rgb_to_image,
)


@pytest.fixture
def rgb():
    """A smooth, asymmetric 48x64 RGB test pattern (channels distinguishable)."""
    y, x = np.mgrid[0:48, 0:64]
    return np.dstack([x * 4, y * 5, (x + y) * 2]).astype(np.uint8)


def _padded(msg: Image, pad: int) -> Image:
    """The same image with ``pad`` junk bytes after each row."""
    rows = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)
    padded = np.concatenate([rows, np.full((msg.height, pad), 0xAB, np.uint8)], axis=1)
    msg.step += pad
    msg.data = array("B", padded.tobytes())
    return msg


@pytest.mark.parametrize("encoding", ["bgr8", "rgb8", "bgra8", "rgba8"])
@pytest.mark.parametrize("pad", [0, 13])
def test_colour_encodings_round_trip_to_rgb(rgb, encoding, pad):
    msg = _padded(rgb_to_image(rgb, encoding), pad)
    assert msg.encoding == encoding
    assert np.array_equal(image_to_rgb(msg), rgb)


def test_bgr8_message_holds_bgr_bytes(rgb):
    msg = rgb_to_image(rgb, "bgr8")
    first_pixel = bytes(msg.data[:3])
    assert first_pixel == bytes(rgb[0, 0, ::-1])


def test_decoding_is_a_zero_copy_view(rgb):
    msg = rgb_to_image(rgb, "rgb8")
    view = image_to_array(msg)
    assert np.shares_memory(view, np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize("pad", [0, 7])
def test_mono8_becomes_grey_rgb(rgb, pad):
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    msg = _padded(array_to_image(grey, "mono8"), pad)
    decoded = image_to_rgb(msg)
    assert decoded.shape == (48, 64, 3)
    assert np.array_equal(decoded[..., 0], grey) and np.array_equal(decoded[..., 2], grey)


@pytest.mark.parametrize("bigendian", [False, True])
def test_mono16_honours_byte_order(bigendian):
    depth = (np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 21).astype(np.uint16)
    msg = array_to_image(depth, "mono16")
    if bigendian:
        msg.data = array("B", depth.astype(">u2").tobytes())
        msg.is_bigendian = 1
    assert np.array_equal(image_to_array(msg), depth)
    assert np.array_equal(image_to_rgb(msg)[..., 1], (depth >> 8).astype(np.uint8))


def _pack_yuv422(rgb: np.ndarray, order: str) -> np.ndarray:
    """Pack an RGB image as UYVY or YUYV bytes with BT.601 studio-range coefficients."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    u_pair = (u[:, 0::2] + u[:, 1::2]) / 2
    v_pair = (v[:, 0::2] + v[:, 1::2]) / 2
    packed = np.empty((rgb.shape[0], rgb.shape[1], 2))
    if order == "uyvy":
        packed[:, 0::2, 0], packed[:, 1::2, 0] = u_pair, v_pair
        packed[..., 1] = y
    else:
        packed[..., 0] = y
        packed[:, 0::2, 1], packed[:, 1::2, 1] = u_pair, v_pair
    return np.clip(np.round(packed), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("encoding,order", [("uyvy", "uyvy"), ("yuv422", "uyvy"), ("yuyv", "yuyv"), ("yuv422_yuy2", "yuyv")])
def test_yuv422_encodings_decode_close_to_the_source(rgb, encoding, order):
    msg = _padded(array_to_image(_pack_yuv422(rgb, order), encoding), 4)
    decoded = image_to_rgb(msg)
    assert decoded.shape == rgb.shape
    assert np.abs(decoded.astype(int) - rgb.astype(int)).mean() < 3.0


def test_compressed_png_is_exact_and_jpeg_is_close(rgb):
    for extension, tolerance in ((".png", 0.0), (".jpg", 6.0)):
        ok, payload = cv2.imencode(extension, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        assert ok
        msg = CompressedImage(format="bgr8; " + extension[1:] + " compressed bgr8", data=array("B", payload.tobytes()))
        assert np.abs(compressed_to_rgb(msg).astype(int) - rgb.astype(int)).mean() <= tolerance


@pytest.mark.parametrize("encoding", ["32FC1", "bayer_rggb8", "nv12", "rgb16", ""])
def test_unsupported_encodings_raise_a_clear_error(encoding):
    msg = Image(height=2, width=2, encoding=encoding, step=8, data=array("B", bytes(16)))
    with pytest.raises(ImageConversionError, match="unsupported image encoding"):
        image_to_rgb(msg)


def test_bad_payloads_raise_clear_errors(rgb):
    truncated = rgb_to_image(rgb, "bgr8")
    truncated.data = truncated.data[:-10]
    with pytest.raises(ImageConversionError, match="truncated"):
        image_to_rgb(truncated)
    short_step = rgb_to_image(rgb, "bgr8")
    short_step.step = 10
    with pytest.raises(ImageConversionError, match="step"):
        image_to_rgb(short_step)
    with pytest.raises(ImageConversionError, match="empty"):
        image_to_rgb(Image(height=0, width=0, encoding="bgr8", step=0))
    with pytest.raises(ImageConversionError, match="cannot decode"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=array("B", b"not a jpeg at all")))
    with pytest.raises(ImageConversionError, match="empty"):
        compressed_to_rgb(CompressedImage(format="jpeg"))


def test_encoding_checks_shape_and_dtype(rgb):
    with pytest.raises(ImageConversionError, match="shape"):
        array_to_image(rgb, "mono8")
    with pytest.raises(ImageConversionError, match="uint16"):
        array_to_image(rgb[..., 0], "mono16")


def test_frames_larger_than_the_pixel_limit_are_refused_before_decoding():
    import cv2

    from clifer_ros.conversions import DEFAULT_MAX_PIXELS

    ok, bomb = cv2.imencode(".png", np.zeros((12000, 12000), np.uint8))
    assert ok and len(bomb) < 200_000, "a small file that decodes to 144 megapixels"
    with pytest.raises(ImageConversionError, match="exceeds the limit of 8294400"):
        compressed_to_rgb(CompressedImage(format="png", data=array("B", bomb.tobytes())))
    ok, jpeg = cv2.imencode(".jpg", np.zeros((2160, 3840, 3), np.uint8))
    assert compressed_to_rgb(CompressedImage(format="jpeg", data=array("B", jpeg.tobytes()))).shape == (2160, 3840, 3)
    with pytest.raises(ImageConversionError, match="exceeds the limit of 1000"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=array("B", jpeg.tobytes())), max_pixels=1000)
    claims_huge = Image(height=100_000, width=100_000, encoding="bgr8", step=300_000, data=array("B", bytes(16)))
    with pytest.raises(ImageConversionError, match=f"exceeds the limit of {DEFAULT_MAX_PIXELS}"):
        image_to_rgb(claims_huge)
