"""``python -m dstfuse_bench.gpu_prepare``: build the folder the device run carries (``.carry/``, git-ignored).

The device machine has no network, no PyAV, no kornia and no ``../shared``; what the run needs
travels in one ignored folder named in the device tool's ``carry`` (64 MiB for the working tree and
everything carried, together)::

    .carry/whl/           cp312 manylinux wheels: av, kornia, kornia_rs (versions as installed here)
    .carry/clip/          ir.mp4 + vi.mp4 of one M3SVD sequence (end-to-end clip; also a training video root)
    .carry/train/<root>/  ir/ + vi/ NNNNN.png: the training pairs as 8-bit luma at most 640 px on the
                          longer side, deduplicated: exactly the arrays ``dstfuse_train.data.load_pairs``
                          makes from the originals, at a fraction of their size
    .carry/MANIFEST.json  what is where, sizes, sources, the wheels' versions

Validation data (``vifb``, ``m3svd_frames_*``) is refused. The working tree plus the folder must stay
under the limit with a margin: when they do not, the PyAV wheel is left out first (the run then reads
the clip with OpenCV), and the command fails if that is not enough.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import cv2

from dstfuse_stream.errors import ConfigError

from .source_tree import REPO_ROOT

__all__ = ["DEFAULT_TRAIN_ROOTS", "VALIDATION_PREFIXES", "WHEELS", "write_luma_pairs", "download_wheels", "tree_bytes",
           "folder_bytes", "build_carry", "main"]

logger = logging.getLogger(__name__)

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
DEFAULT_TRAIN_ROOTS = ("flir_train", "roadscene", "tno", "llvip", "msrs", "m3fd")
DEFAULT_CLIP = "sequences/m3svd_0111_1716"
#: Held-out data: never carried for training.
VALIDATION_PREFIXES = ("vifb", "m3svd_frames_")
#: Packages the device lacks, in the order they are dropped when the folder does not fit (av first).
WHEELS = ("av", "kornia", "kornia_rs")
_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")


def _check_training_root(name: str) -> None:
    if any(Path(name).name.startswith(prefix) for prefix in VALIDATION_PREFIXES):
        raise ConfigError(f"training root {name!r}: held-out validation data ({', '.join(VALIDATION_PREFIXES)}) is never carried")


def write_luma_pairs(roots: Sequence[Path], dest: Path, *, max_side: int) -> dict[str, Any]:
    """Write the deduplicated pairs of ``roots`` to ``dest/<root>/{ir,vi}/NNNNN.<ext>`` so that ``load_pairs``
    reads back exactly the arrays it reads from the originals.

    Per pair, the smaller of two forms: the original files (``load_pairs`` converts and resizes them
    on the device as it does here), or the 8-bit luma already at ``max_side`` as lossless PNG (an
    RGB PNG shrinks to a third; a JPEG is smaller as itself). Returns counts and sizes per root.
    """
    from dstfuse_stream.imageio import list_pairs
    from dstfuse_train.data import load_pairs

    for root in roots:
        _check_training_root(root.name)
    pairs, dropped = load_pairs(list(roots), max_side=max_side)
    sources = {f"{root.name}/{ir.name}": (ir, vis) for root in roots for ir, vis in list_pairs(root)}
    stats: dict[str, dict[str, int]] = {}
    for pair in pairs:
        root_name = pair.name.split("/", 1)[0]
        entry = stats.setdefault(root_name, {"pairs": 0, "originals": 0, "luma_png": 0, "bytes": 0})
        originals = sources[pair.name]
        encoded = [cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes() for image in (pair.ir, pair.vis)]
        same_suffix = originals[0].suffix.lower() == originals[1].suffix.lower()
        if same_suffix and sum(p.stat().st_size for p in originals) <= sum(map(len, encoded)):
            blobs, suffix, kind = [p.read_bytes() for p in originals], originals[0].suffix.lower(), "originals"
        else:
            blobs, suffix, kind = encoded, ".png", "luma_png"
        for side, blob in zip(("ir", "vi"), blobs):
            folder = dest / root_name / side
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{entry['pairs']:05d}{suffix}").write_bytes(blob)
        entry["pairs"] += 1
        entry[kind] += 1
        entry["bytes"] += sum(map(len, blobs))
    return {"roots": stats, "dropped_duplicates": dropped, "max_side": max_side}


def download_wheels(dest: Path, packages: Sequence[str] = WHEELS) -> dict[str, str]:
    """``pip download`` cp312 manylinux x86-64 wheels of ``packages`` (no dependencies), pinned to the
    versions installed here; returns ``{package: wheel file name}``."""
    dest.mkdir(parents=True, exist_ok=True)
    names = {}
    for package in packages:
        try:
            requirement = f"{package}=={metadata.version(package)}"
        except metadata.PackageNotFoundError:
            requirement = package
        before = set(dest.glob("*.whl"))
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
               "--implementation", "cp", *(a for p in _PLATFORMS for a in ("--platform", p)), "-d", str(dest), requirement]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        new = sorted(set(dest.glob("*.whl")) - before) or sorted(dest.glob(f"{package.replace('-', '_')}-*.whl"))
        if not new:
            raise ConfigError(f"pip download {requirement}: no wheel appeared in {str(dest)!r}")
        names[package] = new[0].name
    return names


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def tree_bytes(repo: Path = REPO_ROOT) -> int:
    """Bytes of what the device tool sends besides carried folders: tracked and untracked-not-ignored files."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=repo, check=True, capture_output=True).stdout
    return sum((repo / name).stat().st_size for name in listed.decode().split("\0") if name and (repo / name).is_file())


