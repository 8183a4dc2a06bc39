//! A JSON body extractor whose rejections use the API's error shape: malformed JSON is 400,
//! well-formed JSON of the wrong shape (unknown field, bad enum value, wrong type) is 422, and
//! a body over the limit is 413.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use sandbox_http::ApiError;

pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let ApiBytes(bytes) = ApiBytes::from_request(req, state).await?;
        parse(&bytes).map(ApiJson)
    }
}

/// The body, whole, for a handler that must look at the route before parsing it; over the
/// limit is 413, in the API's error shape.
pub struct ApiBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state).await.map(ApiBytes).map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge("request body is larger than the server accepts".into())
            } else {
                ApiError::BadRequest(format!("cannot read the request body: {rejection}"))
            }
        })
    }
}

pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        Category::Data => ApiError::Invalid(format!("invalid request: {e}")),
        Category::Syntax | Category::Eof | Category::Io => ApiError::BadRequest(format!("malformed JSON: {e}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandbox_api::CreateExecution;

    #[test]
    fn syntax_is_400_and_shape_is_422() {
        let status = |b: &[u8]| parse::<CreateExecution>(b).err().map(|e| e.status_and_code().0);
        assert_eq!(status(b"{not json"), Some(StatusCode::BAD_REQUEST));
        assert_eq!(status(b""), Some(StatusCode::BAD_REQUEST));
        assert_eq!(status(br#"{"code": 1, "language": "python"}"#), Some(StatusCode::UNPROCESSABLE_ENTITY));
        assert_eq!(status(br#"{"code": "1", "language": "ruby"}"#), Some(StatusCode::UNPROCESSABLE_ENTITY));
        assert_eq!(status(br#"{"code": "1", "language": "python"}"#), None);
    }
}
