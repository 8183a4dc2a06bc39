#!/usr/bin/env python3
"""Writes the seccomp profile the Docker runtime gives every sandbox container.

An allowlist like Docker's default (every call not named fails with EPERM), made from the
kernel headers' syscall tables minus what a container without capabilities must not reach:
the calls Docker's documentation lists as blocked by its default profile, and a few it allows
that we do not (io_uring, ptrace and cross-process memory access, which the inner layer never
needs). Then exactly the namespace calls the second layer (bubblewrap inside the container)
needs are added back: unshare, clone with any flags, mount, umount2, pivot_root, setns.
clone3 answers ENOSYS, so libc falls back to clone, whose flags a filter can read.

    scripts/seccomp-profile.py > crates/sandbox-runtime/src/docker/seccomp.json

A unit test of the runtime checks the committed profile against these rules.
"""
import json
import re
import sys

HEADERS = ["/usr/include/x86_64-linux-gnu/asm/unistd_64.h", "/usr/include/asm-generic/unistd.h"]

# Blocked by Docker's default profile (docs.docker.com/engine/security/seccomp), by name.
DOCKER_BLOCKED = """
acct add_key bpf clock_adjtime clock_settime create_module delete_module finit_module
get_kernel_syms get_mempolicy init_module ioperm iopl kcmp kexec_file_load kexec_load keyctl
lookup_dcookie mbind move_pages name_to_handle_at nfsservctl open_by_handle_at perf_event_open
pivot_root process_vm_readv process_vm_writev ptrace query_module quotactl quotactl_fd reboot
request_key set_mempolicy set_mempolicy_home_node setns settimeofday stime swapon swapoff sysfs
_sysctl umount umount2 unshare uselib userfaultfd ustat vm86 vm86old mount clone clone3
fanotify_init syslog vhangup open_tree move_mount fsopen fsconfig fsmount fspick mount_setattr
pidfd_getfd process_madvise memfd_secret adjtimex personality chroot lsm_set_self_attr
""".split()

# Allowed by Docker's default, refused here: nothing in a sandbox needs them, and each has a
# history of kernel bugs reachable from unprivileged code.
STRICTER = "io_uring_setup io_uring_enter io_uring_register".split()

# What bubblewrap needs to build the inner layer (measured: with these and no more, it starts).
SECOND_LAYER = "unshare clone mount umount2 pivot_root setns".split()

# personality() only with the values Docker allows: the default, and the ones that ask for
# the classic address layout or report the 32-bit kernel (0xffffffff only queries).
PERSONALITIES = [0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF]


def syscall_names():
    names = set()
    for header in HEADERS:
        with open(header) as f:
            for line in f:
                m = re.match(r"#define __NR3?2?_(\w+)\s", line)
                if m and not m.group(1).startswith("syscalls"):
                    names.add(m.group(1))
    return names


def profile():
    names = syscall_names()
    allowed = sorted((names - set(DOCKER_BLOCKED) - set(STRICTER)) | set(SECOND_LAYER))
    rules = [{"names": allowed, "action": "SCMP_ACT_ALLOW"}]
    rules += [
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}]}
        for v in PERSONALITIES
    ]
    rules.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38})
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
        ],
        "syscalls": rules,
    }


if __name__ == "__main__":
    json.dump(profile(), sys.stdout, indent=1)
    sys.stdout.write("\n")
