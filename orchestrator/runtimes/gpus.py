"""Which whole GPUs this host has, and whether Docker can hand them out.

Detection tries NVML first (``nvidia-ml-py``, the driver's own library),
then ``nvidia-smi``; a host with neither has no GPUs. Docker can give a
container GPUs (``DeviceRequest``) only when the NVIDIA container runtime
is installed, which ``docker info`` lists among its runtimes (or CDI
devices, with the container toolkit's CDI mode).

``resolve_gpus`` turns the ``gpus`` setting into the ids the controller
may assign: ``"auto"`` means every detected GPU when Docker can use them;
an explicit list must name GPUs that exist, or Genesis refuses to start
with a message that says which do not.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass

from orchestrator.errors import GenesisError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gpu:
    index: str
    uuid: str
    name: str
    memory_mib: int | None = None


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """``nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits``."""
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        memory = int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else None
        gpus.append(Gpu(index=parts[0], uuid=parts[1], name=parts[2], memory_mib=memory))
    return gpus


def _from_nvml() -> list[Gpu] | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None  # no driver, or no library: not an NVIDIA host
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20
            gpus.append(Gpu(index=str(index), uuid=_text(uuid), name=_text(name), memory_mib=int(memory)))
        return gpus
    finally:
        pynvml.nvmlShutdown()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _from_nvidia_smi() -> list[Gpu] | None:
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None
    try:
        proc = subprocess.run([binary, "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_nvidia_smi(proc.stdout) if proc.returncode == 0 else None


def detect_gpus() -> tuple[list[Gpu], str]:
    """The host's GPUs and how they were found ("nvml", "nvidia-smi" or "none")."""
    for source, probe in (("nvml", _from_nvml), ("nvidia-smi", _from_nvidia_smi)):
        found = probe()
        if found is not None:
            return found, source
    return [], "none"


def docker_can_use_gpus(info: dict) -> bool:
    """The engine has the NVIDIA runtime (``docker info``'s Runtimes) or CDI devices."""
    return "nvidia" in (info.get("Runtimes") or {}) or bool(info.get("DiscoveredDevices"))


def resolve_gpus(setting: list[str] | str, *, detected: list[Gpu], docker_ready: bool) -> list[str]:
    """The GPU ids sandboxes may get, from the ``gpus`` setting and what the host has."""
    if setting == "auto":
        if detected and not docker_ready:
            log.warning("GPUs found but Docker has no NVIDIA runtime; sandboxes get none",
                        extra={"gpus": [g.index for g in detected]})
            return []
        return [g.index for g in detected]
    known = {g.index for g in detected} | {g.uuid for g in detected}
    missing = [gpu for gpu in setting if gpu not in known]
    if missing:
        have = ", ".join(f"{g.index} ({g.name})" for g in detected) or "none"
        raise GenesisError(f"gpus {missing} are configured but this host has: {have}", code="bad_config")
    if setting and not docker_ready:
        raise GenesisError("gpus are configured but the Docker engine has no NVIDIA runtime "
                           "(install the NVIDIA Container Toolkit)", code="bad_config")
    return list(setting)
