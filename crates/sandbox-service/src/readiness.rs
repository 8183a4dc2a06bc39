//! Readiness: whether sandboxes can be created here now, and what is wrong if not.

use sandbox_api::{Check, Readiness};

use crate::Service;

/// Below this much free space in the data dir, sandboxd is not ready.
const MIN_FREE_BYTES: u64 = 64 << 20;

impl Service {
    /// Proves the runtime works (it starts a probe sandbox, at most every few seconds), and
    /// checks the store, the disk, workspace storage and this replica's lease.
    pub async fn readiness(&self) -> Readiness {
        let runtime = self.runtime.readiness().await;
        let store = match self.store.check_writable().await {
            Ok(()) => Check { ok: true, message: "ok".into() },
            Err(e) => Check { ok: false, message: e.to_string() },
        };
        let free = sandbox_sys::fs::free_bytes(&self.config.data_dir).unwrap_or(0);
        let disk = match free {
            f if f < MIN_FREE_BYTES => {
                Check { ok: false, message: format!("only {} MiB free in the data dir", f >> 20) }
            }
            f => Check { ok: true, message: format!("{} MiB free", f >> 20) },
        };
        let local = sandbox_workspace::check_writable(&self.dirs.workspaces.path("")).map_err(|e| e.to_string());
        let mut quota = match &self.volume_note {
            None => "workspaces are volumes: the quota holds for code too".to_string(),
            Some(why) => format!("code writes are not held to the quota ({why})"),
        };
        if let Some(why) = &self.dirs.system.note {
            quota.push_str(&format!("; host paths show in sandboxes' mount tables ({why})"));
        }
        let storage = match local.and(self.dirs.storage.check().await) {
            Ok(()) if self.dirs.storage.is_remote() => Check {
                ok: true,
                message: format!("{} reachable; local cache writable; {quota}", self.dirs.storage.describe()),
            },
            Ok(()) if self.store.backend() == sandbox_store::Backend::Postgres => Check {
                ok: true,
                message: format!(
                    "local data dir writable; {quota}; {}",
                    crate::replicas::LOCAL_STORAGE_ON_SHARED_DATABASE
                ),
            },
            Ok(()) => Check { ok: true, message: format!("local data dir writable; {quota}") },
            Err(e) => Check { ok: false, message: format!("workspace storage: {e}") },
        };
        let replica = match self.replica.lease_lost() {
            None => Check { ok: true, message: format!("replica {} holds its lease", self.replica.id) },
            Some(why) => Check { ok: false, message: format!("replica {} has no lease: {why}", self.replica.id) },
        };
        let ready = runtime.ready && store.ok && disk.ok && storage.ok && replica.ok;
        if runtime.ready {
            // Pools fill at start only if the host was ready then; top them up once it is.
            self.refill_pools();
        }
        Readiness {
            ready,
            runtime: runtime.runtime.to_string(),
            sandbox: Check { ok: runtime.ready, message: runtime.message },
            runtime_detail: runtime.detail,
            store,
            disk,
            data_dir_free_bytes: free,
            storage,
            pools: self.pool_counts(),
            replica,
        }
    }
}
