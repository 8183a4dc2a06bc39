//! A directory of a workspace as a `.tar.gz`, written as it is read (nothing is buffered whole).

use std::io::{Read, Write};

use crate::{Entry, Kind, RelPath, Workspace, WorkspaceError};

/// What an archive is written from: a workspace on this disk, or one reached through a
/// sandbox's executor.
pub trait Tree {
    /// The entries of `dir`, its whole tree with `recursive`, at most `limit`.
    fn list(&self, dir: &RelPath, recursive: bool, limit: usize) -> Result<Vec<Entry>, WorkspaceError>;
    /// Regular file `path`, open for reading, with what it is.
    fn open_file(&self, path: &RelPath) -> Result<(Box<dyn Read + Send>, Entry), WorkspaceError>;
}

impl Tree for Workspace {
    fn list(&self, dir: &RelPath, recursive: bool, limit: usize) -> Result<Vec<Entry>, WorkspaceError> {
        Workspace::list(self, dir, recursive, limit)
    }

    fn open_file(&self, path: &RelPath) -> Result<(Box<dyn Read + Send>, Entry), WorkspaceError> {
        let (file, entry) = Workspace::open_file(self, path)?;
        Ok((Box::new(file), entry))
    }
}

/// Writes `dir` (its files and directories; links and special files are left out, never
/// followed) as a gzip-compressed tar to `out`. Names in the archive are relative to `dir`.
pub fn write_tar_gz(ws: &dyn Tree, dir: &RelPath, out: impl Write) -> Result<(), WorkspaceError> {
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let entries = ws.list(dir, true, usize::MAX)?;
    let io = |e: std::io::Error| WorkspaceError::Io { op: "write archive", path: dir.to_string(), source: e };
    for entry in entries {
        let name = match entry.path.as_str().strip_prefix(dir.as_str()) {
            Some(rest) if !dir.is_root() => rest.trim_start_matches('/').to_string(),
            _ => entry.path.as_str().to_string(),
        };
        let mut header = tar::Header::new_gnu();
        header.set_mtime(entry.modified_at.timestamp().max(0) as u64);
        match entry.kind {
            Kind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                tar.append_data(&mut header, format!("{name}/"), std::io::empty()).map_err(io)?;
            }
            Kind::File => {
                // Opened again beneath the root: a file swapped for a link meanwhile is skipped.
                let Ok((file, now)) = ws.open_file(&entry.path) else { continue };
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(now.size);
                tar.append_data(&mut header, &name, file.take(now.size)).map_err(io)?;
            }
            Kind::Symlink | Kind::Other => {}
        }
    }
    tar.into_inner().and_then(|gz| gz.finish()).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_files_and_dirs_but_not_links() {
        let data = tempfile::tempdir().expect("tempdir");
        let root = data.path().join("ws");
        std::fs::create_dir_all(root.join("out/charts")).expect("mkdir");
        std::fs::write(root.join("out/report.md"), "# hi").expect("write");
        std::fs::write(root.join("out/charts/a.png"), [0x89, b'P', b'N', b'G']).expect("write");
        std::fs::write(root.join("elsewhere.txt"), "not in out").expect("write");
        std::os::unix::fs::symlink("/etc/passwd", root.join("out/passwd")).expect("symlink");
        let ws = Workspace::open(&root, None).expect("open");
        let mut bytes = Vec::new();
        write_tar_gz(&ws, &RelPath::parse("out").expect("valid"), &mut bytes).expect("archive");
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        let mut names: Vec<String> = archive
            .entries()
            .expect("entries")
            .map(|e| e.expect("entry").path().expect("path").to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["charts/", "charts/a.png", "report.md"]);
    }
}
