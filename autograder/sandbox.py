"""The OS sandbox around student code: namespaces, Landlock, seccomp and resource limits (Linux).

Each layer is a kernel mechanism made for the job, so the grader writes no
checks of its own about what student code may do:

1. **Namespaces** (:func:`unshare_namespaces`, once per worker). The zygote runs
   as pid 1 of new user, pid, network and IPC namespaces. From inside, the grader
   has no pid to signal, trace or read; there is no network but a loopback that
   is down; and when the zygote ends, the kernel kills whatever is left inside.
2. **Landlock** (:func:`confine`, in every episode's child). The filesystem is
   read-only and limited to what Python needs (the interpreter, site-packages,
   the grader's own code, the private copy of the submission) minus protected
   paths (``solutions/``, fixtures, reports, the grader's state, the original
   submission); the one writable folder is the episode's scratch folder; ``/proc``
   is not readable. TCP is denied, and (Landlock ABI ≥ 6) signals and abstract
   UNIX sockets cannot reach anything outside the child.
3. **seccomp** (:func:`confine`). No new processes (threads are fine), so nothing
   can outlive its episode; no ptrace or ``process_vm_*``; no mount, unshare,
   setns, bpf, perf_event_open, userfaultfd, io_uring or keyrings.

Always, even with ``--sandbox off``: ``setrlimit`` caps on address space
(``--memory``), CPU time, file size and open files.

The bindings are the maintained, dependency-free ``landlockpy`` and ``pyseccomp``
(over the system's libseccomp); :func:`support` says what this machine offers.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import resource
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

MODES = ("auto", "strict", "off")
LAYERS = ("namespaces", "landlock", "seccomp")
DEFAULT_MEMORY = 2 << 30
FILE_BYTES = 8 << 20  # largest file student code may write (its printed output included)
OPEN_FILES = 256

_CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET, _CLONE_NEWIPC = 0x10000000, 0x20000000, 0x40000000, 0x08000000
_CLONE_THREAD = 0x00010000
_PR_SET_PDEATHSIG = 1

# Read-only paths every child may use besides Python's own (sys.path): shared libraries, the CPU
# description torch reads, and the devices ordinary code opens.
SYSTEM_PATHS = ("/usr", "/lib", "/lib64", "/etc/ld.so.cache", "/etc/localtime", "/proc/cpuinfo",
                "/sys/devices/system/cpu", "/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")

# Syscalls a child may not make. Namespaces and Landlock already stop most of what these could do;
# the list makes the rest impossible: starting processes, reaching other processes' memory,
# changing the filesystem view, and kernel interfaces no exercise needs.
DENIED_SYSCALLS = ("fork", "vfork", "execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev",
                   "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "bpf", "perf_event_open",
                   "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register", "keyctl", "add_key",
                   "request_key", "kexec_load", "init_module", "finit_module", "delete_module")


@dataclass
class Policy:
    """What one episode's child may do.

    Attributes:
        readable: Files and folders it may read (folders with everything below them).
        writable: The one folder it may write.
        memory: Bytes of address space it may add to what it inherited from the zygote.
        cpu_seconds: CPU time it may use in all.
    """

    readable: list[str]
    writable: str
    memory: int = DEFAULT_MEMORY
    cpu_seconds: int = 600


def support(try_namespaces: bool = True) -> dict[str, str | None]:
    """What this machine offers: for each of :data:`LAYERS`, None if usable, else why not.

    Args:
        try_namespaces: Create the namespaces for real, in a short-lived forked process
            (else they are reported usable: the caller is about to try them itself).
    """
    if sys.platform != "linux":
        return dict.fromkeys(LAYERS, f"not available on {sys.platform} (Linux only)")
    found = {"namespaces": _try_namespaces() if try_namespaces else None, "landlock": None, "seccomp": None}
    if landlock_abi() < 1:
        found["landlock"] = "Landlock is not enabled in this kernel (it needs Linux ≥ 5.13 booted with it)"
    try:
        _seccomp_module()
    except (ImportError, RuntimeError, OSError) as e:
        found["seccomp"] = f"libseccomp could not be loaded ({e})"
    return found


@functools.lru_cache(maxsize=None)
def _support_here() -> dict[str, str | None]:
    return support()


def missing_layers(mode: str) -> dict[str, str]:
    """The layers this machine cannot apply, with why; empty for ``--sandbox off`` (none is asked for)."""
    if mode == "off":
        return {}
    return {layer: why for layer, why in _support_here().items() if why}


def refusal(missing: dict[str, str]) -> str:
    """The one line ``--sandbox strict`` prints when it refuses to grade."""
    why = "; ".join(f"{layer}: {reason}" for layer, reason in missing.items())
    return f"--sandbox strict: student code cannot be sandboxed on this machine ({why}); not grading"


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when Landlock is unavailable."""
    try:
        import landlockpy
    except ImportError:
        return 0
    return landlockpy.abi_version()


