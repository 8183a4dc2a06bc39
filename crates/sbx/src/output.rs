//! How results are shown: the execution's own output on stdout/stderr, and an exit code that
//! mirrors it (the process's code; 124 for a timeout like timeout(1); 137 when killed or the
//! kernel died; 125 when cancelled or interrupted by a restart of sandboxd).

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sandbox_api::{Execution, ExecutionStatus, Output};

/// `println!` that returns an error where `println!` panics: when stdout is closed early
/// (`sbx ls $S | head`). `main` ends quietly on a broken pipe.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)
    }};
}
pub(crate) use outln;

/// `name` with control and bidirectional-override characters escaped (`\u{1b}`): names come
/// from code in a sandbox, and printed raw they could drive the terminal or disguise a name.
pub fn printable(name: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !name.chars().any(unsafe_char) {
        return Cow::Borrowed(name);
    }
    Cow::Owned(
        name.chars().map(|c| if unsafe_char(c) { c.escape_unicode().to_string() } else { c.to_string() }).collect(),
    )
}

pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}

/// Prints an execution and returns the exit code `sbx` should end with. With `images`, PNG
/// outputs are written there (`<execution id>-<n>.png`) and their paths printed.
pub fn print_execution(e: &Execution, json: bool, images: Option<&Path>) -> anyhow::Result<i32> {
    let saved = match images {
        Some(dir) => save_images(e, dir)?,
        None => Vec::new(),
    };
    if json {
        print_json(e)?;
    } else {
        std::io::stdout().write_all(e.stdout.as_bytes())?;
        std::io::stderr().write_all(e.stderr.as_bytes())?;
        // Streams are in stdout/stderr already; show what a notebook would show besides.
        let mut pngs = saved.iter();
        for output in &e.outputs {
            match output {
                Output::Stream { .. } => {}
                Output::ExecuteResult { data, .. } | Output::DisplayData { data, .. } => {
                    if data.contains_key("image/png") {
                        match pngs.next() {
                            Some(path) => outln!("[image/png saved to {}]", path.display())?,
                            None if images.is_none() => outln!("[image/png: keep it with --save-images DIR]")?,
                            None => {}
                        }
                    }
                    match data.get("text/plain") {
                        Some(serde_json::Value::String(text)) if !data.contains_key("image/png") => outln!("{text}")?,
                        Some(_) => {}
                        None => {
                            let kinds: Vec<&str> = data.keys().map(String::as_str).collect();
                            outln!("[{}]", kinds.join(", "))?;
                        }
                    }
                }
                // The executor puts a traceback in stderr too: shown once.
                Output::Error { traceback, .. } => {
                    let text = traceback.join("\n");
                    if !e.stderr.contains(&text) {
                        eprintln!("{text}");
                    }
                }
            }
        }
        if e.stdout_truncated || e.stderr_truncated || e.outputs_truncated {
            eprintln!("sbx: output truncated by the server's limit");
        }
        match e.status {
            ExecutionStatus::TimedOut => eprintln!("sbx: timed out"),
            ExecutionStatus::Killed => {
                eprintln!("sbx: killed ({})", e.reason.map_or("unknown", |r| r.as_str()))
            }
            _ => {}
        }
    }
    Ok(exit_code(e))
}

/// Writes every PNG output of `e` into `dir` (made if missing); returns their paths in order.
fn save_images(e: &Execution, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    use base64::Engine;
    let mut saved = Vec::new();
    for output in &e.outputs {
        let (Output::ExecuteResult { data, .. } | Output::DisplayData { data, .. }) = output else { continue };
        let Some(serde_json::Value::String(b64)) = data.get("image/png") else { continue };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim().replace(['\n', '\r'], ""))
            .map_err(|err| anyhow::anyhow!("an image/png output of {} is not base64: {err}", e.id))?;
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{}-{}.png", e.id, saved.len() + 1));
        std::fs::write(&path, bytes)?;
        saved.push(path);
    }
    Ok(saved)
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

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn names_are_printed_with_control_and_bidi_characters_escaped() {
        assert_eq!(printable("plain/ok.txt"), "plain/ok.txt");
        assert_eq!(printable("données/日本.csv"), "données/日本.csv");
        assert_eq!(printable("a\u{1b}]0;pwned\u{7}b"), "a\\u{1b}]0;pwned\\u{7}b");
        assert_eq!(printable("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(printable("line\nbreak"), "line\\u{a}break");
    }
}
