//! The workspace file API against real sandboxes: what the API writes, code sees at once and
//! the other way round; nothing outside the workspace is reachable through it; limits hold.

use sandbox_api::{ExecutionStatus, FileType, Language};
use sandbox_client::file_url;
use sandbox_test_support::TestServer;

fn status_of(e: &sandbox_client::ClientError) -> u16 {
    e.status().map(|s| s.as_u16()).unwrap_or(0)
}

fn sha256_hex(data: &[u8]) -> String {
    // The test's own SHA-256 comes from the sandbox's Python, not from the server's code.
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().map(|mut i| i.write_all(data));
            c.wait_with_output()
        })
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Sends `method target` exactly as given and returns the status and body.
async fn raw_request(port: u16, method: &str, target: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let request = format!("{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx");
    conn.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    conn.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_go_both_ways_between_the_api_and_code() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let csv = "region,amount\n华东,12\n华北,7\n".as_bytes();
    let up = t.client.upload(&s.id, "data/销售数据 2024.csv", csv.to_vec(), Some(csv.len() as u64)).await?;
    assert_eq!((up.path.as_str(), up.size), ("data/销售数据 2024.csv", csv.len() as u64));
    assert_eq!(up.sha256, sha256_hex(csv));

    // Code sees the upload at once, and what code writes the API sees at once.
    let code = "import csv, os\nrows = list(csv.DictReader(open('data/销售数据 2024.csv')))\nprint(sum(int(r['amount']) for r in rows))\nos.makedirs('out', exist_ok=True)\n_ = open('out/report 📊.txt', 'w').write('total 19')";
    let e = t.exec(&s.id, Language::Python, code).await?;
    assert_eq!((e.status, e.stdout.as_str()), (ExecutionStatus::Succeeded, "19\n"), "{e:?}");
    assert_eq!(t.client.read_file(&s.id, "out/report 📊.txt").await?, b"total 19");

    let all = t.client.list_files(&s.id, "", true).await?;
    let names: Vec<(&str, FileType)> = all.files.iter().map(|f| (f.path.as_str(), f.kind)).collect();
    assert_eq!(
        names,
        [
            ("data", FileType::Dir),
            ("data/销售数据 2024.csv", FileType::File),
            ("out", FileType::Dir),
            ("out/report 📊.txt", FileType::File)
        ]
    );
    assert!(!all.truncated);
    assert_eq!(t.client.list_files(&s.id, "data", false).await?.files.len(), 1);

    // Download: type, validators, ranges.
    let http = reqwest::Client::new();
    let url = format!("{}{}", t.client.base(), file_url(&s.id, "data/销售数据 2024.csv"));
    let resp = http.get(&url).send().await?;
    assert_eq!(resp.headers()["content-type"], "text/csv");
    let etag = resp.headers()["etag"].clone();
    assert!(resp.headers().contains_key("last-modified"));
    let resp = http.get(&url).header("if-none-match", etag.clone()).send().await?;
    assert_eq!(resp.status(), 304);
    let resp = http.get(&url).header("range", "bytes=0-5").send().await?;
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.headers()["content-range"], format!("bytes 0-5/{}", csv.len()).as_str());
    assert_eq!(resp.bytes().await?.as_ref(), b"region");
    let resp = http.get(&url).header("range", "bytes=-3").send().await?;
    assert_eq!(resp.bytes().await?.as_ref(), &csv[csv.len() - 3..]);
    let resp = http.get(&url).header("range", "bytes=9999-").send().await?;
    assert_eq!(resp.status(), 416);
    assert_eq!(resp.headers()["content-range"], format!("bytes */{}", csv.len()).as_str());
    // A replaced file has a new validator.
    t.client.upload(&s.id, "data/销售数据 2024.csv", b"new".to_vec(), None).await?;
    let resp = http.get(&url).header("if-none-match", etag).send().await?;
    assert_eq!((resp.status().as_u16(), resp.bytes().await?.as_ref()), (200, &b"new"[..]));

    // Move, delete, archive.
    let moved = t.client.move_file(&s.id, "out/report 📊.txt", "final/report.txt").await?;
    assert_eq!(moved.path, "final/report.txt");
    let e = t.exec(&s.id, Language::Bash, "cat final/report.txt; echo; ls -A out | wc -l").await?;
    assert_eq!(e.stdout, "total 19\n0\n", "{e:?}");
    let e = t.client.move_file(&s.id, "data", "final/report.txt").await.expect_err("never replaces");
    assert_eq!(status_of(&e), 409);
    let e = t.client.delete_file(&s.id, "final", false).await.expect_err("not empty");
    assert_eq!(status_of(&e), 409);
    t.client.delete_file(&s.id, "final", true).await?;
    t.client.delete_file(&s.id, "data/销售数据 2024.csv", false).await?;
    let e = t.exec(&s.id, Language::Bash, "ls -A final data 2>&1 | head -3").await?;
    assert!(e.stdout.contains("No such file"), "{e:?}");
    let e = t.client.read_file(&s.id, "data/销售数据 2024.csv").await.expect_err("gone");
    assert_eq!(status_of(&e), 404);
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_hold_the_directory() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let e = t
        .exec(
            &s.id,
            Language::Bash,
            "mkdir -p out/charts && echo hi > out/a.txt && echo png > out/charts/b.png && ln -s /etc/passwd out/link",
        )
        .await?;
    assert_eq!(e.status, ExecutionStatus::Succeeded, "{e:?}");
    let resp = t.client.archive(&s.id, "out").await?;
    assert_eq!(resp.headers()["content-type"], "application/gzip");
    assert!(resp.headers()["content-disposition"].to_str()?.contains("out.tar.gz"));
    let bytes = resp.bytes().await?;
    // Unpacked by tar inside the sandbox: the archive is a real one.
    t.client.upload(&s.id, "got.tgz", bytes.to_vec(), None).await?;
    let e = t.exec(&s.id, Language::Bash, "tar tzf got.tgz | sort").await?;
    assert_eq!(e.stdout, "a.txt\ncharts/\ncharts/b.png\n", "links are left out: {e:?}");
    let e = t.client.archive(&s.id, "out/a.txt").await.expect_err("not a dir");
    assert_eq!(status_of(&e), 409);
    let e = t.client.archive(&s.id, "nope").await.expect_err("missing");
    assert_eq!(status_of(&e), 404);
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_outside_the_workspace_is_reachable() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let base = format!("/v1/sessions/{}/files", s.id);
    // Raw request lines, as an attacker would send them: an HTTP library would normalize or
    // encode these before they left the process.
    for raw in [
        "/..%2F..%2F..%2Fetc%2Fpasswd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/a/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/%252e%252e/etc/passwd",
        "//etc/passwd",
        "/a%00b",
        "/invoice%E2%80%AEfdp.exe",
        "/x%09y",
    ] {
        let (status, body) = raw_request(t.port(), "GET", &format!("{base}{raw}")).await?;
        assert_eq!(status, 400, "{raw}: {body}");
        assert!(body.contains(r#""code":"bad_request""#), "{raw}: {body}");
        let (status, body) = raw_request(t.port(), "PUT", &format!("{base}{raw}")).await?;
        assert_eq!(status, 400, "PUT {raw}: {body}");
    }
    let long = "x".repeat(300);
    let e = t.client.upload(&s.id, &long, b"x".to_vec(), None).await.expect_err("long name");
    assert_eq!(status_of(&e), 400);

    // Links made by sandboxed code: never followed, for reading or writing.
    let e = t
        .exec(
            &s.id,
            Language::Bash,
            "ln -s /etc/passwd passwd; ln -s / root; mkfifo pipe; ln /etc/passwd hard 2>&1; true",
        )
        .await?;
    assert!(e.stdout.contains("Invalid cross-device link") || e.stdout.contains("Operation not permitted"), "{e:?}");
    for path in ["passwd", "root/etc/passwd", "pipe"] {
        let err = t.client.read_file(&s.id, path).await.expect_err(path);
        assert_eq!(status_of(&err), 409, "{path}: {err}");
    }
    let err = t.client.upload(&s.id, "root/tmp/planted", b"x".to_vec(), None).await.expect_err("through a link");
    assert_eq!(status_of(&err), 409, "{err}");
    assert!(!std::path::Path::new("/tmp/planted").exists());
    let listed = t.client.list_files(&s.id, "", false).await?;
    let kinds: Vec<(&str, FileType)> = listed.files.iter().map(|f| (f.path.as_str(), f.kind)).collect();
    assert_eq!(kinds, [("passwd", FileType::Symlink), ("pipe", FileType::Other), ("root", FileType::Symlink)]);
    let err = t.client.list_files(&s.id, "root", false).await.expect_err("link to a dir");
    assert_eq!(status_of(&err), 409);
    // Writing over a link replaces the link, never its target.
    t.client.upload(&s.id, "passwd", b"mine".to_vec(), None).await?;
    assert_eq!(t.client.read_file(&s.id, "passwd").await?, b"mine");
    assert!(std::fs::read_to_string("/etc/passwd")?.contains("root:"));
    // Removing a link to / removes the link.
    t.client.delete_file(&s.id, "root", true).await?;
    assert!(std::path::Path::new("/etc/passwd").exists());

    // Unknown and deleted sessions.
    let e = t.client.read_file("ses_nope", "a").await.expect_err("unknown");
    assert_eq!(status_of(&e), 404);
    t.client.delete_session(&s.id).await?;
    let e = t.client.upload(&s.id, "a", b"x".to_vec(), None).await.expect_err("deleted");
    assert_eq!(status_of(&e), 409);
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_cannot_write_past_the_quota_and_the_session_goes_on() -> anyhow::Result<()> {
    let quota: u64 = 32 << 20;
    let t = TestServer::start_with(|c| c.workspace_quota_bytes = quota).await?;
    let (_, ready) = t.client.readiness().await?;
    assert!(
        ready.storage.message.contains("workspaces are volumes"),
        "this host must allow volumes: {:?}",
        ready.storage
    );
    let s = t.session().await?;
    let fill = "import errno\nn = 0\ntry:\n    with open('fill.bin', 'wb') as f:\n        for _ in range(200):\n            f.write(b'x' * (1 << 20)); f.flush(); n += 1 << 20\nexcept OSError as e:\n    print(errno.errorcode[e.errno], n)";
    let e = t.exec(&s.id, Language::Python, fill).await?;
    let (code, written) = e.stdout.trim().split_once(' ').ok_or_else(|| anyhow::anyhow!("no error: {e:?}"))?;
    assert!(code == "ENOSPC" || code == "EDQUOT", "{e:?}");
    let written: u64 = written.parse()?;
    assert!(written >= quota - (2 << 20) && written <= quota + (4 << 20), "wrote {written} of a {quota}-byte quota");
    // The host's disk never filled, the session is healthy, and an upload says why it fails.
    let again = t.exec(&s.id, Language::Python, "print('still here')").await?;
    assert_eq!(again.stdout, "still here\n");
    let e = t.client.upload(&s.id, "more", vec![1u8; 4 << 20], None).await.expect_err("full");
    assert_eq!(status_of(&e), 507, "{e}");
    // Space comes back when files go.
    t.client.delete_file(&s.id, "fill.bin", false).await?;
    let e = t.exec(&s.id, Language::Python, "open('small.bin','wb').write(b'y' * (8 << 20))").await?;
    assert_eq!(e.status, ExecutionStatus::Succeeded, "{e:?}");
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_size_and_quota_limits_hold_and_leave_nothing_behind() -> anyhow::Result<()> {
    let t = TestServer::start_with(|c| {
        c.max_file_bytes = 1 << 20;
        // On a volume the quota counts disk blocks, as any disk quota does: a file's extent
        // blocks too (a few KiB for these).
        c.workspace_quota_bytes = (3 << 20) + (16 << 10);
    })
    .await?;
    let s = t.session().await?;
    let mib = vec![7u8; 1 << 20];
    // Too large, announced: refused before the body is read.
    let e = t.client.upload(&s.id, "big", vec![0u8; 2 << 20], Some(2 << 20)).await.expect_err("too large");
    assert_eq!(status_of(&e), 413, "{e}");
    // Too large, not announced (chunked): refused while streaming, nothing written.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..3).map(|_| Ok(vec![1u8; 600 << 10])).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let e = t.client.upload(&s.id, "big", body, None).await.expect_err("too large, chunked");
    assert_eq!(status_of(&e), 413, "{e}");
    assert_eq!(status_of(&t.client.read_file(&s.id, "big").await.expect_err("absent")), 404);
    // The quota counts what is there, replaced files excepted.
    for name in ["a", "b", "c"] {
        t.client.upload(&s.id, name, mib.clone(), Some(1 << 20)).await?;
    }
    t.client.upload(&s.id, "a", mib.clone(), Some(1 << 20)).await?;
    let e = t.client.upload(&s.id, "d", mib.clone(), Some(1 << 20)).await.expect_err("over quota");
    assert_eq!(status_of(&e), 507, "{e}");
    assert!(e.to_string().contains("quota"), "{e}");
    let on_disk = t.data_dir().join("workspaces").join(&s.id);
    let mut names: Vec<_> = std::fs::read_dir(&on_disk)?.flatten().map(|e| e.file_name()).collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c"], "no half-written uploads left");
    t.client.delete_file(&s.id, "c", false).await?;
    t.client.upload(&s.id, "d", mib, Some(1 << 20)).await?;
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_write_every_file() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let form = reqwest::multipart::Form::new()
        .text("path", "inbox")
        .part("a", reqwest::multipart::Part::bytes(b"one".to_vec()).file_name("one.txt"))
        .part("b", reqwest::multipart::Part::bytes(b"two".to_vec()).file_name("sub/两.txt"));
    let url = format!("{}/v1/sessions/{}/files", t.client.base(), s.id);
    let resp = reqwest::Client::new().post(&url).multipart(form).send().await?;
    assert_eq!(resp.status(), 201);
    let body: sandbox_api::UploadedFiles = resp.json().await?;
    let paths: Vec<&str> = body.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["inbox/one.txt", "inbox/sub/两.txt"]);
    let e = t.exec(&s.id, Language::Bash, "cat inbox/one.txt inbox/sub/两.txt").await?;
    assert_eq!(e.stdout, "onetwo");
    let empty = reqwest::multipart::Form::new().text("path", "x");
    let resp = reqwest::Client::new().post(&url).multipart(empty).send().await?;
    assert_eq!(resp.status(), 422);
    let bad = reqwest::multipart::Form::new()
        .part("a", reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("../escape.txt"));
    let resp = reqwest::Client::new().post(&url).multipart(bad).send().await?;
    assert_eq!(resp.status(), 400);
    let resp = reqwest::Client::new().post(&url).body("not a form").send().await?;
    assert_eq!(resp.status(), 400);
    t.shutdown().await;
    Ok(())
}

/// Peak resident memory of this process (server and client both live here), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_streams_up_and_down_in_little_memory() -> anyhow::Result<()> {
    const SIZE: u64 = 1 << 30;
    const CHUNK: usize = 1 << 20;
    let t = TestServer::start().await?;
    let s = t.session().await?;
    // Reset the peak-RSS counter, so VmHWM below is the peak of the transfers alone.
    std::fs::write("/proc/self/clear_refs", "5")?;
    let before = peak_rss();
    let chunks = (0..SIZE / CHUNK as u64).map(|i| Ok::<_, std::io::Error>(vec![(i % 251) as u8; CHUNK]));
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let up = t.client.upload(&s.id, "big.bin", body, Some(SIZE)).await?;
    assert_eq!(up.size, SIZE);
    let e = t.exec(&s.id, Language::Bash, "stat -c %s big.bin").await?;
    assert_eq!(e.stdout.trim(), SIZE.to_string());
    let mut resp = t.client.download(&s.id, "big.bin").await?;
    let (mut got, mut i) = (0u64, 0u64);
    while let Some(chunk) = resp.chunk().await? {
        // Spot-check the content where the pattern's byte changes.
        for (k, b) in chunk.iter().enumerate().step_by(4096) {
            let at = got + k as u64;
            assert_eq!(*b, ((at / CHUNK as u64) % 251) as u8, "byte {at}");
        }
        got += chunk.len() as u64;
        i += 1;
    }
    assert_eq!(got, SIZE);
    assert!(i > 1, "it streamed");
    let growth = peak_rss().saturating_sub(before);
    assert!(growth < 64 << 20, "peak memory grew by {} MiB moving 1 GiB", growth >> 20);
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_can_restrict_uploads_to_some_types() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let req = sandbox_api::CreateTemplate {
        name: "sheets".into(),
        allowed_uploads: Some(vec![".xlsx".into(), ".csv".into(), "TXT".into()]),
        ..Default::default()
    };
    let tpl = t.client.create_template(&req).await?;
    assert_eq!(tpl.allowed_uploads, ["xlsx", "csv", "txt"]);
    let s = t
        .client
        .create_session(&sandbox_api::CreateSession { template: Some("sheets".into()), ..Default::default() })
        .await?;
    t.client.upload(&s.id, "data/sales.csv", "a,b\n1,2\n".as_bytes().to_vec(), None).await?;
    let xlsx = [b"PK\x03\x04".as_slice(), &[0u8; 20_000]].concat();
    t.client.upload(&s.id, "book.XLSX", xlsx, None).await?;
    let elf = [b"\x7fELF\x02\x01\x01\x00".as_slice(), &[0u8; 100]].concat();
    for (name, body) in [("tool.exe", b"MZ".to_vec()), ("noext", b"x".to_vec()), ("fake.csv", elf.clone())] {
        let e = t.client.upload(&s.id, name, body, None).await.expect_err(name);
        assert_eq!(status_of(&e), 415, "{name}: {e}");
        assert!(e.to_string().contains(".xlsx .csv .txt"), "the message names what is accepted: {e}");
    }
    // A large upload whose first chunk gives it away is refused too, and leaves nothing.
    let chunks = vec![Ok::<_, std::io::Error>(elf), Ok(vec![0u8; 1 << 20])];
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let e = t.client.upload(&s.id, "big.csv", body, None).await.expect_err("binary csv");
    assert_eq!(status_of(&e), 415);
    let names: Vec<String> = t.client.list_files(&s.id, "", true).await?.files.into_iter().map(|f| f.path).collect();
    assert_eq!(names, ["book.XLSX", "data", "data/sales.csv"]);
    // Sessions of other templates take anything.
    let plain = t.session().await?;
    t.client.upload(&plain.id, "tool.exe", b"MZ".to_vec(), None).await?;
    let bad = sandbox_api::CreateTemplate {
        name: "bad".into(),
        allowed_uploads: Some(vec!["../x".into()]),
        ..Default::default()
    };
    assert_eq!(status_of(&t.client.create_template(&bad).await.expect_err("bad ext")), 422);
    t.shutdown().await;
    Ok(())
}
