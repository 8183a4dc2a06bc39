//! The sandboxd control plane as a library: configuration, the REST API, sessions and
//! executions over a [`sandbox_runtime::Runtime`], and the [`sandbox_store::Store`].
//!
//! The `sandboxd` binary parses a [`Config`] and calls [`Server::start`]; tests do the same
//! on a free port, or call [`app`] directly.

pub mod callback;
pub mod config;
pub mod error;
pub mod execution;
pub mod extract;
pub mod invoke;
pub mod pool;
pub mod routes;
pub mod session;
pub mod workspace;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
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
    pub workspaces: Arc<workspace::Workspaces>,
    pub run_pool: Arc<pool::Pool>,
    pub session_pool: Arc<pool::Pool>,
    /// For execution callbacks (connections are reused).
    pub http: reqwest::Client,
}

impl AppState {
    /// State over any runtime (tests use the fake one); workspaces go under the data dir.
    pub fn new(config: Config, store: Store, runtime: Arc<dyn Runtime>) -> Result<AppState, ServerError> {
        let dir = config.workspaces_dir();
        let workspaces = workspace::Workspaces::new(dir.clone(), runtime.workspace_owner())
            .map_err(|source| ServerError::DataDir { path: dir, source })?;
        let default_limits =
            execution::resolve_limits(&config, None).map_err(|e| ServerError::Config(e.to_string()))?;
        let limits = session::limits_from(&default_limits);
        let run_pool = Arc::new(pool::Pool::new(config.run_pool, limits, None));
        let kernel_env = execution::sandbox_env(&default_limits, &Default::default());
        let session_pool = Arc::new(pool::Pool::new(config.session_pool, limits, Some(kernel_env)));
        Ok(AppState {
            config,
            store,
            runtime,
            sessions: Default::default(),
            workspaces: Arc::new(workspaces),
            run_pool,
            session_pool,
            http: reqwest::Client::new(),
        })
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
        .route("/openapi.json", get(|| async { axum::Json(ApiDoc::openapi()) }))
        .route("/v1/sessions", post(routes::create_session).get(routes::list_sessions))
        .route("/v1/sessions/{id}", get(routes::get_session).delete(routes::delete_session))
        .route("/v1/sessions/{id}/executions", post(routes::create_execution).get(routes::list_executions))
        .route("/v1/sessions/{id}/interrupt", post(routes::interrupt))
        .route("/v1/sessions/{id}/invoke", post(routes::invoke))
        .route("/v1/sessions/{id}/restart", post(routes::restart))
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
    if recovered > 0 {
        tracing::warn!(recovered, "closed executions left running by a previous run as failed (server_restart)");
    }
    let run_as = run_as(&config);
    let runtime = LocalRuntime::new(LocalConfig {
        bwrap: config.bwrap.clone(),
        executor: config.executor.clone().unwrap_or_else(default_executor),
        state_dir: config.runtime_dir(),
        run_as,
        cgroups: config.cgroups,
        tmp_size_bytes: config.tmp_size_mb << 20,
        ready_timeout: Duration::from_secs(10),
    });
    AppState::new(config, store, Arc::new(runtime))
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
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let router = app(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(shutdown).await {
                tracing::error!(error = %e, "server stopped");
            }
        });
        // Probe once so the first /readyz and the log tell at start-up whether sandboxes work.
        let readiness = state.runtime.readiness().await;
        if readiness.ready {
            state.run_pool.refill(&state.runtime, &state.workspaces);
            state.session_pool.refill(&state.runtime, &state.workspaces);
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
        self.state.sessions.stop_all().await;
        self.state.run_pool.drain(&self.state.workspaces).await;
        self.state.session_pool.drain(&self.state.workspaces).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}
