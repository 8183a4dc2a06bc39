//! Forwarding between replicas: a request for a session whose sandbox another replica runs is
//! sent there whole, and its answer sent back, both bodies streamed (an SSE stream, a 1 GiB
//! upload or download pass through without being held). The owner trusts the caller this
//! replica found, because the request shows the secret the replicas share
//! ([`SECRET_HEADER`]); a request that shows it is never forwarded again.

use std::sync::{Arc, LazyLock};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName};
use axum::response::Response;
use futures_util::TryStreamExt;
use sandbox_http::ApiError;
use sandbox_service::access::auth::Caller;
use sandbox_service::Service;

/// The replicas' shared secret, on a request one forwards to another.
pub const SECRET_HEADER: &str = "x-sandboxd-replica-secret";
/// The caller the forwarding replica found (`Caller::to_forwarded`).
pub const CALLER_HEADER: &str = "x-sandboxd-caller";

/// One client for every forwarded request: connections to the other replicas are kept.
/// No proxy from the environment, no redirects, no overall timeout (an execution or a
/// download may take long; the owner's own bounds apply).
static CLIENT: LazyLock<reqwest::Client> = LazyLock::new(|| {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap_or_default()
});

/// The session a request path names, for the routes its sandbox's replica must serve: the
/// REST API's and the E2B control API's (the E2B sandbox routes name it in a header; see
/// [`e2b_sandbox_to_owner`]).
pub fn session_of(path: &str) -> Option<&str> {
    let rest = ["/v1/sessions/", "/e2b/sandboxes/", "/e2b/v2/sandboxes/"].iter().find_map(|p| path.strip_prefix(p))?;
    rest.split('/').next().filter(|id| !id.is_empty())
}

/// In front of the E2B sandbox routes (envd, the code interpreter), which name their session
/// in `E2b-Sandbox-Id` and check its access token themselves: a request for a session another
/// replica runs goes there, where its code interpreter contexts are too. The owner checks the
/// token; nothing here vouches for the caller.
pub async fn e2b_sandbox_to_owner(
    axum::extract::State(state): axum::extract::State<Arc<Service>>,
    req: Request,
    next: axum::middleware::Next,
) -> Result<Response, ApiError> {
    let headers = req.headers();
    let forwarded = headers.get(SECRET_HEADER).and_then(|v| v.to_str().ok());
    let from_a_replica = forwarded.is_some_and(|secret| state.is_replica_secret(secret));
    let session = headers.get("e2b-sandbox-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    if let (false, Some(id)) = (from_a_replica, session) {
        if let Some(owner) = state.owner_elsewhere(&Caller::Open, &id).await? {
            return to_owner(&state, &owner, &Caller::Open, req).await;
        }
    }
    Ok(next.run(req).await)
}

/// Headers that belong to one connection, not to the request, and what proves who calls.
fn passes(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "authorization"
            | "x-api-key"
            | SECRET_HEADER
            | CALLER_HEADER
    )
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from.iter().filter(|(name, _)| passes(name)) {
        to.append(name.clone(), value.clone());
    }
}

/// Sends `req` of `caller` to the replica at `address` and answers with what it answers.
pub async fn to_owner(
    state: &Arc<Service>,
    address: &str,
    caller: &Caller,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    // Inside a nested router the path has lost its prefix; the owner needs it whole.
    let uri = parts.extensions.get::<axum::extract::OriginalUri>().map_or(&parts.uri, |o| &o.0);
    let target =
        format!("{}{}", address.trim_end_matches('/'), uri.path_and_query().map_or(uri.path(), |p| p.as_str()));
    let mut headers = HeaderMap::new();
    copy_headers(&parts.headers, &mut headers);
    let secret = state.replica_secret().parse().map_err(|_| ApiError::Internal("the replica secret".into()))?;
    headers.insert(SECRET_HEADER, secret);
    let named = caller.to_forwarded().parse().map_err(|_| ApiError::Internal("the caller's name".into()))?;
    headers.insert(CALLER_HEADER, named);
    let sent = CLIENT
        .request(parts.method, &target)
        .headers(headers)
        .body(reqwest::Body::wrap_stream(body.into_data_stream()))
        .send()
        .await;
    let answer = sent.map_err(|e| {
        ApiError::SandboxFailed(format!(
            "the replica at {address} that runs this session did not answer ({e}); try again"
        ))
    })?;
    let mut response = Response::builder().status(answer.status());
    if let Some(headers) = response.headers_mut() {
        copy_headers(answer.headers(), headers);
    }
    let stream = answer.bytes_stream().map_err(std::io::Error::other);
    response.body(Body::from_stream(stream)).map_err(|e| ApiError::Internal(format!("forwarded answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_routes_name_their_session() {
        assert_eq!(session_of("/v1/sessions/ses_1/executions"), Some("ses_1"));
        assert_eq!(session_of("/v1/sessions/ses_1"), Some("ses_1"));
        assert_eq!(session_of("/v1/sessions/ses_1/files/a/b.txt"), Some("ses_1"));
        assert_eq!(session_of("/v1/sessions"), None);
        assert_eq!(session_of("/v1/sessions/"), None);
        assert_eq!(session_of("/v1/templates/x"), None);
        assert_eq!(session_of("/e2b/sandboxes/ses_2/timeout"), Some("ses_2"));
        assert_eq!(session_of("/e2b/v2/sandboxes/ses_2/connect"), Some("ses_2"));
        assert_eq!(session_of("/e2b/sandboxes"), None);
    }

    #[test]
    fn what_proves_the_caller_never_passes_on() {
        let mut from = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer k"),
            ("x-api-key", "k"),
            (SECRET_HEADER, "s"),
            (CALLER_HEADER, "open"),
            ("connection", "keep-alive"),
            ("accept", "text/event-stream"),
            ("content-length", "5"),
        ] {
            from.insert(HeaderName::from_static(k), v.parse().expect("value"));
        }
        let mut to = HeaderMap::new();
        copy_headers(&from, &mut to);
        let names: Vec<&str> = to.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["accept", "content-length"]);
    }
}
