"""GPU detection and the ``gpus`` setting: what Genesis promises sandboxes
must exist on the host, and a request for more GPUs than that is refused."""

from __future__ import annotations

import json

import pytest

from helpers import request_body
from orchestrator.errors import GenesisError
from orchestrator.runtimes.gpus import Gpu, detect_gpus, docker_can_use_gpus, parse_nvidia_smi, resolve_gpus

# nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits on a 2-GPU host
SMI = """0, GPU-5b3c1f0e-8a0e-6f6c-1a7e-2b1f6a1c9d01, NVIDIA H100 80GB HBM3, 81559
1, GPU-9d2a7c44-0b1f-4e8e-93a5-77c1d2e3f4a5, NVIDIA H100 80GB HBM3, 81559
"""
TWO = parse_nvidia_smi(SMI)


def test_nvidia_smi_output_is_parsed():
    assert TWO == [Gpu("0", "GPU-5b3c1f0e-8a0e-6f6c-1a7e-2b1f6a1c9d01", "NVIDIA H100 80GB HBM3", 81559),
                   Gpu("1", "GPU-9d2a7c44-0b1f-4e8e-93a5-77c1d2e3f4a5", "NVIDIA H100 80GB HBM3", 81559)]
    assert parse_nvidia_smi("No devices were found\n") == []


def test_auto_takes_every_gpu_only_when_docker_can_hand_them_out():
    assert resolve_gpus("auto", detected=TWO, docker_ready=True) == ["0", "1"]
    assert resolve_gpus("auto", detected=TWO, docker_ready=False) == []
    assert resolve_gpus("auto", detected=[], docker_ready=True) == []


def test_explicit_gpus_must_exist():
    assert resolve_gpus(["1"], detected=TWO, docker_ready=True) == ["1"]
    assert resolve_gpus([TWO[0].uuid], detected=TWO, docker_ready=True) == [TWO[0].uuid]
    with pytest.raises(GenesisError, match=r"\['2', '3'\] are configured but this host has: 0 \(NVIDIA H100") as e:
        resolve_gpus(["0", "2", "3"], detected=TWO, docker_ready=True)
    assert e.value.code == "bad_config"
    with pytest.raises(GenesisError, match="has: none"):
        resolve_gpus(["0"], detected=[], docker_ready=True)
    with pytest.raises(GenesisError, match="no NVIDIA runtime"):
        resolve_gpus(["0"], detected=TWO, docker_ready=False)


def test_docker_gpu_support_is_read_from_docker_info():
    assert docker_can_use_gpus({"Runtimes": {"runc": {}, "nvidia": {"path": "nvidia-container-runtime"}}})
    assert docker_can_use_gpus({"Runtimes": {"runc": {}}, "DiscoveredDevices": [{"Source": "cdi",
                                                                                "ID": "nvidia.com/gpu=0"}]})
    assert not docker_can_use_gpus({"Runtimes": {"runc": {}}})


def _app(tmp_path, sample_repo, gpus):
    from orchestrator.app import App
    from orchestrator.settings import load_settings
    config = tmp_path / "genesis.yaml"
    config.write_text(json.dumps({"home": str(tmp_path), "gpus": gpus,
                                  "repos": {"monorepo": {"path": str(sample_repo)}}}))
    return App(load_settings(config))


@pytest.mark.docker
def test_this_host_refuses_gpus_it_does_not_have(tmp_path, sample_repo, docker_client):
    """Real detection (NVML, then nvidia-smi) and the real engine's runtimes."""
    detected, source = detect_gpus()
    usable = detected if docker_can_use_gpus(docker_client.info()) else []
    app = _app(tmp_path, sample_repo, [str(len(detected))])  # one index past the last GPU
    with pytest.raises(GenesisError) as caught:
        app.resolve_gpus()
    assert caught.value.code == "bad_config" and f"'{len(detected)}'" in str(caught.value)
    app.close()
    auto = _app(tmp_path, sample_repo, "auto")
    assert auto.resolve_gpus() == [g.index for g in usable]
    result = auto.intake.submit(json.dumps(request_body(
        resources={"cpu": 1, "memory": "256Mi", "gpu": len(usable) + 1})).encode())
    assert result.error is not None and result.error.code == "resources_exceeded"
    assert f"gpu {len(usable) + 1} > {len(usable)} GPUs" in result.error.message
    assert auto.store.get(result.view.id).phase.value == "Failed"  # recorded, not lost
    auto.close()
