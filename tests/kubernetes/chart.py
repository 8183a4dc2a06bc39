"""Checks the Helm chart offline, with Helm's own engine (helm-python-sdk): it lints strictly,
renders with its defaults and with every option on, and every object it renders validates
strictly against the API's JSON schemas for each version given (but the ServiceMonitor, a
CRD the schemas do not hold). Then what must match the runtime does:

- the NetworkPolicy is the one the runtime builds (`NETWORK_POLICY`, a JSON file);
- the seccomp profile installed on nodes is the Docker runtime's (`SECCOMP`, a file);
- RBAC grants the runtime's verbs on pods and secrets, in the sandbox namespace alone;
- each replica advertises its own pod's address, and is probed on /healthz and /readyz.

Usage: chart.py CHART NETWORK_POLICY SECCOMP VERSION...
Prints "all checks passed" when every check holds.
"""

import json
import sys

import helm_python
import kubernetes_validate
import yaml

REQUIRED = {"database": {"url": "postgres://sandboxd:secret@db:5432/sandboxd"},
            "storage": {"url": "s3://sandboxes/ws", "endpoint": "http://minio:9000", "region": "us-east-1",
                        "accessKeyId": "key", "secretAccessKey": "secret"}}
EVERYTHING = {**REQUIRED,
              "sandboxes": {"secondLayer": True, "seccompProfile": {"install": True}, "runtimeClassName": "gvisor",
                            "nodeSelector": {"sandbox-platform.org/pool": "sandboxes"},
                            "tolerations": [{"key": "sandboxes", "operator": "Exists", "effect": "NoSchedule"}],
                            "workspaceClaim": "workspaces"},
              "serviceMonitor": {"enabled": True}, "imagePullSecrets": [{"name": "registry"}]}


def render(chart_path, values):
    chart = helm_python.Chart.load(chart_path)
    try:
        out = chart.render(values, name="sbx", namespace="platform", is_install=True)
    finally:
        chart.close()
    objects = []
    for path, text in sorted(out.items()):
        if not path.endswith(".yaml"):
            continue
        objects.extend(o for o in yaml.safe_load_all(text) if o)
    return objects


def find(objects, kind, name=None):
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert found, f"no {kind} {name or ''}"
    return found[0]


def env_of(deployment):
    return {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def main() -> int:
    chart_path, policy_path, seccomp_path, versions = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    report = helm_python.lint(chart_path, REQUIRED, strict=True, namespace="platform")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report.get("errors", [])
    if problems:
        print(f"helm lint: {problems}")
        return 1
    # A required value missing fails the render, saying which.
    try:
        render(chart_path, {})
        print("rendered without database.url")
        return 1
    except helm_python.HelmError as e:
        assert "database.url" in str(e), e

    failed = 0
    for label, values in (("defaults", REQUIRED), ("everything on", EVERYTHING)):
        objects = render(chart_path, values)
        for obj in objects:
            if obj["kind"] == "ServiceMonitor":
                continue
            for version in versions:
                try:
                    kubernetes_validate.validate(obj, version, strict=True)
                except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as e:
                    failed += 1
                    print(f"{label}: {obj['kind']}/{obj['metadata']['name']} is not valid for {version}: {e}")
    if failed:
        return 1

    objects = render(chart_path, EVERYTHING)
    with open(policy_path) as f:
        runtime_policy = json.load(f)
    chart_policy = find(objects, "NetworkPolicy")
    assert chart_policy["spec"] == runtime_policy["spec"], (chart_policy["spec"], runtime_policy["spec"])
    assert chart_policy["metadata"]["namespace"] == "sandboxes"

    with open(seccomp_path) as f:
        docker_profile = json.load(f)
    installed = json.loads(find(objects, "ConfigMap")["data"]["seccomp.json"])
    assert installed == docker_profile, "the chart's seccomp profile is not the Docker runtime's"
    daemon = find(objects, "DaemonSet")
    assert "sandbox-platform/seccomp.json" in daemon["spec"]["template"]["spec"]["initContainers"][0]["command"][2]

    role = find(objects, "Role")
    assert role["metadata"]["namespace"] == "sandboxes"
    rules = {r["resources"][0]: sorted(r["verbs"]) for r in role["rules"]}
    assert rules == {"pods": ["create", "delete", "get", "list", "watch"],
                     "secrets": ["create", "delete", "get", "patch"]}, rules
    binding = find(objects, "RoleBinding")
    assert binding["subjects"][0]["namespace"] == "platform"

    deployment = find(objects, "Deployment")
    env = env_of(deployment)
    assert env["SANDBOXD_ADVERTISE_URL"]["value"] == "http://$(POD_IP):8080"
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["SANDBOXD_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "database-url"
    assert env["SANDBOXD_KUBERNETES_SECOND_LAYER"]["value"] == "on"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "sandboxd", "the label the NetworkPolicy lets in"
    assert find(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    # Helm renders offline for a 1.35+ cluster, where `baseline` lets the second layer's pods
    # (a user namespace of their own) unmask /proc; an operator may name the level.
    namespace = find(objects, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"
    chosen = render(chart_path, {**EVERYTHING, "sandboxes": {**EVERYTHING["sandboxes"], "podSecurity": "privileged"}})
    assert find(chosen, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    old_cluster = helm_python.lint(chart_path, EVERYTHING, strict=True, namespace="platform", kube_version="v1.33.0")
    assert not [m for m in old_cluster["messages"] if m["severity"] >= 2] + old_cluster.get("errors", []), old_cluster
    defaults = render(chart_path, REQUIRED)
    assert find(defaults, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert not [o for o in defaults if o["kind"] in ("DaemonSet", "ServiceMonitor")], "off by default"

    print(f"chart lints, renders and validates for {', '.join(versions)}: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
