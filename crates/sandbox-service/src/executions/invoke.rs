//! Lambda-style handlers: `func(event, context)` called in a session's kernel.
//!
//! An invocation is an ordinary execution (same queue, record, limits) of a generated cell.
//! The cell imports the handler's module from the workspace (reloading it, so edited files
//! count), calls it, and returns the value through IPython's JSON display hook, so it travels
//! as data, not as printed text. The handler and event reach the cell base64-encoded: nothing a
//! client sends is ever spliced into code.

use sandbox_api::{ErrorDetail, Execution, InvokeResult, Output};

use crate::error::ServiceError;

/// The MIME type the cell's return value arrives under, and its error name for non-JSON.
const RETURN_MIME: &str = "application/json";
const INVALID_RETURN: &str = "InvokeReturnError";

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks "module.func" and "path/file.py:func".
pub fn check_handler(handler: &str) -> Result<(), ServiceError> {
    let ok = match handler.rsplit_once(':') {
        Some((path, func)) => {
            is_identifier(func)
                && path.ends_with(".py")
                && !path.starts_with('/')
                && path.split('/').all(|part| !part.is_empty() && part != ".." && part != ".")
        }
        None => handler
            .rsplit_once('.')
            .is_some_and(|(module, func)| is_identifier(func) && module.split('.').all(is_identifier)),
    };
    if ok {
        Ok(())
    } else {
        Err(ServiceError::Invalid(format!("handler {handler:?} must be \"module.func\" or \"relative/path.py:func\"")))
    }
}

/// The cell that runs the handler.
pub fn cell(handler: &str, event: &serde_json::Value, session_id: &str, execution_id: &str) -> String {
    let spec = serde_json::json!({
        "handler": handler,
        "event": event,
        "session_id": session_id,
        "execution_id": execution_id,
    });
    let encoded = base64_encode(spec.to_string().as_bytes());
    format!(
        r#"def __sbx_invoke(encoded):
    import base64, importlib, importlib.util, json, os, sys, types
    spec = json.loads(base64.b64decode(encoded))
    handler = spec["handler"]
    if ":" in handler:
        path, func = handler.rsplit(":", 1)
        name = "sbx_handler_" + path[:-3].replace("/", "_").replace(".", "_")
        module_spec = importlib.util.spec_from_file_location(name, os.path.join(os.getcwd(), path))
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        name, func = handler.rsplit(".", 1)
        importlib.invalidate_caches()
        module = importlib.reload(sys.modules[name]) if name in sys.modules else importlib.import_module(name)
    context = types.SimpleNamespace(
        session_id=spec["session_id"], execution_id=spec["execution_id"], handler=handler
    )
    value = getattr(module, func)(spec["event"], context)

    class {INVALID_RETURN}(TypeError):
        pass

    try:
        text = json.dumps(value)
    except (TypeError, ValueError) as e:
        raise {INVALID_RETURN}(f"the handler returned a {{type(value).__name__}}, which is not JSON: {{e}}") from None

    class Return:
        def _repr_json_(self):
            return {{"value": json.loads(text)}}

        def __repr__(self):
            return "<return value>"

    return Return()
__sbx_invoke("{encoded}")"#
    )
}

/// Takes the return value out of the execution's outputs (it is not output the user made).
pub fn result(mut execution: Execution) -> InvokeResult {
    let mut return_value = None;
    execution.outputs.retain(|o| match o {
        Output::ExecuteResult { data, .. } if data.contains_key(RETURN_MIME) => {
            return_value = data.get(RETURN_MIME).and_then(|v| v.get("value")).cloned();
            false
        }
        _ => true,
    });
    let error = execution.outputs.iter().find_map(|o| match o {
        Output::Error { ename, evalue, .. } if ename == INVALID_RETURN => {
            Some(ErrorDetail { code: "invalid_return".into(), message: evalue.clone() })
        }
        _ => None,
    });
    InvokeResult { return_value, error, execution }
}

fn base64_encode(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handlers_are_checked() {
        for ok in ["app.handler", "pkg.sub.fn_1", "handlers.py:main", "sub/dir/h.py:run"] {
            assert!(check_handler(ok).is_ok(), "{ok}");
        }
        for bad in ["", "handler", "a.", ".b", "a.b-c", "/abs.py:f", "../up.py:f", "x.py:", "x.txt:f", "a;import os.f"]
        {
            assert!(check_handler(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"\xff\xfe"), "//4=");
    }
}
