//! Workspaces kept in an S3-compatible bucket, with the local directories as their cache.
//!
//! A sandbox only ever sees a plain local directory. [`Mirror::pull`] brings it up to date
//! from the bucket (before a sandbox starts on it, or before the file API serves a session
//! whose sandbox does not run here); [`Mirror::push`] writes back the files that changed since
//! the last sync, and deletes what was deleted. A manifest per workspace remembers, for every
//! file, the size and mtime it had when it last matched the bucket, and the object's ETag: a
//! file whose size or mtime moved has changed here, an object whose ETag moved has changed
//! there. Keys are `<prefix>/workspaces/<session>/<path>`.
//!
//! Only regular files are kept: links, special files and empty directories have no object.
//! When a file changed on both sides since the last sync, the bucket wins on pull.
//!
//! The methods block (the caller runs them on a blocking thread): each walks a directory
//! tree and calls the bucket through the tokio runtime `handle` they are given.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;

use crate::{Entry, Kind, RelPath, Workspace, WorkspaceError};

type Result<T> = std::result::Result<T, WorkspaceError>;

/// Files up to this size go up in one request; larger ones in parts of this size.
const PART_BYTES: usize = 8 << 20;
/// Parts of one file in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

/// Where to reach the bucket. Unset fields come from the usual `AWS_*` environment variables.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// `s3://bucket[/prefix]`
    pub url: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

/// What one sync moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncReport {
    pub uploaded: usize,
    pub downloaded: usize,
    pub deleted: usize,
    pub bytes: u64,
}

/// Per file: what it was when it last matched its object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Synced {
    size: u64,
    mtime_ns: i64,
    etag: String,
}

impl Synced {
    /// Whether the file is as it was when it last matched its object.
    fn unchanged(&self, e: &Entry) -> bool {
        e.kind == Kind::File && e.size == self.size && mtime_ns(e) == self.mtime_ns
    }
}

fn mtime_ns(e: &Entry) -> i64 {
    e.modified_at.timestamp_nanos_opt().unwrap_or_default()
}

/// The manifest of one workspace. It holds only for the directory it was made for: a cache
/// emptied (or a workspace made again) has another inode, and then nothing is known to match.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    dir_ino: u64,
    files: BTreeMap<String, Synced>,
}

pub struct Mirror {
    store: Arc<dyn ObjectStore>,
    /// `<prefix>/workspaces`
    root: Key,
    /// `<prefix>/environments`: template environments, one archive per build.
    environments: Key,
    url: String,
    manifests: PathBuf,
}

fn remote(e: impl std::fmt::Display) -> WorkspaceError {
    WorkspaceError::Remote(e.to_string())
}

fn etag_of(tag: Option<String>) -> String {
    tag.unwrap_or_default().trim_matches('"').to_string()
}

