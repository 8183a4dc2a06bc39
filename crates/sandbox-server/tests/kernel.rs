//! Stateful sessions: a real Python kernel per session, in a real sandbox.

use std::time::{Duration, Instant};

use sandbox_api::{CreateExecution, CreateSession, ExecutionReason, ExecutionStatus, Language, LimitsRequest, Output};
use sandbox_test_support::TestServer;

fn results(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::ExecuteResult { data, .. } => data.get("text/plain").and_then(|v| v.as_str()).map(String::from),
            _ => None,
        })
        .collect()
}

fn png_bytes(outputs: &[Output]) -> Vec<Vec<u8>> {
    use std::io::Read;
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::DisplayData { data, .. } | Output::ExecuteResult { data, .. } => {
                data.get("image/png")?.as_str().map(String::from)
            }
            _ => None,
        })
        .filter_map(|b64| {
            // Decode base64 with the standard alphabet (no crate needed for a test).
            let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut bits = 0u32;
            let mut n = 0;
            let mut out = Vec::new();
            for c in b64.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()) {
                bits = (bits << 6) | table.iter().position(|t| *t == c)? as u32;
                n += 6;
                if n >= 8 {
                    n -= 8;
                    out.push((bits >> n) as u8);
                }
            }
            let mut check = Vec::new();
            (&out[..]).read_to_end(&mut check).ok()?;
            Some(check)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variables_imports_and_results_persist_between_cells() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    assert_eq!(s.kernel.as_deref(), Some("python"));
    let e = t.exec(&s.id, Language::Python, "x = 41\nimport json").await?;
    assert_eq!(e.status, ExecutionStatus::Succeeded, "{e:?}");
    let e = t.exec(&s.id, Language::Python, "x + 1").await?;
    assert_eq!(results(&e.outputs), vec!["42"], "{e:?}");
    let e = t.exec(&s.id, Language::Python, "print(json.dumps({'x': x})); _ * 2").await?;
    assert_eq!(e.stdout, "{\"x\": 41}\n");
    assert_eq!(results(&e.outputs), vec!["84"], "`_` is the last result");
    assert!(matches!(&e.outputs[0], Output::Stream { text, .. } if text == "{\"x\": 41}\n"));

    // IPython's own features, which the kernel's lean start must keep: magics, In/Out and
    // %history (from memory), top-level await; jedi, held back at start, imports on demand.
    let e = t
        .exec(
            &s.id,
            Language::Python,
            "%timeit -n1 -r1 pass\nimport asyncio\nawait asyncio.sleep(0)\nprint(Out[2], In[1])",
        )
        .await?;
    assert_eq!(e.status, ExecutionStatus::Succeeded, "{e:?}");
    assert!(e.stdout.contains("per loop") && e.stdout.contains("42 x = 41"), "{e:?}");
    let e = t.exec(&s.id, Language::Python, "%history -n -l 2").await?;
    assert!(e.stdout.contains("timeit"), "{e:?}");
    let e = t.exec(&s.id, Language::Python, "import jedi, sys; print('jedi' in sys.modules)").await?;
    assert!(e.stdout == "True\n" || e.stderr.contains("No module named 'jedi'"), "{e:?}");

    // fresh: true runs a separate process that does not see the kernel's variables.
    let fresh = CreateExecution { fresh: Some(true), ..CreateExecution::new(Language::Python, "print(x)") };
    let e = t.client.execute(&s.id, &fresh).await?;
    assert!(e.stderr.contains("NameError"), "{e:?}");
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures_come_back_as_png_and_dataframes_as_html() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let code = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()";
    let e = t
        .client
        .execute(&s.id, &CreateExecution { timeout_s: Some(60.0), ..CreateExecution::new(Language::Python, code) })
        .await?;
    let pngs = png_bytes(&e.outputs);
    assert_eq!(pngs.len(), 1, "{:?}", e.outputs);
    assert!(pngs[0].starts_with(b"\x89PNG\r\n\x1a\n"));

    // A figure left open at the end of a cell is shown too.
    let e = t.exec(&s.id, Language::Python, "fig, ax = plt.subplots()\nax.bar([1, 2], [3, 4]);").await?;
    assert_eq!(png_bytes(&e.outputs).len(), 1, "{:?}", e.outputs);

    let e = t.exec(&s.id, Language::Python, "import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': [3, 4]})").await?;
    let html = e.outputs.iter().find_map(|o| match o {
        Output::ExecuteResult { data, .. } => data.get("text/html").and_then(|v| v.as_str()).map(String::from),
        _ => None,
    });
    assert!(html.is_some_and(|h| h.contains("<table")), "{:?}", e.outputs);
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_name_value_and_traceback() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let e = t.exec(&s.id, Language::Python, "def f():\n    return 1 / 0\nf()").await?;
    assert_eq!(e.status, ExecutionStatus::Failed);
    let Some(Output::Error { ename, evalue, traceback }) = e.outputs.last() else { panic!("no error output: {e:?}") };
    assert_eq!((ename.as_str(), evalue.as_str()), ("ZeroDivisionError", "division by zero"));
    assert!(traceback.iter().any(|l| l.contains("1 / 0")), "{traceback:?}");
    assert!(e.stderr.contains("ZeroDivisionError"), "simple clients see it in stderr");
    let e = t.exec(&s.id, Language::Python, "def broken(:").await?;
    assert!(matches!(e.outputs.last(), Some(Output::Error { ename, .. }) if ename == "SyntaxError"), "{e:?}");
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_stops_a_cell_and_keeps_state() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    t.exec(&s.id, Language::Python, "kept = 'yes'").await?;
    let started = Instant::now();
    let long = t.exec(&s.id, Language::Python, "import time\nwhile True: time.sleep(0.05)");
    let interrupt = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        t.client.raw(reqwest::Method::POST, &format!("/v1/sessions/{}/interrupt", s.id), Some(Vec::new())).await
    };
    let (e, answer) = tokio::join!(long, interrupt);
    let (status, body) = answer?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"interrupted\":true"), "{body}");
    let e = e?;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(matches!(e.outputs.last(), Some(Output::Error { ename, .. }) if ename == "KeyboardInterrupt"), "{e:?}");
    assert_eq!(t.exec(&s.id, Language::Python, "print(kept)").await?.stdout, "yes\n");

    // A cell past its timeout is interrupted the same way: state survives.
    let slow = CreateExecution { timeout_s: Some(1.0), ..CreateExecution::new(Language::Python, "while True: pass") };
    let e = t.client.execute(&s.id, &slow).await?;
    assert_eq!((e.status, e.reason), (ExecutionStatus::TimedOut, Some(sandbox_api::ExecutionReason::Timeout)), "{e:?}");
    assert_eq!(t.exec(&s.id, Language::Python, "print(kept)").await?.stdout, "yes\n");
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_of_killing_the_kernel_is_survived() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let limits = LimitsRequest { memory_mb: Some(300), pids: None, cpu: None };
    let s = t.client.create_session(&CreateSession { limits: Some(limits), ..Default::default() }).await?;
    let deaths = [
        ("import os\nos._exit(1)", ExecutionReason::KernelExited),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", ExecutionReason::KernelExited),
        ("import ctypes\nctypes.string_at(0)", ExecutionReason::KernelExited),
        ("x = []\nwhile True:\n    x.append(bytearray(32 * 1024 * 1024))", ExecutionReason::Memory),
    ];
    for (n, (code, reason)) in deaths.iter().enumerate() {
        t.exec(&s.id, Language::Python, "alive = True").await?;
        let e = t
            .client
            .execute(&s.id, &CreateExecution { timeout_s: Some(60.0), ..CreateExecution::new(Language::Python, *code) })
            .await?;
        assert_eq!((e.status, e.reason), (ExecutionStatus::KernelDied, Some(*reason)), "{code}: {e:?}");
        assert!(e.stderr.contains("fresh kernel"), "{e:?}");
        // The next cell runs in a fresh kernel: the old variables are gone.
        let after = t.exec(&s.id, Language::Python, "print('alive' in dir())").await?;
        assert_eq!(after.stdout, "False\n", "{code}: {after:?}");
        assert_eq!(t.client.get_session(&s.id).await?.kernel_restarts, n as u64 + 1);
    }
    let (status, _) = t.client.raw(reqwest::Method::GET, "/healthz", None).await?;
    assert_eq!(status, 200);
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_gives_a_fresh_kernel_and_keeps_files() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    t.exec(&s.id, Language::Python, "x = 5\nopen('kept.txt', 'w').write('file')").await?;
    let (status, body) =
        t.client.raw(reqwest::Method::POST, &format!("/v1/sessions/{}/restart", s.id), Some(Vec::new())).await?;
    assert_eq!(status, 200, "{body}");
    let e = t.exec(&s.id, Language::Python, "print('x' in dir(), open('kept.txt').read())").await?;
    assert_eq!(e.stdout, "False file\n", "{e:?}");
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_in_a_cell_costs_the_kernel_not_the_session() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let limits = LimitsRequest { memory_mb: Some(512), pids: Some(48), cpu: None };
    let s = t.client.create_session(&CreateSession { limits: Some(limits), ..Default::default() }).await?;
    let bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass";
    let e = t
        .client
        .execute(&s.id, &CreateExecution { timeout_s: Some(2.0), ..CreateExecution::new(Language::Python, bomb) })
        .await?;
    assert_eq!((e.status, e.reason), (ExecutionStatus::Killed, Some(sandbox_api::ExecutionReason::Pids)), "{e:?}");
    let after = t
        .exec(&s.id, Language::Python, "import os\nprint(len([p for p in os.listdir('/proc') if p.isdigit()]) < 10)")
        .await?;
    assert_eq!(after.stdout, "True\n", "{after:?}");
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_come_warm_from_the_pool_and_it_refills() -> anyhow::Result<()> {
    let t = TestServer::start_with(|c| c.session_pool = 1).await?;
    let pool_size = || async { t.client.readiness().await.map(|(_, r)| r.pools.session) };
    for _ in 0..300 {
        if pool_size().await? == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pool_size().await?, 1, "the pool never filled");

    let started = Instant::now();
    let s = t.session().await?;
    let e = t.exec(&s.id, Language::Python, "x = 6 * 7\nopen('made-here.txt', 'w').write('hi')\nx").await?;
    let ready_in = started.elapsed();
    assert!(s.from_pool, "{s:?}");
    assert_eq!(results(&e.outputs), vec!["42"], "{e:?}");
    // A warm kernel answers at once (a cold one takes hundreds of ms to start IPython).
    assert!(ready_in < Duration::from_secs(2), "{ready_in:?}");
    // The pooled workspace became the session's, on the host too.
    let on_host = t.data_dir().join("workspaces").join(&s.id).join("made-here.txt");
    assert_eq!(std::fs::read_to_string(on_host)?, "hi");
    assert!(t.client.get_session(&s.id).await?.from_pool);

    // A session with its own environment cannot use the pool's kernel and starts cold.
    let own_env = CreateSession { env: Some([("K".to_string(), "v".to_string())].into()), ..Default::default() };
    let cold = t.client.create_session(&own_env).await?;
    assert!(!cold.from_pool);
    assert_eq!(t.exec(&cold.id, Language::Python, "import os; print(os.environ['K'])").await?.stdout, "v\n");

    for _ in 0..300 {
        if pool_size().await? == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pool_size().await?, 1, "the pool refills");
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_execution_records_wall_cpu_and_peak_memory() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let busy = "import time\nt = time.time()\nwhile time.time() - t < 0.5: pass";
    let e = t.exec(&s.id, Language::Python, busy).await?;
    let m = e.metrics.ok_or_else(|| anyhow::anyhow!("no metrics: {e:?}"))?;
    assert!(m.wall_ms >= 500, "{m:?}");
    assert!(m.cpu_ms.is_some_and(|cpu| cpu >= 300), "a busy loop is mostly CPU: {m:?}");
    let big = "block = bytearray(200 * 1024 * 1024)\nblock[::4096] = b'x' * len(block[::4096])";
    let e = t.exec(&s.id, Language::Python, big).await?;
    let peak = e.metrics.and_then(|m| m.peak_memory_bytes).ok_or_else(|| anyhow::anyhow!("no peak: {e:?}"))?;
    assert!(peak >= 200 << 20, "peak {peak}");
    assert_eq!(t.client.get_execution(&e.id).await?.metrics, e.metrics, "stored too");
    t.shutdown().await;
    Ok(())
}

