//! The hostile suite: each case is a piece of hostile code or a hostile request with its exact
//! expected outcome, and each ends by checking that the server still answers `/healthz` and
//! that a session the attack did not aim at still runs code (`TestServer::assert_healthy`).
//!
//! Grouped by what is attacked: outbound requests the server makes for callers (SSRF), ...

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use sandbox_api::{CreateExecution, Execution, Language, SessionStatus};
use sandbox_test_support::TestServer;

fn bash(code: &str) -> CreateExecution {
    CreateExecution::new(Language::Bash, code)
}

async fn submit(t: &TestServer, session: &str, req: &CreateExecution) -> anyhow::Result<(u16, String)> {
    let body = serde_json::to_vec(req)?;
    let (status, text) = t.client.raw(Method::POST, &format!("/v1/sessions/{session}/executions"), Some(body)).await?;
    Ok((status.as_u16(), text))
}

/// Waits until execution `id` has at least `n` callback attempts recorded.
async fn attempts(t: &TestServer, id: &str, n: usize) -> anyhow::Result<Execution> {
    for _ in 0..200 {
        let e = t.client.get_execution(id).await?;
        if e.callback.as_ref().is_some_and(|c| c.attempts.len() >= n) {
            return Ok(e);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("execution {id} never got {n} callback attempts")
}

/// A receiver on `ip` that counts what reaches it and answers each POST with `answer`.
async fn receiver(ip: &str, answer: axum::response::Response<String>) -> anyhow::Result<(String, Arc<AtomicUsize>)> {
    let hits = Arc::new(AtomicUsize::new(0));
    let (status, headers, body) = {
        let (parts, body) = answer.into_parts();
        (parts.status, parts.headers, body)
    };
    let counter = Arc::clone(&hits);
    let app = axum::Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        let (headers, body) = (headers.clone(), body.clone());
        async move { (status, headers, body) }
    });
    let listener = tokio::net::TcpListener::bind((ip, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}"), hits))
}

fn redirect_to(location: &str) -> anyhow::Result<axum::response::Response<String>> {
    Ok(axum::response::Response::builder().status(307).header("location", location).body(String::new())?)
}

// ---- Outbound requests (SSRF) ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_callbacks_to_internal_addresses_are_refused_at_submission() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let port = t.port();
    for url in [
        format!("http://127.0.0.1:{port}/v1/sessions/{}/stop", s.id),
        format!("http://[::1]:{port}/"),
        format!("http://0x7f000001:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://127.1:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://[fd00:ec2::254]/latest/meta-data/".to_string(),
        "http://100.100.100.200/".to_string(),
        "http://10.0.0.1/".to_string(),
        "http://192.168.1.1/".to_string(),
        "http://0.0.0.0/".to_string(),
        "http://[64:ff9b::7f00:1]/".to_string(),
    ] {
        let req = CreateExecution { callback_url: Some(url.clone()), ..bash("true") };
        let (status, body) = submit(&t, &s.id, &req).await?;
        assert_eq!(status, 422, "{url}: {body}");
        assert!(body.contains("refused by policy"), "{url}: {body}");
    }
    assert_eq!(t.client.get_session(&s.id).await?.status, SessionStatus::Running);
    t.assert_healthy(&s.id).await?;
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_a_name_that_resolves_to_loopback_is_refused_by_policy() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let victim = t.session().await?;
    let attacker = t.session().await?;
    // The attack the issue reproduced: stop another session through the server itself.
    let url = format!("http://localhost:{}/v1/sessions/{}/stop", t.port(), victim.id);
    let req = CreateExecution { callback_url: Some(url), ..bash("true") };
    let e = t.client.execute(&attacker.id, &req).await?;
    let e = attempts(&t, &e.id, 1).await?;
    tokio::time::sleep(Duration::from_millis(800)).await; // a retry would have come by now
    let e = t.client.get_execution(&e.id).await?;
    let callback = e.callback.ok_or_else(|| anyhow::anyhow!("no callback record"))?;
    assert_eq!(callback.attempts.len(), 1, "a refusal is not retried: {callback:?}");
    assert_eq!(callback.attempts[0].status, None);
    assert_eq!(callback.attempts[0].error.as_deref(), Some("refused by policy: localhost has no public address"));
    assert!(!callback.delivered);
    assert_eq!(t.client.get_session(&victim.id).await?.status, SessionStatus::Running);
    t.assert_healthy(&victim.id).await?;
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_redirects_are_not_followed() -> anyhow::Result<()> {
    // The receiver is allowed (127.0.0.2); where it redirects (sandboxd on 127.0.0.1) is not,
    // and a 307 would keep the POST.
    let t = TestServer::start_with(|c| c.outbound_allow = vec!["127.0.0.2".into()]).await?;
    let victim = t.session().await?;
    let attacker = t.session().await?;
    let (target, target_hits) = receiver("127.0.0.1", axum::response::Response::new(String::new())).await?;
    let (hook, hook_hits) = receiver("127.0.0.2", redirect_to(&format!("{target}/x"))?).await?;
    let stop = format!("http://127.0.0.1:{}/v1/sessions/{}/stop", t.port(), victim.id);
    let (hook2, _) = receiver("127.0.0.2", redirect_to(&stop)?).await?;
    let e1 = t.client.execute(&attacker.id, &CreateExecution { callback_url: Some(hook), ..bash("true") }).await?;
    let e2 = t.client.execute(&attacker.id, &CreateExecution { callback_url: Some(hook2), ..bash("true") }).await?;
    let e1 = attempts(&t, &e1.id, 2).await?;
    attempts(&t, &e2.id, 2).await?;
    let statuses: Vec<_> = e1.callback.iter().flat_map(|c| c.attempts.iter().map(|a| a.status)).collect();
    assert_eq!(statuses[..2], [Some(307), Some(307)], "a redirect is an answer, not a hop");
    assert!(hook_hits.load(Ordering::SeqCst) >= 2);
    assert_eq!(target_hits.load(Ordering::SeqCst), 0, "the redirect was followed");
    assert_eq!(t.client.get_session(&victim.id).await?.status, SessionStatus::Running);
    t.assert_healthy(&victim.id).await?;
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_failed_attempts_reveal_no_network_detail() -> anyhow::Result<()> {
    let t = TestServer::start_with(|c| c.outbound_allow = vec!["127.0.0.0/8".into()]).await?;
    let s = t.session().await?;
    // A port nobody listens on: the record says only that it could not connect.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let req = CreateExecution { callback_url: Some(format!("http://{closed}/hook")), ..bash("true") };
    let e = t.client.execute(&s.id, &req).await?;
    let e = attempts(&t, &e.id, 1).await?;
    let first = &e.callback.as_ref().ok_or_else(|| anyhow::anyhow!("no callback"))?.attempts[0];
    assert_eq!((first.status, first.error.as_deref()), (None, Some("could not connect")));
    t.assert_healthy(&s.id).await?;
    t.shutdown().await;
    Ok(())
}

// ---- Kernel attack surface: the seccomp allow-list, from inside a real sandbox ----

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

// ---- Connections and request parts ----

/// Reads from `stream` until the peer closes it or `limit` passes; returns what came and
/// whether it was closed.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, false),
        }
    }
}

