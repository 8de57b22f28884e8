"""The one GPU table: dense bf16 peaks (the train step's MFU metric) and the planner's assumptions (`zhgpt plan`).
Plain Python, so the step reads it where only torch is installed.

    peak_flops("NVIDIA H100 80GB HBM3")   # -> 989e12 (FLOP/s); None for a device the table does not know
    planner_gpus()["h100"]["mfu"]         # -> 0.40

Per row:
  match:        substrings of torch.cuda.get_device_name(); the longest matching one wins ("H100 PCIe" before "H100")
  peak_tflops:  dense BF16 tensor-core peak (never the 2:4-sparsity figure, which is twice as large)
The planner's rows also carry:
  label, aliases, memory_gib (what a process can see: nvidia-smi total), per_node,
  mfu:          model-FLOPs utilisation (PaLM formula, see stages/train/shapes.py) this project assumes
  goodput:      share of wall time that makes progress (restarts, hangs, slow nodes and evals take the rest)
No GPU MFU has been measured by this project yet; when the train stage logs one on a real GPU, put it here and name
the run in mfu_source.
"""
from __future__ import annotations

LLAMA3_GOODPUT = "Llama 3 paper (Dubey et al. 2024, sec. 3.3.4): more than 90% effective training time"

GPUS: dict[str, dict] = {
    "a100": dict(match=("A100",), peak_tflops=312, label="A100-SXM-80GB", aliases=("a100-80gb",), memory_gib=80,
                 per_node=8, mfu=0.45,
                 mfu_source="published 100B+ A100 runs: OPT-175B 147 TFLOP/s = 47%; Megatron GPT-3 175B 42-47%",
                 goodput=0.90, goodput_source=LLAMA3_GOODPUT),
    "a100-40gb": dict(match=(), peak_tflops=312, label="A100-SXM-40GB", memory_gib=40, per_node=8, mfu=0.45,
                      mfu_source="as a100", goodput=0.90, goodput_source="as a100"),
    "h100": dict(match=("H100",), peak_tflops=989, label="H100-SXM-80GB", aliases=("h100-sxm", "h100-80gb"),
                 memory_gib=80, per_node=8, mfu=0.40,
                 mfu_source="Llama 3 405B: 38-43% BF16 MFU on 8k-16k H100 (Dubey et al. 2024, Table 4); "
                            "Megatron-LM README 41-47%",
                 goodput=0.90, goodput_source="Llama 3 paper: more than 90% effective training time"),
    "h100-pcie": dict(match=("H100 PCIe",), peak_tflops=756, label="H100-PCIe-80GB", memory_gib=80, per_node=8,
                      mfu=0.40, mfu_source="assumed equal to h100", goodput=0.90, goodput_source="as h100"),
    "h200": dict(match=("H200",), peak_tflops=989, label="H200-SXM-141GB", memory_gib=140, per_node=8, mfu=0.40,
                 mfu_source="assumed equal to h100 (same tensor cores, more and faster memory)", goodput=0.90,
                 goodput_source="as h100"),
    "b200": dict(match=("B200",), peak_tflops=2250, label="B200-180GB", memory_gib=179, per_node=8, mfu=0.35,
                 mfu_source="assumption: no published large-run BF16 MFU; software lags a new generation",
                 goodput=0.90, goodput_source="as h100"),
    # peaks only (the step's MFU); the planner has no memory or MFU assumptions for these
    "h100-nvl": dict(match=("H100 NVL",), peak_tflops=835),
    "h800": dict(match=("H800",), peak_tflops=989),
    "gh200": dict(match=("GH200",), peak_tflops=989),
    "a800": dict(match=("A800",), peak_tflops=312),
    "l40s": dict(match=("L40S",), peak_tflops=362),
    "l4": dict(match=("L4",), peak_tflops=121),
    "a10g": dict(match=("A10G",), peak_tflops=125),
    "rtx-4090": dict(match=("RTX 4090",), peak_tflops=165),
    "v100": dict(match=("V100",), peak_tflops=125),
}


def peak_flops(device_name: str) -> float | None:
    """Dense bf16 peak FLOP/s for a torch.cuda.get_device_name(); None when unknown (no MFU then)."""
    hits = [(len(m), row["peak_tflops"]) for row in GPUS.values() for m in row["match"] if m in device_name]
    return max(hits)[1] * 1e12 if hits else None


def planner_gpus() -> dict[str, dict]:
    """The rows the planner can plan with (those with memory and MFU assumptions), by name."""
    return {name: row for name, row in GPUS.items() if "memory_gib" in row}
