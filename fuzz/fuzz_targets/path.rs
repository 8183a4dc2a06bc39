//! Client paths: validation ([`RelPath::parse`]) and resolution beneath a workspace that holds
//! the traps sandboxed code can plant (a link to `/`, a link to a file outside, a FIFO).
//! A path that parses has no empty, `.` or `..` component and parses again to itself; any
//! path through a link fails to open; nothing opened is outside the workspace.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sandbox_workspace::{RelPath, Workspace};

struct Trap {
    _dir: tempfile::TempDir,
    ws: Workspace,
}

fn trap() -> &'static Trap {
    static TRAP: OnceLock<Trap> = OnceLock::new();
    TRAP.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).expect("mkdir");
        std::fs::write(root.join("a/b/inside.txt"), b"inside").expect("write");
        std::os::unix::fs::symlink("/", root.join("out")).expect("symlink");
        std::os::unix::fs::symlink("/etc/hostname", root.join("a/host")).expect("symlink");
        std::os::unix::fs::symlink("..", root.join("a/up")).expect("symlink");
        // Made with mkfifo(1): the fuzz crate has no unsafe code.
        let made = std::process::Command::new("mkfifo").arg(root.join("fifo")).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        let ws = Workspace::open(root, None).expect("open");
        Trap { _dir: dir, ws }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(path) = RelPath::parse(text) else { return };
    let s = path.as_str();
    assert!(!s.starts_with('/') && !s.contains('\0'), "{s:?}");
    assert!(s.split('/').all(|c| !c.is_empty() && c != "." && c != ".."), "{s:?}");
    let again = RelPath::parse(s).expect("a parsed path parses again");
    assert_eq!(again.as_str(), s);

    let ws = &trap().ws;
    let through_link = |p: &str| {
        let mut parts = p.split('/');
        let first = parts.next().unwrap_or("");
        first == "out" || first == "fifo" || (first == "a" && matches!(parts.next(), Some("host" | "up")))
    };
    if let Ok((mut file, entry)) = ws.open_file(&path) {
        assert!(!through_link(s), "opened {s:?} through a link or a FIFO");
        let mut content = Vec::new();
        let _ = std::io::Read::read_to_end(&mut file, &mut content);
        assert!(content == b"inside" && entry.path.as_str() == s, "{s:?} opened something else");
    }
    if ws.list(&path, true, 100).is_ok() {
        assert!(!through_link(s), "listed {s:?} through a link");
    }
});
