"""The static helper that enters a container for ``exec``, run from a sealed memfd.

runc's lessons (CVE-2016-9962, CVE-2019-5736): the process a container can see while it is
being set up must not be the host's own program. Our exec helper C is a fork of the caller's
Python: it joins the container's namespaces, sets up the command's credentials, capabilities,
seccomp filter, terminal and working directory, and then, instead of forking a Python D into
the container's pid namespace, it ``execve``\\s this helper. Only the helper's child (the
command, before its own ``execve``) ever shows up in the container, as a copy of a 300-byte
program whose ``/proc/PID/exe`` is a sealed memfd: nothing to overwrite, nothing of the host's
interpreter to read or ptrace. C itself stays outside the pid namespace (setns(2) moves only
children) and non-dumpable until it becomes the helper.

The helper does what C did after its fork: fork; in the child, close fd 3 and
``execve(argv[1], argv + 2, envp)`` (exit 127 when argv[1] is missing, 126 on another
failure); in the parent, ignore the terminal's signals (SIGHUP, SIGINT, SIGQUIT, SIGTSTP,
SIGTTIN, SIGTTOU: it shares the command's session and must live to report its status; the
command keeps default dispositions), write the child's pid (4 bytes) on fd 3 for the caller to
take a pidfd of, close fd 3, wait, and exit with the command's code (128 + signal number when
it was killed). :data:`ASM` is its source (GNU as, x86-64); :data:`CODE` the assembled bytes,
checked against the source by tests/unit/test_enter_helper.py wherever binutils are installed.
Other architectures have no helper yet: :func:`available` says so and C forks as before.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

ASM = r"""
.intel_syntax noprefix
.globl _start
_start:
    mov eax, 57                     # fork
    syscall
    test eax, eax
    js fail
    jz child
    mov r12d, eax                   # the command's pid
    sub rsp, 64
    mov qword ptr [rsp], 1          # struct sigaction { SIG_IGN, flags 0, restorer 0, mask 0 }
    xor eax, eax
    mov qword ptr [rsp+8], rax
    mov qword ptr [rsp+16], rax
    mov qword ptr [rsp+24], rax
    lea rbx, [rip+sigs]
ignore:
    movzx edi, byte ptr [rbx]
    test edi, edi
    jz report
    mov rsi, rsp
    xor edx, edx
    mov r10d, 8
    mov eax, 13                     # rt_sigaction(sig, &act, NULL, 8)
    syscall
    inc rbx
    jmp ignore
report:
    mov dword ptr [rsp+32], r12d
    mov edi, 3
    lea rsi, [rsp+32]
    mov edx, 4
    mov eax, 1                      # write(3, &pid, 4)
    syscall
    mov edi, 3
    mov eax, 3                      # close(3)
    syscall
wait:
    mov edi, r12d
    lea rsi, [rsp+40]
    xor edx, edx
    xor r10d, r10d
    mov eax, 61                     # wait4(pid, &status, 0, NULL)
    syscall
    cmp rax, -4                     # EINTR
    je wait
    test rax, rax
    js fail
    mov eax, dword ptr [rsp+40]
    mov edi, eax
    and edi, 0x7f                   # WTERMSIG
    jz exited
    add edi, 128
    jmp leave
exited:
    shr eax, 8                      # WEXITSTATUS
    movzx edi, al
leave:
    mov eax, 231                    # exit_group
    syscall
fail:
    mov edi, 126
    mov eax, 231
    syscall
child:
    mov edi, 3
    mov eax, 3                      # close(3): the caller's channel is not the command's
    syscall
    mov rdi, qword ptr [rsp+16]     # argv[1]
    lea rsi, [rsp+24]               # argv + 2
    mov rcx, qword ptr [rsp]        # argc
    lea rdx, [rsp+rcx*8+16]         # envp = argv + argc + 1
    mov eax, 59                     # execve
    syscall
    mov edi, 126
    cmp rax, -2                     # ENOENT
    jne 1f
    mov edi, 127
1:
    mov eax, 231
    syscall
sigs:
    .byte 1, 2, 3, 20, 21, 22, 0
"""

CODE = bytes.fromhex(
    "b8390000000f0585c00f88b10000000f84b70000004189c44883ec4048c704240100000031c04889442408"
    "48894424104889442418488d1dcd0000000fb63b85ff74174889e631d241ba08000000b80d0000000f0548"
    "ffc3ebe24489642420bf03000000488d742420ba04000000b8010000000f05bf03000000b8030000000f05"
    "4489e7488d74242831d24531d2b83d0000000f054883f8fc74e64885c078208b44242889c783e77f740881"
    "c780000000eb06c1e8080fb6f8b8e70000000f05bf7e000000b8e70000000f05bf03000000b8030000000f"
    "05488b7c2410488d742418488b0c24488d54cc10b83b0000000f05bf7e0000004883f8fe7505bf7f000000"
    "b8e70000000f0501020314151600")

REPORT_FD = 3        # where the helper writes the command's pid
_BASE = 0x400000     # load address of the one segment
_EHDR, _PHDR = 64, 56
_F_SEAL_SEAL, _F_SEAL_SHRINK, _F_SEAL_GROW, _F_SEAL_WRITE = 0x1, 0x2, 0x4, 0x8
_F_ADD_SEALS = 1033
_MFD_EXEC = 0x0010


def available() -> bool:
    """The helper exists for this machine's architecture."""
    return os.uname().machine == "x86_64"  # (the platform module costs the exec path ~1 ms)


def elf(code: bytes = CODE) -> bytes:
    """A static ELF64 executable: one read+execute segment holding the headers and ``code``."""
    size = _EHDR + _PHDR + len(code)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)     # 64-bit, little endian, SysV
    ehdr = struct.pack("<16sHHIQQQIHHHHHH", ident, 2, 62, 1, _BASE + _EHDR + _PHDR, _EHDR, 0, 0,
                       _EHDR, _PHDR, 1, 0, 0, 0)              # ET_EXEC, EM_X86_64
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, _BASE, _BASE, size, size, 0x1000)  # PT_LOAD, R+X
    return ehdr + phdr + code


def sealed_memfd() -> int:
    """A close-on-exec memfd holding the helper, sealed against any change (the caller closes
    it). ``os.execve(fd, ...)`` runs it; a container cannot write through its /proc/PID/exe."""
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    try:  # say it is meant to be executed (Linux 6.3+; vm.memfd_noexec=1 would refuse it else)
        fd = os.memfd_create("sysmgr-enter", flags | _MFD_EXEC)
    except OSError as e:
        if e.errno != errno.EINVAL:  # before 6.3 the flag is unknown: ask without it
            raise
        fd = os.memfd_create("sysmgr-enter", flags)
    try:
        data = elf()
        if os.write(fd, data) != len(data):
            raise OSError("short write to the helper's memfd")
        fcntl.fcntl(fd, _F_ADD_SEALS, _F_SEAL_SEAL | _F_SEAL_SHRINK | _F_SEAL_GROW | _F_SEAL_WRITE)
        os.fchmod(fd, 0o555)  # run by the container's root, an unprivileged host uid
    except BaseException:
        os.close(fd)
        raise
    return fd
