"""The one-command GPU run: budget split, headline figures, output limits, carried data, variants, and
the CPU rehearsal of every stage from a bare source tree (nothing installed, as on the device machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dstfuse_bench.gpu_models import PARITY_GATES, Variant, relative_error
from dstfuse_bench.gpu_prepare import VALIDATION_PREFIXES, build_carry, write_luma_pairs
from dstfuse_bench.gpu_run import allowance_s, fit_out_limits, headline, resolve_settings
from dstfuse_bench.gpu_stream import VariantBackend, extract_frames
from dstfuse_bench.gpu_train import phase_epochs, plan_crops_per_image
from dstfuse_bench.source_tree import REPO_ROOT, tool_package_dirs
from dstfuse_stream import load_model
from dstfuse_stream.backends.torch_backend import TorchBackend
from dstfuse_stream.errors import ConfigError
from dstfuse_stream.imageio import to_gray
from dstfuse_train.data import load_pairs
from dstfuse_train.trainer import TrainConfig


# -- budget, report, limits -------------------------------------------------------------------


def test_allowance_is_the_stage_share_of_what_is_left():
    assert allowance_s([0.5, 0.25, 0.25], 100.0) == 50.0
    assert allowance_s([0.25, 0.25], 80.0) == 40.0  # the first stage used 20 s: its unused 30 s is shared
    assert allowance_s([0.1, 0.9], 50.0, floor_s=15.0) == 15.0  # a process must start and import torch
    assert allowance_s([0.1, 0.9], 8.0, floor_s=15.0) == 8.0  # but never past the end of the budget
    assert allowance_s([1.0], -3.0) == 0.0


def _model_row(variant, fps, *, batch=1, model="paper", size=(640, 512), status="ok", parity_ok=True):
    return {"model": model, "width": size[0], "height": size[1], "batch": batch, "variant": variant, "status": status,
            "parity_ok": parity_ok, "fps": fps, "median_ms": 1e3 / max(fps, 1), "sync_median_ms": 1.1e3 / max(fps, 1), "rel_err": 1e-3,
            "peak_mem_mib": 100.0, "tflops": 1.0}


def _stream_row(variant, fps, ratio, p99, *, encode=False):
    return {"status": "ok", "variant": variant, "encode": encode, "pipeline_over_model": ratio,
            "pipeline": {"fps": fps, "latency_ms": {"p50": p99 / 2, "p99": p99}}}


def test_headline_takes_the_fastest_correct_paper_row_and_the_fastest_pipeline():
    stages = {
        "models": {"rows": [
            _model_row("fp16/cl/eager", 130.0), _model_row("fp32/nchw/eager", 40.0),
            _model_row("bf16/cl/eager", 400.0, parity_ok=False),  # fast but wrong: never the headline
            _model_row("fp16/cl/eager", 900.0, model="lite"), _model_row("fp16/cl/eager", 500.0, size=(320, 256)),
            _model_row("fp16/cl/eager", 160.0, batch=8),
        ]},
        "compile": {"rows": [_model_row("bf16/cl/max-autotune", 150.0), _model_row("fp16/cl/max-autotune", 0.0, status="failed")]},
        "stream": {"rows": [_stream_row("runtime", 90.0, 0.95, 20.0), _stream_row("fp16/cl/eager", 110.0, 0.85, 30.0),
                            _stream_row("fp16/cl/eager", 200.0, 1.0, 5.0, encode=True)]},
    }
    settings = {"headline_model": "paper", "headline_size": "640x512", "headline_batches": [1, 8]}
    out = headline(stages, settings)
    assert out["paper_fps_640x512"] == 150.0 and out["paper_fps_640x512_config"]["variant"] == "bf16/cl/max-autotune"
    assert out["paper_fps_640x512_batch8"] == 160.0
    pipeline = (out["pipeline_variant"], out["pipeline_fps"], out["pipeline_over_model"], out["pipeline_p99_ms"])
    assert pipeline == ("fp16/cl/eager", 110.0, 0.85, 30.0)  # the fastest pipeline without encoding
    assert out["targets"] == {"paper_fps_640x512 >= 120": True, "pipeline_over_model >= 0.9": False, "pipeline_p99_ms < 25": False}
    empty = headline({}, settings)
    assert empty["paper_fps_640x512"] is None and empty["pipeline_over_model"] is None
    assert set(empty["targets"].values()) == {None}


def test_out_folder_is_cut_to_the_device_limits(tmp_path):
    sizes = {"gpu.json": 10, "dstfuse_paper-00001-of-00002.pt": 50, "dstfuse_paper-00002-of-00002.pt": 40,
             "dstfuse_paper.json": 5, "run.log": 300, "losses.png": 20, "a.txt": 1, "b.txt": 1, "c.txt": 1, "huge.bin": 120}
    for name, size in sizes.items():
        (tmp_path / name).write_bytes(bytes([65]) * size)
    notes = fit_out_limits(tmp_path, max_files=7, max_file_bytes=100, max_total_bytes=200)
    kept = sorted(p.name for p in tmp_path.iterdir())
    # priority order: report, shards, card, log (truncated to its tail), plot; then the rest by name
    assert kept == sorted(["gpu.json", "dstfuse_paper-00001-of-00002.pt", "dstfuse_paper-00002-of-00002.pt", "dstfuse_paper.json",
                           "run.log", "losses.png", "a.txt"])
    assert (tmp_path / "run.log").read_bytes() == b"[... truncated ...]\n" + b"A" * 50
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= 200
    assert [n.split(":")[0] for n in notes] == ["run.log", "b.txt", "c.txt", "huge.bin"]


def test_settings_overrides_are_json_and_unknown_keys_are_refused():
    s = resolve_settings(rehearse=False, overrides=["train_lr=0.001", 'train_note="x"', "stream_reader=opencv"], carry="/tmp/c")
    assert s["train_lr"] == 0.001 and s["train_note"] == "x" and s["stream_reader"] == "opencv" and s["carry"] == "/tmp/c"
    assert s["device"] == "cuda" and resolve_settings(rehearse=True, overrides=[], carry=None)["device"] == "cpu"
    with pytest.raises(ConfigError, match="--set 'train_rl=1': expected KEY=VALUE"):
        resolve_settings(rehearse=False, overrides=["train_rl=1"], carry=None)


def test_source_tree_names_come_from_pyproject():
    assert tool_package_dirs() == {"dstfuse_train": REPO_ROOT / "train", "dstfuse_export": REPO_ROOT / "export",
                                   "dstfuse_bench": REPO_ROOT / "benchmarks"}


# -- training plan ------------------------------------------------------------------------------


def test_phase_epochs_and_a_schedule_that_fits_the_budget():
    config = TrainConfig(batch_size=16, crop_size=256)
    groups = phase_epochs(config)
    assert groups == {0: [0, 1, 2], 3: [3, 4, 5], 6: [6, 7, 8, 9], 10: [10, 11, 12, 13, 14]}
    costs = {0: 0.3, 3: 0.3, 6: 0.2, 10: 0.1}  # one step of each epoch: 3*0.3 + 3*0.3 + 4*0.2 + 5*0.1 = 3.1 s
    # 300 s - 15 saves of 2 s = 270 s -> 87.1 steps per epoch -> 87.1 * 16 / 280 pairs = 4.98 -> 4 crops per image
    assert plan_crops_per_image(costs, config, budget_s=300.0, num_pairs=280, save_s=2.0) == 4
    assert plan_crops_per_image(costs, config, budget_s=10.0, num_pairs=280, save_s=2.0) == 1  # never below one


# -- carried data -------------------------------------------------------------------------------


def _write_pair_root(root: Path, images: dict[str, tuple[np.ndarray, np.ndarray]], suffix: str, params: tuple = ()) -> None:
    for side in ("ir", "vi"):
        (root / side).mkdir(parents=True, exist_ok=True)
    for name, (ir, vis) in images.items():
        cv2.imwrite(str(root / "ir" / f"{name}{suffix}"), ir, list(params))
        cv2.imwrite(str(root / "vi" / f"{name}{suffix}"), vis, list(params))


def test_carried_pairs_load_to_the_arrays_of_the_originals(tmp_path):
    rng = np.random.default_rng(0)
    smooth = lambda h, w: cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 3)  # noqa: E731
    # an RGB PNG larger than max_side (stored as luma PNG: smaller), and JPEGs (kept as they are) with one duplicate
    _write_pair_root(tmp_path / "big", {"a": (smooth(90, 120), smooth(90, 120))}, ".png")
    noise = lambda: rng.integers(0, 256, (48, 64), dtype=np.uint8)  # noqa: E731 - as a JPEG smaller than its decoded PNG
    jpeg = {"x": (noise(), noise()), "y": (noise(), noise())}
    _write_pair_root(tmp_path / "jpg", jpeg, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 50))
    _write_pair_root(tmp_path / "dup", {"x": jpeg["x"]}, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 50))
    roots = [tmp_path / "big", tmp_path / "jpg", tmp_path / "dup"]
    stats = write_luma_pairs(roots, tmp_path / "carry", max_side=64)
    assert stats["dropped_duplicates"] == 1
    assert stats["roots"]["big"]["luma_png"] == 1 and stats["roots"]["jpg"]["originals"] == 2 and "dup" not in stats["roots"]
    assert sorted(p.name for p in (tmp_path / "carry" / "jpg" / "vi").iterdir()) == ["00000.jpg", "00001.jpg"]
    original, _ = load_pairs(roots, max_side=64)
    carried, _ = load_pairs(sorted((tmp_path / "carry").iterdir()), max_side=64)
    key = lambda p: p.ir.tobytes()  # noqa: E731
    assert len(original) == len(carried) == 3
    for a, b in zip(sorted(original, key=key), sorted(carried, key=key)):
        assert np.array_equal(a.ir, b.ir) and np.array_equal(a.vis, b.vis)


@pytest.mark.parametrize("name", ["vifb", "m3svd_frames_0111_1753"])
def test_validation_data_is_never_carried(tmp_path, name):
    assert any(name.startswith(prefix) for prefix in VALIDATION_PREFIXES)
    with pytest.raises(ConfigError, match="held-out validation data"):
        build_carry(tmp_path / "carry", data=tmp_path, train_roots=["roadscene", name], wheels=False)
    assert not (tmp_path / "carry").exists()


def test_carry_leaves_out_the_pyav_wheel_first_when_it_does_not_fit(tmp_path, monkeypatch):
    from dstfuse_bench import gpu_prepare
    from dstfuse_bench.clips import write_synthetic_pair

    write_synthetic_pair(tmp_path / "data" / "clip", frames=2, resolution_wh=(32, 24))
    _write_pair_root(tmp_path / "data" / "pairs", {"a": (np.full((24, 32), 9, np.uint8), np.full((24, 32, 3), 7, np.uint8))}, ".png")

    def fake_download(dest, packages=gpu_prepare.WHEELS):
        dest.mkdir(parents=True)
        sizes = {"av": 3 * 2**20, "kornia": 2**20, "kornia_rs": 2**20}
        for name in packages:
            (dest / f"{name}-1-py3-none-any.whl").write_bytes(b"w" * sizes[name])
        return {name: f"{name}-1-py3-none-any.whl" for name in packages}

    monkeypatch.setattr(gpu_prepare, "download_wheels", fake_download)
    monkeypatch.setattr(gpu_prepare, "tree_bytes", lambda repo=None: 2**20)
    carry = tmp_path / "carry"
    manifest = build_carry(carry, data=tmp_path / "data", train_roots=["pairs"], clip="clip", limit_mib=5.5, margin_mib=0.0)
    assert manifest["dropped_wheels"] == ["av"] and sorted(manifest["wheels"]) == ["kornia", "kornia_rs"]
    assert sorted(p.name for p in (carry / "whl").iterdir()) == ["kornia-1-py3-none-any.whl", "kornia_rs-1-py3-none-any.whl"]
    assert json.loads((carry / "MANIFEST.json").read_text())["bytes"]["carry"] == manifest["bytes"]["carry"]
    with pytest.raises(ConfigError, match="exceed 2 MiB; carry fewer training roots"):
        build_carry(carry, data=tmp_path / "data", train_roots=["pairs"], clip="clip", limit_mib=2.0, margin_mib=0.0)


def test_opencv_frame_extraction_without_pyav(tmp_path):
    from dstfuse_bench.clips import write_synthetic_pair  # writing the clip needs PyAV; reading it back does not

    write_synthetic_pair(tmp_path / "clip", frames=5, resolution_wh=(48, 32))
    ir_dir, vi_dir, count = extract_frames(tmp_path / "clip", tmp_path / "frames", max_frames=3)
    assert count == 3 and sorted(p.name for p in ir_dir.iterdir()) == ["00000.bmp", "00001.bmp", "00002.bmp"]
    cap = cv2.VideoCapture(str(tmp_path / "clip" / "ir.mp4"))
    cap.read()
    _, second = cap.read()
    cap.release()
    ir1 = cv2.imread(str(ir_dir / "00001.bmp"), cv2.IMREAD_UNCHANGED)
    assert ir1.ndim == 2 and np.array_equal(ir1, to_gray(second))  # IR stored as the luma the pipeline fuses
    assert cv2.imread(str(vi_dir / "00002.bmp"), cv2.IMREAD_UNCHANGED).shape == (32, 48, 3)


# -- variants -----------------------------------------------------------------------------------


def test_variant_labels_round_trip_and_bad_ones_are_refused():
    for label in ("fp16/cl/max-autotune", "bf16/nchw/eager", "fp32/cl/reduce-overhead"):
        assert Variant.parse(label).label == label
    assert Variant.parse("fp16/cl/eager") == Variant("fp16", True, None)
    with pytest.raises(ConfigError, match="compile mode 'fast'"):
        Variant.parse("fp16/cl/fast")
    with pytest.raises(ConfigError, match="expected PRECISION/cl|nchw"):
        Variant.parse("fp16-cl")


def test_variant_backend_fuses_uint8_frames_like_the_runtime(lite_model, one_torch_thread):
    rng = np.random.default_rng(2)
    ir, vis = (rng.integers(0, 256, (1, 1, 30, 42), dtype=np.uint8) for _ in range(2))
    ref = TorchBackend(lite_model, device="cpu").fuse(ir, vis)
    same = VariantBackend(lite_model, Variant("fp32", True, None), device="cpu").fuse(ir, vis)
    bf16 = VariantBackend(lite_model, Variant("bf16", True, None), device="cpu").fuse(ir, vis)
    assert same.dtype == np.float32 and same.shape == ref.shape
    np.testing.assert_allclose(same, ref, atol=1e-5)
    assert relative_error(torch.from_numpy(bf16), torch.from_numpy(ref)) < PARITY_GATES["bf16"]


# -- the rehearsal --------------------------------------------------------------------------------


def _bare_tree_env() -> dict[str, str]:
    """PYTHONPATH = the repository and the site-packages folders, for ``python -S``: no .pth files, so no
    editable install of this project; only what a plain checkout on the device machine has."""
    site = [p for p in sys.path if p.endswith("site-packages")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *site]), "GOMP_SPINCOUNT": "10000"}


def _tiny_carry(folder: Path) -> Path:
    from dstfuse_bench.clips import write_synthetic_pair

    write_synthetic_pair(folder / "clip", frames=6, resolution_wh=(64, 48))
    rng = np.random.default_rng(5)
    images = {f"p{i}": (rng.integers(0, 256, (48, 64), dtype=np.uint8), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
              for i in range(3)}
    _write_pair_root(folder / "train" / "synthetic", images, ".png")
    return folder


def _rehearse(tmp_path: Path, *extra: str, timeout: float) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "out"
    cmd = [sys.executable, "-S", "-m", "benchmarks.gpu_run", "--rehearse", "--out", str(out), "--work", str(tmp_path / "work"), *extra]
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=_bare_tree_env(), capture_output=True, text=True, timeout=timeout)
    report = json.loads((out / "gpu.json").read_text()) if (out / "gpu.json").is_file() else {}
    return done, report


@pytest.mark.slow
def test_rehearsal_runs_every_stage_from_a_bare_source_tree(tmp_path):
    carry = _tiny_carry(tmp_path / "carry")
    # a budget no stage needs on an idle machine (about a minute in all): on a loaded one a stage must not be cut short
    done, report = _rehearse(tmp_path, "--carry", str(carry), "--budget-s", "3600", "--set", "stream_reader=opencv", timeout=3700)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    stages = report["stages"]
    all_stages = ("probe", "tests", "train", "stream", "models", "compile")
    assert {name: s["status"] for name, s in stages.items()} == dict.fromkeys(all_stages, "ok")
    assert report["source_tree_aliases"] == ["dstfuse_train", "dstfuse_export", "dstfuse_bench"]  # nothing installed
    # tests: the gpu-marked ones were collected (and skip without CUDA)
    tests = stages["tests"]["result"]
    assert "test_gpu_fast_path.py" in tests["files"] and tests["counts"]["failed"] == 0 and tests["counts"]["skipped"] >= 3
    # train: every phase ran; the weights came back as several shards under the limit that reassemble
    train = stages["train"]["result"]
    out = tmp_path / "out"
    assert train["epochs_completed"] == 3 and train["finished_schedule"] and len(train["shards"]) >= 2
    assert all((out / name).stat().st_size <= 0.4 * 2**20 for name in train["shards"])
    assert load_model(out / train["shards"][-1]).config.name == "lite"
    card = json.loads((out / "dstfuse_lite.json").read_text())
    assert card["weights"] == train["shards"] and card["gpu_training"]["autocast"] == "bf16"
    assert all(term["rel_diff"] < 0.05 for term in card["gpu_training"]["autocast_check"].values())
    # stream: OpenCV-decoded frames, both variants and the encoded run, 4 frames each
    assert "OpenCV" in stages["stream"]["sources"]["source"]
    rows = stages["stream"]["rows"]
    assert [(r["variant"], r["encode"], r["status"], r["frames"]) for r in rows] == [
        ("runtime", False, "ok", 4), ("bf16/cl/eager", False, "ok", 4), (rows[2]["variant"], True, "ok", 4)]
    # models: CUDA-only variants skipped with their reason, the others checked against fp32
    models = {(r["model"], r["variant"], r["batch"]): r for r in stages["models"]["rows"]}
    assert models[("paper", "fp16/cl/eager", 1)]["status"] == "skipped"
    assert models[("paper", "bf16/cl/eager", 1)]["parity_ok"] and models[("paper", "fp32/nchw/eager", 1)]["rel_err"] == 0.0
    compiled = {r["variant"]: r for r in stages["compile"]["rows"]}
    assert compiled["fp32/cl/max-autotune"]["reason"].endswith("needs a CUDA device")
    assert compiled["fp32/cl/max-autotune-no-cudagraphs"]["rel_err"] < 1e-5
    assert report["paper_fps_22x14"] > 0 and report["pipeline_over_model"] > 0 and report["pipeline_p99_ms"] > 0
    assert len(report["out_files"]) <= 8


def test_a_stage_past_its_deadline_is_stopped_and_the_next_one_still_runs(tmp_path):
    # a probe that hangs for 60 s cannot finish in its ~6 s share of the budget (a large matrix product,
    # used before, finished in time on a fast idle CPU)
    done, report = _rehearse(tmp_path, "--stages", "probe,tests", "--budget-s", "20", "--set", "min_stage_s=0",
                             "--set", "probe_hang_s=60", timeout=120)
    assert done.returncode == 1
    probe = report["stages"]["probe"]
    assert probe["status"] == "timeout" and probe["ended"] in ("terminated at its deadline", "killed after the grace period")
    assert probe["wall_s"] < probe["allowance_s"] + 1.0 + 5.0 + 2.0  # deadline + poll + grace + process exit
    assert report["stages"]["tests"]["status"] in ("ok", "timeout") and report["stages"]["tests"]["allowance_s"] >= 1.0
    assert "gpu.json" in report["out_files"]
