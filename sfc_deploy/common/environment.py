"""The one record of where a result came from: machine, device, threads and library versions.

Every results file (manifest, bench report, training metrics, evaluation report) carries it, so an
absolute number always names its machine, runtime and precision.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import shutil
import subprocess
from typing import Any

#: distributions whose versions can change an artifact's numbers or a measurement
DISTRIBUTIONS = ("sfc-deploy", "onnx", "onnxruntime", "onnxscript", "onnx-ir", "onnxruntime-extensions", "numpy",
                 "tensorrt", "av", "torchcodec", "ray")


def library_versions() -> dict[str, str]:
    """Python, torch, the platform and every installed distribution that matters to the numbers."""
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}
    for dist in DISTRIBUTIONS:
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return versions


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory and OS of this machine."""
    import psutil

    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": usable_cores(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "hostname": platform.node(),
    }


def device_name(device: str = "cpu") -> str:
    """``"cpu"``, or the GPU's name for a CUDA device."""
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device


def nvidia_driver_version() -> str | None:
    """The NVIDIA driver version (``nvidia-smi``), or None where there is no nvidia-smi or it fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    return lines[0] if lines else None


def gpu_info(device: str = "cpu") -> dict[str, Any] | None:
    """The GPU behind a CUDA ``device``: name, compute capability, memory, CUDA/cuDNN/driver versions
    (None on the CPU), so a GPU figure always names the GPU and the software stack it came from."""
    if not device.startswith("cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    dev = torch.device(device)
    props = torch.cuda.get_device_properties(dev)
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "device": str(dev),
        "name": torch.cuda.get_device_name(dev),
        "compute_capability": f"{props.major}.{props.minor}",
        "memory_gb": round(props.total_memory / 2**30, 1),
        "multiprocessors": props.multi_processor_count,
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "driver": nvidia_driver_version(),
        "torch": torch.__version__,
    }


def environment(*, device: str = "cpu") -> dict[str, Any]:
    """The full record: the flat fields reports print, plus the machine and the library versions."""
    import torch

    libraries = library_versions()
    machine = machine_info()
    return {
        "python": libraries["python"],
        "torch": libraries["torch"],
        "device": device_name(device),
        "cpu": machine["cpu"],
        "threads": torch.get_num_threads(),
        "platform": libraries["platform"],
        "machine": machine,
        "libraries": libraries,
        **({"gpu": gpu} if (gpu := gpu_info(device)) else {}),
    }
