//! The OpenAPI document, as the server serves it (`/openapi.json`, `/openapi.yaml`, `/docs`).
//!
//! The handlers' annotations give each operation's success answers and bodies. What they
//! cannot say, or would say 27 times over, is added here in one place, from one table each:
//! the path parameters with their rules, every error status an operation can answer (with the
//! error body), and the constraints the server enforces on request fields, with the bounds of
//! this server's configuration. A unit test holds the tables to the router: an operation
//! missing from them fails it.

use serde_json::{json, Value};
use utoipa::OpenApi;

use crate::config::Config;

/// What each error status means, for every operation that answers it.
const STATUSES: &[(u16, &str)] = &[
    (400, "Malformed: not JSON, a bad query parameter, or a path that is not a safe relative path (`bad_request`)"),
    (
        401,
        "This server needs an API key (it has one in force), and the request has none, or one that is unknown or \
         revoked (`unauthorized`)",
    ),
    (
        403,
        "A key that sees the thing may not do this to it: a shared template, deleted by a tenant key; or a tenant \
         key on an operators' route (`forbidden`)",
    ),
    (404, "No such session, execution, template or file (`not_found`), or one of another tenant's"),
    (405, "Method not allowed here (`method_not_allowed`)"),
    (409, "The session is deleted or in the wrong state, the thing is in use or exists (`conflict`)"),
    (413, "The body, a file or a form part is larger than the server accepts (`payload_too_large`)"),
    (415, "A file type the session's template does not accept (`unsupported_media_type`)"),
    (416, "The range is outside the file (`range_not_satisfiable`)"),
    (422, "Well-formed but not acceptable: a field out of range, a wrong type, a refused name (`invalid`)"),
    (
        429,
        "A queue is full: the session's executions or sandbox starts (`rate_limited`, with `Retry-After`); or the \
         tenant holds as many running sessions or executions as its limit allows (`tenant_limit`, naming it)",
    ),
    (
        503,
        "Sandboxes cannot run now: not ready, the host at a bound, a sandbox that failed, or a kernel that did \
         not start (`not_ready`, `overloaded`, `sandbox_failed`, `kernel_unavailable`; `Retry-After` where \
         trying again helps)",
    ),
    (507, "The workspace quota, or the tenant's limit on its workspaces' bytes, would be exceeded (`insufficient_storage`)"),
];

/// A request with a JSON body can be malformed, too large, or of the wrong shape.
const JSON_BODY: &[u16] = &[400, 413, 422];

/// The error statuses of every operation, besides those of [`JSON_BODY`] for operations with a
/// JSON body (the third column).
const OPERATIONS: &[(&str, &str, bool, &[u16])] = &[
    ("get", "/healthz", false, &[]),
    ("get", "/readyz", false, &[]),
    ("post", "/v1/sessions", true, &[409, 429, 503, 507]),
    ("get", "/v1/sessions", false, &[400]),
    ("get", "/v1/sessions/{id}", false, &[404]),
    ("delete", "/v1/sessions/{id}", false, &[404]),
    ("post", "/v1/sessions/{id}/executions", true, &[404, 409, 429, 503]),
    ("get", "/v1/sessions/{id}/executions", false, &[400, 404]),
    ("get", "/v1/executions/{id}", false, &[404]),
    ("post", "/v1/run", true, &[429, 503]),
    ("post", "/v1/sessions/{id}/interrupt", false, &[404, 409, 503]),
    ("post", "/v1/sessions/{id}/restart", false, &[404, 409, 429, 503]),
    ("post", "/v1/sessions/{id}/resume", false, &[404, 409, 429, 503]),
    ("post", "/v1/sessions/{id}/stop", false, &[404, 409]),
    ("post", "/v1/sessions/{id}/invoke", true, &[404, 409, 429, 503]),
    ("post", "/v1/sessions/{id}/packages", true, &[404, 409, 429, 503]),
    ("get", "/v1/templates", false, &[400]),
    ("get", "/v1/templates/{name}", false, &[404]),
    ("post", "/v1/templates", true, &[409]),
    ("delete", "/v1/templates/{name}", false, &[403, 404, 409]),
    ("get", "/v1/replicas", false, &[403]),
    ("put", "/v1/sessions/{id}/files/{path}", false, &[400, 404, 409, 413, 415, 429, 503, 507]),
    ("post", "/v1/sessions/{id}/files", false, &[400, 404, 409, 413, 415, 422, 429, 503, 507]),
    ("get", "/v1/sessions/{id}/files/{path}", false, &[400, 404, 409, 416, 429, 503]),
    ("get", "/v1/sessions/{id}/files", false, &[400, 404, 409, 429, 503]),
    ("delete", "/v1/sessions/{id}/files/{path}", false, &[400, 404, 409, 429, 503]),
    ("post", "/v1/sessions/{id}/files/{path}:move", true, &[404, 405, 409, 429, 503]),
    ("get", "/v1/sessions/{id}/archive", false, &[400, 404, 409, 429, 503]),
];

