//! A typed client for the sandboxd REST API, used by `sbx`, the integration tests and the
//! benchmarks. One [`Client`] keeps its HTTP connections alive across calls.

use reqwest::{Method, StatusCode};
use sandbox_api::{
    CreateExecution, CreateSession, ErrorBody, Execution, ExecutionList, Readiness, RunRequest, Session, SessionList,
    Template, TemplateStatus,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an API error.
    #[error("{status}: {code}: {message}")]
    Api { status: StatusCode, code: String, message: String },
    #[error("cannot reach the server: {0}")]
    Http(#[from] reqwest::Error),
    #[error("unexpected response ({status}): {body}")]
    Unexpected { status: StatusCode, body: String },
}

impl ClientError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } | ClientError::Unexpected { status, .. } => Some(*status),
            ClientError::Http(e) => e.status(),
        }
    }
}

/// A JSON answer, or the API error it carries.
async fn decode<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, ClientError> {
    let status = resp.status();
    let text = resp.text().await?;
    if status.is_success() {
        let body = if text.is_empty() { "null" } else { &text };
        return serde_json::from_str(body).map_err(|_| ClientError::Unexpected { status, body: text.clone() });
    }
    Err(error_of(status, text))
}

fn error_of(status: StatusCode, text: String) -> ClientError {
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(e) => ClientError::Api { status, code: e.error.code, message: e.error.message },
        Err(_) => ClientError::Unexpected { status, body: text },
    }
}

/// `/v1/sessions/{session}/files/{path}` with each segment of `path` percent-encoded, so names
/// with spaces, `#`, `?` or any script arrive as they are.
pub fn file_url(session: &str, path: &str) -> String {
    let segments: Vec<String> = path.split('/').map(sandbox_api::percent_encode).collect();
    format!("/v1/sessions/{session}/files/{}", segments.join("/"))
}

fn form_query(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}={}", sandbox_api::percent_encode(v))).collect::<Vec<_>>().join("&")
}

