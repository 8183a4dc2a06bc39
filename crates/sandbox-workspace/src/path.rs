//! Paths clients give for files in a workspace: relative, normalized, and free of anything
//! that could mean something else to the filesystem, a shell or a reader.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use unicode_normalization::is_nfc;

use crate::WorkspaceError;

/// Longest path, and longest single name, in bytes (Linux's PATH_MAX and NAME_MAX).
pub const MAX_PATH_BYTES: usize = 4096;
pub const MAX_NAME_BYTES: usize = 255;

/// A validated path relative to a workspace's root; empty means the root itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelPath(String);

impl RelPath {
    /// The root (for listings and archives of the whole workspace).
    pub fn root() -> RelPath {
        RelPath(String::new())
    }

    /// A path to a file or directory: `a/b.txt`. One trailing `/` is allowed.
    pub fn parse(s: &str) -> Result<RelPath, WorkspaceError> {
        let p = Self::parse_or_root(s)?;
        if p.is_root() {
            return Err(invalid(s, "it names the workspace itself, not something in it"));
        }
        Ok(p)
    }

    /// Like [`RelPath::parse`], but `""`, `"."` and `"/"` mean the root.
    pub fn parse_or_root(s: &str) -> Result<RelPath, WorkspaceError> {
        if s.is_empty() || s == "." || s == "/" {
            return Ok(RelPath::root());
        }
        if s.len() > MAX_PATH_BYTES {
            return Err(invalid(s, "longer than 4096 bytes"));
        }
        if s.starts_with('/') {
            return Err(invalid(s, "absolute; give a path relative to /workspace"));
        }
        let trimmed = s.strip_suffix('/').unwrap_or(s);
        for name in trimmed.split('/') {
            check_name(s, name)?;
        }
        Ok(RelPath(trimmed.to_string()))
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_path(&self) -> &Path {
        Path::new(&self.0)
    }

    /// The directory it is in and its last name (`None` for the root).
    pub fn split_last(&self) -> Option<(RelPath, &OsStr)> {
        match self.0.rsplit_once('/') {
            Some((dir, name)) => Some((RelPath(dir.to_string()), OsStr::new(name))),
            None if self.is_root() => None,
            None => Some((RelPath::root(), OsStr::new(&self.0))),
        }
    }

    /// `self/name` (for walking a tree; `name` comes from the filesystem).
    pub fn join(&self, name: &str) -> RelPath {
        if self.is_root() {
            RelPath(name.to_string())
        } else {
            RelPath(format!("{}/{name}", self.0))
        }
    }

    pub fn to_path_buf(&self) -> PathBuf {
        PathBuf::from(&self.0)
    }

    /// Whether `self` is `other` or inside it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        other.is_root() || self.0 == other.0 || self.0.starts_with(&format!("{}/", other.0))
    }
}

impl std::fmt::Display for RelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_root() { "/" } else { &self.0 })
    }
}

fn invalid(path: &str, why: &str) -> WorkspaceError {
    let shown: String = path.chars().take(200).collect();
    WorkspaceError::InvalidPath { path: shown, why: why.to_string() }
}

/// Characters that make a name mean something other than what it shows: controls (C0, DEL,
/// C1), bidirectional overrides and isolates (which reorder how a name reads, as in
/// `invoice\u{202E}fdp.exe`), zero-width characters and the byte-order mark.
fn is_deceptive(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{061C}' | '\u{FEFF}')
}

fn check_name(path: &str, name: &str) -> Result<(), WorkspaceError> {
    match name {
        "" => return Err(invalid(path, "empty name (a doubled or leading '/')")),
        "." | ".." => return Err(invalid(path, "'.' and '..' are not allowed")),
        _ => {}
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(invalid(path, "a name longer than 255 bytes"));
    }
    if name.contains('\0') {
        return Err(invalid(path, "contains a NUL byte"));
    }
    if name.chars().any(is_deceptive) {
        return Err(invalid(path, "contains control, bidirectional or invisible characters"));
    }
    // What arrives here was percent-decoded once already: an encoded '.', '/', '\' or NUL left
    // in it is a second layer of encoding, aimed at something that decodes twice.
    let lower = name.to_ascii_lowercase();
    if ["%2e", "%2f", "%5c", "%00"].iter().any(|e| lower.contains(e)) {
        return Err(invalid(path, "contains a percent-encoded '.', '/', '\\' or NUL"));
    }
    if !is_nfc(name) {
        return Err(invalid(path, "not in Unicode normal form C (the same name could be spelled two ways)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_any_script_pass() {
        for ok in
            ["销售数据.xlsx", "a b/c d.txt", "émoji 📊.png", "données/été.csv", "dir/", ".hidden", "..dots", "a\\b"]
        {
            assert!(RelPath::parse(ok).is_ok(), "{ok:?} must be accepted");
        }
        assert_eq!(RelPath::parse("dir/").map(|p| p.as_str().to_string()).ok().as_deref(), Some("dir"));
    }

    #[test]
    fn tricks_are_refused() {
        let long_name = "x".repeat(256);
        let long_path = vec!["d"; 2100].join("/");
        for bad in [
            "../etc/passwd",
            "a/../../b",
            "./a",
            "/etc/passwd",
            "a//b",
            "a/\0b",
            "%2e%2e/x",
            "a/%2F/b",
            "invoice\u{202E}fdp.exe",
            "zero\u{200B}width",
            "tab\there",
            "e\u{0301}te", // 'é' spelled as e + combining accent: not NFC
            long_name.as_str(),
            long_path.as_str(),
        ] {
            assert!(RelPath::parse(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(RelPath::parse("").is_err() && RelPath::parse(".").is_err());
        assert!(RelPath::parse_or_root(".").is_ok_and(|p| p.is_root()));
    }

    #[test]
    fn split_and_join() {
        let p = RelPath::parse("a/b/c.txt").expect("valid");
        let (dir, name) = p.split_last().expect("not root");
        assert_eq!((dir.as_str(), name), ("a/b", OsStr::new("c.txt")));
        assert_eq!(RelPath::parse("top").expect("valid").split_last().map(|(d, _)| d.is_root()), Some(true));
        assert_eq!(RelPath::root().join("x").join("y").as_str(), "x/y");
        assert!(p.starts_with(&RelPath::parse("a/b").expect("valid")));
        assert!(!p.starts_with(&RelPath::parse("a/bb").expect("valid")));
    }
}
