//! The seccomp policy every process in the sandbox runs under, as a classic BPF program.
//!
//! It is an allow-list, kept as data in `policy/seccomp.policy` and checked by `build.rs`,
//! which turns it into [`RULES`]. Calls the policy does not name fail with `ENOSYS` (so libc
//! falls back to an older call where it has one, and a call new kernels add stays refused until
//! reviewed); calls it denies fail with `EPERM`, so programs see an ordinary error. Beside the
//! table, the program itself holds these rules:
//! - a syscall from another ABI (32-bit `int 0x80`) kills the process: it could bypass the list;
//! - x32 syscall numbers (bit 30 set) are all denied, for the same reason;
//! - `socket` is allowed for the families `AF_UNIX`, `AF_INET` and `AF_INET6` only (vsock is
//!   not scoped by the network namespace, and reaches the hypervisor; netlink and packet
//!   sockets are kernel attack surface) and for stream, datagram and seqpacket types only;
//! - `clone` is allowed unless it asks for a new namespace (`clone3`, whose flags sit behind a
//!   pointer BPF cannot read, answers `ENOSYS`, and libc falls back to `clone`).
//!
//! The numbers are looked up by a binary search of BPF jumps over ranges of numbers that share
//! an action: about eight comparisons for any call, where a list of ~300 would take hundreds.
//! The program is built here as plain data and installed by `sandbox_sys`.

use libc::sock_filter;

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JA: u16 = 0x05;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_JSET_K: u16 = 0x45;
const BPF_AND_K: u16 = 0x54;
const BPF_RET_K: u16 = 0x06;

pub const RET_ALLOW: u32 = 0x7fff_0000;
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;

const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
/// The low 32 bits of arguments 0 and 1 (little-endian: x86_64 and aarch64).
const OFFSET_ARG0_LOW: u32 = 16;
const OFFSET_ARG1_LOW: u32 = 24;

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

/// Socket families code may create.
pub const SOCKET_FAMILIES: [i32; 3] = [libc::AF_UNIX, libc::AF_INET, libc::AF_INET6];
/// Socket types code may create (the low bits of `type`, below `SOCK_NONBLOCK`/`SOCK_CLOEXEC`).
pub const SOCKET_TYPES: [i32; 3] = [libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET];
const SOCK_TYPE_MASK: u32 = 0xf;

/// What the policy does with one syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    /// `EPERM`.
    Deny,
    /// `ENOSYS`, for callers that fall back.
    Enosys,
    /// Decided by its arguments (socket, clone), here.
    Filter,
}

/// One line of the policy file.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub name: &'static str,
    pub nr: libc::c_long,
    pub action: Action,
    /// Its line in `policy/seccomp.policy`.
    pub line: u32,
}

include!(concat!(env!("OUT_DIR"), "/seccomp_policy.rs"));

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

fn errno(e: i32) -> u32 {
    RET_ERRNO | e as u32
}

/// What a number the policy does not name gets.
const UNLISTED: Action = Action::Enosys;