def _seccomp_module():
    import pyseccomp  # raises RuntimeError when the system has no libseccomp

    return pyseccomp


def _try_namespaces() -> str | None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        problem = unshare_namespaces()
        os.write(w, (problem or "").encode()[:500])
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        problem = f.read().decode(errors="replace")
    os.waitpid(pid, 0)
    return problem or None


def unshare_namespaces() -> str | None:
    """Moves the calling (single-threaded) process into new user, pid, network and IPC namespaces.

    The caller's *next child* is pid 1 of the new pid namespace. Our user and group
    ids map to themselves, so files keep their owners.

    Returns:
        None on success, else why it failed (the process is then unchanged or only in a
        new user namespace, which grants nothing outside it).
    """
    uid, gid = os.getuid(), os.getgid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWPID | _CLONE_NEWNET | _CLONE_NEWIPC) != 0:
        err = ctypes.get_errno()
        why = os.strerror(err)
        if err in (errno.EPERM, errno.ENOSPC, errno.EINVAL):
            why += " (unprivileged user namespaces may be disabled: sysctl kernel.unprivileged_userns_clone, " \
                   "user.max_user_namespaces, or an AppArmor/container policy)"
        return f"new namespaces could not be created: {why}"
    try:
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
        Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
    except OSError as e:
        return f"the new user namespace could not map our ids: {e}"
    return None


def die_with_parent() -> None:
    """Asks the kernel to SIGKILL this process when its parent ends (Linux; a no-op elsewhere)."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def readable_paths(extra: list[Path], protected: list[Path]) -> list[str]:
    """Folders and files a child may read: Python's own paths, :data:`SYSTEM_PATHS` and ``extra``,
    each with every ``protected`` path cut out of it.

    A root that holds a protected path is replaced by its entries, recursively, so that
    exactly the protected path and nothing beside it is left out (e.g. a site-packages
    holding ``solutions/``, or a checkout holding ``solutions/`` and ``.git``).
    """
    protected = [Path(os.path.realpath(p)) for p in protected]
    roots = [Path(p) for p in sys.path if p and os.path.isabs(p)] + [Path(sys.base_prefix), Path(sys.prefix)]
    roots += [Path(p) for p in SYSTEM_PATHS] + list(extra)
    granted: list[str] = []
    for root in dict.fromkeys(Path(os.path.realpath(r)) for r in roots if os.path.exists(r)):
        granted += _without(root, protected)
    return granted


def _without(root: Path, protected: list[Path]) -> list[str]:
    """``root`` (a real path) with the ``protected`` real paths cut out, as a list of paths to grant."""
    if any(root == p or p in root.parents for p in protected):
        return []
    if not any(root in p.parents for p in protected):
        return [str(root)]
    paths: list[str] = []
    for entry in sorted(root.iterdir()):
        real = Path(os.path.realpath(entry))
        if root in real.parents:
            paths += _without(real, protected)
        elif not any(real == p or p in real.parents or real in p.parents for p in protected):
            paths.append(str(real))  # a link out of the root to something harmless
    return paths


def limit_resources(memory: int | None, cpu_seconds: int | None) -> None:
    """Caps this process (and what it starts): address space, CPU time, file size, open files, cores.

    Args:
        memory: Bytes of address space beyond what the process maps now, or None for no cap.
        cpu_seconds: CPU seconds in all, or None for no cap; past it the kernel kills the process.
    """
    if memory is not None:
        base = _mapped_bytes()
        if base is not None:
            resource.setrlimit(resource.RLIMIT_AS, (base + memory, base + memory))
    if cpu_seconds is not None:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write fails with EFBIG, it does not kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_BYTES, FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _mapped_bytes() -> int | None:
    """Bytes of address space this process maps (Linux), None where that cannot be read."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def prepare(policy: Policy, landlock: bool, seccomp: bool) -> None:
    """Does once, in the zygote before it forks, the part of :func:`confine` that is the same for
    every child, so that each child confines itself in about half the time: the seccomp filter is
    built (a child only loads it), and the Landlock rules of ``policy`` are built and dropped
    without being enforced (the values of their rights then already exist). Restricts nothing."""
    if seccomp:
        _syscall_filter()
    if landlock:
        _restrict_filesystem(policy, enforce=False)


