//! Does a file's content match its extension? For upload allowlists: a template that accepts
//! `.xlsx` and `.csv` should not take an executable renamed `data.csv`.

/// The extension of `name` (lower case, without the dot), if it has one.
pub fn extension(name: &str) -> Option<String> {
    let base = name.rsplit('/').next().unwrap_or(name);
    let (stem, ext) = base.rsplit_once('.')?;
    (!stem.is_empty() && !ext.is_empty()).then(|| ext.to_ascii_lowercase())
}

/// How many leading bytes [`content_matches`] looks at.
pub const SNIFF_BYTES: usize = 8192;

fn is_text(head: &[u8]) -> bool {
    // UTF-8 (a multi-byte character may be cut at the end of the sample) without NUL bytes.
    let valid = match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
    };
    valid && !head.contains(&0)
}

/// Whether `head` (the first [`SNIFF_BYTES`] of the file, or all of it) is plausibly a file
/// of type `ext`. Extensions this does not know pass on the name alone.
pub fn content_matches(ext: &str, head: &[u8]) -> bool {
    let zip = head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06");
    match ext {
        "xlsx" | "xlsm" | "docx" | "pptx" | "zip" => zip,
        "xls" | "doc" | "ppt" => head.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]),
        "parquet" => head.starts_with(b"PAR1"),
        "png" => head.starts_with(b"\x89PNG\r\n\x1a\n"),
        "jpg" | "jpeg" => head.starts_with(&[0xFF, 0xD8, 0xFF]),
        "gif" => head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a"),
        "pdf" => head.starts_with(b"%PDF-"),
        "gz" | "tgz" => head.starts_with(&[0x1F, 0x8B]),
        "json" => is_text(head) && matches!(head.iter().find(|b| !b.is_ascii_whitespace()), Some(b'{' | b'[') | None),
        "csv" | "tsv" | "txt" | "md" | "py" | "js" | "sql" | "xml" | "html" | "yaml" | "yml" => is_text(head),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions() {
        assert_eq!(extension("dir/Sales.XLSX").as_deref(), Some("xlsx"));
        assert_eq!(extension("archive.tar.gz").as_deref(), Some("gz"));
        assert_eq!(extension(".bashrc"), None);
        assert_eq!(extension("README"), None);
        assert_eq!(extension("a.b/c"), None);
    }

    #[test]
    fn contents_are_checked_against_extensions() {
        assert!(content_matches("xlsx", b"PK\x03\x04\x14\x00"));
        assert!(!content_matches("xlsx", b"\x7fELF\x02\x01"));
        assert!(content_matches("csv", "région,montant\n华东,12\n".as_bytes()));
        assert!(!content_matches("csv", b"\x7fELF\x02\x01\x01\x00\x00"));
        assert!(!content_matches("csv", b"MZ\x90\x00\x03\x00\x00\x00"), "NUL bytes are not text");
        assert!(content_matches("json", b"  {\"a\": 1}"));
        assert!(!content_matches("json", b"a,b,c"));
        assert!(content_matches("parquet", b"PAR1\x15\x04"));
        assert!(content_matches("txt", "cut in the middle: \u{00e9}".as_bytes().split_at(20).0));
        assert!(content_matches("weird", b"\x00\x01"), "unknown types pass on the name");
    }
}
