//! The protocol between `sandboxd` and `sandbox-executor` (PID 1 inside every sandbox).
//!
//! One byte stream each way (the executor's stdin and stdout: pipes for the local runtime,
//! an attached stream for Docker or Kubernetes). Each message is a frame: a 4-byte
//! little-endian length followed by that many bytes of JSON. Requests carry an id and
//! results echo it, so several requests may be in flight on one stream.
//!
//! The executor answers with [`Event::Ready`] as soon as it starts, then one
//! [`Event::ExecDone`] per [`Request::Exec`] and one [`Event::FileDone`] per [`Request::File`]
//! (the file API of runtimes whose sandboxes do not share sandboxd's disk: see [`files`]).

pub mod files;

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change; the executor reports it in [`Event::Ready`].
pub const PROTOCOL_VERSION: u32 = 1;

/// Frames above this size are refused, so a corrupt length cannot make a peer allocate wildly.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// Bytes all outputs of one execution may take together unless the request says otherwise.
pub const DEFAULT_OUTPUTS_LIMIT: usize = 8 << 20;
/// The largest outputs limit a request may ask for: with both streams' text beside it, an
/// execution's result must still fit in one frame.
pub const MAX_OUTPUTS_LIMIT: usize = MAX_FRAME_BYTES / 4;

/// Where the executor expects the workspace and runs code.
pub const WORKSPACE_DIR: &str = "/workspace";

/// Where an executor listens when the runtime reaches it over a network (Kubernetes: the pod's
/// network), not over its stdin and stdout: `SANDBOX_EXECUTOR_LISTEN` (`ip:port`). A client
/// must open with a [`Hello`] frame carrying `SANDBOX_EXECUTOR_TOKEN`, the sandbox's secret.
pub const LISTEN_ENV: &str = "SANDBOX_EXECUTOR_LISTEN";
pub const TOKEN_ENV: &str = "SANDBOX_EXECUTOR_TOKEN";
/// The port an executor listens on over a network.
pub const EXECUTOR_PORT: u16 = 7323;

/// The first frame on a network connection to an executor: the sandbox's secret. Any other
/// first frame, or a wrong secret, closes the connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub token: String,
}

/// The `PATH` of everything run inside a sandbox.
pub const SANDBOX_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Languages a one-shot execution can run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Python,
    Node,
    Bash,
}

impl Language {
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Node => "node",
            Language::Bash => "bash",
        }
    }

    /// Guesses the language from a file extension (for `sbx run script.py`).
    pub fn from_extension(ext: &str) -> Option<Language> {
        match ext {
            "py" => Some(Language::Python),
            "js" | "mjs" | "cjs" => Some(Language::Node),
            "sh" | "bash" => Some(Language::Bash),
            _ => None,
        }
    }
}

/// What sandboxd asks of the executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Run code, as a fresh process or in the session kernel.
    Exec(ExecRequest),
    /// Start the session kernel now (so the first cell does not wait for it), with this env.
    StartKernel { env: BTreeMap<String, String> },
    /// SIGINT to the kernel: the running cell gets a KeyboardInterrupt, state is kept.
    Interrupt,
    /// Kill the kernel and start a fresh one; answered by [`Event::Ack`] with the same id.
    RestartKernel { id: String },
    /// An operation on the workspace's files, answered by [`Event::FileDone`] with the same id.
    File { id: String, op: files::FileOp },
    /// Kill every user process and exit.
    Shutdown,
}

/// One code run as a fresh process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub id: String,
    pub language: Language,
    pub code: String,
    /// Bytes fed to the process's stdin, then closed; `None` means `/dev/null`.
    pub stdin: Option<String>,
    /// Environment on top of the executor's base (PATH, HOME, LANG).
    pub env: BTreeMap<String, String>,
    /// Wall-clock limit; the whole process tree is killed when it passes.
    pub timeout_ms: u64,
    /// Bytes kept per stream; the rest is read and dropped, and the stream marked truncated.
    pub output_limit: usize,
    /// Bytes all outputs together may take (stream text, and rich outputs as encoded);
    /// what does not fit is dropped and `outputs_truncated` set.
    #[serde(default = "default_outputs_limit")]
    pub outputs_limit: usize,
    /// Run in the session's kernel (Python only) instead of a fresh process.
    #[serde(default)]
    pub kernel: bool,
    /// The kernel namespace to run in (`None`: the kernel's own).
    #[serde(default)]
    pub context: Option<String>,
    /// Drop namespace `context` instead of running `code`.
    #[serde(default)]
    pub forget_context: bool,
    /// Report each output as it is produced ([`Event::Output`]), not only at the end.
    #[serde(default)]
    pub stream: bool,
}

/// What the executor reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Ready {
        version: u32,
    },
    ExecDone(ExecResult),
    /// One output of a running execution that asked to stream (it is in `ExecDone` too).
    Output {
        id: String,
        output: Output,
    },
    /// Answer to a request that has an id and no result of its own; `error` if it failed.
    Ack {
        id: String,
        error: Option<String>,
    },
    FileDone {
        id: String,
        result: files::FileResult,
    },
}

/// Which standard stream a piece of text came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum StreamName {
    Stdout,
    Stderr,
}

