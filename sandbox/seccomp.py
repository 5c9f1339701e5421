"""A small seccomp filter for the local backend (handed to bubblewrap with `--seccomp FD`).

Default allow, with a deny list in the spirit of Docker's default profile: no new namespaces
(unshare, setns, clone with CLONE_NEW* flags), no mounts, no ptrace or cross-process memory
access, no kernel keyring, bpf, userfaultfd, perf events, io_uring, module loading, clock or
reboot calls. clone3 answers ENOSYS so the C library falls back to clone, whose flags a classic
BPF filter can inspect. Any other architecture than x86_64 (and the x32 ABI) is refused; on
other machines `filter_program()` returns None and the isolation report says so.
"""
from __future__ import annotations

import os
import platform
import struct

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
CLONE_NEW_FLAGS = 0x7E020080  # NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET | NEWTIME

SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
EPERM, ENOSYS = 1, 38

# classic BPF opcodes
LD_W_ABS = 0x20
JEQ_K, JGE_K, JSET_K = 0x15, 0x35, 0x45
RET_K = 0x06

DENIED_X86_64 = {
    "ptrace": 101, "syslog": 103, "uselib": 134, "personality": 135, "ustat": 136, "sysfs": 139,
    "vhangup": 153, "pivot_root": 155, "_sysctl": 156, "adjtimex": 159, "chroot": 161, "acct": 163,
    "settimeofday": 164, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169,
    "iopl": 172, "ioperm": 173, "create_module": 174, "init_module": 175, "delete_module": 176,
    "get_kernel_syms": 177, "query_module": 178, "quotactl": 179, "nfsservctl": 180, "lookup_dcookie": 212,
    "clock_settime": 227, "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250,
    "unshare": 272, "perf_event_open": 298, "fanotify_init": 300, "name_to_handle_at": 303,
    "open_by_handle_at": 304, "clock_adjtime": 305, "setns": 308, "process_vm_readv": 310,
    "process_vm_writev": 311, "kcmp": 312, "finit_module": 313, "kexec_file_load": 320, "bpf": 321,
    "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "pidfd_getfd": 438, "mount_setattr": 442,
}
CLONE, CLONE3 = 56, 435


def _ins(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def filter_program() -> bytes | None:
    """The compiled filter (an array of struct sock_filter), or None off x86_64."""
    if platform.machine() != "x86_64":
        return None
    denied = sorted(DENIED_X86_64.values())
    # layout: [arch check (3)] [load nr] [x32 check] [clone3] [clone] [denied...] [allow]
    #         [clone flags: load arg0, jset, allow] [deny EPERM] [deny ENOSYS]
    n_denied = len(denied)
    body = []
    body.append(_ins(LD_W_ABS, 0, 0, 4))                          # A = arch
    body.append(_ins(JEQ_K, 1, 0, AUDIT_ARCH_X86_64))
    body.append(_ins(RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS))
    body.append(_ins(LD_W_ABS, 0, 0, 0))                          # A = syscall number
    # indices relative to the instruction after each jump
    idx_allow = 4 + 3 + n_denied + 1 - 1                          # position of RET ALLOW
    idx_clone_check = idx_allow + 1
    idx_eperm = idx_clone_check + 3
    idx_enosys = idx_eperm + 1

    def jump_to(target: int, here: int) -> int:
        offset = target - here - 1
        assert 0 <= offset < 256
        return offset

    here = len(body)
    body.append(_ins(JGE_K, jump_to(idx_eperm, here), 0, X32_SYSCALL_BIT))
    here = len(body)
    body.append(_ins(JEQ_K, jump_to(idx_enosys, here), 0, CLONE3))
    here = len(body)
    body.append(_ins(JEQ_K, jump_to(idx_clone_check, here), 0, CLONE))
    for nr in denied:
        here = len(body)
        body.append(_ins(JEQ_K, jump_to(idx_eperm, here), 0, nr))
    assert len(body) == idx_allow
    body.append(_ins(RET_K, 0, 0, SECCOMP_RET_ALLOW))
    body.append(_ins(LD_W_ABS, 0, 0, 16))                         # A = low 32 bits of clone flags
    body.append(_ins(JSET_K, 1, 0, CLONE_NEW_FLAGS))
    body.append(_ins(RET_K, 0, 0, SECCOMP_RET_ALLOW))
    assert len(body) == idx_eperm
    body.append(_ins(RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM))
    body.append(_ins(RET_K, 0, 0, SECCOMP_RET_ERRNO | ENOSYS))
    return b"".join(body)


def filter_fd() -> int | None:
    """A readable fd holding the filter, for `bwrap --seccomp FD` (the caller closes it)."""
    program = filter_program()
    if program is None:
        return None
    read_end, write_end = os.pipe()
    os.write(write_end, program)  # a few hundred bytes: fits the pipe buffer
    os.close(write_end)
    return read_end