def confine(policy: Policy, landlock: bool, seccomp: bool) -> None:
    """Applies the resource limits and the chosen layers to the calling, single-threaded process.

    Irreversible: call it in the forked child, after its descriptors are in place and
    before any student code runs. Raises if a requested layer cannot be applied; the
    caller must then not run student code.
    """
    limit_resources(policy.memory, policy.cpu_seconds)
    if landlock:
        _restrict_filesystem(policy)
    if seccomp:
        _syscall_filter().load()


@functools.lru_cache(maxsize=None)
def _filesystem_rights():
    """(read, write, scope): the Landlock rights of a readable path and of the writable folder, and the
    scopes that keep signals and abstract sockets inside the child."""
    from landlockpy import AccessFS, Scope

    read = AccessFS.READ_FILE | AccessFS.READ_DIR
    write = (read | AccessFS.WRITE_FILE | AccessFS.TRUNCATE | AccessFS.MAKE_REG | AccessFS.MAKE_DIR
             | AccessFS.REMOVE_FILE | AccessFS.REMOVE_DIR | AccessFS.REFER)
    return read, write, Scope.SIGNAL | Scope.ABSTRACT_UNIX_SOCKET


def _restrict_filesystem(policy: Policy, enforce: bool = True) -> None:
    from landlockpy import AccessFS, Ruleset

    read, write, scope = _filesystem_rights()
    # Handled rights are denied unless granted below: every filesystem right the kernel knows,
    # TCP (and on newer kernels UDP), signals and abstract sockets to anything outside this child.
    with Ruleset(scoped=scope) as rules:
        for path in policy.readable:
            if path == "/dev/null":
                rules.allow_path(path, AccessFS.READ_FILE | AccessFS.WRITE_FILE)
            else:  # a rule on a file may only carry file rights
                rules.allow_path(path, read if os.path.isdir(path) else AccessFS.READ_FILE)
        rules.allow_path(policy.writable, write)
        if enforce:
            rules.restrict()  # sets no_new_privs first


@functools.lru_cache(maxsize=None)
def _syscall_filter():
    """The seccomp filter of every child, built once (:func:`prepare`) and loaded by each."""
    seccomp = _seccomp_module()
    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    for name in DENIED_SYSCALLS:
        try:
            rules.add_rule(seccomp.ERRNO(errno.EPERM), name)
        except (OSError, RuntimeError, ValueError):
            pass  # a syscall this architecture does not have (fork on aarch64) needs no rule
    # clone() without CLONE_THREAD makes a process; with it, a thread (allowed). clone3 passes its
    # flags in memory, which seccomp cannot read: ENOSYS makes the C library fall back to clone().
    rules.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, _CLONE_THREAD, 0))
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    # Keep the kernel's promise to kill this process with its parent.
    rules.add_rule(seccomp.ERRNO(errno.EPERM), "prctl", seccomp.Arg(0, seccomp.EQ, _PR_SET_PDEATHSIG))
    return rules
