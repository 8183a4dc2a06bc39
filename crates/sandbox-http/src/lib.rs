//! What every HTTP door shares (the REST API in `sandbox-server`, the E2B-compatible API in
//! `sandbox-e2b`, and MCP through the REST door's backend): [`ApiError`], the one place where
//! a [`sandbox_service::ServiceError`] becomes an HTTP status and an error code. A door that
//! speaks another dialect (E2B's bodies, Connect-RPC's codes) reshapes this answer; it never
//! maps service errors a second time.

pub mod error;

pub use error::ApiError;
