//! The sandboxd control plane as a library: configuration, the REST API, sessions and
//! executions over a [`sandbox_runtime::Runtime`], and the [`sandbox_store::Store`].
//!
//! The `sandboxd` binary parses a [`Config`] and calls [`Server::start`]; tests do the same
//! on a free port, or call [`app`] directly.

pub mod admission;
pub mod callback;
pub mod config;
pub mod error;
pub mod execution;
pub mod extract;
pub mod files;
pub mod invoke;
pub mod lifecycle;
pub mod metrics;
pub mod outbound;
pub mod packages;
pub mod pool;
pub mod query;
pub mod routes;
pub mod serve;
pub mod session;
pub mod storage;
pub mod system_dir;
pub mod template;
pub mod workspace;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;
use sandbox_runtime::local::{LocalConfig, LocalRuntime, RunAs};
use sandbox_runtime::Runtime;
use sandbox_store::Store;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use utoipa::OpenApi;

pub use config::{Cli, Config};

/// Everything a handler needs.
pub struct AppState {
    pub config: Config,
    pub store: Store,
    pub runtime: Arc<dyn Runtime>,
    pub sessions: session::Sessions,
    pub dirs: Arc<workspace::Dirs>,
    pub run_pool: Arc<pool::Pool>,
    /// Warm session sandboxes, by template.
    session_pools: Mutex<BTreeMap<String, Arc<pool::Pool>>>,
    /// Where callers may point the server (callbacks).
    pub outbound: Arc<outbound::OutboundPolicy>,
    /// For execution callbacks: resolves through `outbound`, follows no redirects.
    pub http: reqwest::Client,
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// What the reaper did since start (for /metrics).
    pub reaper: lifecycle::ReaperCounts,
    /// Why workspaces are not volumes, if they are not (code writes then escape the quota).
    pub volume_note: Option<String>,
}

impl AppState {
    /// State over any runtime (tests use the fake one); workspaces go under the data dir.
    pub fn new(config: Config, store: Store, runtime: Arc<dyn Runtime>) -> Result<AppState, ServerError> {
        let system = system_dir::SystemDir::open(&config)?;
        Self::with_system_dir(config, store, runtime, system)
    }

    /// [`Self::new`] with the system dir opened already (the local runtime keeps files in it).
    pub fn with_system_dir(
        config: Config,
        store: Store,
        runtime: Arc<dyn Runtime>,
        system: system_dir::SystemDir,
    ) -> Result<AppState, ServerError> {
        let runtime: Arc<dyn Runtime> =
            Arc::new(sandbox_runtime::StartQueue::new(runtime, config.max_concurrent_starts, config.max_queued_starts));
        let storage = match config.s3() {
            Some(opts) => storage::Storage::s3(&opts, &config.data_dir.join("sync"))
                .map_err(|e| ServerError::Config(e.to_string()))?,
            None => storage::Storage::local(),
        };
        let (volumes, volume_note) = workspace_volumes(&config, runtime.workspace_owner())?;
        let dirs =
            workspace::Dirs::new(&config.data_dir, system, runtime.workspace_owner(), Arc::new(storage), volumes)
                .map_err(|source| ServerError::DataDir { path: config.data_dir.clone(), source })?;
        let default_limits =
            execution::resolve_limits(&config, None).map_err(|e| ServerError::Config(e.to_string()))?;
        let outbound = Arc::new(outbound::OutboundPolicy::new(&config.outbound_allow).map_err(ServerError::Config)?);
        let run_pool = Arc::new(pool::Pool::new(config.run_pool, session::limits_from(&default_limits), None));
        let state = AppState {
            config,
            store,
            runtime,
            sessions: Default::default(),
            dirs: Arc::new(dirs),
            run_pool,
            session_pools: Mutex::new(BTreeMap::new()),
            http: outbound::client(Arc::clone(&outbound)),
            outbound,
            started_at: chrono::Utc::now(),
            reaper: Default::default(),
            volume_note,
        };
        let builtin = template::builtin(&state).map_err(|e| ServerError::Config(e.to_string()))?;
        state.add_pool(&builtin);
        Ok(state)
    }

