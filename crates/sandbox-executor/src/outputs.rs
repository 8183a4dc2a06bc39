//! What an execution produced: its outputs in order (consecutive stream text coalesced) and
//! the plain stdout/stderr text for simple clients. Each stream is capped at the output limit,
//! and all outputs together (stream text, and rich outputs as encoded) at the outputs limit:
//! a cell ending in `'x' * 20_000_000` once stored a 19 MiB result, and a few large displays
//! made a result too large for one frame, which lost the whole sandbox.

use sandbox_protocol::{ExecResult, Output, StreamName};

/// One stream's kept text, its byte budget, and an incomplete UTF-8 tail from the last read.
struct Stream {
    text: String,
    pending: Vec<u8>,
    truncated: bool,
}

/// Where outputs go as they happen (an execution that streams).
pub type Sink = Box<dyn FnMut(&Output) + Send>;

pub struct OutputLog {
    limit: usize,
    outputs_limit: usize,
    /// Bytes of all outputs kept so far.
    used: usize,
    outputs_truncated: bool,
    sink: Option<Sink>,
    outputs: Vec<Output>,
    stdout: Stream,
    stderr: Stream,
}

impl OutputLog {
    /// `limit` bytes per stream, `outputs_limit` for everything together.
    pub fn new(limit: usize, outputs_limit: usize) -> OutputLog {
        let stream = || Stream { text: String::new(), pending: Vec::new(), truncated: false };
        OutputLog {
            limit,
            outputs_limit,
            used: 0,
            outputs_truncated: false,
            sink: None,
            outputs: Vec::new(),
            stdout: stream(),
            stderr: stream(),
        }
    }

    /// Something was dropped before it reached the log (the kernel refused to send an output
    /// over the limit, or a line of its events was too long).
    pub fn mark_truncated(&mut self) {
        self.outputs_truncated = true;
    }

    /// Also hands every kept piece of output to `sink` as it arrives.
    pub fn streaming(mut self, sink: Sink) -> OutputLog {
        self.sink = Some(sink);
        self
    }

    fn stream_mut(&mut self, name: StreamName) -> &mut Stream {
        match name {
            StreamName::Stdout => &mut self.stdout,
            StreamName::Stderr => &mut self.stderr,
        }
    }

    /// Raw bytes from a pipe: decoded as UTF-8, keeping a character split across reads whole.
    pub fn bytes(&mut self, name: StreamName, data: &[u8]) {
        let stream = self.stream_mut(name);
        stream.pending.extend_from_slice(data);
        let buf = std::mem::take(&mut stream.pending);
        let text = match std::str::from_utf8(&buf) {
            Ok(s) => s.to_string(),
            Err(e) if e.error_len().is_none() => {
                // Ends in the middle of a character: keep those bytes for the next read.
                let (done, rest) = buf.split_at(e.valid_up_to());
                self.stream_mut(name).pending = rest.to_vec();
                String::from_utf8_lossy(done).into_owned()
            }
            Err(_) => String::from_utf8_lossy(&buf).into_owned(),
        };
        self.text(name, &text);
    }

    /// Text written to a stream (by the kernel, already decoded).
    pub fn text(&mut self, name: StreamName, text: &str) {
        let (limit, total_room) = (self.limit, self.outputs_limit.saturating_sub(self.used));
        let stream = self.stream_mut(name);
        if stream.truncated {
            // Once cut, a stream stays cut: later text must not slip into leftover room.
            return;
        }
        let room = limit.saturating_sub(stream.text.len()).min(total_room);
        let kept = if text.len() <= room {
            text
        } else {
            stream.truncated = true;
            if text.len() > total_room {
                self.outputs_truncated = true;
            }
            let mut cut = room;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            &text[..cut]
        };
        if kept.is_empty() {
            return;
        }
        self.used += kept.len();
        self.stream_mut(name).text.push_str(kept);
        if let Some(sink) = &mut self.sink {
            sink(&Output::Stream { name, text: kept.to_string() });
        }
        match self.outputs.last_mut() {
            Some(Output::Stream { name: last, text }) if *last == name => text.push_str(kept),
            _ => self.outputs.push(Output::Stream { name, text: kept.to_string() }),
        }
    }

