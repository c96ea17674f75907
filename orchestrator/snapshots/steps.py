"""Build steps that run a repository's own commands (environment ``setup``,
``snapshot_setup``): the shell script, the secrets it is handed, and the logs
it leaves.

The secrets (the CA bundle, ``build.env``) travel as files in a private
directory that the script's EXIT trap deletes, so they are gone from the
container before it is committed (``DockerImages.run_and_commit`` checks),
and they never become environment variables, build args or layers.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from urllib.parse import quote

from orchestrator.settings import BuildSettings

SECRETS = "/run/genesis-build"  # where run_and_commit copies the secrets
SANDBOX_UID = 1000
# Every client's own way to trust an extra CA bundle.
_CA_VARIABLES = ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS",
                 "npm_config_cafile", "CARGO_HTTP_CAINFO", "GIT_SSL_CAINFO")
# Builds run with network and without the run-time offline switches; caches go
# to the never-committed /tmp so they do not bloat the image.
_BUILD_DEFAULTS = {"NPM_CONFIG_OFFLINE": "false", "CARGO_NET_OFFLINE": "false", "PIP_NO_CACHE_DIR": "1",
                   "UV_NO_CACHE": "1", "npm_config_cache": "/tmp/npm-cache", "HOME": "/root",
                   "DEBIAN_FRONTEND": "noninteractive", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def script(commands: list[str], *, drop: list[str] = ()) -> str:
    """A ``sh`` script that runs ``commands`` in /workspace, each echoed and
    each failing the build, deletes the ``drop`` paths (an environment's
    inputs: the snapshot's tree brings its own, and an input the tree lacks
    must not linger under it), then gives the sandbox user what is left in
    /workspace. Its first act is to arm the trap that deletes the secrets."""
    lines = [f"trap 'rm -rf {SECRETS}' EXIT", "set -e", f". {SECRETS}/env.sh", "cd /workspace"]
    for command in commands:
        lines.append(f"echo {shlex.quote('+ ' + command)}")
        lines.append(f"sh -ec {shlex.quote(command)}")
    if drop:
        lines.append("rm -f -- " + " ".join(shlex.quote(f"/workspace/{path}") for path in drop))
    lines.append(f"find /workspace -xdev ! -user {SANDBOX_UID} -exec chown -h {SANDBOX_UID}:{SANDBOX_UID} {{}} +")
    return "\n".join(lines) + "\n"


def secrets(build: BuildSettings, *, trusted: bool) -> dict[str, bytes]:
    """The files a build step gets: ``env.sh`` and, when configured, ``ca.crt``.

    A trusted step (the repository's own setup at its base commit) gets
    ``build.env``; an untrusted one (a change's own dependencies) gets only
    ``build.untrusted_env``. Both get the CA bundle, which is public.
    """
    env = dict(_BUILD_DEFAULTS)
    files: dict[str, bytes] = {}
    if build.ca_bundle is not None:
        files["ca.crt"] = build.ca_bundle.read_bytes()
        env.update({name: f"{SECRETS}/ca.crt" for name in _CA_VARIABLES})
    if trusted:
        env.update({key: value.get_secret_value() for key, value in build.env.items()})
    else:
        env.update(build.untrusted_env)
    files["env.sh"] = "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items()
                              if re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key)).encode()
    return files


class BuildLogs:
    """One log file per image built (or failed), under ``<home>/build-logs``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, tag: str) -> Path:
        return self.root / (re.sub(r"[^A-Za-z0-9_.-]", "_", tag) + ".log")

    def write(self, tag: str, text: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.path(tag).write_text(text)

    def read(self, tag: str) -> str | None:
        try:
            return self.path(tag).read_text()
        except OSError:
            return None


def redact(text: str, build: BuildSettings) -> str:
    """``text`` (a build log, an error message) without the values of ``build.env``,
    which any tool that echoes its environment or a proxy URL would print."""
    for value in build.env.values():
        secret = value.get_secret_value()
        if len(secret) >= 4:  # shorter values would blank out ordinary text
            text = text.replace(secret, "[redacted]")
            text = text.replace(quote(secret, safe=""), "[redacted]")
    return text