    /// Gives template `t` a pool of warm session sandboxes, if it asks for one.
    pub fn add_pool(&self, t: &sandbox_api::Template) {
        if t.pool_size == 0 || t.kernel.is_none() {
            return;
        }
        let env = execution::sandbox_env(&t.limits, &t.env);
        let pool = pool::Pool::new(t.pool_size, session::limits_from(&t.limits), Some((t.name.clone(), env)));
        self.session_pools.lock().unwrap_or_else(|p| p.into_inner()).insert(t.name.clone(), Arc::new(pool));
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

/// Volumes for workspaces, as `--workspace-volumes` says and the host allows; else why not.
fn workspace_volumes(
    config: &Config,
    owner: Option<(u32, u32)>,
) -> Result<(Option<sandbox_workspace::Volumes>, Option<String>), ServerError> {
    use config::VolumeMode;
    if config.workspace_volumes == VolumeMode::Off {
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
        Err(why) if config.workspace_volumes == VolumeMode::On => {
            Err(ServerError::Config(format!("--workspace-volumes on, but volumes do not work here: {why}")))
        }
        Err(why) => {
            tracing::warn!(cause = %why, "workspaces are plain directories: code can write past the quota");
            Ok((None, Some(why)))
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "sandbox-platform API", description = "Code-execution sandboxes for AI agents."),
    paths(
        routes::healthz,
        routes::readyz,
        routes::create_session,
        routes::list_sessions,
        routes::get_session,
        routes::delete_session,
        routes::create_execution,
        routes::list_executions,
        routes::get_execution,
        routes::run,
        routes::interrupt,
        routes::restart,
        routes::invoke,
        routes::install_packages,
        lifecycle::resume,
        lifecycle::stop,
        routes::list_templates,
        routes::get_template,
        routes::create_template,
        routes::delete_template,
        files::upload,
        files::upload_multipart,
        files::download,
        files::list,
        files::delete,
        files::move_file,
        files::archive,
    ),
    components(schemas(sandbox_api::ErrorBody, sandbox_api::ErrorDetail, sandbox_api::Language))
)]
pub struct ApiDoc;

/// The HTTP application over `state`.
pub fn app(state: Arc<AppState>) -> Router {
    use axum::routing::post;
    let body_limit = state.config.max_body_bytes;
    Router::new()
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(|| async { axum::Json(ApiDoc::openapi()) }))
        .route("/v1/sessions", post(routes::create_session).get(routes::list_sessions))
        .route("/v1/sessions/{id}", get(routes::get_session).delete(routes::delete_session))
        .route("/v1/sessions/{id}/executions", post(routes::create_execution).get(routes::list_executions))
        .route("/v1/sessions/{id}/interrupt", post(routes::interrupt))
        .route("/v1/sessions/{id}/invoke", post(routes::invoke))
        .route("/v1/sessions/{id}/restart", post(routes::restart))
        .route("/v1/sessions/{id}/resume", post(lifecycle::resume))
        .route("/v1/sessions/{id}/stop", post(lifecycle::stop))
        .route("/v1/sessions/{id}/packages", post(routes::install_packages))
        .route(
            "/v1/sessions/{id}/files",
            get(files::list).post(files::upload_multipart).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/v1/sessions/{id}/files/{*path}",
            get(files::download).put(files::upload).delete(files::delete).post(files::move_file),
        )
        .route("/v1/sessions/{id}/archive", get(files::archive))
        .route("/v1/templates", get(routes::list_templates).post(routes::create_template))
        .route("/v1/templates/{name}", get(routes::get_template).delete(routes::delete_template))
        .route("/v1/executions/{id}", get(routes::get_execution))
        .route("/v1/run", post(routes::run))
        .fallback(routes::not_found_fallback)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(tracing::Level::INFO))
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .with_state(state)
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("data dir {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] sandbox_store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// Which host user sandboxes run as: a dedicated one when we are root, else our own.
fn run_as(config: &Config) -> RunAs {
    if sandbox_sys::real_uid() != 0 {
        return RunAs::Current;
    }
    match sandbox_sys::lookup_user(&config.sandbox_user) {
        Ok(Some((uid, gid))) if uid != 0 => RunAs::User { uid, gid },
        Ok(Some(_)) => {
            RunAs::Unavailable(format!("sandbox user {:?} is root; pick an unprivileged user", config.sandbox_user))
        }
        Ok(None) => RunAs::Unavailable(format!(
            "sandbox user {:?} does not exist; create it (useradd --system --no-create-home {}) or pass --sandbox-user",
            config.sandbox_user, config.sandbox_user
        )),
        Err(e) => RunAs::Unavailable(format!("cannot look up sandbox user {:?}: {e}", config.sandbox_user)),
    }
}

fn default_executor() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("sandbox-executor")))
        .unwrap_or_else(|| PathBuf::from("sandbox-executor"))
}

