//! The Kubernetes runtime as a client sees it (issue 20's benchmark), side by side with a
//! runtime on this machine, through `bench/runtimes.py`'s lean keep-alive client, calls
//! interleaved: pooled and cold session-ready times, a stateful and a one-shot `print(1)`, a
//! chart's PNG.
//!
//! - Without `--kubeconfig`: on the fake cluster of test-support, whose pods are containers of
//!   the sandbox image on this machine (bubblewrap, with the second layer inside), against the
//!   local runtime. The difference is what the runtime itself adds: API-server round trips and
//!   the watch, the pod's start, the TCP connection and the relay, the workspace's copy.
//! - With `--kubeconfig` (`scripts/e2e-kubernetes.sh --bench`): on that cluster, against the
//!   Docker runtime on this machine.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use sandbox_client::Client;

use crate::{field_of, start_sandboxd};

/// A real cluster to measure, from the flags.
pub struct RealCluster {
    pub kubeconfig: PathBuf,
    pub image: String,
    pub namespace: String,
    pub second_layer: String,
}

pub async fn run(sandboxd: &Path, clients: &Path, n: usize, real: Option<RealCluster>) -> anyhow::Result<()> {
    let data = tempfile::Builder::new().prefix("sandbox-bench-kubernetes-").tempdir_in("/tmp")?;
    let (kubernetes_env, anchor_name, anchor_env) = match &real {
        Some(r) => (
            vec![
                ("SANDBOXD_KUBERNETES_KUBECONFIG", r.kubeconfig.to_string_lossy().into_owned()),
                ("SANDBOXD_KUBERNETES_IMAGE", r.image.clone()),
                ("SANDBOXD_KUBERNETES_NAMESPACE", r.namespace.clone()),
                ("SANDBOXD_KUBERNETES_SECOND_LAYER", r.second_layer.clone()),
            ],
            "docker",
            vec![("SANDBOXD_RUNTIME", "docker".to_string())],
        ),
        None => {
            let executor = sandboxd.parent().context("sandboxd's dir")?.join("sandbox-executor");
            let fake = sandbox_test_support::kubernetes::FakeCluster::shared_running(Ok(executor));
            let kubeconfig = fake.kubeconfig_in(data.path())?;
            (
                vec![
                    ("SANDBOXD_KUBERNETES_KUBECONFIG", kubeconfig.to_string_lossy().into_owned()),
                    ("SANDBOXD_KUBERNETES_NAMESPACE", "bench".to_string()),
                    ("SANDBOXD_KUBERNETES_SECOND_LAYER", "on".to_string()),
                ],
                "local",
                Vec::new(),
            )
        }
    };
    let mut env: Vec<(&str, &str)> = vec![("SANDBOXD_RUNTIME", "kubernetes")];
    env.extend(kubernetes_env.iter().map(|(k, v)| (*k, v.as_str())));
    let kubernetes = start_sandboxd(sandboxd, &env)?;
    let anchor_env: Vec<(&str, &str)> = anchor_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let anchor = start_sandboxd(sandboxd, &anchor_env)?;
    for d in [&kubernetes, &anchor] {
        let (ok, r) = Client::new(&d.url).readiness().await?;
        anyhow::ensure!(ok.is_success(), "not ready: {}", r.sandbox.message);
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/runtimes.py");
    let out = Command::new(clients)
        .arg(script)
        .arg(format!("kubernetes={}", kubernetes.url))
        .arg(format!("{anchor_name}={}", anchor.url))
        .arg(n.to_string())
        .output()?;
    let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string();
    anyhow::ensure!(out.status.success(), "runtimes.py failed: {}", String::from_utf8_lossy(&out.stderr));
    drop((kubernetes, anchor));
    let cluster = if real.is_some() { "a real cluster" } else { "the fake cluster" };
    println!("kubernetes ({cluster}) vs {anchor_name} (lean keep-alive client, interleaved, n={n}): {line}");
    for what in ["ready_pool", "ready_cold", "stateless", "stateful", "png"] {
        let (Some(k), Some(a)) = (
            field_of(&line, &format!("{what}_kubernetes_p50_ms")),
            field_of(&line, &format!("{what}_{anchor_name}_p50_ms")),
        ) else {
            continue;
        };
        let (k99, a99) = (
            field_of(&line, &format!("{what}_kubernetes_p99_ms")).unwrap_or(f64::NAN),
            field_of(&line, &format!("{what}_{anchor_name}_p99_ms")).unwrap_or(f64::NAN),
        );
        println!(
            "{what}: kubernetes p50={k:.2}ms p99={k99:.2}ms | {anchor_name} p50={a:.2}ms p99={a99:.2}ms | adds {:.2} ms, ratio={:.3}",
            k - a,
            k / a
        );
    }
    Ok(())
}