/// A path parameter's schema and meaning, by its name and the path it is in.
fn path_parameter(name: &str, path: &str) -> Value {
    let (description, schema) = match name {
        "id" if path.starts_with("/v1/executions") => {
            ("An execution's id", json!({"type": "string", "minLength": 1, "maxLength": 128}))
        }
        "id" => ("A session's id (`ses_...`)", json!({"type": "string", "minLength": 1, "maxLength": 128})),
        "name" => ("A template's name", json!({"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$"})),
        _ => ("A path in the workspace", workspace_path(false)),
    };
    json!({"name": name, "in": "path", "required": true, "description": description, "schema": schema})
}

/// A path in the workspace; with `root`, also empty for the workspace itself. The pattern says
/// what a simple regular expression can: relative, names of 1 to 255 characters without `%`,
/// control, bidirectional or invisible characters. The rest is said in words, and a path that
/// breaks only that is refused with 400 (the fuzzing baseline lists it): no `.` or `..` names,
/// NFC, at most 255 bytes a name. (A pattern that said it all made schemathesis itself fail.)
fn workspace_path(root: bool) -> Value {
    let names = format!("[^/%{X}]{{1,255}}(?:/[^/%{X}]{{1,255}})*/?");
    let pattern = if root { format!("^(?:{names})?$") } else { format!("^{names}$") };
    let min = if root { 0 } else { 1 };
    json!({"type": "string", "minLength": min, "maxLength": sandbox_workspace::MAX_PATH_BYTES, "pattern": pattern,
           "description": "Relative, `/`-separated: no `.`, `..` or empty names, no control, bidirectional or \
                           invisible characters, NFC, names of at most 255 bytes"})
}

/// Characters no workspace path may hold, for a character class.
const X: &str = "\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200b-\\u200f\\u202a-\\u202e\\u2066-\\u2069\\ufeff";