/// One output of an execution, in Jupyter's message model, so it converts losslessly to
/// nbformat. MIME bundles map a MIME type to its content (binary types base64-encoded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Output {
    Stream {
        name: StreamName,
        text: String,
    },
    DisplayData {
        #[cfg_attr(feature = "openapi", schema(value_type = Object))]
        data: serde_json::Map<String, serde_json::Value>,
        #[cfg_attr(feature = "openapi", schema(value_type = Object))]
        #[serde(default)]
        metadata: serde_json::Map<String, serde_json::Value>,
    },
    ExecuteResult {
        execution_count: Option<u64>,
        #[cfg_attr(feature = "openapi", schema(value_type = Object))]
        data: serde_json::Map<String, serde_json::Value>,
        #[cfg_attr(feature = "openapi", schema(value_type = Object))]
        #[serde(default)]
        metadata: serde_json::Map<String, serde_json::Value>,
    },
    Error {
        ename: String,
        evalue: String,
        traceback: Vec<String>,
    },
}

/// How one execution ended.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ExecResult {
    pub id: String,
    /// Exit code if the process exited; `None` if a signal ended it.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub duration_ms: u64,
    /// Set when the process could not be started at all (e.g. the interpreter is missing).
    pub spawn_error: Option<String>,
    /// Everything the execution produced, in order (streams coalesced).
    #[serde(default)]
    pub outputs: Vec<Output>,
    /// The kernel died during the execution; a fresh one is being started.
    #[serde(default)]
    pub kernel_died: bool,
    /// Some output was dropped: all outputs together reached the request's `outputs_limit`.
    #[serde(default)]
    pub outputs_truncated: bool,
    /// The kernel had died since the last cell (why: "killed by signal 9", ...); a fresh one
    /// was started and ran this cell.
    #[serde(default)]
    pub kernel_replaced: Option<String>,
    /// Why the kernel died during this cell, when `kernel_died`.
    #[serde(default)]
    pub kernel_death: Option<String>,
}

fn default_outputs_limit() -> usize {
    DEFAULT_OUTPUTS_LIMIT
}

/// Encodes a message as one frame.
pub fn encode<T: Serialize>(msg: &T) -> io::Result<Vec<u8>> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    if body.len() > MAX_FRAME_BYTES {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "frame too large"));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Checks a frame header and returns the body length it announces.
pub fn body_len(header: [u8; 4]) -> io::Result<usize> {
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame of {len} bytes")));
    }
    Ok(len)
}

/// Decodes a frame body.
pub fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> io::Result<T> {
    serde_json::from_slice(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Writes one frame and flushes.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> io::Result<()> {
    w.write_all(&encode(msg)?)?;
    w.flush()
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
pub fn read_frame<R: Read, T: for<'de> Deserialize<'de>>(r: &mut R) -> io::Result<Option<T>> {
    match read_raw_frame(r)? {
        Some(frame) => decode(&frame[4..]).map(Some),
        None => Ok(None),
    }
}

/// Reads one whole frame, its length header included, without decoding it (a relay passes
/// frames on as they are); `Ok(None)` on a clean end of stream between frames.
pub fn read_raw_frame<R: Read>(r: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; 4];
    match r.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = body_len(header)?;
    let mut frame = vec![0u8; 4 + len];
    frame[..4].copy_from_slice(&header);
    r.read_exact(&mut frame[4..])?;
    Ok(Some(frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let req = Request::Exec(ExecRequest {
            id: "e1".into(),
            language: Language::Python,
            code: "print(1)".into(),
            stdin: Some("in".into()),
            env: BTreeMap::from([("A".into(), "b".into())]),
            timeout_ms: 1000,
            output_limit: 10,
            outputs_limit: 10,
            kernel: true,
            context: None,
            forget_context: false,
            stream: false,
        });
        let mut buf = Vec::new();
        write_frame(&mut buf, &req).expect("write");
        write_frame(&mut buf, &Request::Shutdown).expect("write");
        let mut r = buf.as_slice();
        assert_eq!(read_frame::<_, Request>(&mut r).expect("read"), Some(req));
        assert_eq!(read_frame::<_, Request>(&mut r).expect("read"), Some(Request::Shutdown));
        assert_eq!(read_frame::<_, Request>(&mut r).expect("read"), None);
    }

    #[test]
    fn outputs_use_jupyters_shape() {
        let out = Output::Stream { name: StreamName::Stdout, text: "hi\n".into() };
        assert_eq!(
            serde_json::to_value(&out).expect("json"),
            serde_json::json!({"type": "stream", "name": "stdout", "text": "hi\n"})
        );
        let err: Output =
            serde_json::from_value(serde_json::json!({"type": "error", "ename": "E", "evalue": "v", "traceback": []}))
                .expect("parse");
        assert!(matches!(err, Output::Error { .. }));
    }

    #[test]
    fn oversized_header_is_refused() {
        let mut data: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(read_frame::<_, Request>(&mut data).is_err());
    }

    #[test]
    fn truncated_body_is_an_error_not_a_clean_end() {
        let mut frame = encode(&Request::Shutdown).expect("encode");
        frame.pop();
        assert!(read_frame::<_, Request>(&mut frame.as_slice()).is_err());
    }

    #[test]
    fn language_from_extension() {
        assert_eq!(Language::from_extension("py"), Some(Language::Python));
        assert_eq!(Language::from_extension("mjs"), Some(Language::Node));
        assert_eq!(Language::from_extension("txt"), None);
    }
}
