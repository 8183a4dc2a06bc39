//! Query-string parameters, as the HTTP handlers read them.

use std::collections::HashMap;

use sandbox_http::ApiError;

/// A request's query parameters.
pub fn params(raw: Option<String>) -> HashMap<String, String> {
    form_urlencoded::parse(raw.unwrap_or_default().as_bytes()).into_owned().collect()
}

/// A boolean query parameter: absent, `false` or `0` is false; `true` or `1` is true. A bare
/// or empty one is refused: it is no boolean, and the document says the parameter is one.
pub fn flag(params: &HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match params.get(name).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!("{name} must be true or false, not {other:?}"))),
    }
}

/// A listing's page: `limit` (1 to [`sandbox_service::Page::MAX`]) and `cursor`.
pub fn page(params: &HashMap<String, String>) -> Result<sandbox_service::Page, ApiError> {
    let max = sandbox_service::Page::MAX;
    let limit = match params.get("limit") {
        None => None,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Some(n),
            _ => return Err(ApiError::BadRequest(format!("limit must be a whole number from 1 to {max}, not {v:?}"))),
        },
    };
    Ok(sandbox_service::Page { limit, cursor: params.get("cursor").cloned() })
}
