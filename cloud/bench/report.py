"""The bench's table (plain text, also pasted into docs/bench.md) and its chart (one PNG, matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cloud.bench.aws_model import DEFAULT_MEMORY_MB, assumptions, cost_at


def table(figures: dict[str, Any]) -> str:
    cfg = figures["config"]
    lines = [f"facepipe bench, engine {cfg['engine']}: {cfg['frames']} frames ({cfg['source']}), "
             f"{cfg['faces_per_frame']:.1f} faces/frame, "
             f"{cfg['cores']} cores, {cfg['threads']} thread(s) per worker and per core in raw", _pinning(cfg),
             ""]
    lines.append("| run | frames/s | vs raw | latency mean / p95 s | detect / queue wait / recognise ms | "
                 "the rest (HTTP, decode, queues) ms |")
    lines.append("| --- | --- | --- | --- | --- | --- |")
    raw = figures["raw"]
    spread = f" ({raw['fps_before']:.2f} before, {raw['fps_after']:.2f} after)"
    lines.append(f"| raw (models in one process) | {figures['raw_fps']:.2f}{spread} | 1.00 | | "
                 f"{raw['detect_ms']:.0f} / - / {raw['recognise_ms']:.0f} | |")
    for level, run in figures["pipeline"].items():
        t = run["timings_ms"]
        lines.append(f"| pipeline, concurrency {level} | {figures['pipeline_fps'][level]:.2f} | "
                     f"{figures['pipeline_fps'][level] / figures['raw_fps']:.2f} | "
                     f"{run['latency_mean_s']} / {run['latency_p95_s']} | "
                     f"{t['detect_ms']:.0f} / {t['queue_wait_ms']:.0f} / {t['recognise_ms']:.0f} | "
                     f"{run.get('plumbing_ms')} |")
    passes = ", ".join(f"{p['ratio']:.3f}" for p in figures["ratio_passes"])
    first_level = next(iter(figures["pipeline"]))
    lines += ["", f"pipeline / raw at concurrency {first_level}, pass by pass, each against the "
              f"raw runs just before and after it: {passes} (the median, {figures['ratio_pipeline_raw']:.3f}, is the "
              "table's)"]
    measured = {level: run["cpu_ms_per_frame"] for level, run in figures["pipeline"].items()
                if run.get("cpu_ms_per_frame")}
    if measured:  # not for a stack the bench did not start: its workers are not ours to read
        lines += ["", f"CPU per frame: raw {raw['cpu_ms']:.0f} ms" + "".join(
            f"; concurrency {level}: " + _cpu(cpu) for level, cpu in measured.items())]
        lines += [_cores(level, run) for level, run in figures["pipeline"].items() if run.get("cores_ms_per_frame")]
        lines += [_apart(level, run) for level, run in figures["pipeline"].items()
                  if run.get("cpu_ms_per_frame_core_per_function")]
    if figures.get("function_cpu_ms_per_frame"):
        lines.append(_function_cpu(first_level, figures["function_cpu_ms_per_frame"]))
    if figures.get("ratio_ceiling"):
        lines.append(f"so pipeline / raw at concurrency {first_level} could be at most "
                     f"{figures['ratio_ceiling']:.3f} with no idle time: raw takes "
                     f"{1000 / figures['raw_fps']:.1f} ms a frame on its "
                     f"{figures['config']['raw_cores']} core(s), and the workers' CPU alone fills the same cores for "
                     "longer; only less work in the functions, or less lost to sharing the cores, raises it")
    b = figures["burst"]
    lines += ["", f"burst of {b['sent']}: answered {b['answered']}, duplicates {b['duplicates']}, 429s {b['rejected']} "
              f"(retried, {b.get('attempts_per_frame', '?')} attempts, then spooled and sent again: "
              f"{b['spooled']} frames), 5xx {b['server_errors']}, gave up {b['gave_up']}; "
              f"latency mean {b['latency_mean_s']} s, "
              f"p50 {b['latency_p50_s']} s, p95 {b['latency_p95_s']} s, max {b['latency_max_s']} s; "
              f"wall {b['wall_s']} s"]
    w = figures["workload"]
    lines.append(f"paced client: {w['requests']} requests every {w['pace_s']} s: answered {w['answered']}, "
                 f"average {w['average_s']} s (total duration / completed); latency mean {w['latency_mean_s']} s, "
                 f"p95 {w['latency_p95_s']} s, max {w['latency_max_s']} s")
    cold = figures["cold_start"]
    if figures.get("max_memory_mb"):
        lines.append("workers' peak resident memory (REPORT Max Memory Used, the whole run): " + "; ".join(
            f"{name} {mb} MB" for name, mb in figures["max_memory_mb"].items()))
    if cold:
        lines.append("cold start (new worker): " + "; ".join(
            f"{name} Init Duration {c['init_s']:.1f} s, first invocation {c['first_invocation_s']:.1f} s"
            for name, c in cold.items()))
    else:
        lines.append("cold start: not measured (the bench used a stack it did not start)")
    lines += ["", "On paper for AWS Lambda (per frame):", "",
              "| memory MB | vCPUs | detection ms | detection $/1M frames | recognition ms | recognition $/1M frames |",
              "| --- | --- | --- | --- | --- | --- |"]
    for d, r in zip(figures["aws_model"]["detection"], figures["aws_model"]["recognition"], strict=True):
        lines.append(f"| {d['memory_mb']} | {d['vcpus']} | {d['latency_ms']:.0f} | {d['cost_per_million_usd']:.2f} | "
                     f"{r['latency_ms']:.0f} | {r['cost_per_million_usd']:.2f} |")
    lines += ["", "Model assumptions:", assumptions(len(figures["raw"]["fps_by_cores"]))]
    return "\n".join(lines)


def side_by_side(by_engine: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per engine, the figures issue 24 compares: cold starts, first answer, workers' peak memory, per-frame model
    times and frames/s on the same frames and cores, and the AWS cost at that engine's default memory sizes."""
    rows: dict[str, dict[str, Any]] = {}
    for engine, f in by_engine.items():
        cold = f["cold_start"]
        first_level = next(iter(f["pipeline_fps"]))
        memory = DEFAULT_MEMORY_MB[engine]
        rows[engine] = {
            "init_s": {name: c["init_s"] for name, c in cold.items()},
            "first_frame_latency_s": next((c["first_frame_latency_s"] for c in cold.values()), None),
            "max_memory_mb": f.get("max_memory_mb", {}),
            "raw_detect_ms": round(f["raw"]["detect_ms"], 1), "raw_recognise_ms": round(f["raw"]["recognise_ms"], 1),
            "raw_fps": f["raw_fps"], "pipeline_fps": f["pipeline_fps"][first_level], "pipeline_level": first_level,
            "burst_mean_s": f["burst"]["latency_mean_s"],
            "memory_mb": memory,
            "cost_per_million_usd": {name: cost_at(f["aws_model"][name], mb) for name, mb in memory.items()},
        }
    return rows


