//! Execution callbacks: the finished execution is POSTed as JSON to the URL the client gave,
//! retried with backoff until the receiver answers 2xx; every attempt is stored, so clients
//! (and operators) can see what was delivered.

use std::time::Duration;

use chrono::Utc;
use sandbox_api::{CallbackAttempt, Execution};

use crate::error::ApiError;
use crate::AppState;

/// Waits before each attempt: at once, then backing off. Five attempts over ~7.5 s.
const BACKOFF_MS: [u64; 5] = [0, 500, 1000, 2000, 4000];
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts http(s) URLs only.
pub fn check_url(url: String) -> Result<String, ApiError> {
    match reqwest::Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(url),
        _ => Err(ApiError::Invalid(format!("callback_url must be an http(s) URL (got {url:?})"))),
    }
}

/// Delivers `execution` to `url`; runs in a task of its own.
pub async fn deliver(state: std::sync::Arc<AppState>, url: String, execution: Execution) {
    for delay in BACKOFF_MS {
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let sent = state.http.post(&url).json(&execution).timeout(ATTEMPT_TIMEOUT).send().await;
        let attempt = match sent {
            Ok(resp) => CallbackAttempt { at: Utc::now(), status: Some(resp.status().as_u16()), error: None },
            Err(e) => CallbackAttempt { at: Utc::now(), status: None, error: Some(e.to_string()) },
        };
        let delivered = attempt.status.is_some_and(|s| (200..300).contains(&s));
        if let Err(e) = state.store.add_callback_attempt(&execution.id, &attempt) {
            tracing::warn!(execution = %execution.id, error = %e, "cannot record a callback attempt");
        }
        if delivered {
            return;
        }
    }
    tracing::warn!(execution = %execution.id, %url, "callback not delivered after every attempt");
}