async fn invoke(
    t: &TestServer,
    session: &str,
    handler: &str,
    event: serde_json::Value,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let body = serde_json::json!({"handler": handler, "event": event}).to_string().into_bytes();
    let path = format!("/v1/sessions/{session}/invoke");
    let (status, text) = t.client.raw(reqwest::Method::POST, &path, Some(body)).await?;
    Ok((status.as_u16(), serde_json::from_str(&text)?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_are_invoked_with_json_events_and_return_json() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    let setup = "import os\nos.makedirs('sub', exist_ok=True)\n\
open('handlers.py', 'w').write('def handle(event, context):\\n    return {\"sum\": event[\"a\"] + event[\"b\"], \"session\": context.session_id}\\n\\ndef bad(event, context):\\n    return {1, 2}\\n')\n\
open('sub/h.py', 'w').write('def main(event, context):\\n    print(\"side effect\")\\n    return [event]\\n')";
    assert_eq!(t.exec(&s.id, Language::Python, setup).await?.status, ExecutionStatus::Succeeded);
    let invoke = |handler: &'static str, event: serde_json::Value| invoke(&t, &s.id, handler, event);
    let (status, r) = invoke("handlers.handle", serde_json::json!({"a": 1, "b": 2})).await?;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["return_value"], serde_json::json!({"sum": 3, "session": s.id}), "{r}");
    assert_eq!(r["status"], "succeeded");

    // Edited handlers are picked up.
    t.exec(
        &s.id,
        Language::Python,
        "open('handlers.py', 'a').write('\\ndef handle(event, context):\\n    return \"v2\"\\n')",
    )
    .await?;
    assert_eq!(invoke("handlers.handle", serde_json::json!({})).await?.1["return_value"], "v2");

    let (_, r) = invoke("sub/h.py:main", serde_json::json!({"k": [1, 2]})).await?;
    assert_eq!(r["return_value"], serde_json::json!([{"k": [1, 2]}]), "{r}");
    assert_eq!(r["stdout"], "side effect\n");

    let (status, r) = invoke("handlers.bad", serde_json::json!(null)).await?;
    assert_eq!(
        (status, r["status"].as_str(), r["error"]["code"].as_str()),
        (200, Some("failed"), Some("invalid_return")),
        "{r}"
    );
    assert!(r["error"]["message"].as_str().is_some_and(|m| m.contains("set")), "{r}");

    let (_, r) = invoke("handlers.missing", serde_json::json!(null)).await?;
    assert_eq!(r["status"], "failed");
    assert!(r["stderr"].as_str().is_some_and(|e| e.contains("AttributeError")), "{r}");
    assert_eq!(invoke("../../etc/passwd:f", serde_json::json!(null)).await?.0, 422);
    // The kernel is fine after all that.
    assert_eq!(invoke("handlers.handle", serde_json::json!({})).await?.1["return_value"], "v2");
    t.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_run_while_the_kernel_starts_does_not_kill_it() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let s = t.session().await?;
    // A kernel started while a one-shot run is in progress (here by a restart) is a process
    // that did not exist when the run began; the run's final sweep must spare it.
    let run = CreateExecution { wait: Some(false), ..CreateExecution::new(Language::Bash, "sleep 1.5") };
    let queued = t
        .client
        .raw(reqwest::Method::POST, &format!("/v1/sessions/{}/executions", s.id), Some(serde_json::to_vec(&run)?))
        .await?;
    assert_eq!(queued.0, 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) =
        t.client.raw(reqwest::Method::POST, &format!("/v1/sessions/{}/restart", s.id), Some(Vec::new())).await?;
    assert_eq!(status, 200, "{body}");
    let e = t.exec(&s.id, Language::Python, "print('kernel alive')").await?;
    assert_eq!((e.status, e.stdout.as_str()), (ExecutionStatus::Succeeded, "kernel alive\n"), "{e:?}");
    assert_eq!(t.client.get_session(&s.id).await?.kernel_restarts, 0);
    t.shutdown().await;
    Ok(())
}

/// A kernel that cannot start (here an environment that breaks Python) is a clear 503
/// `kernel_unavailable` naming the cause, on restart and on the next cell alike; never a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_that_cannot_start_says_why() -> anyhow::Result<()> {
    let t = TestServer::start().await?;
    let env = [("PYTHONHOME".to_string(), "/nonexistent".to_string())].into();
    let s = t.client.create_session(&CreateSession { env: Some(env), ..Default::default() }).await?;
    let (status, body) =
        t.client.raw(reqwest::Method::POST, &format!("/v1/sessions/{}/restart", s.id), Some(Vec::new())).await?;
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(v["error"]["code"], "kernel_unavailable", "{body}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("the kernel did not start") && message.contains("No module named 'encodings'"), "{body}");
    let e = t.exec(&s.id, Language::Python, "print(1)").await?;
    assert_eq!(e.status, ExecutionStatus::Failed, "{e:?}");
    assert!(e.stderr.contains("No module named 'encodings'"), "the cell says why too: {e:?}");
    // Bash in the same session is unaffected.
    assert_eq!(t.exec(&s.id, Language::Bash, "echo ok").await?.stdout, "ok\n");
    t.shutdown().await;
    Ok(())
}