def side_by_side_table(rows: dict[str, dict[str, Any]]) -> str:
    engines = list(rows)
    lines = ["Engines side by side (the same frames, cores and run):", "",
             "| | " + " | ".join(engines) + (" | onnx's gain |" if set(engines) == {"onnx", "torch"} else " |"),
             "| --- |" + " --- |" * (len(engines) + (1 if set(engines) == {"onnx", "torch"} else 0))]

    def row(label: str, values: list[Any], rate: bool = False) -> None:
        """`values` by engine; the gain is torch / onnx for a time or a size, onnx / torch for a `rate`."""
        ratio = ""
        if set(engines) == {"onnx", "torch"}:
            by = dict(zip(engines, values, strict=True))
            if isinstance(by["onnx"], int | float) and isinstance(by["torch"], int | float) and by["onnx"]:
                ratio = f" {(by['onnx'] / by['torch']) if rate else (by['torch'] / by['onnx']):.2f}x |"
            else:
                ratio = " |"
        lines.append(f"| {label} | " + " | ".join("-" if v is None else f"{v:g}" if isinstance(v, float) else str(v)
                                                for v in values) + " |" + ratio)

    for name in ("detection", "recognition"):
        row(f"{name} Init Duration s", [rows[e]["init_s"].get(_function_key(rows[e]["init_s"], name)) for e in engines])
    row("first frame from a cold stack, s", [rows[e]["first_frame_latency_s"] for e in engines])
    for name in ("detection", "recognition"):
        row(f"{name} workers' peak MB", [rows[e]["max_memory_mb"].get(_function_key(rows[e]["max_memory_mb"], name))
                                         for e in engines])
    row("raw detect ms a frame", [rows[e]["raw_detect_ms"] for e in engines])
    row("raw recognise ms a frame", [rows[e]["raw_recognise_ms"] for e in engines])
    row("raw frames/s", [rows[e]["raw_fps"] for e in engines], rate=True)
    row(f"pipeline frames/s (concurrency {rows[engines[0]]['pipeline_level']})",
        [rows[e]["pipeline_fps"] for e in engines], rate=True)
    row("burst latency mean s", [rows[e]["burst_mean_s"] for e in engines])
    for name in ("detection", "recognition"):
        row(f"AWS {name} $/1M frames at its default memory",
            [f"{rows[e]['cost_per_million_usd'][name]:.2f} ({rows[e]['memory_mb'][name]} MB)" for e in engines])
    lines.append("")
    lines.append("Default memory sizes: onnx the template's (DetectionMemorySize, RecognitionMemorySize), torch the "
                 "template's before the ONNX engine.")
    return "\n".join(lines)


