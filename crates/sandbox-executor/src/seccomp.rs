//! The seccomp policy every process in the sandbox runs under, as a classic BPF program.
//!
//! It is a deny list on top of the namespaces and the unprivileged uid: syscalls that reach
//! kernel attack surface no code-execution sandbox needs (namespaces, mounts, kernel modules,
//! BPF, keyrings, ptrace, ...). Denied calls fail with `EPERM` so programs see an ordinary
//! error. Three rules are not plain deny entries:
//! - a syscall from another ABI (32-bit `int 0x80`) kills the process: it could bypass the list;
//! - x32 syscall numbers (bit 30 set) are all denied, for the same reason;
//! - `clone` is allowed unless it asks for a new namespace, and `clone3` answers `ENOSYS` (its
//!   flags sit behind a pointer BPF cannot read), so libc falls back to `clone`.
//!
//! The program is built here with plain data and installed by `sandbox_sys`.

use libc::sock_filter;

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;

pub const RET_ALLOW: u32 = 0x7fff_0000;
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;

const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARG0_LOW: u32 = 16;

const X32_SYSCALL_BIT: u32 = 0x4000_0000;

#[cfg(target_arch = "x86_64")]
pub const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
pub const AUDIT_ARCH: u32 = 0xC000_00B7;

/// Every namespace flag `clone` accepts.
pub const CLONE_NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32
    | 0x80; // CLONE_NEWTIME

/// Syscalls that fail with EPERM. The policy, as data: add a line to deny one more.
pub const DENIED: &[(&str, libc::c_long)] = &[
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("move_mount", libc::SYS_move_mount),
    ("open_tree", libc::SYS_open_tree),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("acct", libc::SYS_acct),
    ("quotactl", libc::SYS_quotactl),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    ("syslog", libc::SYS_syslog),
    ("vhangup", libc::SYS_vhangup),
    #[cfg(target_arch = "x86_64")]
    ("iopl", libc::SYS_iopl),
    #[cfg(target_arch = "x86_64")]
    ("ioperm", libc::SYS_ioperm),
];

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// The whole filter program.
pub fn program() -> Vec<sock_filter> {
    let eperm = RET_ERRNO | libc::EPERM as u32;
    let enosys = RET_ERRNO | libc::ENOSYS as u32;
    let mut p = vec![
        stmt(BPF_LD_W_ABS, OFFSET_ARCH),
        jump(BPF_JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(BPF_RET_K, RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, OFFSET_NR),
        jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(BPF_RET_K, eperm),
        jump(BPF_JEQ_K, libc::SYS_clone3 as u32, 0, 1),
        stmt(BPF_RET_K, enosys),
    ];
    for &(_, nr) in DENIED {
        p.push(jump(BPF_JEQ_K, nr as u32, 0, 1));
        p.push(stmt(BPF_RET_K, eperm));
    }
    p.extend([
        jump(BPF_JEQ_K, libc::SYS_clone as u32, 0, 3),
        stmt(BPF_LD_W_ABS, OFFSET_ARG0_LOW),
        jump(BPF_JSET_K, CLONE_NAMESPACE_FLAGS, 0, 1),
        stmt(BPF_RET_K, eperm),
        stmt(BPF_RET_K, RET_ALLOW),
    ]);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a filter over one syscall the way the kernel does, for the instructions we emit.
    fn eval(prog: &[sock_filter], arch: u32, nr: u32, arg0: u64) -> u32 {
        let load = |off: u32| match off {
            OFFSET_NR => nr,
            OFFSET_ARCH => arch,
            OFFSET_ARG0_LOW => arg0 as u32,
            _ => panic!("unexpected load offset {off}"),
        };
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let ins = prog[pc];
            pc += 1;
            let taken = match ins.code {
                BPF_LD_W_ABS => {
                    acc = load(ins.k);
                    continue;
                }
                BPF_RET_K => return ins.k,
                BPF_JEQ_K => acc == ins.k,
                BPF_JGE_K => acc >= ins.k,
                BPF_JSET_K => acc & ins.k != 0,
                other => panic!("unexpected opcode {other:#x}"),
            };
            pc += if taken { ins.jt } else { ins.jf } as usize;
        }
    }

    fn check(nr: libc::c_long) -> u32 {
        eval(&program(), AUDIT_ARCH, nr as u32, 0)
    }

    #[test]
    fn denied_syscalls_get_eperm() {
        for &(name, nr) in DENIED {
            assert_eq!(check(nr), RET_ERRNO | libc::EPERM as u32, "{name}");
        }
    }

    #[test]
    fn ordinary_syscalls_are_allowed() {
        for nr in [libc::SYS_read, libc::SYS_write, libc::SYS_openat, libc::SYS_execve] {
            assert_eq!(check(nr), RET_ALLOW);
        }
    }

    #[test]
    fn clone_is_allowed_without_namespace_flags_only() {
        let plain = libc::SIGCHLD as u64 | libc::CLONE_VM as u64 | libc::CLONE_THREAD as u64;
        assert_eq!(eval(&program(), AUDIT_ARCH, libc::SYS_clone as u32, plain), RET_ALLOW);
        for flag in [libc::CLONE_NEWUSER, libc::CLONE_NEWNET, libc::CLONE_NEWNS, libc::CLONE_NEWPID] {
            let r = eval(&program(), AUDIT_ARCH, libc::SYS_clone as u32, plain | flag as u64);
            assert_eq!(r, RET_ERRNO | libc::EPERM as u32);
        }
        assert_eq!(check(libc::SYS_clone3), RET_ERRNO | libc::ENOSYS as u32);
    }

    #[test]
    fn foreign_abi_and_x32_are_refused() {
        assert_eq!(eval(&program(), 0x4000_0003, 1, 0), RET_KILL_PROCESS);
        let x32_read = X32_SYSCALL_BIT | libc::SYS_read as u32;
        assert_eq!(eval(&program(), AUDIT_ARCH, x32_read, 0), RET_ERRNO | libc::EPERM as u32);
    }

    #[test]
    fn program_fits_the_kernel_limit() {
        assert!(program().len() < 4096);
    }
}
