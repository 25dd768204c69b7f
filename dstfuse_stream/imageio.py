"""Reading still images and finding IR/visible pairs on disk.

Two folder layouts are recognised by :func:`list_pairs`:

* paired folders: ``ROOT/ir/NAME`` + ``ROOT/vi/NAME`` (``vis/``, ``visible/`` also accepted for the
  visible side, ``infrared/`` for IR), same file name = one pair;
* LLVIP: ``ROOT/infrared/{train,test}/NAME`` + ``ROOT/visible/{train,test}/NAME``
  (pass ``split="train"``/``"test"``; ``None`` takes both).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from dstfuse_stream.errors import DSTFuseError, InputShapeError, SourceError
from dstfuse_stream.geometry import fit_max_side_wh

__all__ = [
    "IMAGE_SUFFIXES",
    "check_image",
    "read_bgr",
    "read_luma",
    "read_gray",
    "to_gray",
    "list_images",
    "list_pairs",
    "resize_max_side",
]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
_IR_DIRS = ("ir", "infrared", "IR", "Inf")
_VIS_DIRS = ("vi", "vis", "visible", "VI", "Vis")


def check_image(
    image: object,
    name: str,
    *,
    dtypes: tuple[type, ...] = (np.uint8,),
    channels: tuple[int, ...] = (1, 3),
    error: type[DSTFuseError] = InputShapeError,
) -> np.ndarray:
    """The one image validator: a non-empty ``(H, W)`` or ``(H, W, C)`` array of an accepted dtype.

    Returns the image with one channel as ``(H, W)`` and BGRA as BGR (a copy only then). ``channels``
    lists what is accepted after that (1 = gray ``(H, W)``, 3 = BGR). Raises ``error`` (default
    :class:`InputShapeError`; sources pass :class:`SourceError`, sinks :class:`SinkError`) saying what
    was expected and what came.
    """
    expected = " or ".join(["(H, W)"] * (1 in channels) + ["(H, W, 3) BGR"] * (3 in channels))
    kinds = "/".join(np.dtype(d).name for d in dtypes)
    if not isinstance(image, np.ndarray):
        raise error(f"{name}: expected a numpy {kinds} array {expected}, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    got_channels = 1 if image.ndim == 2 else image.shape[2] if image.ndim == 3 else None
    if got_channels not in channels or 0 in image.shape[:2]:
        raise error(f"{name}: expected a non-empty {kinds} image {expected}, got shape {image.shape}")
    if image.dtype not in [np.dtype(d) for d in dtypes]:
        raise error(f"{name}: expected dtype {kinds}, got {image.dtype}")
    return image


def read_bgr(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as ``(H, W, 3)`` uint8 BGR (gray files are expanded to 3 channels)."""
    return _imread(path, cv2.IMREAD_COLOR)


def read_luma(path: str | os.PathLike[str], *, any_depth: bool = False) -> np.ndarray:
    """Read an image straight to its luma, uint8 ``(H, W)`` (decoders give it without a BGR image).

    OpenCV's ``IMREAD_GRAYSCALE``: a JPEG's own Y plane; other colour files via ``BGR2GRAY``, which
    rounds differently from :func:`to_gray` by at most 1. Used for IR frames. ``any_depth=True``
    keeps a 16-bit file's full depth (uint16: radiometric thermal PNG/TIFF) instead of cutting it to 8 bits.
    """
    return _imread(path, cv2.IMREAD_GRAYSCALE | (cv2.IMREAD_ANYDEPTH if any_depth else 0))


def _imread(path: str | os.PathLike[str], flags: int) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"image {str(path)!r}: file not found")
    img = cv2.imread(str(path), flags)
    if img is None or img.size == 0:
        raise SourceError(f"image {str(path)!r}: not a readable image (expected one of {sorted(IMAGE_SUFFIXES)})")
    return img


def to_gray(img: np.ndarray) -> np.ndarray:
    """BGR uint8 ``(H, W, 3)`` or gray ``(H, W)`` -> luma Y uint8 ``(H, W)``.

    The Y plane of OpenCV's YCrCb (BT.601), i.e. exactly the plane that the colour path
    (:func:`dstfuse_stream.colour.split_luma`) fuses; ``COLOR_BGR2GRAY`` rounds differently by up to 1.
    """
    if img.ndim == 2:
        return img
    return cv2.cvtColor(img, cv2.COLOR_BGR2YCrCb)[..., 0]


def resize_max_side(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Shrink (``INTER_AREA``) so the longest side is at most ``max_side``; never enlarges; ``None`` = as is."""
    h, w = image.shape[:2]
    size_wh = fit_max_side_wh((w, h), max_side)
    if size_wh == (w, h):
        return image
    return cv2.resize(image, size_wh, interpolation=cv2.INTER_AREA)


def read_gray(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as its luma, float32 ``(H, W)`` in [0, 1]."""
    return to_gray(read_bgr(path)).astype(np.float32) / np.float32(255.0)


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceError(f"folder {str(folder)!r}: not a directory")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _first_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


def list_pairs(root: str | os.PathLike[str], *, split: str | None = None) -> list[tuple[Path, Path]]:
    """Sorted ``(ir_path, vis_path)`` pairs under ``root`` (paired-folder or LLVIP layout).

    Files present on one side only are ignored; a root with no pair raises :class:`SourceError`.
    """
    root = Path(root)
    ir_dir, vis_dir = _first_dir(root, _IR_DIRS), _first_dir(root, _VIS_DIRS)
    if ir_dir is None or vis_dir is None:
        raise SourceError(
            f"pairs {str(root)!r}: expected sub-folders ir/ and vi/ (or LLVIP's infrared/ and visible/)"
        )
    llvip_splits = [s for s in ("train", "test") if (ir_dir / s).is_dir() and (vis_dir / s).is_dir()]
    if llvip_splits:
        if split is not None and split not in llvip_splits:
            raise SourceError(f"pairs {str(root)!r}: split {split!r} not found; available: {llvip_splits}")
        dirs = [(ir_dir / s, vis_dir / s) for s in ([split] if split else llvip_splits)]
    elif split is not None:
        raise SourceError(f"pairs {str(root)!r}: split {split!r} asked for, but {ir_dir.name}/ and {vis_dir.name}/ have no "
                          "train/ and test/ sub-folders (LLVIP layout); leave the split out to use every pair")
    else:
        dirs = [(ir_dir, vis_dir)]
    pairs: list[tuple[Path, Path]] = []
    for ir_sub, vis_sub in dirs:
        vis_by_name = {p.name: p for p in list_images(vis_sub)}
        pairs.extend((p, vis_by_name[p.name]) for p in list_images(ir_sub) if p.name in vis_by_name)
    if not pairs:
        raise SourceError(f"pairs {str(root)!r}: no image has the same name in {ir_dir.name}/ and {vis_dir.name}/")
    return pairs
