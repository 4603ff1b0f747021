"""On paper for AWS Lambda: per-frame latency and cost at each memory size, from the compute measured here.

Assumptions (printed with the table):
- Lambda gives a function CPU in proportion to its memory: 1 vCPU per 1769 MB, 6 vCPUs at 10240 MB
  (cloud.functions.settings; the handlers use round(memory / 1769) intra-op threads, at least 1).
- Below one vCPU the work is CPU-bound and stretches by 1769 / memory; above it, the speed-up follows
  Amdahl's law with the serial fraction fitted to the times measured here on 1..k pinned cores, k threads.
- A Lambda vCPU is as fast as one core of this machine; no network, queue or cold-start time is included.
  Those times are only as good as the machine was idle: on a loaded machine extra cores gain little.
- Price: us-east-1 x86, $0.0000166667 per GB-second of billed duration and $0.20 per million requests;
  detection is one request per frame, recognition one per frame (batch size 1, the worst case; batches of
  10 cut its request cost tenfold but not its duration).
"""

from __future__ import annotations

from dataclasses import dataclass

from cloud.functions.settings import LAMBDA_MAX_VCPUS, LAMBDA_MB_PER_VCPU

PRICE_PER_GB_S = 0.0000166667
PRICE_PER_MILLION_REQUESTS = 0.20
LAMBDA_MAX_MEMORY_MB = 10240
MEMORY_SIZES_MB = (1024, 1769, 2048, 3008, 3538, 5307, 7076, 10240)
# Each engine's default MemorySize per function: onnx's are template.yaml's; torch's are the template's before the
# ONNX engine (issue 24), when a worker held 0.83-1.1 GB (tests/unit/test_bench_aws_model.py checks onnx's).
DEFAULT_MEMORY_MB = {"onnx": {"detection": 1769, "recognition": 1769},
                     "torch": {"detection": 2048, "recognition": 3008}}
ASSUMPTIONS = __doc__.split("Assumptions (printed with the table):\n", 1)[1].strip()


@dataclass(frozen=True)
class Prediction:
    memory_mb: int
    vcpus: float
    latency_ms: float
    cost_per_million_usd: float


def serial_fraction(ms_by_threads: dict[int, float]) -> float:
    """Amdahl's serial fraction s from t(k) = t(1) * (s + (1 - s) / k), fitted at the largest measured k."""
    k = max(ms_by_threads)
    if k == 1:
        return 0.0  # nothing measured in parallel: assume perfect scaling, and say so (assumptions())
    ratio = ms_by_threads[k] / ms_by_threads[1]
    return min(1.0, max(0.0, (ratio - 1 / k) / (1 - 1 / k)))


def assumptions(measured_cores: int) -> str:
    """The model's assumptions, to print under its table; with one measured core, that nothing was fitted."""
    if measured_cores > 1:
        return ASSUMPTIONS
    return ASSUMPTIONS + ("\n- Only one core was measured here: above one vCPU the table assumes perfect scaling, an "
                          "upper bound on\n  the speed-up. Run the bench on a machine with more cores to fit it.")


def predict(ms_by_threads: dict[int, float], memory_mb: int) -> Prediction:
    t1 = ms_by_threads[1]
    # Proportional to memory, and the largest size (10240 MB) gets the full 6.
    vcpus = LAMBDA_MAX_VCPUS if memory_mb >= LAMBDA_MAX_MEMORY_MB else min(memory_mb / LAMBDA_MB_PER_VCPU,
                                                                          LAMBDA_MAX_VCPUS)
    if vcpus <= 1:
        latency = t1 / vcpus
    else:
        s = serial_fraction(ms_by_threads)
        latency = t1 * (s + (1 - s) / vcpus)
    billed_s = -(-latency // 1) / 1000  # billed per started millisecond
    cost = 1e6 * billed_s * memory_mb / 1024 * PRICE_PER_GB_S + PRICE_PER_MILLION_REQUESTS
    return Prediction(memory_mb, round(vcpus, 2), round(latency, 1), round(cost, 2))


def model(detect_ms: dict[int, float], recognise_ms: dict[int, float]) -> dict[str, list[Prediction]]:
    return {"detection": [predict(detect_ms, m) for m in MEMORY_SIZES_MB],
            "recognition": [predict(recognise_ms, m) for m in MEMORY_SIZES_MB]}


def cost_at(predictions: list[dict[str, float]], memory_mb: int) -> float:
    """The modelled cost per million frames at `memory_mb`, from one function's predictions (as in the JSON)."""
    return next(p["cost_per_million_usd"] for p in predictions if p["memory_mb"] == memory_mb)