    /// A rich output (display data, a result, an error). An error's traceback is also added
    /// to the plain stderr text, as a script run from a shell would show it.
    pub fn push(&mut self, output: Output) {
        if let Output::Error { traceback, .. } = &output {
            let text = traceback.join("\n") + "\n";
            let limit = self.limit;
            let stderr = &mut self.stderr;
            if !stderr.truncated && stderr.text.len() + text.len() <= limit {
                stderr.text.push_str(&text);
            } else {
                stderr.truncated = true;
            }
        }
        let Some(output) = self.fit(output) else {
            self.outputs_truncated = true;
            return;
        };
        if let Some(sink) = &mut self.sink {
            sink(&output);
        }
        self.outputs.push(output);
    }

    /// `output` if it fits in what is left; an error that does not is kept without its
    /// traceback (the plain stderr text has it, as far as it fits) and a shortened value.
    fn fit(&mut self, output: Output) -> Option<Output> {
        let room = self.outputs_limit.saturating_sub(self.used);
        let (output, n) = match encoded_len(&output) {
            n if n <= room => (output, n),
            _ => match output {
                Output::Error { ename, evalue, .. } => {
                    self.outputs_truncated = true;
                    let short = |s: String| s.chars().take(1024).collect::<String>();
                    let error = Output::Error { ename: short(ename), evalue: short(evalue), traceback: Vec::new() };
                    let n = encoded_len(&error);
                    (error, n)
                }
                _ => return None,
            },
        };
        if n > room {
            return None;
        }
        self.used += n;
        Some(output)
    }

    /// Moves everything into `result`.
    pub fn finish_into(mut self, result: &mut ExecResult) {
        for name in [StreamName::Stdout, StreamName::Stderr] {
            let pending = std::mem::take(&mut self.stream_mut(name).pending);
            if !pending.is_empty() {
                self.text(name, &String::from_utf8_lossy(&pending));
            }
        }
        result.stdout = self.stdout.text;
        result.stderr = self.stderr.text;
        result.stdout_truncated = self.stdout.truncated;
        result.stderr_truncated = self.stderr.truncated;
        result.outputs = self.outputs;
        result.outputs_truncated = self.outputs_truncated;
    }
}

/// Bytes `output` takes as JSON, counted as it is written out, without keeping the text.
fn encoded_len(output: &Output) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, output).map_or(usize::MAX, |()| count.0)
}

