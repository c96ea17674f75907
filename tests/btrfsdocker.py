"""A second Docker daemon on btrfs with quotas, for the disk quota tests.

This kernel's XFS has no project quotas, so overlay2's ``--storage-opt size``
cannot be tried here; btrfs quotas can (/work/shared/ENVIRONMENT.md): a
sparse file formatted btrfs, loop-mounted, ``btrfs quota enable``, and a
dockerd of its own on it (``--storage-driver btrfs``) with its own data root,
exec root, pidfile, socket, containerd namespace and bridge. Never
``--bridge none``: that daemon would delete the host's ``docker0`` and break
the main daemon's networking.

:func:`btrfs_docker` yields the socket's URL and undoes everything it did,
in reverse, even when a step fails: the daemon (by its pidfile's PID, never
by name), the mount, the loop device, the bridge, the files. The main daemon
at /var/run/docker.sock is never touched. Needs root and ``btrfs-progs``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator

LOOP_SIZE = "3G"  # the toolchain image (~420 MB) plus a few sandboxes' quotas
START_TIMEOUT_S = 60.0


def available() -> str | None:
    """Why this host cannot run the fixture; None when it can."""
    if os.geteuid() != 0:
        return "needs root (loop devices, mounts)"
    for tool in ("mkfs.btrfs", "btrfs", "losetup", "dockerd", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install -y btrfs-progs)"
    return None


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


def _answers(url: str) -> bool:
    import docker

    try:
        client = docker.DockerClient(base_url=url, timeout=5)
    except Exception:  # noqa: BLE001 - the socket is not there yet
        return False
    try:
        client.ping()
        return True
    except Exception:  # noqa: BLE001
        return False
    finally:
        client.close()


def _stop_daemon(pidfile: Path, process: subprocess.Popen) -> None:
    """SIGTERM to the PID we started (its pidfile says the same), SIGKILL if it lingers."""
    pid = process.pid
    if pidfile.exists():
        with contextlib.suppress(ValueError):
            pid = int(pidfile.read_text().strip())
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextlib.contextmanager
def btrfs_docker(*, load: tuple[str, ...] = ()) -> Iterator[str]:
    """A dockerd on a fresh btrfs with quotas; yields its ``unix://`` URL.

    ``load``: images copied from the main daemon (``docker save | docker load``).
    gVisor's runsc is registered with it where it is installed, as setup registers
    it with the main daemon (scripts/register-runsc.sh)."""
    why = available()
    if why:
        raise RuntimeError(f"cannot start a btrfs dockerd: {why}")
    token = uuid.uuid4().hex[:8]
    root = Path(tempfile.mkdtemp(prefix="genesis-btrfs-"))
    root.chmod(0o755)  # mkdtemp's 0700 keeps the sandbox user from exec'ing /sbin/docker-init
    image, mount = root / "disk.img", root / "mnt"
    sock, pidfile, exec_root = root / "docker.sock", root / "docker.pid", root / "exec"
    bridge = f"gbtr{token}"  # interface names are at most 15 characters
    url = f"unix://{sock}"
    with contextlib.ExitStack() as undo:
        undo.callback(shutil.rmtree, root, ignore_errors=True)
        _run("truncate", "-s", LOOP_SIZE, str(image))
        _run("mkfs.btrfs", "-q", str(image))
        device = _run("losetup", "--find", "--show", str(image))
        undo.callback(subprocess.run, ["losetup", "-d", device], check=False)
        mount.mkdir()
        _run("mount", device, str(mount))
        undo.callback(_unmount, mount)
        _run("btrfs", "quota", "enable", str(mount))
        _run("ip", "link", "add", bridge, "type", "bridge")
        undo.callback(subprocess.run, ["ip", "link", "del", bridge], check=False)
        _run("ip", "link", "set", bridge, "up")
        config = root / "daemon.json"
        config.write_text(json.dumps({"runtimes": {"runsc": {
            "path": "/usr/bin/runsc", "runtimeArgs": ["--platform=ptrace", "--network=none"]}}}
            if Path("/usr/bin/runsc").exists() else {}))
        log = open(root / "dockerd.log", "wb")  # noqa: SIM115 - closed by the ExitStack
        undo.callback(log.close)
        process = subprocess.Popen(
            ["dockerd", "--config-file", str(config), "--data-root", str(mount / "docker"),
             "--storage-driver", "btrfs",
             "-H", url, "--pidfile", str(pidfile), "--exec-root", str(exec_root),
             "--bridge", bridge, "--iptables=false", "--ip6tables=false",
             # Its own containerd namespaces: the main daemon's containers are in "moby".
             "--containerd-namespace", f"genesis-{token}",
             "--containerd-plugins-namespace", f"genesis-{token}-plugins"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        undo.callback(_stop_daemon, pidfile, process)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the btrfs dockerd did not start: {(root / 'dockerd.log').read_text()[-2000:]}")
            time.sleep(0.2)
        undo.callback(_remove_containers, url)
        for tag in load:
            saver = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE)
            subprocess.run(["docker", "-H", url, "load", "-q"], stdin=saver.stdout, check=True,
                           capture_output=True)
            saver.stdout.close()
            if saver.wait() != 0:
                raise RuntimeError(f"docker save {tag} failed")
        # Docker's btrfs driver makes each layer's root directory 0700, so the
        # unprivileged sandbox user cannot even reach /sbin/docker-init; snapshots of
        # a layer (containers, later layers) keep its root's mode. A host running
        # Genesis on btrfs needs the same (docs/isolation.md).
        subvolumes = mount / "docker" / "btrfs" / "subvolumes"
        for layer in subvolumes.iterdir() if subvolumes.is_dir() else ():
            layer.chmod(0o755)
        yield url


def _unmount(mount: Path) -> None:
    """The daemon's own mounts under it too; lazily if something still holds one."""
    if subprocess.run(["umount", "-R", str(mount)], check=False, capture_output=True).returncode:
        subprocess.run(["umount", "-R", "-l", str(mount)], check=False, capture_output=True)


def _remove_containers(url: str) -> None:
    """Its containers go before the daemon does (their btrfs subvolumes with them)."""
    import docker

    client = docker.DockerClient(base_url=url, timeout=60)
    try:
        for container in client.containers.list(all=True):
            with contextlib.suppress(Exception):
                container.remove(force=True)
    finally:
        client.close()
