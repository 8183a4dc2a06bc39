//! Hostile code, case by case: each runs in an attacker's session and must print exactly what
//! the isolation allows. After each, a bystander session still runs code and holds its secret.

use super::*;

struct Case {
    name: &'static str,
    language: Language,
    code: String,
    /// stdout, exactly.
    expect: String,
}

fn sh(name: &'static str, code: &str, expect: &str) -> Case {
    Case { name, language: Language::Bash, code: code.into(), expect: expect.into() }
}

fn py(name: &'static str, code: &str, expect: &str) -> Case {
    Case { name, language: Language::Python, code: code.into(), expect: expect.into() }
}

/// Python that calls `libc.<call>` and prints `r errno`.
fn libc_call(call: &str) -> String {
    format!(
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nr = libc.{call}\nprint(r, ctypes.get_errno() if r == -1 else 0)"
    )
}

/// Python that connects to `addr` (a tuple) with `family` and prints the errno, or "connected".
fn connect(family: &str, addr: &str) -> String {
    format!(
        "import socket\ns = socket.socket({family})\ns.settimeout(3)\ntry:\n    s.connect({addr})\n    print('connected')\nexcept OSError as e:\n    print(e.errno)"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_code_gets_exactly_what_isolation_allows() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let attacker = t.session().await?;
    let bystander = t.session().await?;
    t.client.upload(&bystander.id, "secret.txt", reqwest::Body::from("bystander-secret"), Some(16)).await?;
    let data = t.data_dir().display().to_string();
    let other = t.data_dir().join("workspaces").join(&bystander.id).display().to_string();
    let port = t.port();
    // An abstract Unix socket on the host: abstract names belong to a network namespace.
    let abstract_name = format!("sandboxd-test-{}", std::process::id());
    let _listener = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())?;
        std::os::unix::net::UnixListener::bind_addr(&addr)?
    };

    let cases = vec![
        // Host files, the data dir, other workspaces.
        sh("no_shadow", "test -e /etc/shadow && echo visible || echo hidden", "hidden\n"),
        sh("no_host_homes", "ls -d /root /home /var /srv /mnt /media /boot 2>/dev/null; echo end", "end\n"),
        sh("no_data_dir", &format!("test -e '{data}' && echo visible || echo hidden"), "hidden\n"),
        sh("no_other_workspace", &format!("test -e '{other}' && echo visible || echo hidden"), "hidden\n"),
        sh("workspace_is_own", "ls -A /workspace", ""),
        // Every mount's root is shown relative to its filesystem: none may name the data dir.
        sh(
            "no_host_paths_in_mount_table",
            &format!("cat /proc/self/mountinfo /proc/self/mounts /proc/1/mountinfo | grep -c -F '{data}'"),
            "0\n",
        ),
        sh("etc_read_only", "(echo x >> /etc/passwd) 2>/dev/null && echo wrote || echo refused", "refused\n"),
        sh("usr_read_only", "(touch /usr/bin/evil) 2>/dev/null && echo wrote || echo refused", "refused\n"),
        sh("executor_read_only", "(echo x > /.sandbox/executor) 2>/dev/null && echo wrote || echo refused", "refused\n"),
        sh("hardlink_out", "ln /etc/passwd /workspace/pw 2>/dev/null && echo linked || echo refused", "refused\n"),
        // /proc, /sys, /dev.
        sh("pid1_is_executor", "tr '\\0' ' ' < /proc/1/cmdline", "/.sandbox/executor "),
        sh("pid1_environ", "cat /proc/1/environ >/dev/null 2>&1 && echo read || echo refused", "refused\n"),
        sh("pid1_mem", "head -c 1 /proc/1/mem >/dev/null 2>&1 && echo read || echo refused", "refused\n"),
        sh("no_host_processes", "ps -eo comm= | grep -c -E '^(sandboxd|systemd|sshd|dockerd|cargo|cargo-nextest)$'", "0\n"),
        sh("no_sys", "test -e /sys/kernel && echo visible || echo hidden", "hidden\n"),
        sh("proc_sys_read_only", "(echo 1 > /proc/sys/kernel/sysrq) 2>/dev/null && echo wrote || echo refused", "refused\n"),
        sh("sysrq_trigger", "(echo h > /proc/sysrq-trigger) 2>/dev/null && echo wrote || echo refused", "refused\n"),
        sh("kcore", "head -c 1 /proc/kcore >/dev/null 2>&1 && echo read || echo refused", "refused\n"),
        sh("no_kmsg", "head -c 1 /dev/kmsg >/dev/null 2>&1 && echo read || echo refused", "refused\n"),
        sh("mknod_block", "mknod /tmp/sda b 8 0 2>/dev/null && echo made || echo refused", "refused\n"),
        sh("no_cgroupfs", "(echo $$ > /sys/fs/cgroup/cgroup.procs) 2>/dev/null && echo moved || echo refused", "refused\n"),
        // Identity and privilege.
        sh("uid_gid", "id -u; id -g", "1000\n1000\n"),
        sh("no_capabilities", "grep CapEff /proc/self/status | cut -f2", "0000000000000000\n"),
        sh("nnp_and_seccomp", "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status | tr -d '\\t' | tr '\\n' ' '", "NoNewPrivs:1 Seccomp:2 "),
        sh("su", "su -c id root </dev/null >/dev/null 2>&1 && echo root || echo refused", "refused\n"),
        // uid 0 is not even mapped in the sandbox's user namespace: EINVAL.
        py("setuid", "import os\ntry:\n    os.setuid(0); print('root')\nexcept OSError as e:\n    print(e.errno)", "22\n"),
        sh("unshare_user", "unshare -U true 2>/dev/null && echo made || echo refused", "refused\n"),
        sh("unshare_mount", "unshare -m true 2>/dev/null && echo made || echo refused", "refused\n"),
        sh("chroot", "chroot / true 2>/dev/null && echo ok || echo refused", "refused\n"),
        sh("mount_tmpfs", "mkdir -p /tmp/m; mount -t tmpfs none /tmp/m 2>/dev/null && echo mounted || echo refused", "refused\n"),
        sh("set_clock", "date -s '2000-01-01' >/dev/null 2>&1 && echo set || echo refused", "refused\n"),
        sh("set_hostname", "hostname evil 2>/dev/null && echo set || echo refused", "refused\n"),
        py("ptrace_attach_pid1", &libc_call("ptrace(16, 1, 0, 0)"), "-1 1\n"),
        py("reboot", &libc_call("reboot(0x89abcdef)"), "-1 1\n"),
        py("personality", &libc_call("personality(0x0040000)"), "-1 1\n"),
        // Processes and signals.
        sh("kill_init", "kill -9 1 2>/dev/null; sleep 0.1; kill -0 1 && echo alive", "alive\n"),
        // The network.
        py("no_internet", &connect("socket.AF_INET", "('1.1.1.1', 53)"), "101\n"),
        py("no_sandboxd_v4", &connect("socket.AF_INET", &format!("('127.0.0.1', {port})")), "111\n"),
        py("no_sandboxd_v6", &connect("socket.AF_INET6", &format!("('::1', {port})")), "111\n"),
        py("no_host_abstract_socket", &connect("socket.AF_UNIX", &format!("'\\0{abstract_name}'")), "111\n"),
        py(
            "no_dns",
            "import socket\ntry:\n    socket.getaddrinfo('example.com', 80); print('resolved')\nexcept socket.gaierror:\n    print('gaierror')",
            "gaierror\n",
        ),
        py("only_loopback", "print(sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]))", "['lo']\n"),
        py("no_raw_socket", "import socket\ntry:\n    socket.socket(socket.AF_INET, socket.SOCK_RAW, 1); print('raw')\nexcept OSError as e:\n    print(e.errno)", "1\n"),
        py("no_netlink", "import socket\ntry:\n    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0); print('netlink')\nexcept OSError as e:\n    print(e.errno)", "97\n"),
        py("no_packet", "import socket\ntry:\n    socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0); print('packet')\nexcept OSError as e:\n    print(e.errno)", "97\n"),
        py("no_vsock", "import socket\ntry:\n    socket.socket(40, socket.SOCK_STREAM); print('vsock')\nexcept OSError as e:\n    print(e.errno)", "97\n"),
        // Odd outputs come back as text, whole.
        sh("invalid_utf8", "printf 'a\\377b'", "a\u{fffd}b"),
        sh("nul_bytes", "printf 'a\\0b'", "a\0b"),
    ];

    let mut wrong = Vec::new();
    for case in &cases {
        let e = t.exec(&attacker.id, case.language, &case.code).await?;
        if e.stdout != case.expect {
            wrong.push(format!("{}: got {:?} (stderr {:?}), want {:?}", case.name, e.stdout, e.stderr, case.expect));
        }
        t.assert_healthy(&bystander.id).await?;
    }
    assert!(wrong.is_empty(), "{} of {} cases:\n{}", wrong.len(), cases.len(), wrong.join("\n"));
    assert_eq!(t.client.read_file(&bystander.id, "secret.txt").await?, b"bystander-secret");
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_every_process_it_can_ends_only_its_own_execution() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let attacker = t.session().await?;
    let bystander = t.session().await?;
    // kill(-1) reaches every process of the sandbox but the caller and PID 1 (the executor):
    // here, the session's kernel.
    t.exec(&attacker.id, Language::Python, "x = 1").await?;
    let e = t.exec(&attacker.id, Language::Bash, "kill -9 -1; echo survived").await?;
    assert_eq!(e.stdout, "survived\n", "{e:?}");
    // Its own session goes on with a fresh kernel, and so does everyone else.
    assert_eq!(t.exec(&attacker.id, Language::Python, "print('again')").await?.stdout, "again\n");
    assert_eq!(t.client.get_session(&attacker.id).await?.kernel_restarts, 1);
    t.assert_healthy(&bystander.id).await?;
    t.shutdown().await;
    Ok(())
}
