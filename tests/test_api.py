"""The public face: the README's Python examples run, imports stay light, the runtime stands alone."""

from __future__ import annotations

import ast
import doctest
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA, require_data
from synthetic import ListSource, MaxFuser, ir_frame, vis_frame

import dstfuse_stream as ds

REPO = Path(__file__).resolve().parents[1]
TOOL_PACKAGES = ("dstfuse_train", "dstfuse_export", "dstfuse_bench", "train", "export", "benchmarks")


def test_readme_python_examples_run(monkeypatch):
    """Every ``>>>`` example in README.md, run from the repository root (its sample clip is real data)."""
    require_data(SHARED_DATA / "sequences" / "m3svd_frames_0111_1753")
    monkeypatch.chdir(REPO)
    # code fences become blank lines (same line numbers), so they end an example's expected output
    text = "\n".join("" if line.startswith("```") else line for line in (REPO / "README.md").read_text().splitlines())
    test = doctest.DocTestParser().get_doctest(text, {}, "README.md", str(REPO / "README.md"), 0)
    assert len(test.examples) >= 10
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} README examples failed (see the output above)"


def _run_python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_numpy_only_modules_and_the_package_do_not_import_torch():
    code = (
        "import sys\n"
        "import dstfuse_stream, dstfuse_stream.metrics, dstfuse_stream.colour, dstfuse_stream.imageio, dstfuse_stream.geometry\n"
        "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'kornia', 'matplotlib', 'tqdm') if m in sys.modules))\n"
        "dstfuse_stream.Fuser, dstfuse_stream.stream\n"
        "print('torch' in sys.modules)\n"
        "dstfuse_stream.load_model\n"
        "print('torch' in sys.modules)\n"
    )
    assert _run_python(code).splitlines() == ["[]", "False", "True"]  # torch comes with the model


def test_public_names_resolve_and_are_listed():
    for name in ds.__all__:
        assert getattr(ds, name) is not None, name
    assert {"Fuser", "fuse", "stream", "DSTFuseError", "load_model"} <= set(dir(ds))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ds.nope  # noqa: B018


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "require_module"):
            if node.args and isinstance(node.args[0], ast.Constant):
                names.add(str(node.args[0].value))
    return names


def test_the_runtime_never_imports_the_tool_packages():
    offenders = {}
    for path in sorted((REPO / "dstfuse_stream").rglob("*.py")):
        bad = {m for m in _imported_modules(path) if m.split(".")[0] in TOOL_PACKAGES}
        if bad:
            offenders[str(path.relative_to(REPO))] = sorted(bad)
    assert offenders == {}


def test_the_import_scan_sees_every_form_of_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "import train.cli\nfrom dstfuse_bench import stats\n"
        "def f():\n    import importlib\n    return importlib.import_module('dstfuse_export.cli')\n"
    )
    assert {"train.cli", "dstfuse_bench", "dstfuse_export.cli"} <= _imported_modules(module)


def test_stream_break_and_exceptions_leave_no_thread(tmp_path):
    def threads() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("dstfuse-")]

    def sources():
        return ListSource([ir_frame(i) for i in range(200)]), ListSource([vis_frame(i) for i in range(200)])

    frames = ds.stream(*sources(), backend=MaxFuser(), poll_s=0.01, queue_size=2)
    for frame in frames:
        assert frame.fused.shape == (32, 160, 3)
        if frame.index == 1:
            break
    assert threads() == [] and frames.summary.stopped_by == "closed"
    with pytest.raises(ValueError, match="consumer"):
        for frame in ds.stream(*sources(), backend=MaxFuser(), poll_s=0.01, queue_size=2):
            raise ValueError("consumer failed")
    assert threads() == []
    with ds.stream(*sources(), backend=MaxFuser(), poll_s=0.01, max_frames=3) as frames:
        assert [f.index for f in frames] == [0, 1, 2]


def test_stream_options_are_checked_before_anything_opens():
    with pytest.raises(ds.ConfigError, match=r"unknown option\(s\) \['max_fps'\]"):
        ds.stream(ir="cam0", vis="cam1", max_fps=3)
    with pytest.raises(ds.ConfigError, match="either pairs or ir and vis"):
        ds.stream(ir="a", pairs="b")
    ir, vis = ListSource([ir_frame(0)]), ListSource([vis_frame(0)])
    with pytest.raises(ds.ConfigError, match="either fuser= or the arguments"):
        ds.stream(ir, vis, fuser=ds.Fuser(backend=MaxFuser()), output="gray")


def test_stream_on_the_readme_sample_clip_yields_all_20_pairs():
    clip = require_data(SHARED_DATA / "sequences" / "m3svd_frames_0111_1753")
    frames = ds.stream(ir=clip / "ir", vis=clip / "vi", backend=MaxFuser(), max_size=160)
    got = list(frames)
    assert [f.index for f in got] == list(range(20))
    assert all(f.fused.shape == (120, 160, 3) and f.fused.dtype == np.uint8 for f in got)
    assert frames.summary.frames_written == 20 and frames.summary.stopped_by == "end"
