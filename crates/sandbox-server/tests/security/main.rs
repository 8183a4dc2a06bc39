//! The hostile suite: each case is a piece of hostile code or a hostile request with its exact
//! expected outcome, and each ends by checking that the server still answers `/healthz` and
//! that a session the attack did not aim at still runs code (`TestServer::assert_healthy`).
//!
//! One module per thing attacked; `SECURITY.md` says what each layer stops.

mod code;
mod connections;
mod host;
mod kernel_surface;
mod outbound;
mod outputs;
mod requests;

pub(crate) use std::time::Duration;

pub(crate) use reqwest::Method;
pub(crate) use sandbox_api::{CreateExecution, Execution, Language, SessionStatus};
pub(crate) use sandbox_test_support::TestServer;

pub(crate) fn bash(code: &str) -> CreateExecution {
    CreateExecution::new(Language::Bash, code)
}

pub(crate) async fn submit(t: &TestServer, session: &str, req: &CreateExecution) -> anyhow::Result<(u16, String)> {
    let body = serde_json::to_vec(req)?;
    let (status, text) = t.client.raw(Method::POST, &format!("/v1/sessions/{session}/executions"), Some(body)).await?;
    Ok((status.as_u16(), text))
}

pub(crate) async fn create_raw(t: &TestServer, body: serde_json::Value) -> anyhow::Result<(u16, String)> {
    let (status, text) = t.client.raw(Method::POST, "/v1/sessions", Some(serde_json::to_vec(&body)?)).await?;
    Ok((status.as_u16(), text))
}
