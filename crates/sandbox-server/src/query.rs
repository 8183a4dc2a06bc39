//! Query-string parameters, as the HTTP handlers read them.

use std::collections::HashMap;

use crate::error::ApiError;

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
