//! The objects the Kubernetes runtime sends are valid, field for field, for the oldest and the
//! newest Kubernetes it supports: checked offline against the API's own JSON schemas (PyPI's
//! kubernetes-validate, `tests/kubernetes/validate.py`), strictly (an unknown field fails).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use sandbox_runtime::kubernetes::spec::{self, Owner, Seccomp, Settings, WorkspaceVolume};
use sandbox_runtime::ResourceLimits;

/// The versions the runtime claims: k8s-openapi's `v1_33` is what it is built against.
const VERSIONS: [&str; 2] = ["1.33", "1.37"];

fn settings(second_layer: bool) -> Settings {
    Settings {
        image: "registry.example/sandbox:1".into(),
        replica: "replica-a".into(),
        runtime_class: second_layer.then(|| "gvisor".into()),
        node_selector: BTreeMap::from([("sandbox-platform.org/pool".into(), "sandboxes".into())]),
        tolerations: vec![Toleration {
            key: Some("sandboxes".into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }],
        seccomp: match second_layer {
            true => Seccomp::Localhost("sandbox-platform/seccomp.json".into()),
            false => Seccomp::RuntimeDefault,
        },
        second_layer,
        workspace: match second_layer {
            true => WorkspaceVolume::Claim { claim: "workspaces".into() },
            false => WorkspaceVolume::Scratch { size_bytes: 1 << 30 },
        },
        ..Settings::default()
    }
}

#[test]
fn every_object_validates_against_the_schemas_of_the_versions_supported() -> anyhow::Result<()> {
    let owner = Owner { sandbox: "ses_0190ab".into(), template: Some("default".into()), tenant: Some("acme".into()) };
    let limits = ResourceLimits { memory_bytes: 512 << 20, pids: 128, cpus: 1.0 };
    // k8s-openapi writes each object's `apiVersion` and `kind`, as the API takes it.
    let objects = vec![
        serde_json::to_value(spec::sandbox_pod(&settings(false), &owner, "sbx-ses-0190ab-1a2b3c", &limits, None))?,
        serde_json::to_value(spec::sandbox_pod(
            &settings(true),
            &owner,
            "sbx-ses-0190ab-4d5e6f",
            &limits,
            Some("acme/data:1"),
        ))?,
        serde_json::to_value(spec::token_secret(&settings(false), &owner, "sbx-ses-0190ab-1a2b3c", "s3cret", None))?,
        serde_json::to_value(spec::sandbox_network_policy("sandboxes", "platform"))?,
    ];
    let file = tempfile::NamedTempFile::new()?;
    serde_json::to_writer(&file, &objects)?;
    let path = file.path().to_string_lossy().into_owned();
    let mut args = vec![path.as_str()];
    args.extend(VERSIONS);
    sandbox_test_support::run_check_script("tests/kubernetes/validate.py", &args, &[])
}

/// The Helm chart (`deploy/helm/sandbox-platform`) lints and renders offline with Helm's own
/// engine, validates for the same versions, and ships the runtime's NetworkPolicy and the
/// Docker runtime's seccomp profile (`tests/kubernetes/chart.py`).
#[test]
fn the_chart_lints_renders_validates_and_matches_the_runtime() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let policy = tempfile::NamedTempFile::new()?;
    // The chart's release namespace in the check is "platform".
    serde_json::to_writer(&policy, &spec::sandbox_network_policy("sandboxes", "platform"))?;
    let chart = root.join("deploy/helm/sandbox-platform");
    let seccomp = root.join("crates/sandbox-runtime/src/docker/seccomp.json");
    let (chart, policy, seccomp) = (
        chart.to_string_lossy().into_owned(),
        policy.path().to_string_lossy().into_owned(),
        seccomp.to_string_lossy().into_owned(),
    );
    let mut args = vec![chart.as_str(), policy.as_str(), seccomp.as_str()];
    args.extend(VERSIONS);
    sandbox_test_support::run_check_script("tests/kubernetes/chart.py", &args, &[])
}
