//! The sandboxd core, with no HTTP in it: sessions, executions, workspaces, templates,
//! packages, pools and their lifecycle, over a [`sandbox_runtime::Runtime`], the
//! [`sandbox_store::Store`] and workspace storage. Each door (the REST API in `sandbox-server`,
//! and later MCP and the E2B-compatible API) is a thin adapter over [`Service`].
//!
//! Errors are [`ServiceError`]: what went wrong in the domain's words. Each door maps it to
//! its own statuses in one place.

pub mod access;
pub mod config;
pub mod error;
pub mod executions;
pub mod files;
pub mod metrics;
pub mod readiness;
pub mod replicas;
pub mod runtimes;
pub mod sessions;
pub mod templates;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use sandbox_runtime::Runtime;
use sandbox_store::Store;

use access::outbound;
use files::{storage, system_dir, workspace};
use sessions::{lifecycle, live, pool};

pub use config::Config;

/// Which page of a listing: at most `limit` items (default [`Page::DEFAULT`], at most
/// [`Page::MAX`]) after `cursor`, the `next_cursor` of the page before.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

impl Page {
    pub const DEFAULT: usize = 100;
    pub const MAX: usize = 1000;

    fn limit(&self) -> usize {
        self.limit.unwrap_or(Self::DEFAULT).clamp(1, Self::MAX)
    }
}
pub use error::ServiceError;

/// The core every door calls, through its methods only: what it holds is its own.
pub struct Service {
    pub(crate) config: Config,
    pub(crate) store: Store,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) sessions: live::Sessions,
    pub(crate) dirs: Arc<workspace::HostDirs>,
    pub(crate) run_pool: Arc<pool::Pool>,
    /// Warm session sandboxes, by template.
    session_pools: Mutex<BTreeMap<String, Arc<pool::Pool>>>,
    /// Where callers may point the server (callbacks).
    pub(crate) outbound: Arc<outbound::OutboundPolicy>,
    /// For execution callbacks: resolves through `outbound`, follows no redirects.
    pub(crate) http: reqwest::Client,
    pub(crate) started_at: chrono::DateTime<chrono::Utc>,
    /// What the idle sweep did since start (for /metrics).
    pub(crate) sweeps: lifecycle::SweepCounts,
    /// Why workspaces are not volumes, if they are not (code writes then escape the quota).
    pub(crate) volume_note: Option<String>,
    /// What every replica of the database holds alike (`access::auth::Secrets`).
    pub(crate) secrets: access::auth::Secrets,
    /// This process among the replicas of its database.
    pub(crate) replica: replicas::Replica,
}

impl Service {
    /// State over any runtime (tests use the fake one); workspaces go under the data dir.
    pub fn new(config: Config, store: Store, runtime: Arc<dyn Runtime>) -> Result<Service, SetupError> {
        let system = system_dir::SystemDir::open(&config)?;
        let secrets = access::auth::Secrets::random()
            .map_err(|source| SetupError::DataDir { path: config.data_dir.clone(), source })?;
        let replica = replicas::Replica::of(&config)?;
        Self::with_system_dir(config, store, runtime, system, secrets, replica)
    }

