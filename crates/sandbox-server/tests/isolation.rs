//! The first and second isolation layers, checked from inside real sandboxes.

use sandbox_api::{ExecutionStatus, Language};
use sandbox_test_support::TestServer;

async fn py(t: &TestServer, session: &str, code: &str) -> anyhow::Result<String> {
    let e = t.exec(session, Language::Python, code).await?;
    anyhow::ensure!(e.status == ExecutionStatus::Succeeded, "execution failed: {e:?}");
    Ok(e.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_do_not_see_each_others_files_or_processes() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let a = t.session().await?;
    let b = t.session().await?;
    t.exec(&a.id, Language::Bash, "echo secret > a-secret.txt").await?;

    // While A runs a recognisable process, B looks for it.
    let long = t.exec(&a.id, Language::Bash, "exec -a marker-of-a sleep 3");
    let look = async {
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        t.exec(
            &b.id,
            Language::Bash,
            "ls -A /workspace; cat /proc/[0-9]*/cmdline | tr '\\0' ' '; echo; find / -name '*secret*' 2>/dev/null",
        )
        .await
    };
    let (long, seen) = tokio::join!(long, look);
    let seen = seen?;
    assert_eq!(long?.status, ExecutionStatus::Succeeded);
    assert!(!seen.stdout.contains("a-secret.txt"), "B sees A's file: {}", seen.stdout);
    assert!(!seen.stdout.contains("marker-of-a"), "B sees A's process: {}", seen.stdout);
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_network_not_even_to_sandboxd_on_the_host_loopback() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let code = format!(
        r#"
import socket
def attempt(host, port):
    try:
        socket.create_connection((host, port), timeout=2).close()
        return "connected"
    except OSError as e:
        return type(e).__name__
print(attempt("1.1.1.1", 53))
print(attempt("127.0.0.1", {port}))
print(sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:]))
"#,
        port = t.port()
    );
    let out = py(&t, &s.id, &code).await?;
    let lines: Vec<&str> = out.lines().collect();
    assert_ne!(lines[0], "connected", "public address reachable");
    assert_eq!(lines[1], "ConnectionRefusedError", "sandboxd's port reachable: {out}");
    assert_eq!(lines[2], "['lo']");
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_directories_are_hidden_and_system_ones_read_only() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let data_dir = t.data_dir().display().to_string();
    // Something only the host's /tmp has: the data dir of this very server lives there.
    let code = format!(
        r#"
import os
for p in ["/root", "/home", "/var", "/etc/shadow", {data_dir:?}, "/sandbox-data"]:
    print(p, os.path.exists(p))
print("tmp", sorted(os.listdir("/tmp")))
for p in ["/usr/evil", "/etc/passwd", "/bin/evil"]:
    try:
        open(p, "w").write("x")
        print(p, "WRITABLE")
    except OSError as e:
        print(p, type(e).__name__)
print(open("/etc/passwd").read().count("\n"))
"#
    );
    let out = py(&t, &s.id, &code).await?;
    for line in out.lines().take(6) {
        assert!(line.ends_with(" False"), "visible: {line}\n{out}");
    }
    assert!(out.contains("tmp ['.sandbox']"), "{out}");
    assert!(!out.contains("WRITABLE"), "{out}");
    assert!(out.lines().nth(10).is_some_and(|n| n.trim() == "3"), "own passwd only: {out}");
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proc_shows_only_the_sandbox() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let out = py(
        &t,
        &s.id,
        "import os\npids = [p for p in os.listdir('/proc') if p.isdigit()]\nprint(len(pids), open('/proc/1/cmdline').read().split('\\0')[0])",
    )
    .await?;
    let mut it = out.split_whitespace();
    let count: usize = it.next().unwrap_or("0").parse()?;
    // The executor and this python process; the host has hundreds.
    assert!(count <= 3, "{out}");
    assert_eq!(it.next(), Some("/.sandbox/executor"));
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprivileged_no_new_privs_seccomp_and_no_namespaces() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let code = r#"
import ctypes, os
print(os.getuid(), os.getgid())
status = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
print(status["NoNewPrivs"].strip(), status["Seccomp"].strip(), status["CapEff"].strip())
libc = ctypes.CDLL(None, use_errno=True)
def errno_of(nr, *args):
    r = libc.syscall(nr, *args)
    return "ok" if r >= 0 else os.strerror(ctypes.get_errno())
print("ptrace", errno_of(101, 16, 1, 0, 0))          # PTRACE_ATTACH to PID 1
print("unshare", errno_of(272, 0x10000000))          # CLONE_NEWUSER
print("mount", errno_of(165, b"none", b"/tmp", b"tmpfs", 0, 0))
print("bpf", errno_of(321, 0, 0, 0))
try:
    open("/proc/1/environ").read()
    print("executor memory readable")
except OSError as e:
    print("executor", type(e).__name__)
"#;
    let out = py(&t, &s.id, code).await?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1000 1000");
    assert_eq!(lines[1], "1 2 0000000000000000", "NoNewPrivs, seccomp filter mode, no capabilities");
    for l in &lines[2..6] {
        assert!(l.ends_with("Operation not permitted"), "{l}\n{out}");
    }
    assert_eq!(lines[6], "executor PermissionError");
    let e = t.exec(&s.id, Language::Bash, "unshare -U true 2>&1; echo rc=$?").await?;
    assert!(e.stdout.contains("rc=1"), "{e:?}");
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_files_belong_to_the_unprivileged_sandbox_user() -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let t = TestServer::start().await?;
    let s = t.session().await?;
    t.exec(&s.id, Language::Bash, "echo x > owned.txt").await?;
    let meta = std::fs::metadata(t.data_dir().join("workspaces").join(&s.id).join("owned.txt"))?;
    let expected = match sandbox_sys::lookup_user("sandbox")? {
        Some((uid, _)) if sandbox_sys::real_uid() == 0 => uid,
        _ => sandbox_sys::real_uid(),
    };
    assert_eq!(meta.uid(), expected);
    assert_ne!(meta.uid(), 0, "user code must never own files as host root");
    t.shutdown().await;
    Ok(())
}