/// The whole filter program.
pub fn program() -> Vec<sock_filter> {
    let mut p = vec![
        stmt(BPF_LD_W_ABS, OFFSET_ARCH),
        jump(BPF_JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(BPF_RET_K, RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, OFFSET_NR),
        jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(BPF_RET_K, errno(libc::EPERM)),
    ];
    p.extend(search(&segments()));
    p
}

/// A run of consecutive syscall numbers `[start, next segment's start)` with one action.
#[derive(Debug, Clone, Copy)]
struct Segment {
    start: u32,
    action: Action,
    /// The syscall, when the segment is a filtered one (its code depends on which).
    nr: u32,
}

/// The number line from 0 up, cut where the action changes; the last segment runs to the end.
fn segments() -> Vec<Segment> {
    let mut rules: Vec<(u32, Action)> = RULES.iter().map(|r| (r.nr as u32, r.action)).collect();
    rules.sort_by_key(|&(nr, _)| nr);
    let mut out: Vec<Segment> = Vec::new();
    let mut push = |start: u32, action: Action, nr: u32| {
        let same = out.last().is_some_and(|l| l.action == action && action != Action::Filter);
        if !same {
            out.push(Segment { start, action, nr });
        }
    };
    let mut next = 0u32;
    for (nr, action) in rules {
        if nr > next {
            push(next, UNLISTED, next);
        }
        push(nr, action, nr);
        next = nr + 1;
    }
    push(next, UNLISTED, next);
    out
}

/// A binary search over `segs` (the accumulator holds the number): each level is a `JGE` on
/// the middle segment's start and a `JA` over the upper half, so every jump stays short.
fn search(segs: &[Segment]) -> Vec<sock_filter> {
    if let [only] = segs {
        return decide(only);
    }
    let mid = segs.len() / 2;
    let (lower, upper) = (search(&segs[..mid]), search(&segs[mid..]));
    let mut p = vec![jump(BPF_JGE_K, segs[mid].start, 1, 0), stmt(BPF_JA, upper.len() as u32)];
    p.extend(upper);
    p.extend(lower);
    p
}

/// The code for one segment, ending in a return.
fn decide(seg: &Segment) -> Vec<sock_filter> {
    match seg.action {
        Action::Allow => vec![stmt(BPF_RET_K, RET_ALLOW)],
        Action::Deny => vec![stmt(BPF_RET_K, errno(libc::EPERM))],
        Action::Enosys => vec![stmt(BPF_RET_K, errno(libc::ENOSYS))],
        Action::Filter if seg.nr == libc::SYS_socket as u32 => socket_filter(),
        Action::Filter if seg.nr == libc::SYS_clone as u32 => clone_filter(),
        // build.rs lets no other call be a filter; refuse rather than allow, should one slip by.
        Action::Filter => vec![stmt(BPF_RET_K, errno(libc::EPERM))],
    }
}

/// `socket(family, type, protocol)`: the families and types above; other families answer
/// `EAFNOSUPPORT` (as a kernel without them would), other types `EPERM` (as raw sockets do
/// without privilege).
fn socket_filter() -> Vec<sock_filter> {
    let mut p = vec![stmt(BPF_LD_W_ABS, OFFSET_ARG0_LOW)];
    let n = SOCKET_FAMILIES.len() as u8;
    for (i, family) in SOCKET_FAMILIES.iter().enumerate() {
        p.push(jump(BPF_JEQ_K, *family as u32, n - i as u8, 0));
    }
    p.push(stmt(BPF_RET_K, errno(libc::EAFNOSUPPORT)));
    p.push(stmt(BPF_LD_W_ABS, OFFSET_ARG1_LOW));
    p.push(stmt(BPF_AND_K, SOCK_TYPE_MASK));
    let n = SOCKET_TYPES.len() as u8;
    for (i, ty) in SOCKET_TYPES.iter().enumerate() {
        p.push(jump(BPF_JEQ_K, *ty as u32, n - i as u8, 0));
    }
    p.push(stmt(BPF_RET_K, errno(libc::EPERM)));
    p.push(stmt(BPF_RET_K, RET_ALLOW));
    p
}

/// `clone(flags, ...)`: no namespace flags.
fn clone_filter() -> Vec<sock_filter> {
    vec![
        stmt(BPF_LD_W_ABS, OFFSET_ARG0_LOW),
        jump(BPF_JSET_K, CLONE_NAMESPACE_FLAGS, 0, 1),
        stmt(BPF_RET_K, errno(libc::EPERM)),
        stmt(BPF_RET_K, RET_ALLOW),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a filter over one syscall the way the kernel does, for the instructions we emit.
    fn eval(prog: &[sock_filter], arch: u32, nr: u32, args: [u64; 2]) -> u32 {
        let load = |off: u32| match off {
            OFFSET_NR => nr,
            OFFSET_ARCH => arch,
            OFFSET_ARG0_LOW => args[0] as u32,
            OFFSET_ARG1_LOW => args[1] as u32,
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
                BPF_AND_K => {
                    acc &= ins.k;
                    continue;
                }
                BPF_JA => {
                    pc += ins.k as usize;
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
        eval(&program(), AUDIT_ARCH, nr as u32, [0, 0])
    }

    fn by_name(name: &str) -> Rule {
        *RULES.iter().find(|r| r.name == name).unwrap_or_else(|| panic!("{name} is not in the policy"))
    }

    #[test]
    fn every_rule_of_the_policy_is_what_the_program_does() {
        for r in RULES {
            let want = match r.action {
                Action::Allow => RET_ALLOW,
                Action::Deny => errno(libc::EPERM),
                Action::Enosys => errno(libc::ENOSYS),
                Action::Filter => continue,
            };
            assert_eq!(check(r.nr), want, "{} (policy line {})", r.name, r.line);
        }
    }

    #[test]
    fn what_the_policy_does_not_name_gets_enosys() {
        let named: Vec<u32> = RULES.iter().map(|r| r.nr as u32).collect();
        let unnamed: Vec<u32> = (0..1024).filter(|n| !named.contains(n)).collect();
        assert!(unnamed.len() > 500);
        for nr in unnamed {
            assert_eq!(eval(&program(), AUDIT_ARCH, nr, [0, 0]), errno(libc::ENOSYS), "syscall {nr}");
        }
        assert_eq!(eval(&program(), AUDIT_ARCH, 0x3fff_ffff, [0, 0]), errno(libc::ENOSYS));
    }

    /// The calls the hostile review named: each is refused, not merely unlisted by accident.
    #[test]
    fn dangerous_calls_are_refused() {
        let mut names = vec![
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "keyctl",
            "add_key",
            "request_key",
            "ptrace",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "mount",
            "umount2",
            "move_mount",
            "fsopen",
            "fsmount",
            "open_tree",
            "unshare",
            "setns",
            "personality",
            "name_to_handle_at",
            "open_by_handle_at",
            "process_vm_readv",
            "process_vm_writev",
            "pidfd_getfd",
            "mbind",
            "migrate_pages",
            "swapon",
            "reboot",
            "acct",
            "quotactl",
            "lookup_dcookie",
        ];
        names.sort_unstable();
        for name in names {
            let r = by_name(name);
            assert_eq!(r.action, Action::Deny, "{name}");
            assert_eq!(check(r.nr), errno(libc::EPERM), "{name}");
        }
    }

    #[test]
    fn ordinary_syscalls_are_allowed() {
        for nr in [libc::SYS_read, libc::SYS_write, libc::SYS_openat, libc::SYS_execve, libc::SYS_futex] {
            assert_eq!(check(nr), RET_ALLOW);
        }
    }

    #[test]
    fn sockets_are_allowed_for_unix_and_ip_streams_and_datagrams_only() {
        let socket =
            |family: i32, ty: i32| eval(&program(), AUDIT_ARCH, libc::SYS_socket as u32, [family as u64, ty as u64]);
        for family in SOCKET_FAMILIES {
            for ty in [libc::SOCK_STREAM, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, libc::SOCK_SEQPACKET] {
                assert_eq!(socket(family, ty | libc::SOCK_NONBLOCK), RET_ALLOW, "family {family} type {ty}");
            }
            assert_eq!(socket(family, libc::SOCK_RAW), errno(libc::EPERM), "raw, family {family}");
        }
        for family in [libc::AF_VSOCK, libc::AF_NETLINK, libc::AF_PACKET, libc::AF_BLUETOOTH, libc::AF_ALG, 0, 255] {
            assert_eq!(socket(family, libc::SOCK_STREAM), errno(libc::EAFNOSUPPORT), "family {family}");
        }
    }

    #[test]
    fn clone_is_allowed_without_namespace_flags_only() {
        let plain = libc::SIGCHLD as u64 | libc::CLONE_VM as u64 | libc::CLONE_THREAD as u64;
        assert_eq!(eval(&program(), AUDIT_ARCH, libc::SYS_clone as u32, [plain, 0]), RET_ALLOW);
        for flag in [libc::CLONE_NEWUSER, libc::CLONE_NEWNET, libc::CLONE_NEWNS, libc::CLONE_NEWPID] {
            let r = eval(&program(), AUDIT_ARCH, libc::SYS_clone as u32, [plain | flag as u64, 0]);
            assert_eq!(r, errno(libc::EPERM));
        }
        assert_eq!(check(libc::SYS_clone3), errno(libc::ENOSYS));
    }

    #[test]
    fn foreign_abi_and_x32_are_refused() {
        assert_eq!(eval(&program(), 0x4000_0003, 1, [0, 0]), RET_KILL_PROCESS);
        let x32_read = X32_SYSCALL_BIT | libc::SYS_read as u32;
        assert_eq!(eval(&program(), AUDIT_ARCH, x32_read, [0, 0]), errno(libc::EPERM));
    }

    #[test]
    fn program_is_short_and_every_lookup_is_quick() {
        let p = program();
        assert!(p.len() < 1024, "{} instructions", p.len());
        // The search is logarithmic: count the instructions one lookup runs.
        let depth = |nr: u32| {
            let (mut pc, mut steps) = (0usize, 0);
            let mut acc = 0u32;
            loop {
                let ins = p[pc];
                pc += 1;
                steps += 1;
                match ins.code {
                    BPF_LD_W_ABS => acc = if ins.k == OFFSET_ARCH { AUDIT_ARCH } else { nr },
                    BPF_JA => pc += ins.k as usize,
                    BPF_RET_K => return steps,
                    BPF_JGE_K => pc += if acc >= ins.k { ins.jt } else { ins.jf } as usize,
                    BPF_JEQ_K => pc += if acc == ins.k { ins.jt } else { ins.jf } as usize,
                    _ => return steps,
                }
            }
        };
        let worst = (0..512).map(depth).max().unwrap_or(0);
        assert!(worst <= 30, "a lookup runs {worst} instructions");
    }
}
