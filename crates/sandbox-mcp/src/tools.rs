//! The tools an agent sees, and the workspace files as resources, over any [`Backend`].

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ListResourceTemplatesResult, ListResourcesResult,
    PaginatedRequestParams, ProgressNotificationParam, ReadResourceRequestParams, ReadResourceResult, Resource,
    ResourceContents, ResourceTemplate, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{schemars, tool, tool_handler, tool_router, ErrorData, RoleServer, ServerHandler};
use sandbox_api::{CreateExecution, CreateSession, ExecutionStatus, FileType, Language, LimitsRequest, Output};
use serde::Deserialize;

use crate::backend::{Backend, BackendError};

/// The largest file `read_file` returns: a model's context is the limit, not the workspace.
pub const MAX_READ_BYTES: u64 = 8 << 20;

/// Resource URIs of workspace files: `sandbox://sessions/{session_id}/files/{path}`.
const URI_PREFIX: &str = "sandbox://sessions/";

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct CreateSessionArgs {
    /// A template name (see the server's templates); the server's default if left out.
    pub template: Option<String>,
    /// Memory limit of the session's sandbox, MiB.
    pub memory_mb: Option<u64>,
    /// CPU limit, in cores (0.5 is half a core).
    pub cpu: Option<f64>,
    /// Longest one run_code may take in this session, seconds.
    pub timeout_s: Option<f64>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RunCodeArgs {
    /// The code to run.
    pub code: String,
    /// "python" (the default: runs in the session's Jupyter-like kernel, so variables, imports
    /// and figures carry over between calls), "node" or "bash" (each a fresh process).
    pub language: Option<String>,
    /// The session to run in. Leave it out to use a new session (or, over stdio, this
    /// connection's default one); its id comes back: pass it again to keep the state.
    pub session_id: Option<String>,
    /// Give up after this many seconds (the session's default otherwise).
    pub timeout_s: Option<f64>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ListFilesArgs {
    pub session_id: Option<String>,
    /// A directory relative to the workspace (/workspace); its root if left out.
    pub path: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ReadFileArgs {
    pub session_id: Option<String>,
    /// A file path relative to the workspace (/workspace), e.g. "out/chart.png".
    pub path: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct WriteFileArgs {
    pub session_id: Option<String>,
    /// A file path relative to the workspace; its directories are made. An existing file is
    /// replaced.
    pub path: String,
    /// The file's content: text, or base64 with encoding "base64".
    pub content: String,
    /// "utf-8" (the default) or "base64" (for binary files).
    pub encoding: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct InstallPackagesArgs {
    pub session_id: Option<String>,
    /// pip requirement specifiers, e.g. ["pandas", "requests==2.32.3"] (wheels only).
    pub packages: Vec<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SessionArgs {
    pub session_id: Option<String>,
}

/// The MCP server: sandbox tools over backend `B`.
pub struct SandboxTools<B: Backend> {
    backend: Arc<B>,
    /// Over stdio one process is one agent: run_code without a session id uses (and, the first
    /// time, makes) this connection's session. Over HTTP each call names its session.
    default_session: Option<Arc<Mutex<Option<String>>>>,
    tool_router: ToolRouter<Self>,
}

impl<B: Backend> Clone for SandboxTools<B> {
    fn clone(&self) -> Self {
        SandboxTools {
            backend: Arc::clone(&self.backend),
            default_session: self.default_session.clone(),
            tool_router: self.tool_router.clone(),
        }
    }
}

/// A tool's answer when the call failed: what went wrong, for the model to act on.
fn failed(e: BackendError) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(e.to_string())])
}

fn invalid(message: impl Into<String>) -> BackendError {
    BackendError::new("invalid", message)
}

/// Lets a tool body use `?` on backend errors and answer them as a failed call.
macro_rules! attempt {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Ok(failed(e)),
        }
    };
}

fn structured(value: impl serde::Serialize, mut result: CallToolResult) -> CallToolResult {
    result.structured_content = serde_json::to_value(value).ok();
    result
}

/// What a finished execution showed, as MCP content: stdout and stderr as text, each result
/// and display as an image (PNG, JPEG, SVG as text) or its plain text, an error's traceback.
fn execution_content(e: &sandbox_api::Execution) -> (Vec<ContentBlock>, bool) {
    let mut content = Vec::new();
    let mut raised = false;
    if !e.stdout.is_empty() {
        content.push(ContentBlock::text(e.stdout.clone()));
    }
    if !e.stderr.is_empty() {
        content.push(ContentBlock::text(format!("[stderr]\n{}", e.stderr)));
    }
    for output in &e.outputs {
        match output {
            Output::Stream { .. } => {}
            Output::DisplayData { data, .. } | Output::ExecuteResult { data, .. } => content.extend(bundle(data)),
            Output::Error { ename, evalue, traceback } => {
                raised = true;
                let trace = traceback.join("\n");
                content.push(ContentBlock::text(format!("{ename}: {evalue}\n{}", strip_ansi(&trace))));
            }
        }
    }
    let failed = raised || e.status != ExecutionStatus::Succeeded;
    if failed && !raised {
        let why = e.reason.map(|r| r.as_str().to_string()).unwrap_or_else(|| format!("{:?}", e.status));
        content.push(ContentBlock::text(format!("the execution {}: {why}", e.status.as_str())));
    }
    if content.is_empty() {
        content.push(ContentBlock::text("(no output)"));
    }
    (content, failed)
}

/// One MIME bundle as content: the richest kind a model can take.
fn bundle(data: &serde_json::Map<String, serde_json::Value>) -> Option<ContentBlock> {
    for mime in ["image/png", "image/jpeg", "image/gif", "image/webp"] {
        if let Some(b64) = data.get(mime).and_then(|v| v.as_str()) {
            return Some(ContentBlock::image(b64.trim().to_string(), mime));
        }
    }
    for mime in ["text/plain", "text/markdown", "image/svg+xml", "text/html", "application/json"] {
        match data.get(mime) {
            Some(serde_json::Value::String(s)) => return Some(ContentBlock::text(s.clone())),
            Some(other) if !other.is_null() => return Some(ContentBlock::text(other.to_string())),
            _ => {}
        }
    }
    None
}

/// Tracebacks come with terminal colours; a model reads them better without.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// A short word on an output as it arrives, for a progress notification.
fn progress_message(output: &Output) -> String {
    let text = match output {
        Output::Stream { text, .. } => text.clone(),
        Output::DisplayData { .. } => "[display]".into(),
        Output::ExecuteResult { .. } => "[result]".into(),
        Output::Error { ename, .. } => format!("[error] {ename}"),
    };
    text.chars().take(200).collect()
}

fn image_mime(path: &str) -> Option<&'static str> {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase())?;
    match ext.as_str() {
        "png" => Some("image/png"),
        "jpg" | "jpeg" => Some("image/jpeg"),
        "gif" => Some("image/gif"),
        "webp" => Some("image/webp"),
        _ => None,
    }
}

