"""The machine line every benchmark prints: the GPU or CPU model, threads, and library versions."""

import os
import sys

import torch


def describe(device: str) -> str:
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(device)
    else:
        name = "cpu"
        try:
            name = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                        if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        name += f", {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs"
    versions = f"torch {torch.__version__}"
    if "transformers" in sys.modules:
        versions += f", transformers {sys.modules['transformers'].__version__}"
    return f"{name}; {versions}"