impl Mirror {
    /// Connects to the bucket of `opts.url` (no request is made yet); `state_dir` holds the
    /// manifests.
    pub fn new(opts: &S3Options, state_dir: &Path) -> Result<Mirror> {
        let rest = opts.url.strip_prefix("s3://").ok_or_else(|| {
            WorkspaceError::Remote(format!("storage {:?}: expected local or s3://bucket[/prefix]", opts.url))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(WorkspaceError::Remote(format!("storage {:?} names no bucket", opts.url)));
        }
        // A few quick retries, not object_store's default of three minutes: a sync that fails
        // is tried again later (the files stay in the cache), and a request waits on this one.
        let retry = object_store::RetryConfig {
            max_retries: 3,
            retry_timeout: std::time::Duration::from_secs(20),
            ..Default::default()
        };
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket).with_retry(retry);
        let endpoint = opts.endpoint.clone().or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
        if let Some(endpoint) = endpoint {
            builder = builder.with_allow_http(endpoint.starts_with("http://")).with_endpoint(endpoint);
        }
        if let Some(region) = &opts.region {
            builder = builder.with_region(region);
        }
        if let Some(key) = &opts.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &opts.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        let store = builder.build().map_err(remote)?;
        let manifests = state_dir.join("manifests");
        std::fs::create_dir_all(&manifests).map_err(|e| WorkspaceError::Remote(format!("{manifests:?}: {e}")))?;
        let root = Key::parse(format!("{prefix}/workspaces"))
            .map_err(|e| WorkspaceError::Remote(format!("storage {:?}: bad prefix: {e}", opts.url)))?;
        let environments = Key::parse(format!("{prefix}/environments"))
            .map_err(|e| WorkspaceError::Remote(format!("storage {:?}: bad prefix: {e}", opts.url)))?;
        Ok(Mirror { store: Arc::new(store), root, environments, url: opts.url.clone(), manifests })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn prefix(&self, id: &str) -> Key {
        self.root.clone().join(id)
    }

    /// The object of `path` (a [`RelPath`]: no empty, `.` or `..` part, no control character).
    /// Keys are the names as they are (UTF-8), not percent-encoded as `Key::from` would make
    /// them, so that other S3 tools see the same names.
    fn key(&self, id: &str, path: &str) -> Result<Key> {
        Key::parse(format!("{}/{path}", self.prefix(id)))
            .map_err(|e| WorkspaceError::Remote(format!("{path:?} cannot be an object name: {e}")))
    }

    /// Proves the bucket answers (for readiness).
    pub fn check(&self, handle: &Handle) -> Result<()> {
        handle.block_on(self.store.list_with_delimiter(Some(&self.root))).map(drop).map_err(remote)
    }

    fn manifest_path(&self, id: &str) -> PathBuf {
        self.manifests.join(format!("{id}.json"))
    }

    fn load(&self, id: &str, dir: &Path) -> Manifest {
        let Ok(ino) = std::fs::metadata(dir).map(|m| m.ino()) else { return Manifest::default() };
        let found: Option<Manifest> =
            std::fs::read(self.manifest_path(id)).ok().and_then(|b| serde_json::from_slice(&b).ok());
        match found {
            Some(m) if m.dir_ino == ino => m,
            _ => Manifest { dir_ino: ino, files: BTreeMap::new() },
        }
    }

    fn save(&self, id: &str, manifest: &Manifest) -> Result<()> {
        let path = self.manifest_path(id);
        let tmp = path.with_extension("json.tmp");
        let io = |e: std::io::Error| WorkspaceError::Remote(format!("manifest {path:?}: {e}"));
        let bytes = serde_json::to_vec(manifest).map_err(|e| WorkspaceError::Remote(e.to_string()))?;
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// The workspace's objects: path → (size, ETag).
    fn list(&self, handle: &Handle, id: &str) -> Result<BTreeMap<String, (u64, String)>> {
        let prefix = self.prefix(id);
        handle.block_on(async {
            let mut out = BTreeMap::new();
            let mut objects = self.store.list(Some(&prefix));
            while let Some(meta) = objects.next().await {
                let meta = meta.map_err(remote)?;
                let Some(parts) = meta.location.prefix_match(&prefix) else { continue };
                let parts: Vec<String> = parts.map(|p| p.as_ref().to_string()).collect();
                out.insert(parts.join("/"), (meta.size, etag_of(meta.e_tag)));
            }
            Ok(out)
        })
    }

    /// Writes back what changed in workspace `id` (directory `dir`) since the last sync.
    pub fn push(&self, handle: &Handle, id: &str, dir: &Path) -> Result<SyncReport> {
        let ws = Workspace::open(dir, None)?;
        let mut manifest = self.load(id, dir);
        let mut report = SyncReport::default();
        // An upload being committed has a temporary name for a moment: not a file to keep.
        let files: Vec<_> = ws
            .list(&RelPath::root(), true, usize::MAX)?
            .into_iter()
            .filter(|e| e.kind == Kind::File && !crate::workspace::is_upload_in_flight(e.path.as_str()))
            .collect();
        let result = (|| {
            for entry in &files {
                let key = entry.path.as_str();
                if manifest.files.get(key).is_some_and(|s| s.unchanged(entry)) {
                    continue;
                }
                let (file, opened) = match ws.open_file(&entry.path) {
                    Ok(found) => found,
                    // Gone, or replaced by a link, since the walk: the next push sees it.
                    Err(WorkspaceError::NotFound(_) | WorkspaceError::NotRegular(_) | WorkspaceError::IsDir(_)) => {
                        continue
                    }
                    Err(e) => return Err(e),
                };
                let etag = self.upload(handle, &self.key(id, key)?, file, opened.size)?;
                // What was stat'ed before reading: a write meanwhile moves the mtime, and the
                // next push sends the file again.
                manifest.files.insert(key.to_string(), Synced { size: opened.size, mtime_ns: mtime_ns(&opened), etag });
                report.uploaded += 1;
                report.bytes += opened.size;
            }
            let present: std::collections::BTreeSet<&str> = files.iter().map(|e| e.path.as_str()).collect();
            let gone: Vec<String> = manifest.files.keys().filter(|k| !present.contains(k.as_str())).cloned().collect();
            for key in gone {
                match handle.block_on(self.store.delete(&self.key(id, &key)?)) {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(remote(e)),
                }
                manifest.files.remove(&key);
                report.deleted += 1;
            }
            Ok(())
        })();
        // What went up before a failure stays recorded: the next push does not send it again.
        self.save(id, &manifest)?;
        result.map(|()| report)
    }

    fn upload(&self, handle: &Handle, key: &Key, mut file: std::fs::File, size: u64) -> Result<String> {
        let read_err = |e: std::io::Error| WorkspaceError::Remote(format!("read {key}: {e}"));
        if size <= PART_BYTES as u64 {
            let mut buf = Vec::with_capacity(size as usize);
            file.read_to_end(&mut buf).map_err(read_err)?;
            let put = handle.block_on(self.store.put(key, PutPayload::from(buf))).map_err(remote)?;
            return Ok(etag_of(put.e_tag));
        }
        let upload = handle.block_on(self.store.put_multipart(key)).map_err(remote)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    let _ = handle.block_on(writer.abort());
                    return Err(read_err(e));
                }
            };
            if let Err(e) = handle.block_on(writer.wait_for_capacity(PARTS_IN_FLIGHT)) {
                let _ = handle.block_on(writer.abort());
                return Err(remote(e));
            }
            writer.write(&buf[..n]);
        }
        let put = handle.block_on(writer.finish()).map_err(remote)?;
        Ok(etag_of(put.e_tag))
    }

    /// Brings workspace `id` (directory `dir`, which must exist) up to date with the bucket.
    /// Files created here and not pushed yet are kept.
    pub fn pull(&self, handle: &Handle, id: &str, dir: &Path, owner: Option<(u32, u32)>) -> Result<SyncReport> {
        let ws = Workspace::open(dir, owner)?;
        let mut manifest = self.load(id, dir);
        let mut report = SyncReport::default();
        let objects = self.list(handle, id)?;
        let result = (|| {
            for (path, (size, etag)) in &objects {
                if manifest.files.get(path).is_some_and(|s| &s.etag == etag) {
                    continue;
                }
                let Ok(rel) = RelPath::parse(path) else {
                    tracing::warn!(workspace = id, key = %path, "object name is not a valid workspace path; skipped");
                    continue;
                };
                let entry = self.download(handle, &self.key(id, path)?, &ws, &rel)?;
                manifest
                    .files
                    .insert(path.clone(), Synced { size: entry.size, mtime_ns: mtime_ns(&entry), etag: etag.clone() });
                report.downloaded += 1;
                report.bytes += size;
            }
            // Deleted there since the last sync: deleted here too, unless changed here since.
            let gone: Vec<String> = manifest.files.keys().filter(|k| !objects.contains_key(*k)).cloned().collect();
            for key in gone {
                let Some(synced) = manifest.files.remove(&key) else { continue };
                let Ok(rel) = RelPath::parse(&key) else { continue };
                if ws.stat(&rel).is_ok_and(|e| synced.unchanged(&e)) {
                    ws.remove(&rel, false)?;
                    report.deleted += 1;
                }
            }
            Ok(())
        })();
        self.save(id, &manifest)?;
        result.map(|()| report)
    }

    fn download(&self, handle: &Handle, key: &Key, ws: &Workspace, rel: &RelPath) -> Result<Entry> {
        let mut staged = ws.stage()?;
        handle.block_on(async {
            let got = self.store.get(key).await.map_err(remote)?;
            let mut body = got.into_stream();
            while let Some(chunk) = body.next().await {
                staged.write(&chunk.map_err(remote)?, u64::MAX)?;
            }
            Ok::<_, WorkspaceError>(())
        })?;
        ws.commit(staged, rel)
    }

    fn environment_key(&self, build: &str) -> Result<Key> {
        Key::parse(format!("{}/{build}.tar.gz", self.environments))
            .map_err(|e| WorkspaceError::Remote(format!("{build:?} cannot be an object name: {e}")))
    }

    /// Keeps `archive` (a template environment, see [`crate::environment`]) as build `build`.
    pub fn put_environment(&self, handle: &Handle, build: &str, archive: &Path) -> Result<()> {
        let file = std::fs::File::open(archive).map_err(|e| WorkspaceError::Remote(format!("{archive:?}: {e}")))?;
        let size = file.metadata().map_err(|e| WorkspaceError::Remote(format!("{archive:?}: {e}")))?.len();
        self.upload(handle, &self.environment_key(build)?, file, size).map(drop)
    }

    /// Writes the archive of build `build` to `to`.
    pub fn get_environment(&self, handle: &Handle, build: &str, to: &Path) -> Result<()> {
        let key = self.environment_key(build)?;
        let mut out = std::fs::File::create(to).map_err(|e| WorkspaceError::Remote(format!("{to:?}: {e}")))?;
        handle.block_on(async {
            let mut body = self.store.get(&key).await.map_err(remote)?.into_stream();
            while let Some(chunk) = body.next().await {
                std::io::Write::write_all(&mut out, &chunk.map_err(remote)?)
                    .map_err(|e| WorkspaceError::Remote(format!("{to:?}: {e}")))?;
            }
            Ok(())
        })
    }

    /// Deletes the archive of build `build`, if it is there.
    pub fn forget_environment(&self, handle: &Handle, build: &str) -> Result<()> {
        match handle.block_on(self.store.delete(&self.environment_key(build)?)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(remote(e)),
        }
    }

    /// Deletes workspace `id`'s objects and its manifest.
    pub fn forget(&self, handle: &Handle, id: &str) -> Result<()> {
        let _ = std::fs::remove_file(self.manifest_path(id));
        let prefix = self.prefix(id);
        handle.block_on(async {
            let keys = self.store.list(Some(&prefix)).map(|m| m.map(|m| m.location)).boxed();
            let mut deleted = self.store.delete_stream(keys);
            while let Some(done) = deleted.next().await {
                match done {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(remote(e)),
                }
            }
            Ok(())
        })
    }
}