/// Builds the state for `config` with the local runtime: creates the data dir, opens the store.
pub fn local_state(config: Config) -> Result<AppState, ServerError> {
    config.validate().map_err(ServerError::Config)?;
    let dir_err = |path: &PathBuf| {
        let path = path.clone();
        move |source| ServerError::DataDir { path, source }
    };
    let db_dir = config.data_dir.join("db");
    std::fs::create_dir_all(&db_dir).map_err(dir_err(&db_dir))?;
    std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o711))
        .map_err(dir_err(&config.data_dir))?;
    std::fs::set_permissions(&db_dir, std::fs::Permissions::from_mode(0o700)).map_err(dir_err(&db_dir))?;
    let (store, recovered) = Store::open(&config.db_path())?;
    if recovered != sandbox_store::Recovered::default() {
        tracing::warn!(
            executions = recovered.executions,
            sessions = recovered.sessions,
            "a previous run left work open: executions marked interrupted, sessions stopped (server_restart)"
        );
    }
    let run_as = run_as(&config);
    let system = system_dir::SystemDir::open(&config)?;
    let runtime = LocalRuntime::new(LocalConfig {
        bwrap: config.bwrap.clone(),
        executor: config.executor.clone().unwrap_or_else(default_executor),
        state_dir: system.runtime_dir(),
        run_as,
        cgroups: config.cgroups,
        tmp_size_bytes: config.tmp_size_mb << 20,
        ready_timeout: Duration::from_secs(10),
    });
    AppState::with_system_dir(config, store, Arc::new(runtime), system)
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Binds `config.listen` and serves with the local runtime.
    pub async fn start(config: Config) -> Result<Server, ServerError> {
        let state = Arc::new(local_state(config)?);
        Self::serve(state).await
    }

    /// Serves `state` on `state.config.listen`.
    pub async fn serve(state: Arc<AppState>) -> Result<Server, ServerError> {
        let addr = state.config.listen;
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind { addr, source })?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let router = app(Arc::clone(&state));
        let limits = serve::Limits {
            header_read_timeout: Duration::from_secs_f64(state.config.header_read_timeout_s),
            max_connections: state.config.max_connections,
        };
        let task = tokio::spawn(serve::serve(listener, router, limits, stopped));
        // Probe once so the first /readyz and the log tell at start-up whether sandboxes work.
        template::resume(&state);
        lifecycle::spawn_reaper(&state);
        lifecycle::spawn_syncer(&state);
        lifecycle::recover_unsynced(&state);
        let readiness = state.runtime.readiness().await;
        if readiness.ready {
            state.refill_pools();
            tracing::info!(%addr, cgroup = %readiness.cgroup, "sandboxd ready");
        } else {
            tracing::warn!(%addr, cause = %readiness.message, "sandboxd serving but NOT ready");
        }
        Ok(Server { addr, state, stop, task })
    }

    /// Stops accepting requests, kills every sandbox (in-flight executions end as killed),
    /// and waits briefly for in-flight requests to answer.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let running = self.state.sessions.with_sandbox();
        self.state.sessions.stop_all().await;
        for id in running {
            lifecycle::write_back(&self.state, &id).await;
        }
        self.state.dirs.workspaces.unmount_all();
        self.state.drain_pools().await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        self.state.dirs.system.unmount();
    }
}
