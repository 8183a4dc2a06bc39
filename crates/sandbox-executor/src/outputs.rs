//! What an execution produced: its outputs in order (consecutive stream text coalesced) and
//! the plain stdout/stderr text for simple clients, each stream capped at the output limit.

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
    sink: Option<Sink>,
    outputs: Vec<Output>,
    stdout: Stream,
    stderr: Stream,
}

impl OutputLog {
    pub fn new(limit: usize) -> OutputLog {
        let stream = || Stream { text: String::new(), pending: Vec::new(), truncated: false };
        OutputLog { limit, sink: None, outputs: Vec::new(), stdout: stream(), stderr: stream() }
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
        let limit = self.limit;
        let stream = self.stream_mut(name);
        if stream.truncated {
            // Once cut, a stream stays cut: later text must not slip into leftover room.
            return;
        }
        let room = limit.saturating_sub(stream.text.len());
        let kept = if text.len() <= room {
            text
        } else {
            stream.truncated = true;
            let mut cut = room;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            &text[..cut]
        };
        if kept.is_empty() {
            return;
        }
        stream.text.push_str(kept);
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
        if let Some(sink) = &mut self.sink {
            sink(&output);
        }
        self.outputs.push(output);
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
        let mut log = OutputLog::new(100);
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
        let mut log = OutputLog::new(100);
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
        let mut log = OutputLog::new(100).streaming(Box::new(move |o| s2.lock().expect("lock").push(o.clone())));
        log.bytes(StreamName::Stdout, b"a");
        log.bytes(StreamName::Stdout, b"b");
        assert_eq!(seen.lock().expect("lock").len(), 2, "pieces are streamed separately");
        assert_eq!(finish(log).outputs.len(), 1, "and coalesced in the record");
    }

    #[test]
    fn a_character_split_across_reads_stays_whole() {
        let mut log = OutputLog::new(100);
        let bytes = "héllo".as_bytes();
        log.bytes(StreamName::Stdout, &bytes[..2]);
        log.bytes(StreamName::Stdout, &bytes[2..]);
        assert_eq!(finish(log).stdout, "héllo");
    }

    #[test]
    fn the_limit_cuts_on_a_character_boundary_and_flags_it() {
        let mut log = OutputLog::new(4);
        log.text(StreamName::Stdout, "abcé");
        log.text(StreamName::Stdout, "more");
        let r = finish(log);
        assert_eq!(r.stdout, "abc");
        assert!(r.stdout_truncated && !r.stderr_truncated);
    }
}
