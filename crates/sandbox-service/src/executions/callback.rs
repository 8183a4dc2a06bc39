//! Execution callbacks: the finished execution is POSTed as JSON to the URL the client gave,
//! retried with backoff until the receiver answers 2xx; every attempt is stored, so clients
//! (and operators) can see what was delivered. Where a callback may go is the outbound
//! policy's call (`outbound.rs`): a refused one is recorded once and not tried again.

use std::time::Duration;

use chrono::Utc;
use sandbox_api::{CallbackAttempt, Execution};

use crate::access::outbound::{self, OutboundPolicy};
use crate::error::ServiceError;
use crate::Service;

/// Waits before each attempt: at once, then backing off. Five attempts over ~7.5 s.
const BACKOFF_MS: [u64; 5] = [0, 500, 1000, 2000, 4000];
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts http(s) URLs only, and refuses at once an address the policy refuses.
pub fn check_url(policy: &OutboundPolicy, url: String) -> Result<String, ServiceError> {
    let parsed = match reqwest::Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
        _ => return Err(ServiceError::Invalid(format!("callback_url must be an http(s) URL (got {url:?})"))),
    };
    policy.check_url(&parsed).map_err(|refused| ServiceError::Invalid(format!("callback_url: {refused}")))?;
    Ok(url)
}

/// Delivers `execution` to `url`; runs in a task of its own.
pub async fn deliver(state: std::sync::Arc<Service>, url: String, execution: Execution) {
    // Checked again here: the client never resolves an address written in the URL, and the
    // policy may have changed since the URL was accepted (a restart with other settings).
    if let Ok(parsed) = reqwest::Url::parse(&url) {
        if let Err(refused) = state.outbound.check_url(&parsed) {
            record(&state, &execution.id, None, Some(refused.to_string())).await;
            return;
        }
    }
    for delay in BACKOFF_MS {
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let sent = state.http.post(&url).json(&execution).timeout(ATTEMPT_TIMEOUT).send().await;
        match sent {
            Ok(resp) if resp.status().is_success() => {
                record(&state, &execution.id, Some(resp.status().as_u16()), None).await;
                return;
            }
            Ok(resp) => record(&state, &execution.id, Some(resp.status().as_u16()), None).await,
            Err(e) => {
                record(&state, &execution.id, None, Some(outbound::describe(&e))).await;
                if outbound::refusal(&e).is_some() {
                    return;
                }
            }
        }
    }
    tracing::warn!(execution = %execution.id, %url, "callback not delivered after every attempt");
}

async fn record(state: &Service, id: &str, status: Option<u16>, error: Option<String>) {
    let attempt = CallbackAttempt { at: Utc::now(), status, error };
    if let Err(e) = state.store.add_callback_attempt(id, &attempt).await {
        tracing::warn!(execution = %id, error = %e, "cannot record a callback attempt");
    }
}
