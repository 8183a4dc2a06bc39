//! The key check in front of every `/v1` route: the key comes as `Authorization: Bearer KEY`
//! or `X-API-Key: KEY` (the header the E2B SDK sends); who it is goes into the request's
//! extensions as a `Caller` for the handlers. A request for a session another replica runs
//! goes there from here.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use sandbox_service::Service;

use sandbox_http::ApiError;

use crate::forward;

/// The key a request carries, if any.
fn token(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok())).map(str::trim)
}

/// Finds the caller (by its key, or, on a request another replica forwarded, by that replica's
/// word and the replicas' secret), and sends a request for a session whose sandbox another
/// replica runs there (`forward.rs`).
pub async fn require_key(
    State(state): State<Arc<Service>>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let headers = req.headers();
    let forwarded = headers.get(forward::SECRET_HEADER).map(|v| v.to_str().unwrap_or_default().to_string());
    let caller = match forwarded {
        Some(secret) => {
            let named = headers.get(forward::CALLER_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
            state.forwarded_caller(&secret, named)?
        }
        None => {
            let caller = state.authenticate(token(headers)).await?;
            if let Some(id) = forward::session_of(req.uri().path()) {
                if let Some(owner) = state.owner_elsewhere(&caller, id).await? {
                    return forward::to_owner(&state, &owner, &caller, req).await;
                }
            }
            caller
        }
    };
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_comes_as_a_bearer_token_or_an_api_key_header() {
        let mut h = HeaderMap::new();
        assert_eq!(token(&h), None);
        h.insert("x-api-key", "sbx_a_b".parse().expect("header"));
        assert_eq!(token(&h), Some("sbx_a_b"));
        h.insert(axum::http::header::AUTHORIZATION, "Bearer sbx_c_d".parse().expect("header"));
        assert_eq!(token(&h), Some("sbx_c_d"), "Authorization wins");
        h.insert(axum::http::header::AUTHORIZATION, "Basic abc".parse().expect("header"));
        assert_eq!(token(&h), Some("sbx_a_b"));
    }
}
