//! Where sandboxd keeps the directories of a runtime whose sandboxes share its disk (the local
//! runtime binds them; a container runtime on the same host would mount them the same way).
//! sandboxd makes them (`sandbox-service`'s `HostDirs`); the runtime only finds them by name.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::runtime::Dir;

#[derive(Debug, Clone, PartialEq)]
pub struct HostLayout {
    /// One directory per workspace, by name.
    pub workspaces: PathBuf,
    /// One directory per session with packages of its own, by session id.
    pub session_packages: PathBuf,
    /// One directory per template environment, by template name.
    pub templates: PathBuf,
    /// pip's cache, shared by every installation.
    pub pip_cache: PathBuf,
}

impl HostLayout {
    /// The host directory of `dir`.
    pub fn path(&self, dir: &Dir) -> PathBuf {
        match dir {
            Dir::Workspace(name) => self.workspaces.join(name),
            Dir::SessionPackages(name) => self.session_packages.join(name),
            Dir::Template(name) => self.templates.join(name),
        }
    }
}

/// The distributions installed in `dir`, as name and version (from their `*.dist-info`
/// directories, which is what pip writes).
pub fn installed(dir: &Path) -> BTreeSet<(String, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return BTreeSet::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            // The name part never contains '-' (pip writes it as '_'), so the first '-' splits.
            let (name, version) = name.strip_suffix(".dist-info")?.split_once('-')?;
            Some((name.to_string(), version.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_dir_has_a_place_of_its_own() {
        let layout = HostLayout {
            workspaces: "/d/workspaces".into(),
            session_packages: "/s/packages/sessions".into(),
            templates: "/s/templates".into(),
            pip_cache: "/s/packages/pip-cache".into(),
        };
        assert_eq!(layout.path(&Dir::Workspace("a".into())), Path::new("/d/workspaces/a"));
        assert_eq!(layout.path(&Dir::SessionPackages("a".into())), Path::new("/s/packages/sessions/a"));
        assert_eq!(layout.path(&Dir::Template("a".into())), Path::new("/s/templates/a"));
    }

    #[test]
    fn installed_reads_dist_info_directories() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        for d in ["six-1.16.0.dist-info", "typing_extensions-4.12.2.dist-info", "six", "notes.txt-1.dist"] {
            std::fs::create_dir(dir.path().join(d))?;
        }
        let got: Vec<String> = installed(dir.path()).into_iter().map(|(n, v)| format!("{n}={v}")).collect();
        assert_eq!(got, ["six=1.16.0", "typing_extensions=4.12.2"]);
        assert!(installed(&dir.path().join("missing")).is_empty());
        Ok(())
    }
}
