"""The runner's strict seccomp layer, run through a small BPF interpreter: the
listed calls, another architecture's and x32's are refused, the rest allowed."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "orchestrator" / "sandbox"))
import runner  # noqa: E402 - the in-sandbox script, stdlib only

X86_64, AARCH64, I386 = 0xC000003E, 0xC00000B7, 0x40000003


def verdict(program: bytes, *, arch: int, nr: int) -> str:
    instructions = [struct.unpack("HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]
    pc, acc = 0, 0
    for _ in range(len(instructions)):
        code, jt, jf, k = instructions[pc]
        if code == 0x20:  # ld [k]: 0 is the call's number, 4 its architecture
            acc, pc = (arch if k == 4 else nr), pc + 1
        elif code in (0x15, 0x35):  # jeq, jge
            taken = acc == k if code == 0x15 else acc >= k
            pc += 1 + (jt if taken else jf)
        elif code == 0x06:
            return {0x7FFF0000: "allow", 0x00050001: "eperm"}[k]
    raise AssertionError("the program did not return")


@pytest.mark.parametrize("arch", [X86_64, AARCH64])
def test_listed_calls_are_refused_and_the_rest_allowed(arch):
    program, length = runner.strict_filter(arch)
    assert len(program) == 8 * length
    denied = runner.STRICT_DENIED[arch]
    for name in ("ptrace", "process_vm_writev", "io_uring_setup", "bpf", "unshare", "mount", "keyctl"):
        assert verdict(program, arch=arch, nr=denied[name]) == "eperm", name
    for nr in set(range(0, 460)) - set(denied.values()):
        assert verdict(program, arch=arch, nr=nr) == "allow", nr


def test_another_architecture_and_x32_calls_are_refused():
    program, _ = runner.strict_filter(X86_64)
    assert verdict(program, arch=I386, nr=1) == "eperm"  # int 0x80 from a 64-bit process
    assert verdict(program, arch=X86_64, nr=runner.X32_SYSCALL_BIT | 1) == "eperm"
