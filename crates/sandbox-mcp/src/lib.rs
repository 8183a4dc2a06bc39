//! The MCP door: tools an agent calls to run code and handle files in sandboxes, on the
//! official Rust MCP SDK (`rmcp`). The tools are written once over a [`Backend`]: sandboxd
//! serves them at `/mcp` (Streamable HTTP) over its service layer, and `sbx mcp` serves them
//! over stdio against a running sandboxd's REST API.

pub mod backend;
pub mod rest;
pub mod tools;

pub use backend::{Backend, BackendError};
pub use rest::RestBackend;
pub use tools::SandboxTools;