/// Constraints on request fields, as JSON pointers into `components/schemas` and what to
/// merge there. Bounds that are settings come from `config`.
fn constraints(config: &Config) -> Vec<(&'static str, Value)> {
    let timeout = json!({"exclusiveMinimum": 0, "maximum": config.max_timeout_s});
    let seconds = json!({"minimum": 1, "maximum": sandbox_service::templates::MAX_SECONDS});
    let env = json!({"propertyNames": {"pattern": "^[^=\\u0000]+$"}, "additionalProperties": {"type": "string", "pattern": "^[^\\u0000]*$"}});
    let code = json!({"pattern": "^[^\\u0000]*$"});
    let package = json!({"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._\\-\\[\\],<>=!~*+ ]{0,199}$"});
    vec![
        ("/CreateExecution/properties/timeout_s", timeout.clone()),
        ("/RunRequest/properties/timeout_s", timeout.clone()),
        ("/CreateSession/properties/timeout_s", timeout.clone()),
        ("/InvokeRequest/properties/timeout_s", timeout.clone()),
        ("/CreateTemplate/properties/timeout_s", timeout),
        ("/CreateExecution/properties/code", code.clone()),
        ("/RunRequest/properties/code", code),
        ("/CreateExecution/properties/env", env.clone()),
        ("/RunRequest/properties/env", env.clone()),
        ("/CreateSession/properties/env", env.clone()),
        ("/CreateTemplate/properties/env", env),
        ("/CreateExecution/properties/execution_id", json!({"pattern": "^[A-Za-z0-9_.:-]{1,128}$"})),
        (
            "/CreateExecution/properties/callback_url",
            json!({"format": "uri", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^\\s/?#]+"}),
        ),
        ("/MoveFile/properties/to", workspace_path(false)),
        ("/CreateTemplate/properties/rootfs", json!({"enum": ["host", null]})),
        (
            "/CreateTemplate/properties/allowed_uploads",
            json!({"items": {"type": "string", "pattern": "^\\.?[A-Za-z0-9]{1,16}$"}}),
        ),
        ("/CreateTemplate/properties/pool_size", json!({"maximum": 16})),
        // Any JSON value (or none): the handler gets it parsed, whatever it is.
        (
            "/InvokeRequest/properties/event",
            json!({"type": ["object", "array", "string", "number", "boolean", "null"]}),
        ),
        ("/CreateSession/properties/idle_timeout_s", seconds.clone()),
        ("/CreateSession/properties/max_lifetime_s", seconds.clone()),
        ("/CreateTemplate/properties/idle_timeout_s", seconds.clone()),
        ("/CreateTemplate/properties/max_lifetime_s", seconds),
        ("/CreateSession/properties/kernel", json!({"enum": ["python", "none", null]})),
        ("/CreateTemplate/properties/kernel", json!({"enum": ["python", "none", null]})),
        ("/CreateTemplate/properties/name", json!({"pattern": "^[a-z0-9][a-z0-9_-]{0,63}$"})),
        ("/LimitsRequest/properties/memory_mb", json!({"minimum": 32, "maximum": config.max_memory_mb})),
        ("/LimitsRequest/properties/pids", json!({"minimum": 8, "maximum": config.max_pids})),
        ("/LimitsRequest/properties/cpu", json!({"minimum": 0.01, "maximum": config.max_cpu})),
        ("/InstallPackages/properties/packages", json!({"minItems": 1, "maxItems": 64, "items": package.clone()})),
        ("/CreateTemplate/properties/packages", json!({"maxItems": 64, "items": package})),
        (
            "/InvokeRequest/properties/handler",
            json!({"pattern": "^([A-Za-z_][A-Za-z0-9_]*\\.)+[A-Za-z_][A-Za-z0-9_]*$|^([^/:]+/)*[^/:]+\\.py:[A-Za-z_][A-Za-z0-9_]*$"}),
        ),
    ]
}

/// Merges `extra`'s keys into the object at `pointer` (if there is one: a schema that moved
/// is caught by the unit test, not by a panic).
fn merge(doc: &mut Value, pointer: &str, extra: &Value) -> bool {
    let (Some(target), Some(extra)) = (doc.pointer_mut(pointer), extra.as_object()) else { return false };
    let Some(target) = target.as_object_mut() else { return false };
    for (k, v) in extra {
        target.insert(k.clone(), v.clone());
    }
    true
}

/// The whole document for a server with `config`.
pub fn document(config: &Config) -> Value {
    let mut doc = serde_json::to_value(crate::ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    let error_body = json!({"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}});
    for (method, path, json_body, errors) in OPERATIONS {
        let Some(op) = doc.pointer_mut(&format!("/paths/{}/{method}", path.replace('~', "~0").replace('/', "~1")))
        else {
            continue;
        };
        let names: Vec<&str> = path.split('{').skip(1).filter_map(|p| p.split('}').next()).collect();
        let declared: Vec<String> = op["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter().filter(|p| p["in"] == "path").filter_map(|p| p["name"].as_str().map(String::from)).collect()
            })
            .unwrap_or_default();
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let mut params: Vec<Value> = params.into_iter().filter(|p| p["in"] != "path").collect();
        for name in names {
            let mut p = path_parameter(name, path);
            if declared.iter().any(|d| d == name) {
                p["description"] = json!(p["description"]);
            }
            params.insert(0, p);
        }
        for p in params.iter_mut().filter(|p| p["in"] == "query" && p["name"] == "path") {
            p["schema"] = workspace_path(true);
        }
        params.sort_by_key(|p| (p["in"] != "path", p["in"].as_str().map(String::from)));
        op["parameters"] = Value::Array(params);
        // The API needs a key once one is in force; without, it is open (the empty requirement).
        let keyed: &[u16] = if path.starts_with("/v1/") { &[401] } else { &[] };
        if !keyed.is_empty() {
            op["security"] = json!([{}, {"bearer": []}, {"api_key": []}]);
        }
        let all = errors.iter().chain(keyed).chain(if *json_body { JSON_BODY } else { &[] });
        for status in all {
            let key = status.to_string();
            let description = STATUSES.iter().find(|(s, _)| s == status).map_or("", |(_, d)| d);
            if op["responses"][&key].is_null() {
                op["responses"][&key] = json!({"description": description, "content": error_body});
            }
        }
    }
    // An empty body is an empty file.
    if let Some(body) = doc.pointer_mut("/paths/~1v1~1sessions~1{id}~1files~1{path}/put/requestBody") {
        body["required"] = json!(false);
    }
    // A form: file parts (any name, with a file name) and an optional `path` field first.
    if let Some(body) =
        doc.pointer_mut("/paths/~1v1~1sessions~1{id}~1files/post/requestBody/content/multipart~1form-data")
    {
        body["schema"] = json!({"type": "object", "required": ["file"], "properties": {
            "path": workspace_path(true),
            "file": {"type": "string", "format": "binary", "description": "A file; its file name is its path under `path`"},
        }});
    }
    for (pointer, extra) in constraints(config) {
        merge(&mut doc, &format!("/components/schemas{pointer}"), &extra);
    }
    doc["components"]["securitySchemes"] = json!({
        "bearer": {"type": "http", "scheme": "bearer", "description": "An API key (`sandboxd keys create`)"},
        "api_key": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "The same key, as the E2B SDK sends it"},
    });
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        document(&Config::default())
    }

    /// Every operation the document has is in the table, and the other way round.
    #[test]
    fn every_operation_has_its_errors_listed() {
        let doc = doc();
        let mut seen = Vec::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for method in item.as_object().into_iter().flatten().map(|(m, _)| m.as_str()) {
                seen.push((method.to_string(), path.clone()));
                assert!(
                    OPERATIONS.iter().any(|(m, p, ..)| *m == method && p == path),
                    "{method} {path} is not in OPERATIONS"
                );
            }
        }
        for (m, p, ..) in OPERATIONS {
            assert!(seen.contains(&(m.to_string(), p.to_string())), "{m} {p} is in OPERATIONS but not served");
        }
    }

    /// Every API operation says it may need a key (401) and how to send one; health does not.
    #[test]
    fn the_api_declares_its_keys() {
        let doc = doc();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                let keyed = path.starts_with("/v1/");
                assert_eq!(op["responses"]["401"].is_object(), keyed, "{method} {path}");
                assert_eq!(op["security"].is_array(), keyed, "{method} {path}");
            }
        }
        assert_eq!(doc["components"]["securitySchemes"]["api_key"]["name"], "X-API-Key");
    }

    /// Every `{name}` in a path is a declared, required path parameter, once.
    #[test]
    fn every_path_parameter_is_declared() {
        let doc = doc();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            let names: Vec<&str> = path.split('{').skip(1).filter_map(|p| p.split('}').next()).collect();
            for (method, op) in item.as_object().into_iter().flatten() {
                let declared: Vec<&str> = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "path" && p["required"] == true)
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                let mut want = names.clone();
                want.sort();
                let mut got = declared.clone();
                got.sort();
                assert_eq!(got, want, "{method} {path}");
            }
        }
    }

    /// Each constraint lands on a field that exists, and settings show as bounds.
    #[test]
    fn constraints_land_on_real_fields_with_the_configured_bounds() {
        let plain = serde_json::to_value(crate::ApiDoc::openapi()).unwrap_or_default();
        for (pointer, _) in constraints(&Config::default()) {
            assert!(plain.pointer(&format!("/components/schemas{pointer}")).is_some(), "{pointer} is not a field");
        }
        let config = Config { max_timeout_s: 99.0, ..Config::default() };
        let doc = document(&config);
        assert_eq!(doc["components"]["schemas"]["CreateExecution"]["properties"]["timeout_s"]["maximum"], 99.0);
    }

    #[test]
    fn errors_carry_the_error_body() {
        let doc = doc();
        let op = &doc["paths"]["/v1/sessions/{id}/executions"]["post"];
        for status in ["400", "404", "409", "413", "422", "429", "503"] {
            assert_eq!(
                op["responses"][status]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{status}"
            );
        }
    }
}