def build_carry(
    dest: Path, *, data: Path = DEFAULT_DATA, train_roots: Sequence[str] = DEFAULT_TRAIN_ROOTS, clip: str = DEFAULT_CLIP,
    wheels: bool = True, max_side: int = 640, limit_mib: float = 64.0, margin_mib: float = 4.0, repo: Path = REPO_ROOT,
) -> dict[str, Any]:
    """Build ``dest`` (replacing it) and return its manifest (also written as ``dest/MANIFEST.json``)."""
    for name in train_roots:
        _check_training_root(name)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    manifest: dict[str, Any] = {"data": str(data), "clip": clip, "train_roots": list(train_roots)}
    (dest / "clip").mkdir()
    for name in ("ir.mp4", "vi.mp4"):
        shutil.copy(data / clip / name, dest / "clip" / name)
    manifest["train"] = write_luma_pairs([data / r for r in train_roots], dest / "train", max_side=max_side)
    manifest["wheels"] = download_wheels(dest / "whl") if wheels else {}
    limit = (limit_mib - margin_mib) * 2**20
    tree = tree_bytes(repo)
    manifest["dropped_wheels"] = []
    for package in WHEELS:  # av first: the run falls back to OpenCV without it
        if tree + folder_bytes(dest) <= limit or package not in manifest["wheels"]:
            continue
        (dest / "whl" / manifest["wheels"].pop(package)).unlink()
        manifest["dropped_wheels"].append(package)
        logger.warning("left out the %s wheel: the working tree and %s would exceed %.0f MiB", package, dest, limit / 2**20)
        break
    manifest["bytes"] = {"tree": tree, "carry": folder_bytes(dest), "limit": int(limit), "clip": folder_bytes(dest / "clip"),
                         "train": folder_bytes(dest / "train"), "whl": folder_bytes(dest / "whl") if (dest / "whl").exists() else 0}
    if tree + manifest["bytes"]["carry"] > limit:
        raise ConfigError(f"{dest}: the working tree ({tree / 2**20:.1f} MiB) and the carried folder "
                          f"({manifest['bytes']['carry'] / 2**20:.1f} MiB) exceed {limit / 2**20:.0f} MiB; carry fewer training roots")
    (dest / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    from dstfuse_stream.cliutil import run_command

    from .source_tree import alias_tool_packages

    p = argparse.ArgumentParser(prog="python -m dstfuse_bench.gpu_prepare", description="Build the folder the device run carries.")
    p.add_argument("--out", default=str(REPO_ROOT / ".carry"), help="the folder (default: .carry in the repository; replaced)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder (default ../shared/data)")
    p.add_argument("--train-roots", nargs="+", default=list(DEFAULT_TRAIN_ROOTS), help="training folders under --data")
    p.add_argument("--clip", default=DEFAULT_CLIP, help="folder with ir.mp4 + vi.mp4 under --data")
    p.add_argument("--no-wheels", action="store_true", help="do not download wheels (no network needed)")
    p.add_argument("--limit-mib", type=float, default=64.0, help="the device tool's limit for tree + carried folders")
    p.add_argument("--margin-mib", type=float, default=4.0, help="kept free under the limit (the tree grows)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    alias_tool_packages()

    def body() -> None:
        manifest = build_carry(Path(args.out), data=Path(args.data), train_roots=args.train_roots, clip=args.clip,
                               wheels=not args.no_wheels, limit_mib=args.limit_mib, margin_mib=args.margin_mib)
        sizes = {k: f"{v / 2**20:.1f} MiB" for k, v in manifest["bytes"].items()}
        pairs = sum(r["pairs"] for r in manifest["train"]["roots"].values())
        print(f"wrote {args.out}: {pairs} training pairs, wheels {manifest['wheels']}, left out {manifest['dropped_wheels']}, sizes {sizes}")

    return run_command("gpu_prepare", body)


if __name__ == "__main__":
    sys.exit(main())
