//! The key check in front of every `/v1` route: the key comes as `Authorization: Bearer KEY`
//! or `X-API-Key: KEY` (the header the E2B SDK sends); who it is goes into the request's
//! extensions as a [`Caller`] for the handlers.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use sandbox_service::Service;

use sandbox_http::ApiError;

/// The key a request carries, if any.
fn token(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok())).map(str::trim)
}

pub async fn require_key(
    State(state): State<Arc<Service>>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = state.authenticate(token(req.headers())).await?;
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