async fn connect(t: &TestServer) -> anyhow::Result<tokio::net::TcpStream> {
    Ok(tokio::net::TcpStream::connect(("127.0.0.1", t.port())).await?)
}

/// One request on a fresh connection; the whole answer, as text.
async fn raw_request(t: &TestServer, request: &[u8]) -> anyhow::Result<String> {
    use tokio::io::AsyncWriteExt;
    let mut s = connect(t).await?;
    s.write_all(request).await?;
    let (got, _) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    Ok(String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_half_sent_requests_and_idle_connections_are_closed() -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let t = TestServer::start_with(|c| c.header_read_timeout_s = 1.0).await?;
    let s = t.session().await?;
    let mut partial = Vec::new();
    for _ in 0..60 {
        let mut c = connect(&t).await?;
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await?;
        partial.push(c);
    }
    // And one that sent a whole request, was answered, and then said nothing more.
    let mut idle = connect(&t).await?;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    let started = std::time::Instant::now();
    for c in partial.iter_mut() {
        let (_, closed) = read_until_closed(c, Duration::from_secs(4)).await;
        assert!(closed, "a half-sent request was still open after {:?}", started.elapsed());
    }
    let (answer, closed) = read_until_closed(&mut idle, Duration::from_secs(4)).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    assert!(closed, "an idle keep-alive connection was still open after {:?}", started.elapsed());
    t.assert_healthy(&s.id).await?;
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_keeps_room_for_health_checks_and_refuses_the_rest() -> anyhow::Result<()> {
    let t = TestServer::start_with(|c| {
        c.max_connections = 4;
        c.header_read_timeout_s = 30.0;
    })
    .await?;
    let s = t.session().await?;
    // Four silent connections take every ordinary slot.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect(&t).await?);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A fifth gets a reserved slot: health checks are served, the API is not.
    let health = raw_request(&t, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await?;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let api = raw_request(&t, b"GET /v1/sessions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await?;
    assert!(api.starts_with("HTTP/1.1 503"), "{api}");
    assert!(api.contains(r#""code":"overloaded""#) && api.to_lowercase().contains("retry-after: 1"), "{api}");
    // Every reserved slot taken too: a plain 503, at once.
    for _ in 0..sandbox_server::serve::RESERVED_CONNECTIONS {
        held.push(connect(&t).await?);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = raw_request(&t, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    assert!(refused.starts_with("HTTP/1.1 503") && refused.contains(r#""code":"overloaded""#), "{refused}");
    // Freed slots serve again.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    t.assert_healthy(&s.id).await?;
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_bodies_and_form_fields_are_refused() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    // 200 headers, and one header of 100 KiB: refused before any handler runs.
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = raw_request(&t, format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes()).await?;
    assert!(answer.starts_with("HTTP/1.1 431"), "{}", &answer[..answer.len().min(200)]);
    let huge = "a".repeat(100 << 10);
    let answer =
        raw_request(&t, format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {huge}\r\n\r\n").as_bytes()).await?;
    assert!(answer.starts_with("HTTP/1.1 431"), "{}", &answer[..answer.len().min(200)]);

    // JSON nested 100,000 deep: an error, not a crash.
    let nested = format!(r#"{{"language":"python","code":"1","env":{}{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
    let (status, body) =
        t.client.raw(Method::POST, &format!("/v1/sessions/{}/executions", s.id), Some(nested.into_bytes())).await?;
    assert!(status == 400 || status == 422, "{status} {body}");
    assert!(body.contains(r#""error""#), "{body}");
    // A JSON body over --max-body-bytes.
    let big = format!(r#"{{"language":"python","code":"{}"}}"#, "x".repeat(11 << 20));
    let (status, body) =
        t.client.raw(Method::POST, &format!("/v1/sessions/{}/executions", s.id), Some(big.into_bytes())).await?;
    assert_eq!(status, 413, "{body}");

    // A multipart text field of 8 MiB (it was read whole), and a form of 1,001 parts.
    let form = reqwest::multipart::Form::new()
        .text("path", "x".repeat(8 << 20))
        .part("file", reqwest::multipart::Part::bytes(b"hi".to_vec()).file_name("a.txt"));
    let url = format!("{}/v1/sessions/{}/files", t.client.base(), s.id);
    let resp = reqwest::Client::new().post(&url).multipart(form).send().await?;
    assert_eq!(resp.status(), 413);
    assert!(resp.text().await?.contains("payload_too_large"));
    let mut form = reqwest::multipart::Form::new();
    for i in 0..1001 {
        form = form.text(format!("f{i}"), "v");
    }
    let resp = reqwest::Client::new().post(&url).multipart(form).send().await?;
    assert_eq!(resp.status(), 413);
    t.assert_healthy(&s.id).await?;
    t.shutdown().await;
    Ok(())
}

// ---- Huge and invalid outputs ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_huge_results_and_displays_are_cut_and_the_kernel_lives() -> anyhow::Result<()> {
    let t = TestServer::start_with(|c| c.default_memory_mb = 1024).await?;
    let s = t.session().await?;
    let db = t.data_dir().join("db");
    let db_size = || -> u64 {
        std::fs::read_dir(&db)
            .map(|d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0)
    };
    let before = db_size();

    // A 20 MB result: it was stored whole (the database grew by 21 MiB).
    let e = t.exec(&s.id, Language::Python, "kept = 5\n'x' * 20_000_000").await?;
    assert_eq!(e.status, sandbox_api::ExecutionStatus::Succeeded, "{e:?}");
    assert!(e.outputs_truncated, "{:?}", e.outputs.len());
    assert!(serde_json::to_vec(&e)?.len() < 9 << 20);

    // Ten displays of 8 MB: 80 MB, more than one protocol frame. This lost the sandbox (and the
    // kernel with it) after the timeout and 10 s more.
    let started = std::time::Instant::now();
    let code = "from IPython.display import display\nfor i in range(10):\n    display({'text/plain': str(i) * 8_000_000}, raw=True)\nprint('shown')";
    let e = t
        .client
        .execute(&s.id, &CreateExecution { timeout_s: Some(30.0), ..CreateExecution::new(Language::Python, code) })
        .await?;
    assert_eq!(e.status, sandbox_api::ExecutionStatus::Succeeded, "{:?} {}", e.status, e.stderr);
    assert!(e.outputs_truncated);
    assert!(e.stdout.contains("shown"));
    assert!(started.elapsed() < Duration::from_secs(25), "took {:?}", started.elapsed());

    // Junk written straight to the kernel's event pipe, with no newline.
    let e = t.exec(&s.id, Language::Python, "import os\nos.write(4, b'x' * 30_000_000)\nprint('after')").await?;
    assert_eq!((e.status, e.stdout.as_str()), (sandbox_api::ExecutionStatus::Succeeded, "after\n"), "{}", e.stderr);
    assert!(e.outputs_truncated);

    // The kernel kept its state through all of it.
    let e = t.exec(&s.id, Language::Python, "print(kept)").await?;
    assert_eq!(e.stdout, "5\n");
    assert_eq!(t.client.get_session(&s.id).await?.kernel_restarts, 0);
    let grown = db_size().saturating_sub(before);
    assert!(grown < 40 << 20, "the database grew by {grown} bytes");
    t.assert_healthy(&s.id).await?;
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_listings_are_summaries_and_old_executions_are_pruned() -> anyhow::Result<()> {
    let t = TestServer::start_with(|c| {
        c.max_executions_per_session = 3;
        c.reaper_interval_s = 0.1;
    })
    .await?;
    let s = t.session().await?;
    for i in 0..6 {
        t.exec(&s.id, Language::Bash, &format!("echo run-{i}")).await?;
    }
    let mut listed = Vec::new();
    for _ in 0..50 {
        listed = t.client.list_executions(&s.id).await?.executions;
        if listed.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listed.len(), 3, "the newest three are kept");
    assert!(listed.iter().all(|e| e.stdout.is_empty() && e.outputs.is_empty()), "a listing is summaries");
    let full = t.client.list_executions_with_outputs(&s.id).await?.executions;
    let out: Vec<&str> = full.iter().map(|e| e.stdout.as_str()).collect();
    assert_eq!(out, ["run-3\n", "run-4\n", "run-5\n"]);
    let (status, _) =
        t.client.raw(Method::GET, &format!("/v1/sessions/{}/executions?outputs=maybe", s.id), None).await?;
    assert_eq!(status, 400);
    t.assert_healthy(&s.id).await?;
    t.shutdown().await;
    Ok(())
}

// ---- Disk and memory: tmpfs, the root, /dev ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tmpfs_are_sized_to_the_memory_limit_and_the_root_is_read_only() -> anyhow::Result<()> {
    // /tmp (256 MiB by default) filled in a 128 MiB sandbox was an OOM kill, not ENOSPC; / and
    // /dev were writable tmpfs with no size at all.
    let t = TestServer::start().await?;
    let limits = sandbox_api::LimitsRequest { memory_mb: Some(128), ..Default::default() };
    let s = t.client.create_session(&sandbox_api::CreateSession { limits: Some(limits), ..Default::default() }).await?;
    let code = "df -m --output=size /tmp /dev/shm | tail -n 2 | tr -d ' ' | tr '\\n' ' '; echo
for f in /x /dev/x /etc/x /usr/x; do (echo 1 > $f) 2>/dev/null && echo \"wrote $f\" || echo \"refused $f\"; done
dd if=/dev/zero of=/tmp/fill bs=1M count=200 2>&1 | grep -o 'No space left on device' | head -n 1
rm /tmp/fill
dd if=/dev/zero of=/dev/shm/fill bs=1M count=200 2>&1 | grep -o 'No space left on device' | head -n 1
rm /dev/shm/fill
echo shm-ok > /dev/shm/note && cat /dev/shm/note";
    let e = t.exec(&s.id, Language::Bash, code).await?;
    assert_eq!(e.status, sandbox_api::ExecutionStatus::Succeeded, "{e:?}");
    assert_eq!(
        e.stdout,
        "64 64 \nrefused /x\nrefused /dev/x\nrefused /etc/x\nrefused /usr/x\nNo space left on device\nNo space left on device\nshm-ok\n",
        "{}",
        e.stderr
    );
    t.assert_healthy(&s.id).await?;
    t.shutdown().await;
    Ok(())
}

// ---- Processes and signals ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_killed_between_cells_is_replaced_before_the_next_one_runs() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    t.exec(&s.id, Language::Python, "x = 1").await?;
    // A one-shot execution in the same sandbox kills the kernel between cells.
    let e = t
        .exec(&s.id, Language::Bash, "pkill -9 -f 'kernel[.]py'; sleep 0.3; pgrep -f 'kernel[.]py' || echo gone")
        .await?;
    assert_eq!(e.stdout, "gone\n", "{e:?}");
    // The next cell was not its victim: it runs, in a fresh kernel.
    let e = t.exec(&s.id, Language::Python, "print('ran', 'x' in dir())").await?;
    assert_eq!((e.status, e.stdout.as_str()), (sandbox_api::ExecutionStatus::Succeeded, "ran False\n"), "{e:?}");
    let session = t.client.get_session(&s.id).await?;
    assert_eq!(session.kernel_restarts, 1);
    let why = session.last_kernel_death.unwrap_or_default();
    assert!(why.contains("signal 9") && why.ends_with("between executions"), "{why}");
    // A death during a cell is that cell's, and says so too.
    let e = t.exec(&s.id, Language::Python, "import os; os._exit(3)").await?;
    assert_eq!(e.status, sandbox_api::ExecutionStatus::KernelDied);
    let session = t.client.get_session(&s.id).await?;
    assert_eq!(session.kernel_restarts, 2);
    let why = session.last_kernel_death.unwrap_or_default();
    assert!(why.starts_with("exited with code 3, during exe_"), "{why}");
    t.assert_healthy(&s.id).await?;
    t.shutdown().await;
    Ok(())
}

// ---- The host: admission and bursts ----

fn host_memory() -> anyhow::Result<u64> {
    let info = std::fs::read_to_string("/proc/meminfo")?;
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no MemTotal"))?;
    Ok(kib << 10)
}

async fn create_raw(t: &TestServer, body: serde_json::Value) -> anyhow::Result<(u16, String)> {
    let (status, text) = t.client.raw(Method::POST, "/v1/sessions", Some(serde_json::to_vec(&body)?)).await?;
    Ok((status.as_u16(), text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_refuses_sessions_that_would_overcommit_memory() -> anyhow::Result<()> {
    // Room for two sandboxes of 512 MiB and not three, whatever the host.
    let factor = (1280u64 << 20) as f64 / host_memory()? as f64;
    let t = TestServer::start_with(|c| c.memory_overcommit = factor).await?;
    let a = t.session().await?;
    let b = t.session().await?;
    let (status, body) = create_raw(&t, serde_json::json!({})).await?;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(r#""code":"overloaded""#) && body.contains("not enough memory"), "{body}");
    // A smaller one fits; a stopped session frees its share, and cannot resume while full.
    let (status, body) = create_raw(&t, serde_json::json!({"limits": {"memory_mb": 128}})).await?;
    assert_eq!(status, 201, "{body}");
    t.client.stop_session(&b.id).await?;
    let (status, body) = create_raw(&t, serde_json::json!({})).await?;
    assert_eq!(status, 201, "{body}");
    let (status, body) = t.client.raw(Method::POST, &format!("/v1/sessions/{}/resume", b.id), None).await?;
    assert_eq!(status, 503, "{body}");
    t.assert_healthy(&a.id).await?;
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_refuses_sessions_that_would_overcommit_disk() -> anyhow::Result<()> {
    let t = TestServer::start_with(|c| c.disk_overcommit = 1e-9).await?;
    let (status, body) = create_raw(&t, serde_json::json!({})).await?;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not enough disk") && body.contains("--disk-overcommit"), "{body}");
    t.shutdown().await;
    let t = TestServer::start_with(|c| c.min_free_disk_mb = u64::MAX >> 21).await?;
    let (status, body) = create_raw(&t, serde_json::json!({})).await?;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not enough free disk"), "{body}");
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_creates_is_served_in_turn_or_refused_at_once_never_timed_out() -> anyhow::Result<()> {
    let t = TestServer::start_with(|c| {
        c.max_concurrent_starts = 1;
        c.max_queued_starts = 2;
        // Making volumes is serialized, and would space the starts out.
        c.workspace_volumes = sandbox_server::config::VolumeMode::Off;
    })
    .await?;
    // Slow starts (a tenth of a core each), sent from a runtime of their own so that they
    // arrive together whatever the server's threads are doing.
    let body = serde_json::to_vec(&serde_json::json!({"kernel": "none", "limits": {"cpu": 0.1, "memory_mb": 64}}))?;
    // A machine busy with other tests can still space a burst out; a burst that found the
    // queue never full proves nothing either way, so it is sent again (at most three times).
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    for _ in 0..3 {
        let client = t.client.clone();
        let body = body.clone();
        let answers = std::thread::spawn(move || -> anyhow::Result<Vec<_>> {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            Ok(rt.block_on(futures_util::future::join_all((0..40).map(|_| {
                let (client, body) = (client.clone(), body.clone());
                async move { client.raw(Method::POST, "/v1/sessions", Some(body)).await }
            }))))
        });
        let answers = tokio::task::block_in_place(|| answers.join()).map_err(|_| anyhow::anyhow!("burst thread"))??;
        by_status.clear();
        for answer in answers {
            let (status, text) = answer?;
            *by_status.entry(status.as_u16()).or_default() += 1;
            if status == 429 {
                assert!(text.contains("too many sandboxes are starting"), "{text}");
            }
        }
        if by_status.contains_key(&429) {
            break;
        }
    }
    let served = by_status.get(&201).copied().unwrap_or(0);
    let refused = by_status.get(&429).copied().unwrap_or(0);
    assert_eq!(served + refused, 40, "only 201 and 429: {by_status:?}");
    assert!(served >= 3 && refused >= 1, "{by_status:?}");
    // Once the burst is over, there is room again.
    let (status, text) = create_raw(&t, serde_json::json!({"kernel": "none"})).await?;
    assert_eq!(status, 201, "{text}");
    let s = t.session().await?;
    t.assert_healthy(&s.id).await?;
    t.shutdown().await;
    Ok(())
}

/// Workspace volumes mounted on the host under `data_dir` (the spares made ahead left out).
fn mounted_under(data_dir: &std::path::Path) -> usize {
    let root = format!("{}/", data_dir.join("workspaces").to_string_lossy());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).and_then(|mount_point| mount_point.strip_prefix(&root)))
        .filter(|name| !name.starts_with('.'))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_without_a_sandbox_are_unmounted_and_lose_nothing() -> anyhow::Result<()> {
    let t = TestServer::start_with(|c| c.reaper_interval_s = 0.2).await?;
    // Create and delete: 348 such left 348 mounts behind, and every sandbox start slower.
    let body = serde_json::json!({"kernel": "none", "limits": {"memory_mb": 64}});
    for _ in 0..40 {
        let (status, text) = create_raw(&t, body.clone()).await?;
        anyhow::ensure!(status == 201, "{text}");
        let id = serde_json::from_str::<serde_json::Value>(&text)?["id"].as_str().unwrap_or_default().to_string();
        t.client.delete_session(&id).await?;
    }
    let mut after = mounted_under(t.data_dir());
    for _ in 0..20 {
        if after == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = mounted_under(t.data_dir());
    }
    assert_eq!(after, 0, "workspace volumes still mounted after 40 creates and deletes");

    // A stopped session's files: written by code, unmounted at the stop, read and written
    // through the API (mounted for it, unmounted again by the reaper), and there at resume.
    let s = t.session().await?;
    t.exec(&s.id, Language::Bash, "echo from-code > a.txt").await?;
    t.client.stop_session(&s.id).await?;
    let ws = t.data_dir().join("workspaces").join(&s.id);
    assert!(!sandbox_workspace::volume::is_mount_point(&ws), "unmounted once stopped");
    assert!(t.data_dir().join("volumes").join(format!("{}.img", s.id)).is_file(), "a volume (root, loop devices)");
    assert_eq!(t.client.read_file(&s.id, "a.txt").await?, b"from-code\n");
    t.client.upload(&s.id, "b.txt", reqwest::Body::from("from-api"), Some(8)).await?;
    for _ in 0..50 {
        if !sandbox_workspace::volume::is_mount_point(&ws) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!sandbox_workspace::volume::is_mount_point(&ws), "the reaper unmounts it again");
    assert!(!ws.join("a.txt").exists() && !ws.join("b.txt").exists(), "nothing was written under the mount point");
    t.client.resume_session(&s.id).await?;
    assert_eq!(t.exec(&s.id, Language::Bash, "cat a.txt b.txt").await?.stdout, "from-code\nfrom-api");
    t.assert_healthy(&s.id).await?;
    t.shutdown().await;
    Ok(())
}
