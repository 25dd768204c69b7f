"""IR-to-visible registration with a fixed 3x3 homography.

The homography ``H`` maps IR pixel coordinates to visible pixel coordinates
(``[x_vis, y_vis, 1]^T ~ H [x_ir, y_ir, 1]^T``); :func:`warp_to` warps the IR frame onto the visible
frame's grid with ``cv2.warpPerspective`` (bilinear, black outside the IR field of view).

Files (:func:`load_homography` / :func:`save_homography`): ``.txt`` (3 rows of 3 numbers, as written
by ``numpy.savetxt``), ``.npy``, or ``.json`` (a 3x3 list, or an object with a ``"homography"`` or
``"H"`` key).

Estimating ``H`` from corresponding points (at least 4; a CSV with columns
``ir_x, ir_y, vis_x, vis_y``, header optional)::

    python -m dstfuse_stream.registration --points pts.csv --out H.txt
    dstfuse-stream register --points pts.csv --out H.txt
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from dstfuse_stream.cliutil import OneLineArgumentParser, run_command
from dstfuse_stream.errors import ConfigError

__all__ = [
    "load_homography",
    "save_homography",
    "check_homography",
    "warp_to",
    "estimate_homography",
    "read_point_pairs",
    "reprojection_errors",
    "main",
]

logger = logging.getLogger(__name__)


#: a homography is singular when ``|det|`` is below this fraction of the product of its row norms
#: (Hadamard's bound): scale-free, so a large shift (``H[0, 2] = 1e5``) is not mistaken for singular
_SINGULAR_RATIO = 1e-12


def check_homography(h: object, *, source: str = "homography") -> np.ndarray:
    """Validate a 3x3 finite, invertible matrix; return it as float64 scaled so ``H[2, 2] == 1``."""
    try:
        arr = np.asarray(h, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: expected a 3x3 matrix of numbers ({exc})") from exc
    if arr.shape != (3, 3):
        raise ConfigError(f"{source}: expected a 3x3 matrix, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{source}: matrix has non-finite entries")
    det = float(np.linalg.det(arr))
    bound = float(np.prod(np.linalg.norm(arr, axis=1)))
    if bound == 0 or abs(det) <= _SINGULAR_RATIO * bound:
        raise ConfigError(f"{source}: matrix is singular (det {det:.3g}, {abs(det) / bound if bound else 0:.3g} of "
                          "the largest possible for its rows): it maps the image onto a line or a point")
    if abs(arr[2, 2]) > 1e-12:
        arr = arr / arr[2, 2]
    return arr


def load_homography(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a homography from ``.txt``, ``.npy`` or ``.json`` (see the module docstring)."""
    path = Path(path)
    label = f"homography {str(path)!r}"
    if not path.is_file():
        raise ConfigError(f"{label}: file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        elif suffix == ".json":
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                key = next((k for k in ("homography", "H") if k in data), None)
                if key is None:
                    raise ConfigError(f"{label}: JSON object needs a 'homography' or 'H' key")
                data = data[key]
        else:
            data = np.loadtxt(path, dtype=np.float64, delimiter=None, ndmin=2)
    except ConfigError:
        raise
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{label}: cannot parse ({type(exc).__name__}: {exc})") from exc
    return check_homography(data, source=label)


def save_homography(path: str | os.PathLike[str], h: np.ndarray) -> Path:
    """Write ``h`` as ``.txt`` (default), ``.npy`` or ``.json`` by the file suffix."""
    path = Path(path)
    h = check_homography(h)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        np.save(path, h)
    elif suffix == ".json":
        path.write_text(json.dumps({"homography": h.tolist()}, indent=2) + "\n")
    else:
        np.savetxt(path, h, fmt="%.12g")
    return path


def warp_to(image: np.ndarray, h: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Warp ``image`` (IR) with ``h`` onto a ``size_wh`` grid (visible); outside pixels are 0."""
    return cv2.warpPerspective(
        image,
        np.asarray(h, dtype=np.float64),
        (int(size_wh[0]), int(size_wh[1])),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def estimate_homography(
    ir_points: np.ndarray,
    vis_points: np.ndarray,
    *,
    method: str = "ransac",
    ransac_threshold_px: float = 3.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit ``H`` (IR -> visible) to point pairs with ``cv2.findHomography``.

    Args:
        ir_points, vis_points: ``(N, 2)`` pixel coordinates, ``N >= 4``, row ``i`` corresponds.
        method: ``"ransac"`` (robust to a few wrong pairs) or ``"lsq"`` (all points, least squares).
        ransac_threshold_px: maximum reprojection error of an inlier (RANSAC only).

    Returns:
        ``(H, inliers)``: the normalised 3x3 matrix and a boolean mask of the pairs it fits.
    """
    src = np.asarray(ir_points, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(vis_points, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape:
        raise ConfigError(f"points: expected as many IR as visible points, got {len(src)} and {len(dst)}")
    if len(src) < 4:
        raise ConfigError(f"points: a homography needs at least 4 point pairs, got {len(src)}")
    methods = {"ransac": cv2.RANSAC, "lsq": 0}
    if method not in methods:
        raise ConfigError(f"method {method!r}: expected one of {list(methods)}")
    h, mask = cv2.findHomography(src, dst, methods[method], ransac_threshold_px)
    if h is None:
        raise ConfigError("points: no homography fits them (collinear or repeated points?)")
    inliers = mask.ravel().astype(bool) if mask is not None else np.ones(len(src), dtype=bool)
    return check_homography(h, source="estimated homography"), inliers


def reprojection_errors(h: np.ndarray, ir_points: np.ndarray, vis_points: np.ndarray) -> np.ndarray:
    """Euclidean distance (pixels) between ``H @ ir_point`` and its visible point, per pair."""
    src = np.asarray(ir_points, dtype=np.float64).reshape(-1, 1, 2)
    dst = np.asarray(vis_points, dtype=np.float64).reshape(-1, 2)
    projected = cv2.perspectiveTransform(src, np.asarray(h, dtype=np.float64)).reshape(-1, 2)
    return np.linalg.norm(projected - dst, axis=1)


def read_point_pairs(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read ``ir_x, ir_y, vis_x, vis_y`` rows from a CSV (header row and ``#`` comments allowed)."""
    path = Path(path)
    label = f"points {str(path)!r}"
    if not path.is_file():
        raise ConfigError(f"{label}: file not found")
    rows: list[list[float]] = []
    with open(path, newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            cells = [c.strip() for c in row if c.strip()]
            if not cells or cells[0].startswith("#"):
                continue
            try:
                values = [float(c) for c in cells]
            except ValueError:
                if not rows:  # header
                    continue
                raise ConfigError(f"{label}: line {lineno}: expected 4 numbers, got {row}") from None
            if len(values) != 4:
                raise ConfigError(f"{label}: line {lineno}: expected 4 numbers (ir_x, ir_y, vis_x, vis_y), got {len(values)}")
            rows.append(values)
    if not rows:
        raise ConfigError(f"{label}: no point pairs")
    arr = np.asarray(rows, dtype=np.float64)
    return arr[:, :2], arr[:, 2:]


def _build_parser(prog: str) -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog=prog,
        description="Estimate the IR->visible homography from corresponding points and save it.",
    )
    parser.add_argument("--points", required=True, help="CSV with columns ir_x, ir_y, vis_x, vis_y (>= 4 rows)")
    parser.add_argument("--out", required=True, help="output file: .txt, .npy or .json")
    parser.add_argument("--method", choices=("ransac", "lsq"), default="ransac")
    parser.add_argument("--ransac-threshold-px", type=float, default=3.0)
    return parser


def main(argv: list[str] | None = None, *, prog: str = "python -m dstfuse_stream.registration") -> int:
    """Command line: estimate and save a homography; prints it and the reprojection error."""
    args = _build_parser(prog).parse_args(argv)
    return run_command(prog, _register, args)


def _register(args: argparse.Namespace) -> int:
    ir_pts, vis_pts = read_point_pairs(args.points)
    h, inliers = estimate_homography(ir_pts, vis_pts, method=args.method, ransac_threshold_px=args.ransac_threshold_px)
    out = save_homography(args.out, h)
    err = reprojection_errors(h, ir_pts[inliers], vis_pts[inliers])
    print(np.array2string(h, precision=6, suppress_small=True))
    print(
        f"{int(inliers.sum())}/{len(inliers)} inlier pairs, reprojection error "
        f"mean {err.mean():.3f} px, max {err.max():.3f} px; saved {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
