//! Mount sources as the engine sees them.
//!
//! A bind mount's source is a path on the engine's host. When sandboxd runs on that host, its
//! paths are those paths. When sandboxd runs in a container of the same engine (the host's
//! socket handed in), its data dir is a mount of that container, and the engine knows the
//! path behind it: sandboxd finds its own container and translates through its mounts. With
//! an engine of its own (Docker-in-Docker), that engine's paths are the ones both share,
//! untranslated.

use std::path::{Path, PathBuf};

use crate::RuntimeError;

/// How sandboxd's paths become the engine's.
#[derive(Debug, Clone, PartialEq)]
pub enum PathMap {
    /// The same paths (sandboxd on the engine's host, or an engine of its own).
    Same,
    /// Through the mounts of sandboxd's own container: (where inside, source on the host).
    Through(Vec<(PathBuf, String)>),
}

impl PathMap {
    /// The engine's path of `path`: the mount holding it that lies deepest, joined with the rest.
    pub fn translate(&self, path: &Path) -> Result<String, RuntimeError> {
        match self {
            PathMap::Same => Ok(path.to_string_lossy().into_owned()),
            PathMap::Through(mounts) => mounts
                .iter()
                .filter(|(inside, _)| path.starts_with(inside))
                .max_by_key(|(inside, _)| inside.components().count())
                .map(|(inside, source)| {
                    let rest = path.strip_prefix(inside).unwrap_or(Path::new(""));
                    let joined = Path::new(source).join(rest);
                    joined.to_string_lossy().trim_end_matches('/').to_string()
                })
                .ok_or_else(|| {
                    RuntimeError::NotReady(format!(
                        "{} is on no mount of sandboxd's container, so the engine cannot mount it: put the data dir on a volume or bind mount",
                        path.display()
                    ))
                }),
        }
    }
}

/// The id of the container this process runs in, if any: the engine bind-mounts a file of
/// the container's own directory (`/var/lib/docker/containers/<id>/hostname`, `hosts`,
/// `resolv.conf`) into it, and the mount table names that directory.
pub fn own_container_id(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        let root = line.split(' ').nth(3)?;
        let (_, after) = root.split_once("/containers/")?;
        let id = after.split('/').next()?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_translated_through_the_deepest_mount() -> Result<(), RuntimeError> {
        let map = PathMap::Through(vec![
            ("/data".into(), "/var/lib/docker/volumes/sandboxd-data/_data".into()),
            ("/data/workspaces".into(), "/srv/workspaces".into()),
        ]);
        assert_eq!(
            map.translate(Path::new("/data/packages/s1"))?,
            "/var/lib/docker/volumes/sandboxd-data/_data/packages/s1"
        );
        assert_eq!(map.translate(Path::new("/data/workspaces/s1"))?, "/srv/workspaces/s1");
        assert_eq!(map.translate(Path::new("/data"))?, "/var/lib/docker/volumes/sandboxd-data/_data");
        // A sibling with the same prefix is not under the mount.
        assert!(map.translate(Path::new("/database/x")).is_err());
        assert!(map.translate(Path::new("/tmp/x")).is_err());
        assert_eq!(PathMap::Same.translate(Path::new("/data/x"))?, "/data/x");
        Ok(())
    }

    #[test]
    fn the_own_container_is_found_from_the_mount_table() {
        let id = "4f1a".repeat(16);
        let mountinfo = format!(
            "600 599 0:52 / / rw,relatime master:1 - overlay overlay rw\n\
             612 600 254:1 /var/lib/docker/containers/{id}/hostname /etc/hostname rw,relatime - ext4 /dev/vda rw\n"
        );
        assert_eq!(own_container_id(&mountinfo), Some(id));
        assert_eq!(own_container_id("22 1 254:1 / / rw - ext4 /dev/vda rw\n"), None);
    }
}
