//! Kernel attack surface: the seccomp allow-list, from inside a real sandbox.

use super::*;

/// Calls each syscall with zeroed arguments from Python (ctypes) and prints `name errno`
/// (0 when the call returned without an error).
fn syscall_probe(calls: &[(&str, libc::c_long, [i64; 3])]) -> String {
    let table: Vec<String> = calls.iter().map(|(n, nr, a)| format!("({n:?}, {nr}, {a:?})")).collect();
    format!(
        r#"
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
for name, nr, args in [{}]:
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args], ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0))
    print(name, ctypes.get_errno() if r == -1 else 0)
"#,
        table.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seccomp_dangerous_calls_fail_with_eperm_inside_the_sandbox() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    // Arguments chosen so that, were the call let through, the kernel would answer with
    // something other than EPERM for most of them (0, EFAULT, EBADF, EINVAL): the answer
    // then tells that seccomp refused it.
    let calls: Vec<(&str, libc::c_long, [i64; 3])> = vec![
        ("io_uring_setup", libc::SYS_io_uring_setup, [1, 0, 0]),
        ("io_uring_enter", libc::SYS_io_uring_enter, [-1, 0, 0]),
        ("io_uring_register", libc::SYS_io_uring_register, [-1, 0, 0]),
        ("bpf", libc::SYS_bpf, [0, 0, 0]),
        ("perf_event_open", libc::SYS_perf_event_open, [0, 0, -1]),
        ("userfaultfd", libc::SYS_userfaultfd, [0, 0, 0]),
        ("keyctl", libc::SYS_keyctl, [0, -3, 0]),
        ("add_key", libc::SYS_add_key, [0, 0, 0]),
        ("request_key", libc::SYS_request_key, [0, 0, 0]),
        ("ptrace", libc::SYS_ptrace, [0, 0, 0]),
        ("kexec_load", libc::SYS_kexec_load, [0, 0, 0]),
        ("kexec_file_load", libc::SYS_kexec_file_load, [-1, -1, 0]),
        ("init_module", libc::SYS_init_module, [0, 0, 0]),
        ("finit_module", libc::SYS_finit_module, [-1, 0, 0]),
        ("mount", libc::SYS_mount, [0, 0, 0]),
        ("move_mount", libc::SYS_move_mount, [-1, 0, -1]),
        ("fsopen", libc::SYS_fsopen, [0, 0, 0]),
        ("open_tree", libc::SYS_open_tree, [-1, 0, 0]),
        ("unshare", libc::SYS_unshare, [0, 0, 0]),
        ("unshare_user", libc::SYS_unshare, [libc::CLONE_NEWUSER as i64, 0, 0]),
        ("setns", libc::SYS_setns, [-1, 0, 0]),
        ("clone3", libc::SYS_clone3, [0, 0, 0]),
        ("personality", libc::SYS_personality, [0xffff_ffff, 0, 0]),
        ("name_to_handle_at", libc::SYS_name_to_handle_at, [-1, 0, 0]),
        ("open_by_handle_at", libc::SYS_open_by_handle_at, [-1, 0, 0]),
        ("process_vm_readv", libc::SYS_process_vm_readv, [1, 0, 0]),
        ("process_vm_writev", libc::SYS_process_vm_writev, [1, 0, 0]),
        ("pidfd_getfd", libc::SYS_pidfd_getfd, [-1, 0, 0]),
        ("mbind", libc::SYS_mbind, [0, 0, 0]),
        ("migrate_pages", libc::SYS_migrate_pages, [0, 0, 0]),
        ("swapon", libc::SYS_swapon, [0, 0, 0]),
        ("reboot", libc::SYS_reboot, [0, 0, 0]),
        ("acct", libc::SYS_acct, [0, 0, 0]),
        ("quotactl", libc::SYS_quotactl, [0, 0, 0]),
        ("lookup_dcookie", libc::SYS_lookup_dcookie, [0, 0, 0]),
        ("socket_vsock", libc::SYS_socket, [libc::AF_VSOCK as i64, libc::SOCK_STREAM as i64, 0]),
        ("socket_netlink", libc::SYS_socket, [libc::AF_NETLINK as i64, libc::SOCK_RAW as i64, 0]),
        ("socket_packet", libc::SYS_socket, [libc::AF_PACKET as i64, libc::SOCK_RAW as i64, 0]),
        ("socket_raw_ip", libc::SYS_socket, [libc::AF_INET as i64, libc::SOCK_RAW as i64, 1]),
        ("socket_raw_ip6", libc::SYS_socket, [libc::AF_INET6 as i64, libc::SOCK_RAW as i64, 58]),
        // Not named by the policy at all: refused by default (the host answers a count).
        ("sysfs", libc::SYS_sysfs, [3, 0, 0]),
        // And what must still work.
        ("socket_unix", libc::SYS_socket, [libc::AF_UNIX as i64, libc::SOCK_STREAM as i64, 0]),
        ("socket_tcp6", libc::SYS_socket, [libc::AF_INET6 as i64, libc::SOCK_STREAM as i64, 0]),
        ("getpid", libc::SYS_getpid, [0, 0, 0]),
    ];
    let e = t.exec(&s.id, Language::Python, &syscall_probe(&calls)).await?;
    assert!(e.stderr.is_empty(), "{}", e.stderr);
    let got: std::collections::BTreeMap<&str, i32> =
        e.stdout.lines().filter_map(|l| l.split_once(' ')).map(|(n, v)| (n, v.parse().unwrap_or(-1))).collect();
    assert_eq!(got.len(), calls.len(), "{}", e.stdout);
    for (name, _, _) in &calls {
        let want = match *name {
            "clone3" | "sysfs" => libc::ENOSYS,
            "socket_vsock" | "socket_netlink" | "socket_packet" => libc::EAFNOSUPPORT,
            "socket_unix" | "socket_tcp6" | "getpid" => 0,
            _ => libc::EPERM,
        };
        assert_eq!(got[name], want, "{name}: errno {} (want {want})", got[name]);
    }
    t.assert_healthy(&s.id).await?;
    t.shutdown().await;
    Ok(())
}