    /// [`Self::new`] with the system dir opened already (the local runtime keeps files in it).
    fn with_system_dir(
        config: Config,
        store: Store,
        runtime: Arc<dyn Runtime>,
        system: system_dir::SystemDir,
        secrets: access::auth::Secrets,
        replica: replicas::Replica,
    ) -> Result<Service, SetupError> {
        let runtime: Arc<dyn Runtime> =
            Arc::new(sandbox_runtime::StartQueue::new(runtime, config.max_concurrent_starts, config.max_queued_starts));
        let storage = match config.s3() {
            Some(opts) => storage::Storage::s3(&opts, &config.data_dir.join("sync"))
                .map_err(|e| SetupError::Config(e.to_string()))?,
            None => storage::Storage::local(),
        };
        let (volumes, volume_note) = workspace_volumes(&config, runtime.workspace_owner())?;
        let dirs =
            workspace::HostDirs::new(&config.data_dir, system, runtime.workspace_owner(), Arc::new(storage), volumes)
                .map_err(|source| SetupError::DataDir { path: config.data_dir.clone(), source })?;
        let default_limits =
            executions::resolve_limits(&config, None).map_err(|e| SetupError::Config(e.to_string()))?;
        let outbound = Arc::new(outbound::OutboundPolicy::new(&config.outbound_allow).map_err(SetupError::Config)?);
        let run_pool = Arc::new(pool::Pool::new(config.run_pool, executions::limits_from(&default_limits), None));
        let state = Service {
            config,
            store,
            runtime,
            sessions: live::Sessions::new(&replica.id),
            dirs: Arc::new(dirs),
            run_pool,
            session_pools: Mutex::new(BTreeMap::new()),
            http: outbound::client(Arc::clone(&outbound)),
            outbound,
            started_at: chrono::Utc::now(),
            sweeps: Default::default(),
            volume_note,
            secrets,
            replica,
        };
        let builtin = templates::builtin(&state).map_err(|e| SetupError::Config(e.to_string()))?;
        state.add_pool(&builtin);
        Ok(state)
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether the runtime can start sandboxes now (what `/readyz` reports besides the store,
    /// the disk and storage).
    pub async fn runtime_readiness(&self) -> sandbox_runtime::Readiness {
        self.runtime.readiness().await
    }

    /// Starts a sandbox with no session, on an empty workspace of its own named `name`
    /// (`/v1/run`; the runtime conformance suite). Its directories go if it cannot start; once
    /// it ran, removing them is the caller's part.
    pub async fn start_bare_sandbox(
        &self,
        name: &str,
        limits: sandbox_runtime::ResourceLimits,
    ) -> Result<Box<dyn sandbox_runtime::Sandbox>, ServiceError> {
        let spec = self.dirs.bare_spec(name, limits).await?;
        self.runtime.create(spec).await.map_err(|e| {
            self.dirs.remove(name);
            e.into()
        })
    }

    /// Gives template `t` a pool of warm session sandboxes, if it asks for one.
    pub fn add_pool(&self, t: &sandbox_api::Template) {
        if t.pool_size == 0 || t.kernel.is_none() {
            return;
        }
        let env = executions::sandbox_env(&t.limits, &t.env);
        let session = pool::PoolSession { template: t.name.clone(), image: t.image.clone(), env };
        let pool = pool::Pool::new(t.pool_size, executions::limits_from(&t.limits), Some(session));
        let mut pools = self.session_pools.lock().unwrap_or_else(|p| p.into_inner());
        // Once: the build's end and a sweep may both find the template ready.
        pools.entry(t.name.clone()).or_insert_with(|| Arc::new(pool));
    }

    /// The templates with a pool here.
    pub(crate) fn pooled_templates(&self) -> Vec<String> {
        self.session_pools.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }

    /// Drops template `name`'s pool and destroys its sandboxes.
    pub async fn remove_pool(&self, name: &str) {
        let pool = self.session_pools.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
        if let Some(pool) = pool {
            pool.drain(&self.dirs).await;
        }
    }

    pub fn session_pool(&self, template: &str) -> Option<Arc<pool::Pool>> {
        self.session_pools.lock().unwrap_or_else(|p| p.into_inner()).get(template).cloned()
    }

    fn all_pools(&self) -> Vec<Arc<pool::Pool>> {
        let sessions = self.session_pools.lock().unwrap_or_else(|p| p.into_inner());
        std::iter::once(Arc::clone(&self.run_pool)).chain(sessions.values().cloned()).collect()
    }

    /// Starts sandboxes in the background until every pool is full.
    pub fn refill_pools(&self) {
        for pool in self.all_pools() {
            pool.refill(&self.runtime, &self.dirs);
        }
    }

    /// The memory limits of every sandbox the pools keep, or will keep once refilled.
    pub fn pooled_memory_bytes(&self) -> u64 {
        self.all_pools().iter().map(|p| p.limits().memory_bytes * p.size() as u64).sum()
    }

    /// Warm sandboxes in each pool now.
    pub fn pool_counts(&self) -> sandbox_api::Pools {
        let sessions = self.session_pools.lock().unwrap_or_else(|p| p.into_inner());
        let templates: BTreeMap<String, usize> = sessions.iter().map(|(k, p)| (k.clone(), p.len())).collect();
        sandbox_api::Pools { run: self.run_pool.len(), session: templates.values().sum(), templates }
    }

    /// Destroys every pooled sandbox (server shutdown).
    pub async fn drain_pools(&self) {
        for pool in self.all_pools() {
            pool.drain(&self.dirs).await;
        }
    }
}

/// Runs `f`, which blocks (file system work), on a thread meant for that, not on the async
/// threads that serve requests.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ServiceError::Internal(format!("blocking task failed: {e}")))?
}

/// Volumes for workspaces, as `--workspace-volumes` says and the host allows; else why not.
fn workspace_volumes(
    config: &Config,
    owner: Option<(u32, u32)>,
) -> Result<(Option<sandbox_workspace::Volumes>, Option<String>), SetupError> {
    use config::VolumeMode;
    if config.local.workspace_volumes == VolumeMode::Off {
        return Ok((None, Some("--workspace-volumes off".into())));
    }
    let images = config.data_dir.join("volumes");
    let probed = if sandbox_sys::real_uid() != 0 {
        Err("mounting volumes needs root".to_string())
    } else {
        let mounts = config.data_dir.join("workspaces");
        sandbox_workspace::Volumes::new(images.clone(), mounts, config.workspace_quota_bytes, owner)
            .map_err(|e| format!("{}: {e}", images.display()))
            .and_then(|v| v.probe().map(|()| v))
    };
    match probed {
        Ok(v) => Ok((Some(v), None)),
        Err(why) if config.local.workspace_volumes == VolumeMode::On => {
            Err(SetupError::Config(format!("--workspace-volumes on, but volumes do not work here: {why}")))
        }
        Err(why) => {
            tracing::warn!(cause = %why, "workspaces are plain directories: code can write past the quota");
            Ok((None, Some(why)))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("data dir {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] sandbox_store::StoreError),
}

impl Service {
    /// Builds the service for `config` with the runtime it names: creates the data dir, opens
    /// the store, mounts the system dir.
    pub async fn open(config: Config) -> Result<Service, SetupError> {
        config.validate().map_err(SetupError::Config)?;
        let dir_err = |path: &PathBuf| {
            let path = path.clone();
            move |source| SetupError::DataDir { path, source }
        };
        let db_dir = config.data_dir.join("db");
        std::fs::create_dir_all(&db_dir).map_err(dir_err(&db_dir))?;
        std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o711))
            .map_err(dir_err(&config.data_dir))?;
        std::fs::set_permissions(&db_dir, std::fs::Permissions::from_mode(0o700)).map_err(dir_err(&db_dir))?;
        let store = Store::connect(&config.database_url()).await?;
        let me = replicas::Replica::of(&config)?;
        replicas::refuse_a_live_namesake(&store, &me).await?;
        if store.backend() == sandbox_store::Backend::Postgres && config.s3().is_none() {
            tracing::warn!("{}", replicas::LOCAL_STORAGE_ON_SHARED_DATABASE);
        }
        let system = system_dir::SystemDir::open(&config)?;
        let runtime = runtimes::build(&config, &system, &me.id).await;
        let recovered = store.recover(&me.id, runtime.keeps_sandboxes()).await?;
        if recovered != sandbox_store::Recovered::default() {
            tracing::warn!(
                executions = recovered.executions,
                sessions = recovered.sessions,
                "a previous run left work open: executions marked interrupted, sessions stopped (server_restart) unless their sandboxes outlive sandboxd"
            );
        }
        let secrets = access::auth::Secrets::shared(&store, &config.data_dir)
            .await
            .map_err(|e| SetupError::Config(format!("cannot read the replicas' secrets: {e}")))?;
        let service = Service::with_system_dir(config, store, runtime, system, secrets, me)?;
        lifecycle::remove_orphans(&service).await;
        lifecycle::reconcile_kept_sandboxes(&service).await;
        Ok(service)
    }

    /// Starts what runs in the background: this replica's registration and heartbeat, template
    /// builds cut off by a restart, the idle sweep, and (S3 storage) the syncer and the
    /// write-back of what a crash left unsynced.
    pub async fn start_background(self: &Arc<Self>) {
        if let Err(e) = self.register_replica().await {
            tracing::warn!(error = %e, "cannot register this replica; retrying at the next heartbeat");
        }
        replicas::spawn_heartbeat(self);
        templates::resume(self).await;
        lifecycle::spawn_idle_sweep(self);
        lifecycle::spawn_syncer(self);
        lifecycle::recover_unsynced(self);
    }

    /// Kills every sandbox (in-flight executions end as killed), writes their workspaces
    /// back, and unmounts the workspace volumes; no sandbox starts after it begins.
    pub async fn shut_down_sandboxes(&self) {
        let running = self.sessions.with_sandbox();
        self.sessions.destroy_all(self.runtime.keeps_sandboxes()).await;
        for id in running {
            lifecycle::write_back(self, &id).await;
        }
        self.dirs.workspaces.unmount_all();
        self.drain_pools().await;
    }

    /// The last step of a shutdown, once no request is in flight: the system volume goes.
    pub fn unmount_system_dir(&self) {
        self.dirs.system.unmount();
    }
}
