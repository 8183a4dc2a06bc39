//! `GET /metrics`: the service's [`sandbox_service::metrics::Snapshot`] in the Prometheus text
//! format.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use sandbox_service::Service;

use sandbox_http::ApiError;

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Series of the database are the same on every replica and carry no replica label; series of
/// this process (its disk, pools, sweeps, syncs) carry `replica`, so that a query over all
/// replicas can tell them apart and sum them.
pub async fn metrics(State(state): State<Arc<Service>>) -> Result<impl IntoResponse, ApiError> {
    let m = state.metrics().await?;
    let replica = &state.replica().id;
    let mut out = String::new();
    family(&mut out, "sandboxd_replica_info", "gauge", "This replica: its id and the address other replicas reach.");
    let _ = writeln!(out, "sandboxd_replica_info{{replica=\"{replica}\",address=\"{}\"}} 1", state.replica().address);
    family(&mut out, "sandboxd_sessions", "gauge", "Sessions by status, in the database (every replica's).");
    for (s, n) in &m.sessions {
        let _ = writeln!(out, "sandboxd_sessions{{status=\"{}\"}} {n}", s.as_str());
    }
    family(&mut out, "sandboxd_executions", "gauge", "Stored executions by status, in the database (every replica's).");
    for (s, n) in &m.executions {
        let _ = writeln!(out, "sandboxd_executions{{status=\"{}\"}} {n}", s.as_str());
    }
    family(&mut out, "sandboxd_workspace_bytes", "gauge", "Bytes workspaces take (whole blocks on volumes).");
    let _ = writeln!(out, "sandboxd_workspace_bytes{{replica=\"{replica}\"}} {}", m.workspace_bytes);
    family(&mut out, "sandboxd_data_dir_free_bytes", "gauge", "Free space in the data dir.");
    let _ = writeln!(out, "sandboxd_data_dir_free_bytes{{replica=\"{replica}\"}} {}", m.data_dir_free_bytes);
    family(&mut out, "sandboxd_pooled_sandboxes", "gauge", "Started sandboxes waiting in a warm pool.");
    let _ = writeln!(out, "sandboxd_pooled_sandboxes{{pool=\"run\",replica=\"{replica}\"}} {}", m.pools.run);
    for (template, n) in &m.pools.templates {
        let _ = writeln!(
            out,
            "sandboxd_pooled_sandboxes{{pool=\"session\",template=\"{template}\",replica=\"{replica}\"}} {n}"
        );
    }
    family(
        &mut out,
        "sandboxd_sweep_actions_total",
        "counter",
        "Sessions stopped, workspaces removed and stored executions pruned by the idle sweep.",
    );
    for (action, n) in m.sweeps {
        let _ = writeln!(out, "sandboxd_sweep_actions_total{{action=\"{action}\",replica=\"{replica}\"}} {n}");
    }
    family(
        &mut out,
        "sandboxd_template_environments_total",
        "counter",
        "Template environments this replica built, and fetched from storage (built on another).",
    );
    for (how, n) in m.template_environments {
        let _ = writeln!(out, "sandboxd_template_environments_total{{how=\"{how}\",replica=\"{replica}\"}} {n}");
    }
    if let Some(c) = &m.storage {
        family(&mut out, "sandboxd_storage_syncs_total", "counter", "Workspace syncs with the S3 bucket.");
        let _ = writeln!(out, "sandboxd_storage_syncs_total{{direction=\"push\",replica=\"{replica}\"}} {}", c.pushes);
        let _ = writeln!(out, "sandboxd_storage_syncs_total{{direction=\"pull\",replica=\"{replica}\"}} {}", c.pulls);
        family(&mut out, "sandboxd_storage_sync_failures_total", "counter", "Workspace syncs that failed.");
        let _ = writeln!(out, "sandboxd_storage_sync_failures_total{{replica=\"{replica}\"}} {}", c.failures);
        family(&mut out, "sandboxd_storage_bytes_total", "counter", "Bytes moved by workspace syncs.");
        let _ = writeln!(out, "sandboxd_storage_bytes_total{{direction=\"up\",replica=\"{replica}\"}} {}", c.bytes_up);
        let _ =
            writeln!(out, "sandboxd_storage_bytes_total{{direction=\"down\",replica=\"{replica}\"}} {}", c.bytes_down);
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out))
}
