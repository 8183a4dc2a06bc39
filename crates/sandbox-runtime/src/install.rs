//! What package installations share on every runtime.

/// Room under `/tmp` for an installation (tmpfs, charged to its memory limit).
pub const TMP_BYTES: u64 = 1 << 30;
/// How much of pip's output an installation keeps.
pub const LOG_BYTES: usize = 8 << 10;

/// The last `max` bytes of `s`, cut at a line start where possible.
pub fn tail_of(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    let cut = &s[start..];
    cut.find('\n').map_or(cut, |i| &cut[i + 1..]).to_string()
}