#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// `base` like `http://127.0.0.1:8080` (a trailing slash is fine), with the API key in
    /// `SANDBOX_API_KEY` if it is set.
    pub fn new(base: &str) -> Client {
        Self::with_key(base, std::env::var("SANDBOX_API_KEY").ok().filter(|k| !k.is_empty()).as_deref())
    }

    /// A client that sends `key` (as `Authorization: Bearer`) with every request, or none.
    pub fn with_key(base: &str, key: Option<&str>) -> Client {
        let bearer = key.map(|k| ("authorization", format!("Bearer {k}")));
        Self::with_headers(base, bearer.as_slice())
    }

    /// A client that sends `headers` with every request (values kept out of `Debug`): how one
    /// replica calls another with the replicas' secret and the caller it speaks for.
    pub fn with_headers(base: &str, pairs: &[(&str, String)]) -> Client {
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in pairs {
            if let (Ok(name), Ok(mut value)) = (
                reqwest::header::HeaderName::from_bytes(name.as_bytes()),
                reqwest::header::HeaderValue::from_str(value),
            ) {
                value.set_sensitive(true);
                headers.insert(name, value);
            }
        }
        // sandboxd closes a keep-alive connection idle for 10 s (--header-read-timeout-s); a
        // pooled connection reused just as the server closes it fails the request, so the
        // pool lets go of idle ones first.
        let http = reqwest::Client::builder()
            .pool_idle_timeout(std::time::Duration::from_secs(5))
            .default_headers(headers)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Client { base: base.trim_end_matches('/').to_string(), http }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request with an optional raw body and returns status and body text, for tests
    /// of malformed input that typed calls cannot produce.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, String), ClientError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await?;
        Ok((resp.status(), resp.text().await?))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(b);
        }
        decode(req.send().await?).await
    }

    pub async fn readiness(&self) -> Result<(StatusCode, Readiness), ClientError> {
        let resp = self.http.get(format!("{}/readyz", self.base)).send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        let r = serde_json::from_str(&text).map_err(|_| ClientError::Unexpected { status, body: text })?;
        Ok((status, r))
    }

    pub async fn create_session(&self, req: &CreateSession) -> Result<Session, ClientError> {
        self.call(Method::POST, "/v1/sessions", Some(req)).await
    }

    /// Every session: the pages one after another.
    pub async fn list_sessions(&self) -> Result<SessionList, ClientError> {
        let sessions = self.all_pages("/v1/sessions", |p: SessionList| (p.sessions, p.next_cursor)).await?;
        Ok(SessionList { sessions, next_cursor: None })
    }

    /// Every item of the paged listing at `url`, the pages one after another; `split` takes a
    /// page apart into its items and the cursor of the next.
    async fn all_pages<P: serde::de::DeserializeOwned, T>(
        &self,
        url: &str,
        split: impl Fn(P) -> (Vec<T>, Option<String>),
    ) -> Result<Vec<T>, ClientError> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let (items, next) = split(self.call(Method::GET, &paged(url, &cursor), None::<&()>).await?);
            all.extend(items);
            match next {
                Some(next) => cursor = Some(next),
                None => return Ok(all),
            }
        }
    }

    pub async fn get_session(&self, id: &str) -> Result<Session, ClientError> {
        self.call(Method::GET, &format!("/v1/sessions/{id}"), None::<&()>).await
    }

    pub async fn delete_session(&self, id: &str) -> Result<(), ClientError> {
        self.call::<Option<()>>(Method::DELETE, &format!("/v1/sessions/{id}"), None::<&()>).await.map(drop)
    }

    pub async fn execute(&self, session: &str, req: &CreateExecution) -> Result<Execution, ClientError> {
        self.call(Method::POST, &format!("/v1/sessions/{session}/executions"), Some(req)).await
    }

    /// Runs an execution with Server-Sent Events: `on_event(name, data)` sees each output as it
    /// is produced (`stdout`, `stderr`, `display`, `result`, `error`); returns the finished
    /// execution from the final `done` event.
    pub async fn execute_stream(
        &self,
        session: &str,
        req: &CreateExecution,
        mut on_event: impl FnMut(&str, &str),
    ) -> Result<Execution, ClientError> {
        let mut resp = self
            .http
            .post(format!("{}/v1/sessions/{session}/executions", self.base))
            .header("accept", "text/event-stream")
            .json(req)
            .send()
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await?;
            return Err(match serde_json::from_str::<ErrorBody>(&text) {
                Ok(e) => ClientError::Api { status, code: e.error.code, message: e.error.message },
                Err(_) => ClientError::Unexpected { status, body: text },
            });
        }
        let mut buf = String::new();
        while let Some(chunk) = resp.chunk().await? {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let (mut name, mut data) = (String::from("message"), Vec::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                let data = data.join("\n");
                if name == "done" {
                    return serde_json::from_str(&data).map_err(|_| ClientError::Unexpected { status, body: data });
                }
                if name == "error" {
                    if let Ok(e) = serde_json::from_str::<ErrorBody>(&data) {
                        return Err(ClientError::Api { status, code: e.error.code, message: e.error.message });
                    }
                }
                on_event(&name, &data);
            }
        }
        Err(ClientError::Unexpected { status, body: "the stream ended without a done event".into() })
    }

    /// Interrupts the running kernel cell; false if the session had nothing running.
    pub async fn interrupt(&self, session: &str) -> Result<bool, ClientError> {
        let r: sandbox_api::Interrupted =
            self.call(Method::POST, &format!("/v1/sessions/{session}/interrupt"), None::<&()>).await?;
        Ok(r.interrupted)
    }

    /// Stops the session's sandbox (the workspace stays).
    pub async fn stop_session(&self, session: &str) -> Result<Session, ClientError> {
        self.call(Method::POST, &format!("/v1/sessions/{session}/stop"), None::<&()>).await
    }

    /// Starts a new sandbox on a stopped session's workspace.
    pub async fn resume_session(&self, session: &str) -> Result<Session, ClientError> {
        self.call(Method::POST, &format!("/v1/sessions/{session}/resume"), None::<&()>).await
    }

    /// Replaces the session's kernel with a fresh one.
    pub async fn restart(&self, session: &str) -> Result<Session, ClientError> {
        self.call(Method::POST, &format!("/v1/sessions/{session}/restart"), None::<&()>).await
    }

    /// A session's executions as summaries (no stdout, stderr or outputs).
    /// Every execution of a session, as summaries: the pages one after another.
    pub async fn list_executions(&self, session: &str) -> Result<ExecutionList, ClientError> {
        self.all_executions(&format!("/v1/sessions/{session}/executions?outputs=false")).await
    }

    /// A session's executions with their stdout, stderr and outputs.
    pub async fn list_executions_with_outputs(&self, session: &str) -> Result<ExecutionList, ClientError> {
        self.all_executions(&format!("/v1/sessions/{session}/executions?outputs=true")).await
    }

    async fn all_executions(&self, url: &str) -> Result<ExecutionList, ClientError> {
        let executions = self.all_pages(url, |p: ExecutionList| (p.executions, p.next_cursor)).await?;
        Ok(ExecutionList { executions, next_cursor: None })
    }

    pub async fn get_execution(&self, id: &str) -> Result<Execution, ClientError> {
        self.call(Method::GET, &format!("/v1/executions/{id}"), None::<&()>).await
    }

    pub async fn run(&self, req: &RunRequest) -> Result<Execution, ClientError> {
        self.call(Method::POST, "/v1/run", Some(req)).await
    }

    /// Writes `body` to `path` in the session's workspace (`len`, when known, lets the server
    /// refuse an oversized file before it is sent).
    pub async fn upload(
        &self,
        session: &str,
        path: &str,
        body: impl Into<reqwest::Body>,
        len: Option<u64>,
    ) -> Result<sandbox_api::UploadedFile, ClientError> {
        let mut req = self.http.put(format!("{}{}", self.base, file_url(session, path))).body(body);
        if let Some(n) = len {
            req = req.header(reqwest::header::CONTENT_LENGTH, n);
        }
        decode(req.send().await?).await
    }

    /// Starts a download of `path`; the response streams (`bytes_stream`, `chunk`).
    pub async fn download(&self, session: &str, path: &str) -> Result<reqwest::Response, ClientError> {
        let resp = self.http.get(format!("{}{}", self.base, file_url(session, path))).send().await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(error_of(resp.status(), resp.text().await?))
    }

    /// The whole content of `path`.
    pub async fn read_file(&self, session: &str, path: &str) -> Result<Vec<u8>, ClientError> {
        Ok(self.download(session, path).await?.bytes().await?.to_vec())
    }

    pub async fn list_files(
        &self,
        session: &str,
        dir: &str,
        recursive: bool,
    ) -> Result<sandbox_api::FileList, ClientError> {
        let query = form_query(&[("path", dir), ("recursive", if recursive { "true" } else { "false" })]);
        self.call(Method::GET, &format!("/v1/sessions/{session}/files?{query}"), None::<&()>).await
    }

    pub async fn delete_file(&self, session: &str, path: &str, recursive: bool) -> Result<(), ClientError> {
        let url = format!("{}?recursive={recursive}", file_url(session, path));
        self.call::<Option<()>>(Method::DELETE, &url, None::<&()>).await.map(drop)
    }

    pub async fn move_file(&self, session: &str, from: &str, to: &str) -> Result<sandbox_api::FileInfo, ClientError> {
        let body = sandbox_api::MoveFile { to: to.to_string() };
        self.call(Method::POST, &format!("{}:move", file_url(session, from)), Some(&body)).await
    }

    /// Starts a download of directory `dir` as a `.tar.gz`.
    pub async fn archive(&self, session: &str, dir: &str) -> Result<reqwest::Response, ClientError> {
        let url = format!("{}/v1/sessions/{session}/archive?{}", self.base, form_query(&[("path", dir)]));
        let resp = self.http.get(url).send().await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(error_of(resp.status(), resp.text().await?))
    }

    /// Installs Python packages for one session (pip's failure is a result, not an error).
    pub async fn install_packages(
        &self,
        session: &str,
        packages: &[&str],
    ) -> Result<sandbox_api::PackageInstallResult, ClientError> {
        let req = sandbox_api::InstallPackages { packages: packages.iter().map(|p| p.to_string()).collect() };
        self.call(Method::POST, &format!("/v1/sessions/{session}/packages"), Some(&req)).await
    }

    pub async fn create_template(&self, req: &sandbox_api::CreateTemplate) -> Result<Template, ClientError> {
        self.call(Method::POST, "/v1/templates", Some(req)).await
    }

    /// Every template: the pages one after another.
    pub async fn list_templates(&self) -> Result<sandbox_api::TemplateList, ClientError> {
        let split = |p: sandbox_api::TemplateList| (p.templates, p.next_cursor);
        let templates = self.all_pages("/v1/templates", split).await?;
        Ok(sandbox_api::TemplateList { templates, next_cursor: None })
    }

    /// The replicas sharing the server's database (an admin key, or none in force).
    pub async fn replicas(&self) -> Result<Vec<sandbox_api::Replica>, ClientError> {
        let list: sandbox_api::ReplicaList = self.call(Method::GET, "/v1/replicas", None::<&()>).await?;
        Ok(list.replicas)
    }

    pub async fn get_template(&self, name: &str) -> Result<Template, ClientError> {
        self.call(Method::GET, &format!("/v1/templates/{name}"), None::<&()>).await
    }

    pub async fn delete_template(&self, name: &str) -> Result<(), ClientError> {
        self.call::<Option<()>>(Method::DELETE, &format!("/v1/templates/{name}"), None::<&()>).await.map(drop)
    }

    /// Polls template `name` until it is no longer building (or `timeout` passes).
    pub async fn wait_template(&self, name: &str, timeout: std::time::Duration) -> Result<Template, ClientError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let t = self.get_template(name).await?;
            if t.status != TemplateStatus::Building || std::time::Instant::now() > deadline {
                return Ok(t);
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

/// `url` with the largest page and, after the first, the cursor of the next (cursors are hex).
fn paged(url: &str, cursor: &Option<String>) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    match cursor {
        Some(c) => format!("{url}{sep}limit=1000&cursor={c}"),
        None => format!("{url}{sep}limit=1000"),
    }
}
