"""Markdown tables from a benchmark result (the README table is pasted from this output)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["format_number", "model_table", "pipeline_table", "markdown_report", "realtime_table", "realtime_report"]


def format_number(value: Any, digits: int = 1) -> str:
    """``None``/NaN -> ``"-"``; floats with ``digits`` decimals; ints unchanged."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def model_table(rows: list[dict[str, Any]]) -> str:
    """One line per model-only case; skipped/failed cases show their reason."""
    lines = [
        "| preset | backend | W x H | GMACs | median ms | p90 ms | p99 ms | fps | n | peak RSS +MiB | note |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        size = f"{r['width']} x {r['height']}"
        if r.get("status") != "ok":
            lines.append(
                f"| {r['preset']} | {r['backend']} | {size} | {format_number(r.get('gmacs'))} | - | - | - | - | - | - "
                f"| {r.get('status')}: {r.get('reason', '')} |"
            )
            continue
        note = f"first call {format_number(r['first_call_ms'], 0)} ms" if r["backend"] == "torch-compile" else ""
        lines.append(
            f"| {r['preset']} | {r['backend']} | {size} | {format_number(r['gmacs'])} | {format_number(r['median_ms'])} "
            f"| {format_number(r['p90_ms'])} | {format_number(r['p99_ms'])} | {format_number(r['fps'], 2)} | {r['n']} "
            f"| {format_number(r['peak_mem_delta_mib'])} | {note} |"
        )
    return "\n".join(lines)


def pipeline_table(clips: list[dict[str, Any]]) -> str:
    """One block per clip: fps of model only / pipeline / naive, stage medians and ratios."""
    lines = [
        "| clip | W x H | frames | model-only fps | pipeline fps | naive fps | pipeline / model | pipeline / naive "
        "| fuse share pipeline / naive | latency p50 / p99 ms pipeline | naive "
        "| decode | pair | preprocess | fuse | postprocess | encode (pipeline, median ms) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in clips:
        if c.get("status", "ok") != "ok":
            lines.append(f"| {c['label']} | {c['status']}: {c.get('reason', '')} |" + " - |" * 15)
            continue
        p, st = c["pipeline"], c["pipeline"]["stages_ms"]
        w, h = c["clip"]["size_wh"]

        def med(key: str) -> str:
            return format_number(st.get(key, {}).get("median"))

        lat = st.get("latency_ms", {})
        naive_lat = c["naive"].get("stages_ms", {}).get("latency_ms", {})
        lines.append(
            f"| {c['label']} | {w} x {h} | {p['frames']} | {format_number(c['model_only']['fps'], 2)} "
            f"| {format_number(p['fps'], 2)} | {format_number(c['naive']['fps'], 2)} "
            f"| {format_number(c['ratios']['pipeline_over_model_only_fps'], 2)} "
            f"| {format_number(c['ratios']['pipeline_over_naive_fps'], 2)} "
            f"| {format_number(p.get('fuse_share'), 2)} / {format_number(c['naive'].get('fuse_share'), 2)} "
            f"| {format_number(lat.get('median'), 0)} / {format_number(lat.get('p99'), 0)} "
            f"| {format_number(naive_lat.get('median'), 0)} / {format_number(naive_lat.get('p99'), 0)} "
            f"| {med('read_ms')} | {med('pair_ms')} | {med('preprocess_ms')} | {med('fuse_ms')} "
            f"| {med('postprocess_ms')} | {med('encode_ms')} |"
        )
    return "\n".join(lines)


def markdown_report(result: dict[str, Any]) -> str:
    """Machine line, model table, model sizes and pipeline table of a full result dict."""
    m = result["machine"]
    parts = [
        f"Command: `{result['command']}`",
        "",
        f"Machine: {m['cpu_model']}, {m['usable_cores']} cores, torch threads {m['torch_threads']}, GPU {m['gpu']}; "
        f"torch {m['versions'].get('torch')}, onnxruntime {m['versions'].get('onnxruntime')}, "
        f"Python {m['python']}. Load average at start {result['load_average']['start']}, "
        f"at end {result['load_average']['end']}.",
        "",
    ]
    if result.get("models"):
        parts += ["| preset | params | weights | MACs per pixel |", "|---|---:|---|---:|"]
        for name, info in result["models"].items():
            parts.append(f"| {name} | {info['params']:,} | {info['weights']} | {info['macs_per_pixel']:,.0f} |")
        parts.append("")
    if result.get("model_only"):
        parts += ["Model only (batch 1):", "", model_table(result["model_only"]), ""]
    if result.get("pipeline"):
        s = result.get("settings", {})
        parts += [
            f"End to end (preset {s.get('pipeline_preset')}, backend {s.get('pipeline_backend')}):",
            "",
            pipeline_table(result["pipeline"]),
            "",
        ]
    return "\n".join(parts)


def _runs_as(variant: dict[str, Any], row: dict[str, Any], size: str) -> str:
    """``onnx int8, ws 0.5``; for precision auto the choice made at this size (``auto: int8``)."""
    chosen = sorted({c[size]["chosen"] for c in row.get("auto_choices", []) if size in c})
    precision = variant["precision"] if variant["precision"] != "auto" else "auto: " + "/".join(chosen or ["fp32"])
    ws = variant["work_scale"]
    extra = f", {variant['concurrent_frames']} in flight" if variant.get("concurrent_frames", 1) > 1 else ""
    return f"{variant['backend']} {precision}, ws {ws}{extra}"


def realtime_table(result: dict[str, Any], size: str) -> str:
    """One resolution of ``dstfuse-bench realtime``: speed, speed-up over fp32-ref, non-fusion share, fidelity."""
    entry = result["resolutions"][size]
    lines = [
        "| variant | runs as | model ms | model fps | x fp32-ref | CPU ms / frame | end-to-end ms | end-to-end fps | x fp32-ref "
        "| non-fusion | PSNR min / mean dB | VIF / Qabf / SSIM change | gate |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for label, row in entry["speed"].items():
        fid = entry.get("fidelity", {}).get(label)
        m, e = row["model"], row["e2e"]
        if fid is None:
            quality, change, gate = "-", "-", "-"
        else:
            quality = f"{format_number(fid['psnr_min_db'])} / {format_number(fid['psnr_mean_db'])}"
            change = " / ".join(f"{100 * fid['metric_change'][k]:+.2f} %" for k in ("VIF", "Qabf", "SSIM"))
            failed = fid["metrics_failed"]
            gate = ("PSNR pass" if fid["psnr_passed"] else "PSNR FAIL") + (f", FAIL {'/'.join(failed)}" if failed else ", metrics pass")
        per_frame = lambda s: s["median_ms"] / row["frames_per_call"]  # noqa: E731
        lines.append(
            f"| {label} | {_runs_as(result['variants'][label], row, size)} | {format_number(per_frame(m))} | {format_number(m['fps'], 2)} "
            f"| {format_number(m.get('speedup_vs_ref'), 2)} | {format_number(m.get('cpu_ms_per_frame'))} "
            f"| {format_number(per_frame(e))} | {format_number(e['fps'], 2)} "
            f"| {format_number(e.get('speedup_vs_ref'), 2)} | {100 * row['non_fusion_share']:.1f} % | {quality} | {change} | {gate} |"
        )
    return "\n".join(lines)


def realtime_report(result: dict[str, Any]) -> str:
    """Markdown of a ``dstfuse-bench realtime`` result: machine, one table per resolution, stream check, targets."""
    m, cpu = result["machine"], result["cpu"]
    env = ", ".join(f"{k}={v}" for k, v in result["env"].items() if v is not None) or "no OpenMP variables set"
    parts = [
        f"Command: `{result['command']}`",
        "",
        f"CPU: **{cpu['summary']}**, {m['usable_cores']} usable cores, {result['threads']} threads; torch "
        f"{m['versions'].get('torch')}, onnxruntime {m['versions'].get('onnxruntime')}; {env}. Weights: {result.get('weights')}. "
        f"Load average at start {result['load_average']['start']}, at end {result['load_average'].get('end')}.",
        "",
        "Per-frame medians; fps = frames / timed seconds; \"x fp32-ref\" = median over rounds of the fp32-ref time / the "
        "variant's time in the same round; CPU ms / frame = process CPU time (all threads) per model-only frame. "
        "Fidelity vs fp32-ref on the same real frames: gate PSNR >= 35 dB on every frame and VIF, Qabf, SSIM within 1 %.",
        "",
    ]
    for size in result["resolutions"]:
        parts += [f"**{size}** ({result['resolutions'][size]['frames']} frames):", "", realtime_table(result, size), ""]
    for label, reason in result.get("skipped", {}).items():
        parts.append(f"- {label}: skipped ({reason})")
    stream = result.get("stream")
    if stream:
        w, h = stream["size_wh"] or ("?", "?")
        k = stream.get("concurrent_frames", 1)
        quartiles = stream.get("ratio_quartiles")
        parts += [
            "",
            "Streaming pipeline (`dstfuse_stream.stream`, H.264 + preview outputs, warmed up, readers at the default idle "
            f"priority of recorded sources) on the README sample clip, with the Fuser `dstfuse-stream` builds for it: "
            f"{k} frame{'s' if k > 1 else ''} in flight (`--concurrent-frames auto`); `model-only` is the `default` Fuser "
            "(one frame at a time), as in the table above. "
            f"Medians over {stream.get('rounds', 1)} rounds, each the model-only passes and the two pipeline runs, in alternating order "
            "(ratio: median of the per-round ratios" + (f"; quartiles {format_number(quartiles[0], 2)}-{format_number(quartiles[1], 2)}"
                                                          if quartiles else "") + "):",
            "",
            "| clip | frames | size | writer thread | pipeline fps | model-only fps | pipeline / model-only |",
            "|---|---:|---|---|---:|---:|---:|",
            f"| {Path(stream['clip']).name} | {stream['frames']} | {w}x{h} | writer at idle priority (default) | {format_number(stream['pipeline_fps'], 2)} "
            f"| {format_number(stream['model_only_fps'], 2)} | {format_number(stream['ratio'], 2)} |",
        ]
        if "ratio_normal_writer" in stream:
            parts.append(f"| | | | writer at normal priority (`--writer-priority normal`) | {format_number(stream['pipeline_fps_normal_writer'], 2)} "
                         f"| {format_number(stream['model_only_fps'], 2)} | {format_number(stream['ratio_normal_writer'], 2)} |")
        if k > 1 and "ratio_own" in stream:
            parts += ["", f"Against its own model-only throughput ({k} frames in flight, {format_number(stream['own_model_only_fps'], 2)} fps) "
                      f"the pipeline reaches {format_number(stream['ratio_own'], 2)}: what reading, pairing and writing cost it."]
        budget = stream.get("cpu_ms_per_frame")
        if budget:
            parts += [
                "",
                "CPU time per frame of each stage run alone (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in budget.items())
                + f". If the fusion kept every core busy, the other stages would hold the ratio at "
                f"{stream['projected_ratio_idle']:.2f} with the preview, {stream['projected_ratio_idle_without_preview']:.2f} without; "
                f"it keeps {budget['fuse'] / (1000.0 / stream['model_only_fps']):.2f} cores busy on average (fuse CPU ms / model-only ms), "
                "and the idle-priority readers and writer use the rest.",
            ]
    return "\n".join(parts)
