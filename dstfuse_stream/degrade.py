"""Image degradations used to train and to test deblurring: linear motion blur and low light.

One home for the motion-blur kernel: training (``dstfuse_train``) draws random lengths and angles
from it, ``dstfuse-eval``'s blur reports use fixed ones. numpy/OpenCV only (no torch).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from dstfuse_stream.errors import ConfigError

__all__ = ["motion_blur_kernel", "motion_blur", "low_light"]


def motion_blur_kernel(length: int, angle_deg: float) -> np.ndarray:
    """Linear motion-blur kernel ``(length, length)`` float32 summing to 1 (a line through the centre).

    ``length`` is the kernel size (odd, >= 1). The segment of length ``length`` at ``angle_deg``
    (counter-clockwise from the x axis) is sampled at ``8 * length`` evenly spaced midpoints, each
    rounded to its pixel; at 0 and 90 degrees the kernel is exactly a ``1 / length`` row or column.
    """
    if length < 1 or length % 2 == 0:
        raise ConfigError(f"motion blur length: expected a positive odd int, got {length}")
    kernel = np.zeros((length, length), np.float64)
    c = (length - 1) / 2.0
    theta = math.radians(angle_deg)
    n = 8 * length
    t = -length / 2.0 + (np.arange(n) + 0.5) * (length / n)
    xs = np.clip(np.rint(c + t * math.cos(theta)), 0, length - 1).astype(int)
    ys = np.clip(np.rint(c - t * math.sin(theta)), 0, length - 1).astype(int)
    np.add.at(kernel, (ys, xs), 1.0)
    return (kernel / kernel.sum()).astype(np.float32)


def motion_blur(image: np.ndarray, length: int, angle_deg: float) -> np.ndarray:
    """Blur a float ``(H, W)`` image with :func:`motion_blur_kernel` (reflected borders); float32 out."""
    kernel = motion_blur_kernel(length, angle_deg)
    return cv2.filter2D(np.asarray(image, np.float32), cv2.CV_32F, kernel, borderType=cv2.BORDER_REFLECT_101)


def low_light(image: np.ndarray, gain: float, noise_std: float, rng: np.random.Generator) -> np.ndarray:
    """``clip(gain * image + N(0, noise_std), 0, 1)``: a darker, noisier exposure of a float image in [0, 1]."""
    if not 0.0 < gain <= 1.0:
        raise ConfigError(f"low-light gain: expected 0 < gain <= 1, got {gain}")
    if noise_std < 0:
        raise ConfigError(f"low-light noise_std: expected >= 0, got {noise_std}")
    out = np.asarray(image, np.float32) * np.float32(gain)
    if noise_std > 0:
        out = out + rng.normal(0.0, noise_std, size=out.shape).astype(np.float32)
    return np.clip(out, 0.0, 1.0)
