//! How results are shown: the execution's own output on stdout/stderr, and an exit code that
//! mirrors it (the process's code; 124 for a timeout like timeout(1); 137 when killed or the
//! kernel died; 125 when cancelled or interrupted by a restart of sandboxd).

use std::io::{IsTerminal, Write};
use std::time::Duration;

use sandbox_api::{Execution, ExecutionStatus, Output};

pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints an execution and returns the exit code `sbx` should end with.
pub fn print_execution(e: &Execution, json: bool) -> anyhow::Result<i32> {
    if json {
        print_json(e)?;
    } else {
        std::io::stdout().write_all(e.stdout.as_bytes())?;
        std::io::stderr().write_all(e.stderr.as_bytes())?;
        // Streams are in stdout/stderr already; show what a notebook would show besides.
        for output in &e.outputs {
            match output {
                Output::Stream { .. } => {}
                Output::ExecuteResult { data, .. } | Output::DisplayData { data, .. } => match data.get("text/plain") {
                    Some(serde_json::Value::String(text)) if data.len() == 1 => println!("{text}"),
                    _ => {
                        let kinds: Vec<&str> = data.keys().map(String::as_str).collect();
                        println!("[{}]", kinds.join(", "));
                    }
                },
                Output::Error { traceback, .. } => eprintln!("{}", traceback.join("\n")),
            }
        }
        if e.stdout_truncated || e.stderr_truncated {
            eprintln!("sbx: output truncated by the server's limit");
        }
        match e.status {
            ExecutionStatus::TimedOut => eprintln!("sbx: timed out"),
            ExecutionStatus::Killed => {
                eprintln!("sbx: killed ({})", e.reason.as_deref().unwrap_or("unknown"))
            }
            _ => {}
        }
    }
    Ok(exit_code(e))
}

pub fn exit_code(e: &Execution) -> i32 {
    match e.status {
        ExecutionStatus::Succeeded => 0,
        ExecutionStatus::Failed => e.exit_code.unwrap_or(1),
        ExecutionStatus::TimedOut => 124,
        ExecutionStatus::Killed => 137,
        ExecutionStatus::KernelDied => 137,
        ExecutionStatus::Cancelled | ExecutionStatus::Interrupted => 125,
        ExecutionStatus::Running | ExecutionStatus::Queued => 1,
    }
}

/// A spinner on stderr for work that takes a while; shown only on a terminal and only after
/// half a second, so quick calls and scripts see nothing.
pub async fn with_progress<T>(message: &str, work: impl std::future::Future<Output = T>) -> T {
    if !std::io::stderr().is_terminal() {
        return work.await;
    }
    tokio::pin!(work);
    tokio::select! {
        out = &mut work => return out,
        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
    }
    let bar = indicatif::ProgressBar::new_spinner().with_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(100));
    let out = work.await;
    bar.finish_and_clear();
    out
}
