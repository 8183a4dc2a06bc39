//! E2B's paths and ours. E2B code and SDK calls name files under the user's home,
//! `/home/user` (or relative to it); a session's files are its workspace, which code sees at
//! `/workspace`. Both names reach the workspace; nothing outside it is reachable this way.

use sandbox_workspace::RelPath;

use crate::error::E2bError;

/// Where E2B clients see the workspace.
pub const HOME: &str = "/home/user";
const WORKSPACE: &str = "/workspace";

/// The workspace path an E2B path names.
pub fn rel(path: &str) -> Result<RelPath, E2bError> {
    let inside = |root: &str| path.strip_prefix(root).filter(|rest| rest.is_empty() || rest.starts_with('/'));
    let relative = match path {
        p if !p.starts_with('/') => p.strip_prefix("~/").or_else(|| (p == "~").then_some("")).unwrap_or(p),
        _ => match inside(HOME).or_else(|| inside(WORKSPACE)) {
            Some(rest) => rest.trim_start_matches('/'),
            None => {
                return Err(E2bError::invalid(format!(
                    "{path}: only the workspace is reachable here ({HOME} or {WORKSPACE}, or a path relative to it)"
                )))
            }
        },
    };
    Ok(RelPath::parse_or_root(relative.trim_end_matches('/'))?)
}

/// How an E2B client sees workspace path `rel`.
pub fn shown(rel: &str) -> String {
    match rel {
        "" => HOME.to_string(),
        rel => format!("{HOME}/{rel}"),
    }
}

/// The path code in the sandbox uses for `rel`.
pub fn in_sandbox(rel: &RelPath) -> String {
    match rel.as_str() {
        "" => WORKSPACE.to_string(),
        rel => format!("{WORKSPACE}/{rel}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_workspace_and_relative_paths_reach_the_workspace() {
        let parsed = |p: &str| rel(p).map(|r| r.as_str().to_string()).ok();
        assert_eq!(parsed("/home/user/data/a.csv").as_deref(), Some("data/a.csv"));
        assert_eq!(parsed("/workspace/a.csv").as_deref(), Some("a.csv"));
        assert_eq!(parsed("a.csv").as_deref(), Some("a.csv"));
        assert_eq!(parsed("/home/user").as_deref(), Some(""));
        assert_eq!(parsed("/home/user/").as_deref(), Some(""));
        assert_eq!(parsed("~/x").as_deref(), Some("x"));
        assert!(rel("/etc/passwd").is_err());
        assert!(rel("/home/username/x").is_err());
        assert!(rel("../x").is_err());
        assert_eq!(shown("a/b"), "/home/user/a/b");
    }
}