fn parse_language(given: Option<&str>) -> Result<Language, BackendError> {
    let name = given.unwrap_or("python");
    serde_json::from_value(serde_json::Value::String(name.to_ascii_lowercase()))
        .map_err(|_| invalid(format!("unknown language {name:?}: \"python\", \"node\" or \"bash\"")))
}

fn resource_uri(session: &str, path: &str) -> String {
    format!("{URI_PREFIX}{session}/files/{path}")
}

impl<B: Backend> SandboxTools<B> {
    /// Tools for clients that name their sessions (Streamable HTTP).
    pub fn new(backend: Arc<B>) -> Self {
        SandboxTools { backend, default_session: None, tool_router: Self::tool_router() }
    }

    /// Tools for one agent on one connection (stdio): calls without a session id share one
    /// session, made by the first that needs it.
    pub fn with_default_session(backend: Arc<B>) -> Self {
        SandboxTools { default_session: Some(Default::default()), ..Self::new(backend) }
    }

    fn caller(&self, ctx: &RequestContext<RoleServer>) -> Result<B::Caller, BackendError> {
        self.backend.caller(&ctx.extensions)
    }

    fn remembered(&self) -> Option<String> {
        let default = self.default_session.as_ref()?;
        default.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Who calls, and the session the call names (or the connection's default one).
    fn caller_and_session(
        &self,
        ctx: &RequestContext<RoleServer>,
        given: Option<String>,
    ) -> Result<(B::Caller, String), BackendError> {
        let session = given.or_else(|| self.remembered()).ok_or_else(|| {
            invalid("session_id is required: make one with create_session, or run_code without one makes it")
        })?;
        Ok((self.caller(ctx)?, session))
    }

    async fn new_session(&self, caller: &B::Caller, req: CreateSession) -> Result<sandbox_api::Session, BackendError> {
        let session = self.backend.create_session(caller, req).await?;
        if let Some(default) = &self.default_session {
            let mut default = default.lock().unwrap_or_else(|p| p.into_inner());
            default.get_or_insert_with(|| session.id.clone());
        }
        Ok(session)
    }
}

#[tool_router]
impl<B: Backend> SandboxTools<B> {
    #[tool(description = "Create a sandbox session: an isolated machine with no network, a Python kernel \
        that keeps variables between run_code calls, and a /workspace directory for files. Returns its \
        session_id; pass it to the other tools.")]
    async fn create_session(
        &self,
        Parameters(args): Parameters<CreateSessionArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let caller = attempt!(self.caller(&ctx));
        let limits = (args.memory_mb.is_some() || args.cpu.is_some()).then(|| LimitsRequest {
            memory_mb: args.memory_mb,
            cpu: args.cpu,
            ..Default::default()
        });
        let req = CreateSession { template: args.template, limits, timeout_s: args.timeout_s, ..Default::default() };
        let session = attempt!(self.new_session(&caller, req).await);
        let text = format!("session {} is ready (template {})", session.id, session.template);
        Ok(structured(&session, CallToolResult::success(vec![ContentBlock::text(text)])))
    }

    #[tool(description = "Run code in a sandbox session and return what it printed, its result, any \
        images (matplotlib figures come back as PNG) and, if it raised, the traceback (as an error). \
        Python runs in the session's kernel: state carries over between calls, like a Jupyter \
        notebook. Without session_id a session is made and its id returned in the result.")]
    async fn run_code(
        &self,
        Parameters(args): Parameters<RunCodeArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let caller = attempt!(self.caller(&ctx));
        let language = attempt!(parse_language(args.language.as_deref()));
        let session = match args.session_id.or_else(|| self.remembered()) {
            Some(id) => id,
            None => attempt!(self.new_session(&caller, CreateSession::default()).await).id,
        };
        let mut req = CreateExecution::new(language, &args.code);
        req.timeout_s = args.timeout_s;
        let (tx, mut outputs) = tokio::sync::mpsc::unbounded_channel();
        let run = self.backend.run_code(&caller, &session, req, tx);
        tokio::pin!(run);
        let progress = ctx.meta.get_progress_token();
        let (mut seen, mut interrupted, mut streaming) = (0u32, false, true);
        let finished = loop {
            tokio::select! {
                output = outputs.recv(), if streaming => match (output, &progress) {
                    (Some(output), Some(token)) => {
                        seen += 1;
                        let note = ProgressNotificationParam::new(token.clone(), f64::from(seen))
                            .with_message(progress_message(&output));
                        // A client that stopped listening for progress still gets the result.
                        let _ = ctx.peer.notify_progress(note).await;
                    }
                    (Some(_), None) => {}
                    (None, _) => streaming = false,
                },
                // The client cancelled: the cell is interrupted, the kernel and its state stay.
                _ = ctx.ct.cancelled(), if !interrupted => {
                    interrupted = true;
                    if let Err(e) = self.backend.interrupt(&caller, &session).await {
                        tracing::warn!(session = %session, error = %e, "cannot interrupt a cancelled run_code");
                    }
                }
                finished = &mut run => break finished,
            }
        };
        let execution = attempt!(finished);
        let (mut content, failed) = execution_content(&execution);
        content.push(ContentBlock::text(format!("session_id: {session}")));
        let result = if failed { CallToolResult::error(content) } else { CallToolResult::success(content) };
        let summary = serde_json::json!({ "session_id": session, "execution": execution });
        Ok(structured(summary, result))
    }

    #[tool(description = "List the files in a session's workspace (/workspace), or in a directory of it.")]
    async fn list_files(
        &self,
        Parameters(args): Parameters<ListFilesArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let (caller, session) = attempt!(self.caller_and_session(&ctx, args.session_id));
        let dir = args.path.unwrap_or_default();
        let files = attempt!(self.backend.list_files(&caller, &session, &dir).await);
        let lines: Vec<String> = files
            .iter()
            .map(|f| match f.kind {
                FileType::Dir => format!("{}/", f.path),
                _ => format!("{} ({} bytes)", f.path, f.size),
            })
            .collect();
        let text = if lines.is_empty() { "(empty)".to_string() } else { lines.join("\n") };
        let summary = serde_json::json!({ "session_id": session, "files": files });
        Ok(structured(summary, CallToolResult::success(vec![ContentBlock::text(text)])))
    }

    #[tool(description = "Read a file from a session's workspace: text comes back as text, an image \
        (PNG, JPEG, GIF, WebP) as an image, anything else as base64.")]
    async fn read_file(
        &self,
        Parameters(args): Parameters<ReadFileArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let (caller, session) = attempt!(self.caller_and_session(&ctx, args.session_id));
        let bytes = attempt!(self.backend.read_file(&caller, &session, &args.path, MAX_READ_BYTES).await);
        let b64 = || base64::engine::general_purpose::STANDARD.encode(&bytes);
        let block = match (image_mime(&args.path), std::str::from_utf8(&bytes)) {
            (Some(mime), _) => ContentBlock::image(b64(), mime),
            (None, Ok(text)) => ContentBlock::text(text.to_string()),
            (None, Err(_)) => ContentBlock::resource(ResourceContents::blob(b64(), resource_uri(&session, &args.path))),
        };
        Ok(CallToolResult::success(vec![block]))
    }

    #[tool(description = "Write a file into a session's workspace (replacing any file of that path), \
        so code can read it. Binary files go as base64 with encoding \"base64\".")]
    async fn write_file(
        &self,
        Parameters(args): Parameters<WriteFileArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let (caller, session) = attempt!(self.caller_and_session(&ctx, args.session_id));
        let data = match args.encoding.as_deref().unwrap_or("utf-8").to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" | "text" => args.content.into_bytes(),
            "base64" => attempt!(base64::engine::general_purpose::STANDARD
                .decode(args.content.trim())
                .map_err(|e| invalid(format!("content is not base64: {e}")))),
            other => return Ok(failed(invalid(format!("unknown encoding {other:?}: \"utf-8\" or \"base64\"")))),
        };
        let written = attempt!(self.backend.write_file(&caller, &session, &args.path, data).await);
        let text = format!("wrote {} ({} bytes)", written.path, written.size);
        Ok(structured(&written, CallToolResult::success(vec![ContentBlock::text(text)])))
    }

    #[tool(description = "Install Python packages (pip, wheels only) into a session; later imports in \
        run_code find them at once. The sandbox itself has no network: the server downloads them.")]
    async fn install_packages(
        &self,
        Parameters(args): Parameters<InstallPackagesArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let (caller, session) = attempt!(self.caller_and_session(&ctx, args.session_id));
        let done = attempt!(self.backend.install_packages(&caller, &session, args.packages).await);
        let installed: Vec<String> = done.installed.iter().map(|p| format!("{}=={}", p.name, p.version)).collect();
        let ok = done.status == sandbox_api::InstallStatus::Succeeded;
        let text = match (ok, &done.error) {
            (true, _) => format!("installed: {}", installed.join(", ")),
            (false, error) => format!("pip failed: {}", error.as_deref().unwrap_or("see the output")),
        };
        let result = if ok { CallToolResult::success } else { CallToolResult::error };
        Ok(structured(&done, result(vec![ContentBlock::text(text)])))
    }

    #[tool(description = "Restart a session's Python kernel: its variables are gone, its files stay.")]
    async fn restart_kernel(
        &self,
        Parameters(args): Parameters<SessionArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let (caller, session) = attempt!(self.caller_and_session(&ctx, args.session_id));
        let restarted = attempt!(self.backend.restart_kernel(&caller, &session).await);
        let text = format!("session {} has a fresh kernel", restarted.id);
        Ok(structured(&restarted, CallToolResult::success(vec![ContentBlock::text(text)])))
    }

    #[tool(description = "Delete a session: its sandbox stops and its kernel state is gone.")]
    async fn delete_session(
        &self,
        Parameters(args): Parameters<SessionArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let (caller, session) = attempt!(self.caller_and_session(&ctx, args.session_id));
        attempt!(self.backend.delete_session(&caller, &session).await);
        if let Some(default) = &self.default_session {
            let mut default = default.lock().unwrap_or_else(|p| p.into_inner());
            if default.as_deref() == Some(session.as_str()) {
                *default = None;
            }
        }
        Ok(CallToolResult::success(vec![ContentBlock::text(format!("session {session} deleted"))]))
    }
}

