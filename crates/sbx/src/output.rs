//! How results are shown: the execution's own output on stdout/stderr, and an exit code that
//! mirrors it (the process's code; 124 for a timeout like timeout(1); 137 when killed or the
//! kernel died; 125 when cancelled or interrupted by a restart of sandboxd).

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
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
                    Some(serde_json::Value::String(text)) if data.len() == 1 => outln!("{text}")?,
                    _ => {
                        let kinds: Vec<&str> = data.keys().map(String::as_str).collect();
                        outln!("[{}]", kinds.join(", "))?;
                    }
                },
                Output::Error { traceback, .. } => eprintln!("{}", traceback.join("\n")),
            }
        }
        if e.stdout_truncated || e.stderr_truncated || e.outputs_truncated {
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
