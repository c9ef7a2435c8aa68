"""The code sandbox's seccomp filter (security guide T23), built with libseccomp (pyseccomp).

Everything is allowed except the kernel interfaces sandboxed code has no use for and that keep
turning up in kernel exploits or escapes, which fail with EPERM: io_uring, ptrace, bpf, the key
store, userfaultfd, perf events, every way to mount or to enter or make namespaces (``clone``
with any ``CLONE_NEW*`` bit included). ``clone3`` fails with ENOSYS: its flags live in memory a
filter cannot read, and ENOSYS makes glibc fall back to ``clone``, which the filter can check.
System calls of another ABI (i386, x32) kill the process: libseccomp's default for a foreign
architecture.
"""

from __future__ import annotations

import errno
import functools
import os

DENIED = (
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "bpf",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "perf_event_open",
    "mount",
    "umount2",
    "pivot_root",
    "fsopen",
    "fsmount",
    "fsconfig",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "unshare",
    "setns",
)
CLONE_NEW = (  # CLONE_NEWTIME (0x80) is valid only for clone3 and unshare, both refused whole
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)


@functools.cache
def bpf() -> bytes:
    """The compiled filter (classic BPF, as ``bwrap --seccomp FD`` reads it), built once per
    process. Raises OSError or ImportError when libseccomp is missing."""
    import pyseccomp as sc

    allow_all = sc.SyscallFilter(sc.ALLOW)
    for name in DENIED:
        if sc.resolve_syscall(sc.Arch.NATIVE, name) >= 0:  # names this libseccomp knows
            allow_all.add_rule(sc.ERRNO(errno.EPERM), name)
    for bit in CLONE_NEW:  # rules on one call are alternatives: any one bit set refuses
        allow_all.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, bit, bit))
    allow_all.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    fd = os.memfd_create("seccomp", os.MFD_CLOEXEC)
    with os.fdopen(fd, "w+b") as out:
        allow_all.export_bpf(out)
        out.seek(0)
        return out.read()
