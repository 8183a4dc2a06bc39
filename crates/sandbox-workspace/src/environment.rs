//! A template's environment (the packages its build installed) as one `.tar.gz`: built once,
//! on one replica, and unpacked by every other replica whose sandboxes mount it.
//!
//! Unlike a workspace archive, modes and links are kept (pip writes executable scripts, and a
//! package may link one file to another). What is unpacked cannot leave the target directory
//! (the tar crate refuses `..` and writes through no link it unpacked), and no setuid or
//! setgid bit survives: the files came from a sandbox.

use std::io::{Read, Write};
use std::path::Path;

use crate::WorkspaceError;

fn io<'a>(op: &'static str, path: &'a Path) -> impl Fn(std::io::Error) -> WorkspaceError + 'a {
    move |source| WorkspaceError::Io { op, path: path.display().to_string(), source }
}

/// Writes directory `dir`, whole, to `out`: names relative to `dir`, links as links.
pub fn pack(dir: &Path, out: impl Write) -> Result<(), WorkspaceError> {
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    tar.append_dir_all(".", dir).map_err(io("pack", dir))?;
    tar.into_inner().and_then(|gz| gz.finish()).map_err(io("pack", dir))?;
    Ok(())
}

/// Unpacks what [`pack`] wrote into `into` (an empty directory).
pub fn unpack(input: impl Read, into: &Path) -> Result<(), WorkspaceError> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(input));
    // Permission bits only (no setuid, setgid or sticky), no owners, no extended attributes.
    archive.set_preserve_permissions(false);
    archive.set_preserve_ownerships(false);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(false);
    archive.unpack(into).map_err(io("unpack", into))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn an_environment_comes_back_with_its_modes_and_links() {
        let from = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(from.path().join("pkg/sub")).expect("mkdir");
        std::fs::write(from.path().join("pkg/__init__.py"), "x = 1\n").expect("write");
        std::fs::write(from.path().join("pkg/sub/data.bin"), [0u8, 1, 2]).expect("write");
        let script = from.path().join("run");
        std::fs::write(&script, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o4755)).expect("chmod");
        std::os::unix::fs::symlink("pkg/__init__.py", from.path().join("alias.py")).expect("symlink");
        let mut bytes = Vec::new();
        pack(from.path(), &mut bytes).expect("pack");

        let to = tempfile::tempdir().expect("tempdir");
        unpack(&bytes[..], to.path()).expect("unpack");
        assert_eq!(std::fs::read_to_string(to.path().join("pkg/__init__.py")).expect("read"), "x = 1\n");
        assert_eq!(std::fs::read(to.path().join("pkg/sub/data.bin")).expect("read"), [0, 1, 2]);
        let mode = std::fs::metadata(to.path().join("run")).expect("stat").permissions().mode();
        assert_eq!(mode & 0o7777, 0o755, "executable, and not setuid: {mode:o}");
        let link = std::fs::read_link(to.path().join("alias.py")).expect("a link");
        assert_eq!(link, Path::new("pkg/__init__.py"));
    }

    #[test]
    fn nothing_is_unpacked_outside_the_target() {
        let mut bytes = Vec::new();
        {
            let gz = flate2::write::GzEncoder::new(&mut bytes, flate2::Compression::fast());
            let mut tar = tar::Builder::new(gz);
            // A link out of the target, then a file written through it.
            let mut link = tar::Header::new_gnu();
            link.set_entry_type(tar::EntryType::Symlink);
            link.set_size(0);
            tar.append_link(&mut link, "out", "/tmp").expect("link");
            let mut file = tar::Header::new_gnu();
            file.set_size(1);
            file.set_mode(0o644);
            tar.append_data(&mut file, "out/escaped-environment-file", &b"x"[..]).expect("file");
            tar.into_inner().and_then(|gz| gz.finish()).expect("finish");
        }
        let to = tempfile::tempdir().expect("tempdir");
        assert!(unpack(&bytes[..], to.path()).is_err());
        assert!(!Path::new("/tmp/escaped-environment-file").exists());
    }
}
