//! The E2B-compatible door: the routes the official E2B SDKs (`e2b`, `e2b-code-interpreter`)
//! call, as an adapter over the service layer. A sandbox is a session; E2B's lifecycle maps to
//! ours (timeout: the session's lifetime; pause: stop; connect: resume; kill: delete).
//!
//! - The control API (`control.rs`) is mounted at `/e2b`: point `E2B_API_URL` there. It sits
//!   behind sandboxd's key check (the SDK sends `E2B_API_KEY` as `X-API-Key`).
//! - The sandbox's own services, envd (files, filesystem and process RPCs: `envd.rs`) and the
//!   code interpreter (`interpreter.rs`), are mounted at `/e2b/sandbox`: point
//!   `E2B_SANDBOX_URL` there. Requests name their sandbox in `E2b-Sandbox-Id` and carry the
//!   session's access token the create answer gave (`X-Access-Token`, or
//!   `E2B-Traffic-Access-Token`), which stands for the key.
//! - Behind wildcard DNS and TLS, `https://<port>-<id>.<domain>` and `https://api.<domain>`
//!   are routed by their `Host` ([`route_by_host`]), with `--e2b-domain`.

pub mod control;
pub mod envd;
pub mod error;
pub mod extract;
pub mod interpreter;
pub mod paths;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Uri};
use axum::Router;
use sandbox_service::access::auth::Caller;
use sandbox_service::Service;

use crate::error::E2bError;

/// The envd version this door answers as: the SDK picks its wire formats by it (0.5.7: file
/// uploads as plain bodies; below 0.6.2: no file metadata).
pub const ENVD_VERSION: &str = "0.5.7";

/// The ports the SDK names in `E2b-Sandbox-Port`: envd's and the code interpreter's.
pub const ENVD_PORT: u16 = 49983;
pub const INTERPRETER_PORT: u16 = 49999;

/// A code context: a namespace of its own in the session's kernel (see `interpreter.rs`).
#[derive(Debug, Clone)]
pub struct Context {
    pub session: String,
    pub language: String,
    pub cwd: String,
    /// The kernel namespace it runs in; a restart moves it to a fresh one.
    pub namespace: String,
    /// Cells run in it since it was made or restarted.
    pub executions: u64,
}

/// The door's state: the service, and what E2B has that sandboxd does not (code contexts).
pub struct E2b {
    pub service: Arc<Service>,
    pub contexts: Mutex<HashMap<String, Context>>,
}

pub type State = Arc<E2b>;

impl E2b {
    pub fn new(service: Arc<Service>) -> State {
        Arc::new(E2b { service, contexts: Mutex::new(HashMap::new()) })
    }

    fn contexts(&self) -> std::sync::MutexGuard<'_, HashMap<String, Context>> {
        self.contexts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The control API (mount at `/e2b`, behind the key check: handlers take the `Caller` it
/// leaves in the request).
pub fn control_routes(state: State) -> Router {
    control::routes().with_state(state)
}

/// envd and the code interpreter (mount at `/e2b/sandbox`; they check the sandbox's access
/// token themselves).
pub fn sandbox_routes(state: State) -> Router {
    envd::routes().merge(interpreter::routes()).with_state(state)
}

/// Who a sandbox request comes from, and for which sandbox: `E2b-Sandbox-Id` names the
/// session, `X-Access-Token` proves the caller was given it.
pub struct SandboxCaller {
    pub session: String,
    pub caller: Caller,
}

impl FromRequestParts<State> for SandboxCaller {
    type Rejection = E2bError;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, Self::Rejection> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let Some(session) = header("e2b-sandbox-id") else {
            return Err(E2bError::invalid("the E2b-Sandbox-Id header names no sandbox"));
        };
        // envd calls carry the envd access token; the code interpreter's context calls only
        // the traffic access token. Both are the session's token (see `control.rs`).
        let token = header("x-access-token").or_else(|| header("e2b-traffic-access-token"));
        let caller = state.service.session_caller(session, token).await?;
        Ok(SandboxCaller { session: session.to_string(), caller })
    }
}

/// Rewrites a request addressed by host, as the SDKs address sandboxes behind wildcard DNS:
/// `<port>-<sandbox id>.<domain>` goes to the sandbox routes with that id and port, and
/// `api.<domain>` to the control API. Other requests pass unchanged.
pub fn route_by_host(domain: &str, mut req: Request) -> Request {
    let host = req
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.split(':').next().unwrap_or(h).to_ascii_lowercase());
    let Some(label) = host.as_deref().and_then(|h| h.strip_suffix(domain)).and_then(|h| h.strip_suffix('.')) else {
        return req;
    };
    let prefix = match label {
        "api" => "/e2b".to_string(),
        label => match label.split_once('-') {
            Some((port, id)) if port.parse::<u16>().is_ok() && !id.is_empty() && !id.contains('.') => {
                let headers = req.headers_mut();
                for (name, value) in [("e2b-sandbox-id", id), ("e2b-sandbox-port", port)] {
                    if let Ok(value) = HeaderValue::from_str(value) {
                        headers.insert(name, value);
                    }
                }
                "/e2b/sandbox".to_string()
            }
            _ => return req,
        },
    };
    let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
    if let Ok(uri) = format!("{prefix}{path_and_query}").parse::<Uri>() {
        *req.uri_mut() = uri;
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(host: &str, path: &str) -> (String, Option<String>, Option<String>) {
        let req = Request::builder().uri(path).header("host", host).body(axum::body::Body::empty());
        let req = route_by_host("sbx.example.com", req.unwrap_or_default());
        let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).map(String::from);
        (req.uri().to_string(), header("e2b-sandbox-id"), header("e2b-sandbox-port"))
    }

    #[test]
    fn hosts_of_the_domain_route_to_the_sandbox_or_the_api() {
        assert_eq!(
            routed("49999-ses_abc.sbx.example.com", "/execute"),
            ("/e2b/sandbox/execute".into(), Some("ses_abc".into()), Some("49999".into()))
        );
        assert_eq!(routed("49983-ses_abc.SBX.example.com:443", "/files?path=a").0, "/e2b/sandbox/files?path=a");
        assert_eq!(routed("api.sbx.example.com", "/v2/sandboxes").0, "/e2b/v2/sandboxes");
        assert_eq!(routed("127.0.0.1:8080", "/v1/sessions").0, "/v1/sessions", "other hosts pass");
        assert_eq!(routed("evil.com", "/x").0, "/x");
        assert_eq!(routed("a.b.sbx.example.com", "/x").0, "/x", "one label only");
    }
}