/// Cuts `result` until its frame fits the protocol's limit: the last resort when stream
/// text that JSON escapes many times over (control characters) still made it too large. The
/// execution's outcome is kept; its outputs are dropped and flagged.
pub fn shrink_to_fit(result: &mut ExecResult) {
    result.outputs.clear();
    result.outputs_truncated = true;
    let budget = sandbox_protocol::MAX_FRAME_BYTES / 16;
    for (text, truncated) in
        [(&mut result.stdout, &mut result.stdout_truncated), (&mut result.stderr, &mut result.stderr_truncated)]
    {
        if text.len() > budget {
            let mut cut = budget;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            *truncated = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finish(log: OutputLog) -> ExecResult {
        let mut r = ExecResult::default();
        log.finish_into(&mut r);
        r
    }

    #[test]
    fn streams_coalesce_in_order_and_interleave() {
        let mut log = OutputLog::new(100, 1000);
        log.bytes(StreamName::Stdout, b"a");
        log.bytes(StreamName::Stdout, b"b\n");
        log.bytes(StreamName::Stderr, b"oops\n");
        log.text(StreamName::Stdout, "c");
        let r = finish(log);
        assert_eq!(r.stdout, "ab\nc");
        assert_eq!(r.outputs.len(), 3);
        assert_eq!(r.outputs[0], Output::Stream { name: StreamName::Stdout, text: "ab\n".into() });
    }

    #[test]
    fn an_error_is_an_output_and_stderr_text() {
        let mut log = OutputLog::new(100, 1000);
        log.push(Output::Error {
            ename: "E".into(),
            evalue: "v".into(),
            traceback: vec!["line 1".into(), "E: v".into()],
        });
        let r = finish(log);
        assert_eq!(r.stderr, "line 1\nE: v\n");
        assert_eq!(r.outputs.len(), 1);
    }

    #[test]
    fn a_sink_sees_each_piece_as_it_comes() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s2 = std::sync::Arc::clone(&seen);
        let mut log = OutputLog::new(100, 1000).streaming(Box::new(move |o| s2.lock().expect("lock").push(o.clone())));
        log.bytes(StreamName::Stdout, b"a");
        log.bytes(StreamName::Stdout, b"b");
        assert_eq!(seen.lock().expect("lock").len(), 2, "pieces are streamed separately");
        assert_eq!(finish(log).outputs.len(), 1, "and coalesced in the record");
    }

    #[test]
    fn a_character_split_across_reads_stays_whole() {
        let mut log = OutputLog::new(100, 1000);
        let bytes = "héllo".as_bytes();
        log.bytes(StreamName::Stdout, &bytes[..2]);
        log.bytes(StreamName::Stdout, &bytes[2..]);
        assert_eq!(finish(log).stdout, "héllo");
    }

    #[test]
    fn the_limit_cuts_on_a_character_boundary_and_flags_it() {
        let mut log = OutputLog::new(4, 1000);
        log.text(StreamName::Stdout, "abcé");
        log.text(StreamName::Stdout, "more");
        let r = finish(log);
        assert_eq!(r.stdout, "abc");
        assert!(r.stdout_truncated && !r.stderr_truncated);
    }

    #[test]
    fn all_outputs_together_stop_at_the_outputs_limit() {
        let mut log = OutputLog::new(100, 80);
        log.text(StreamName::Stdout, "0123456789");
        let big = serde_json::json!({"text/plain": "x".repeat(100)});
        log.push(Output::ExecuteResult {
            execution_count: Some(1),
            data: big.as_object().cloned().unwrap_or_default(),
            metadata: Default::default(),
        });
        log.push(Output::Error { ename: "E".into(), evalue: "v".into(), traceback: vec!["t".repeat(50)] });
        log.text(StreamName::Stderr, &"e".repeat(100));
        let r = finish(log);
        assert!(r.outputs_truncated);
        assert_eq!(r.outputs.len(), 3, "{:?}", r.outputs);
        assert!(matches!(&r.outputs[1], Output::Error { traceback, .. } if traceback.is_empty()));
        // Stream text counts as text, rich outputs as encoded.
        let used: usize = r
            .outputs
            .iter()
            .map(|o| match o {
                Output::Stream { text, .. } => text.len(),
                rich => serde_json::to_vec(rich).map_or(0, |v| v.len()),
            })
            .sum();
        assert!(used <= 80, "outputs take {used} bytes");
        assert!(r.stderr_truncated && r.stderr.len() <= 100);
    }

    #[test]
    fn outputs_are_counted_as_their_json() {
        let o = Output::Error { ename: "E\u{e9}".into(), evalue: "\"q\"\n".into(), traceback: vec!["\u{1}".into()] };
        assert_eq!(encoded_len(&o), serde_json::to_vec(&o).map(|v| v.len()).unwrap_or(0));
    }

    #[test]
    fn within_the_limit_nothing_is_flagged() {
        let mut log = OutputLog::new(100, 1000);
        log.text(StreamName::Stdout, "fine");
        assert!(!finish(log).outputs_truncated);
    }

    #[test]
    fn an_oversized_result_is_shrunk_to_one_frame() {
        let mut r = ExecResult {
            stdout: "\u{1}".repeat(sandbox_protocol::MAX_FRAME_BYTES / 5),
            outputs: vec![Output::Stream { name: StreamName::Stdout, text: "x".into() }],
            ..Default::default()
        };
        assert!(sandbox_protocol::encode(&sandbox_protocol::Event::ExecDone(r.clone())).is_err());
        shrink_to_fit(&mut r);
        assert!(sandbox_protocol::encode(&sandbox_protocol::Event::ExecDone(r.clone())).is_ok());
        assert!(r.outputs_truncated && r.stdout_truncated && r.outputs.is_empty());
    }
}
