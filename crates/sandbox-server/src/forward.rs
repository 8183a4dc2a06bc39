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

/// The session a request path names, for the routes its sandbox's replica must serve.
pub fn session_of(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/sessions/")?.split('/').next().filter(|id| !id.is_empty())
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
    let target = format!(
        "{}{}",
        address.trim_end_matches('/'),
        parts.uri.path_and_query().map_or(parts.uri.path(), |p| p.as_str())
    );
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