#[tool_handler]
impl<B: Backend> ServerHandler for SandboxTools<B> {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_resources().build())
            .with_server_info(Implementation::new("sandboxd", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Run untrusted code safely: run_code executes Python (stateful, like a notebook), Node.js or \
                 bash in an isolated sandbox with no network. Files live in the session's /workspace \
                 (list_files, read_file, write_file); they are also resources: \
                 sandbox://sessions/{session_id}/files/{path}.",
            )
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        // The files of this connection's session; other sessions' are reached by the template.
        let Some(session) = self.remembered() else { return Ok(ListResourcesResult::default()) };
        let caller = self.caller(&ctx).map_err(|e| ErrorData::invalid_request(e.to_string(), None))?;
        let files = self.backend.list_files(&caller, &session, "").await.unwrap_or_default();
        let resources = files
            .into_iter()
            .filter(|f| f.kind == FileType::File)
            .map(|f| {
                let mut resource = Resource::new(resource_uri(&session, &f.path), f.path.clone());
                resource.size = Some(f.size);
                resource.mime_type = image_mime(&f.path).map(String::from);
                resource
            })
            .collect();
        Ok(ListResourcesResult { resources, ..Default::default() })
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let mut template =
            ResourceTemplate::new(format!("{URI_PREFIX}{{session_id}}/files/{{path}}"), "workspace file");
        template.description = Some("A file in a session's /workspace".into());
        Ok(ListResourceTemplatesResult { resource_templates: vec![template], ..Default::default() })
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ReadResourceResponse, ErrorData> {
        let uri = request.uri.clone();
        let parsed = uri.strip_prefix(URI_PREFIX).and_then(|rest| rest.split_once("/files/"));
        let Some((session, path)) = parsed else {
            return Err(ErrorData::resource_not_found(format!("not a workspace file: {uri}"), None));
        };
        let caller = self.caller(&ctx).map_err(|e| ErrorData::invalid_request(e.to_string(), None))?;
        let bytes = self
            .backend
            .read_file(&caller, session, path, MAX_READ_BYTES)
            .await
            .map_err(|e| ErrorData::resource_not_found(e.to_string(), None))?;
        let contents = match (image_mime(path), String::from_utf8(bytes)) {
            (None, Ok(text)) => ResourceContents::text(text, uri),
            (mime, Err(e)) => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(e.as_bytes());
                ResourceContents::blob(b64, uri).with_mime_type(mime.unwrap_or("application/octet-stream"))
            }
            (Some(mime), Ok(text)) => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
                ResourceContents::blob(b64, uri).with_mime_type(mime)
            }
        };
        Ok(ReadResourceResult::new(vec![contents]).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_are_taken_out_of_tracebacks() {
        assert_eq!(strip_ansi("\u{1b}[0;31mZeroDivisionError\u{1b}[0m: x"), "ZeroDivisionError: x");
    }

    #[test]
    fn a_bundle_gives_its_image_before_its_text() {
        let mut data = serde_json::Map::new();
        data.insert("text/plain".into(), "<Figure>".into());
        data.insert("image/png".into(), "iVBORw0KGgo=\n".into());
        let block = bundle(&data).map(|b| serde_json::to_value(b).unwrap_or_default());
        assert_eq!(block.as_ref().map(|b| b["type"].clone()), Some(serde_json::json!("image")));
        assert_eq!(block.map(|b| b["data"].clone()), Some(serde_json::json!("iVBORw0KGgo=")));
    }

    #[test]
    fn languages_are_named_as_the_api_names_them() {
        assert_eq!(parse_language(None).ok(), Some(Language::Python));
        assert_eq!(parse_language(Some("Bash")).ok(), Some(Language::Bash));
        assert!(parse_language(Some("cobol")).is_err());
    }
}
