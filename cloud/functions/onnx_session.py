"""ONNX Runtime sessions for the functions' networks, with options that fit a Lambda container.

One place decides how a model file becomes a session: the thread count from the function's vCPU share
(cloud/functions/settings.py), one inter-op thread (a container runs one request at a time), and a memory arena
that grows only by what is asked, so resident memory stays flat across invocations of varying input sizes.
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from cloud.functions.memory import return_freed_memory

# How a missing models dir or file is made, for the one-line errors of both functions and the local stack.
EXPORT_HINT = "`facepipe models export --models-dir DIR` (or `make models`) writes them"


def models_folder(models_dir: str | Path | None) -> Path:
    """`models_dir` as a Path; ValueError, naming how to make it, when it is unset (engine onnx needs it)."""
    if not models_dir:
        raise ValueError(f"engine onnx needs FACEPIPE_MODELS_DIR, the folder of the exported .onnx networks: "
                         f"{EXPORT_HINT}")
    return Path(models_dir)


def session(path: Path, threads: int) -> ort.InferenceSession:
    """A CPU inference session for the ONNX file at `path`, running on `threads` intra-op threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # No busy-waiting between runs: a worker's intra-op threads would otherwise spin on the cores the other
    # function's workers (and, in Lambda, the runtime's own threads) need; threads wake on work instead.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Memory patterns are planned per input shape: with the detector's varying pyramid sizes they only add memory.
    options.enable_mem_pattern = False
    arena = {"arena_extend_strategy": "kSameAsRequested"}
    loaded = ort.InferenceSession(str(path), sess_options=options, providers=[("CPUExecutionProvider", arena)])
    return_freed_memory()
    return loaded
