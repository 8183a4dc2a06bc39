//! The real `sbx` binary against a real server.

use std::process::Command;

use sandbox_test_support::TestServer;

/// Runs the CLI; the server keeps serving on the runtime's other worker meanwhile.
fn sbx(t: &TestServer, args: &[&str]) -> std::process::Output {
    tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_sbx"))
            .args(args)
            .env("SANDBOX_URL", t.client.base())
            .output()
            .expect("run sbx")
    })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exec_and_sessions_from_the_command_line() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let out = sbx(&t, &["run", "-l", "python", "-c", "print(1)"]);
    assert_eq!((out.status.code(), text(&out.stdout).as_str()), (Some(0), "1\n"));

    let dir = tempfile::tempdir()?;
    let script = dir.path().join("hello.js");
    std::fs::write(&script, "console.log('from a file'); process.exit(4)")?;
    let out = sbx(&t, &["run", script.to_str().unwrap_or_default()]);
    assert_eq!(
        (out.status.code(), text(&out.stdout).as_str()),
        (Some(4), "from a file\n"),
        "language from the extension, exit code mirrored"
    );

    let out = sbx(&t, &["session", "create", "--env", "WHO=cli", "--idle-timeout", "600"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    assert_eq!(t.client.get_session(&id).await?.idle_timeout_s, 600);
    let out = sbx(&t, &["exec", &id, "-l", "bash", "-c", "echo $WHO; ls /workspace"]);
    assert_eq!(text(&out.stdout), "cli\n");
    let out = sbx(&t, &["exec", &id, "-l", "python", "-c", "while True: pass", "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(124));
    let out = sbx(&t, &["--json", "exec", &id, "-l", "bash", "-c", "echo j"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["stdout"], "j\n");
    // Streaming prints as it goes; the exit code and errors are the same as without it.
    let out = sbx(&t, &["exec", &id, "-l", "python", "-c", "for i in range(3): print(i)", "--stream"]);
    assert_eq!((out.status.code(), text(&out.stdout).as_str()), (Some(0), "0\n1\n2\n"));
    let out = sbx(&t, &["exec", &id, "-l", "python", "-c", "1/0", "--stream"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("ZeroDivisionError"), "{}", text(&out.stderr));
    // The kernel keeps variables until it is restarted.
    sbx(&t, &["exec", &id, "-l", "python", "-c", "kept = 1"]);
    assert_eq!(text(&sbx(&t, &["exec", &id, "-l", "python", "-c", "print('kept' in dir())"]).stdout), "True\n");
    assert_eq!(sbx(&t, &["session", "restart", &id]).status.code(), Some(0));
    assert_eq!(text(&sbx(&t, &["exec", &id, "-l", "python", "-c", "print('kept' in dir())"]).stdout), "False\n");
    let out = sbx(&t, &["session", "interrupt", &id]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&sbx(&t, &["session", "list"]).stdout).contains(&id));
    assert!(text(&sbx(&t, &["session", "show", &id]).stdout).contains("running"));
    assert!(text(&sbx(&t, &["session", "stop", &id]).stdout).contains("stopped"));
    assert!(text(&sbx(&t, &["session", "resume", &id]).stdout).contains("running"));
    assert_eq!(sbx(&t, &["session", "delete", &id]).status.code(), Some(0));
    let out = sbx(&t, &["exec", &id, "-l", "bash", "-c", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("deleted"), "{}", text(&out.stderr));
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_and_package_installs_from_the_command_line() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let out = sbx(&t, &["template", "create", "cli-tpl", "--package", "iniconfig", "--env", "FROM=tpl"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ready"), "it waits for the build: {}", text(&out.stdout));
    assert!(text(&sbx(&t, &["template", "list"]).stdout).contains("cli-tpl"));
    let out = sbx(&t, &["session", "create", "--template", "cli-tpl"]);
    let id = text(&out.stdout).trim().to_string();
    let out = sbx(&t, &["exec", &id, "-l", "python", "-c", "import os, iniconfig; print(os.environ['FROM'])"]);
    assert_eq!(text(&out.stdout), "tpl\n", "{}", text(&out.stderr));

    let out = sbx(&t, &["session", "install", &id, "tomli-w"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("installed: tomli_w-"), "{}", text(&out.stdout));
    let out = sbx(&t, &["session", "install", &id, "surely-no-such-package-xq7"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("No matching distribution"), "{}", text(&out.stderr));

    let out = sbx(&t, &["template", "create", "broken-tpl", "--package", "surely-no-such-package-xq7"]);
    assert_eq!(out.status.code(), Some(1), "a failed build fails the command");
    assert!(text(&out.stdout).contains("failed"), "{}", text(&out.stdout));
    assert_eq!(sbx(&t, &["template", "delete", "broken-tpl"]).status.code(), Some(0));
    assert_eq!(sbx(&t, &["template", "show", "broken-tpl"]).status.code(), Some(2));
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_up_and_down_from_the_command_line() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let id = text(&sbx(&t, &["session", "create"]).stdout).trim().to_string();
    let dir = tempfile::tempdir()?;
    let local = dir.path().join("销售数据.csv");
    let content: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    std::fs::write(&local, &content)?;
    let out = sbx(&t, &["upload", &id, local.to_str().unwrap_or_default(), "data/sales.csv"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with(&format!("data/sales.csv  {} bytes  sha256 ", content.len())));
    let out = sbx(&t, &["exec", &id, "-l", "bash", "-c", "stat -c %s data/sales.csv"]);
    assert_eq!(text(&out.stdout).trim(), content.len().to_string());
    let listing = text(&sbx(&t, &["ls", &id, "-r"]).stdout);
    assert!(listing.contains("d ") && listing.contains("data/sales.csv"), "{listing}");
    let back = dir.path().join("back.csv");
    let out = sbx(&t, &["download", &id, "data/sales.csv", back.to_str().unwrap_or_default()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&back)?, content);
    let out = sbx(&t, &["download", &id, "data/sales.csv", "-"]);
    assert_eq!(out.stdout, content);
    let out = sbx(&t, &["download", &id, "missing.txt", "-"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("does not exist"), "{}", text(&out.stderr));
    t.shutdown().await;
    Ok(())
}

/// On a terminal, `sbx upload` and `sbx download` draw a progress bar (on stderr) that names
/// the file and counts its bytes; `script` gives them a pseudo-terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_transfers_show_a_progress_bar_on_a_terminal() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let id = text(&sbx(&t, &["session", "create"]).stdout).trim().to_string();
    let dir = tempfile::tempdir()?;
    let local = dir.path().join("big.bin");
    std::fs::write(&local, vec![5u8; 8 << 20])?;
    let back = dir.path().join("back.bin");
    let on_a_terminal = |args: &[&str]| {
        let command = std::iter::once(env!("CARGO_BIN_EXE_sbx")).chain(args.iter().copied()).collect::<Vec<_>>();
        tokio::task::block_in_place(|| {
            Command::new("script")
                .args(["-qec", &command.join(" "), "/dev/null"])
                .env("SANDBOX_URL", t.client.base())
                .env("COLUMNS", "120")
                .output()
                .expect("run script")
        })
    };
    let (local_arg, back_arg) = (local.to_string_lossy().into_owned(), back.to_string_lossy().into_owned());
    for (args, label) in [
        (["upload", &id, &local_arg, "in/big.bin"], "upload in/big.bin"),
        (["download", &id, "in/big.bin", &back_arg], "download in/big.bin"),
    ] {
        let out = on_a_terminal(&args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
        let screen = text(&out.stdout);
        assert!(screen.contains(label) && screen.contains("/8.00 MiB"), "no progress bar for {label}: {screen:?}");
    }
    assert_eq!(std::fs::read(&back)?.len(), 8 << 20);
    // Not on a terminal (the other tests' case): no bar, nothing but the result.
    let out = sbx(&t, &["upload", &id, &local_arg, "in/again.bin"]);
    assert!(!text(&out.stderr).contains("MiB"), "{}", text(&out.stderr));
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_made_by_code_are_escaped_and_a_closed_pipe_is_no_panic() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    // A name that would set the terminal's title and ring its bell, and one that reverses text.
    t.exec(&s.id, sandbox_api::Language::Python, "open('a\\x1b]0;pwned\\x07b', 'w'); open('x\\u202etxt.exe', 'w')")
        .await?;
    let out = sbx(&t, &["ls", &s.id]);
    let listed = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!listed.contains('\u{1b}') && !listed.contains('\u{202e}'), "{listed:?}");
    assert!(listed.contains("a\\u{1b}]0;pwned\\u{7}b") && listed.contains("x\\u{202e}txt.exe"), "{listed}");

    // `sbx ... | head -c 1`: the reader leaves early; sbx ends quietly.
    let long = "for i in range(200000): print(i)";
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sbx"))
        .args(["exec", &s.id, "-l", "python", "-c", long])
        .env("SANDBOX_URL", t.client.base())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    drop(child.stdout.take());
    let out = tokio::task::block_in_place(|| child.wait_with_output())?;
    assert!(!text(&out.stderr).contains("panicked"), "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(141));
    t.shutdown().await;
    Ok(())
}

/// What a notebook user expects of `sbx exec`: a DataFrame as its text table, a traceback
/// once, charts saved as PNG files, and the data stack (openpyxl for `read_excel`) at hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_shows_results_as_a_notebook_would() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let id = t.session().await?.id;
    let frame = "import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})";
    let out = sbx(&t, &["exec", &id, "-l", "python", "-c", frame]);
    assert_eq!((out.status.code(), text(&out.stdout).as_str()), (Some(0), "   a  b\n0  1  x\n1  2  y\n"));

    let out = sbx(&t, &["exec", &id, "-l", "python", "-c", "def f():\n    return 1/0\nf()"]);
    let stderr = text(&out.stderr);
    assert_eq!((out.status.code(), stderr.matches("most recent call last").count()), (Some(1), 1), "{stderr}");

    let dir = tempfile::tempdir()?;
    let images = dir.path().join("charts");
    let chart = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()";
    let out =
        sbx(&t, &["exec", &id, "-l", "python", "-c", chart, "--save-images", images.to_str().unwrap_or_default()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    let path = shown.trim().strip_prefix("[image/png saved to ").and_then(|p| p.strip_suffix(']')).unwrap_or_default();
    let png = std::fs::read(path).map_err(|e| anyhow::anyhow!("{shown:?}: {e}"))?;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000, "{} bytes", png.len());
    let out = sbx(&t, &["exec", &id, "-l", "python", "-c", chart]);
    assert_eq!(text(&out.stdout), "[image/png: keep it with --save-images DIR]\n");

    // An uploaded spreadsheet reads with pandas, as users of code interpreters expect.
    let made = "import pandas as pd\npd.DataFrame({'n': [1, 2, 3]}).to_excel('t.xlsx', index=False)\nprint(pd.read_excel('t.xlsx')['n'].sum())";
    let out = sbx(&t, &["exec", &id, "-l", "python", "-c", made]);
    assert_eq!(text(&out.stdout), "6\n", "{}", text(&out.stderr));
    let stack = "import numpy, scipy, seaborn, sklearn, openpyxl, requests, PIL; print('ok')";
    assert_eq!(text(&sbx(&t, &["exec", &id, "-l", "python", "-c", stack]).stdout), "ok\n");
    t.shutdown().await;
    Ok(())
}