def _function_key(by_function: dict[str, Any], name: str) -> str:
    """The logical id in `by_function` (DetectionFunction, ...) for "detection" or "recognition"."""
    return next((key for key in by_function if key.lower().startswith(name)), name)


def _cpu(per_function: dict[str, float]) -> str:
    workers = {name: ms for name, ms in per_function.items() if name != "stack_and_client"}
    return (" + ".join(f"{name} {ms:.0f}" for name, ms in workers.items()) + f" = {sum(workers.values()):.0f} ms"
            f" in the workers (stack and client {per_function.get('stack_and_client', 0):.0f} ms)")


def _cores(level: str, run: dict[str, Any]) -> str:
    c = run["cores_ms_per_frame"]
    return (f"concurrency {level}'s {c['cores']} core(s), per frame: busy {c['busy']:.1f} ms (other processes "
            f"{c['other']:.1f}), idle {c['idle']:.1f} ms (every worker waiting: on an SQS call or for its next event)")


def _apart(level: str, run: dict[str, Any]) -> str:
    apart = run["cpu_ms_per_frame_core_per_function"]
    shared = sum(ms for name, ms in run["cpu_ms_per_frame"].items() if name in apart)
    return (f"concurrency {level} with cores of its own per function: " + " + ".join(
        f"{name} {ms:.0f}" for name, ms in apart.items()) + f" = {sum(apart.values()):.0f} ms in the workers; "
        f"sharing {level} core(s) cost them {shared - sum(apart.values()):+.0f} ms a frame")


def _function_cpu(level: str, per_function: dict[str, dict[str, float]]) -> str:
    parts = "; ".join(f"{name} {cpu['handler']:.1f} ms in the handler, {cpu['model']:.1f} of it in the model"
                      for name, cpu in per_function.items())
    besides = sum(cpu["handler"] - cpu["model"] for cpu in per_function.values())
    return (f"the functions' own metrics (HandlerCpuMs, DetectCpuMs, RecogniseCpuMs), CPU per frame at concurrency "
            f"{level}: {parts}; besides the models, {besides:.1f} ms a frame (image decode, SQS sends, JSON, logs)")


def _pinning(cfg: dict[str, Any]) -> str:
    if cfg.get("pinned"):
        order = ("recognition's workers ahead of detection's on them, one model at a time"
                 if cfg.get("recognition_first") else "the kernel's own order on them (autogroups do not decide here)")
        return (f"Equal cores: raw pinned to {cfg['raw_cores']} core(s) at {cfg['raw_threads']} thread(s); the "
                f"workers of concurrency k pinned to k cores, {order}; the stack's moto, URL and trigger, and the "
                "client, on the other cores when there are any (AWS's services and the edge).")
    return "Not pinned (an external stack, or no sched_setaffinity here): raw and pipeline may use different cores."


def chart(figures: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    levels = [int(level) for level in figures["pipeline_fps"]]
    left.plot(levels, list(figures["pipeline_fps"].values()), marker="o", label="pipeline (Function URL)")
    left.axhline(figures["raw_fps"], color="grey", linestyle="--",
                 label=f"raw, one process, {figures['config'].get('raw_cores', 1)} core(s)")
    by_cores = {int(k): fps for k, fps in figures["raw"].get("fps_by_cores", {}).items() if int(k) in levels}
    if len(by_cores) > 1:  # what one process gets from k cores with k threads: the other way to use them
        left.plot(list(by_cores), list(by_cores.values()), marker="s", color="grey", linestyle=":",
                  label="raw, k cores, k threads")
    left.set(xlabel="concurrency k (requests in flight; k cores)", ylabel="frames/s", xticks=levels,
             title="Throughput", ylim=(0, None))
    left.legend()
    right.hist(figures["burst"]["latencies_s"], bins=20)
    right.set(xlabel="send to answer, s", ylabel="frames",
              title=f"Burst of {figures['burst']['sent']}: latency")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
