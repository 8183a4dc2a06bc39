//! `sbx mcp`: the MCP tools over stdio, for desktop clients (Claude Desktop, Claude Code,
//! agent frameworks) that start an MCP server as a process. The tools are sandboxd's own
//! (`sandbox-mcp`); here they reach a running sandboxd through its REST API
//! (`sandbox_mcp::RestBackend`), with the key `sbx` was given. Calls without a session id
//! share one session per process.

use std::sync::Arc;

use rmcp::ServiceExt;
use sandbox_client::Client;
use sandbox_mcp::{RestBackend, SandboxTools};

/// Serves the tools on stdin/stdout until the client closes them.
pub async fn run(client: Client) -> anyhow::Result<i32> {
    let tools = SandboxTools::with_default_session(Arc::new(RestBackend(client)));
    let server = tools.serve(rmcp::transport::stdio()).await?;
    server.waiting().await?;
    Ok(0)
}
