//! The REST door of sandboxd: HTTP handlers, the OpenAPI document and the connection loop,
//! over [`sandbox_service::Service`]. Handlers parse the request, call the service and map
//! its answer (errors in one place: [`error`]).
//!
//! The `sandboxd` binary parses a [`Config`] and calls [`Server::start`]; tests do the same
//! on a free port, or call [`app`] directly.

pub mod auth;
pub mod extract;
pub mod files;
pub mod forward;
pub mod mcp;
pub mod metrics;
pub mod openapi;
pub mod query;
pub mod routes;
pub mod serve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use utoipa::OpenApi;

pub use sandbox_service::{config, Config, Service};

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
        routes::resume,
        routes::stop,
        routes::list_templates,
        routes::get_template,
        routes::create_template,
        routes::delete_template,
        routes::list_replicas,
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
pub fn app(state: Arc<Service>) -> Router {
    use axum::routing::post;
    let body_limit = state.config().max_body_bytes;
    let e2b = sandbox_e2b::E2b::new(Arc::clone(&state));
    // Every /v1 route needs a key once one is in force (auth.rs); health, metrics and the
    // API document stay open.
    let api = Router::new()
        .route("/v1/sessions", post(routes::create_session).get(routes::list_sessions))
        .route("/v1/sessions/{id}", get(routes::get_session).delete(routes::delete_session))
        .route("/v1/sessions/{id}/executions", post(routes::create_execution).get(routes::list_executions))
        .route("/v1/sessions/{id}/interrupt", post(routes::interrupt))
        .route("/v1/sessions/{id}/invoke", post(routes::invoke))
        .route("/v1/sessions/{id}/restart", post(routes::restart))
        .route("/v1/sessions/{id}/resume", post(routes::resume))
        .route("/v1/sessions/{id}/stop", post(routes::stop))
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
        .route("/v1/replicas", get(routes::list_replicas))
        .route("/v1/run", post(routes::run))
        .route_service("/mcp", mcp::service(Arc::clone(&state)))
        .nest_service("/e2b", sandbox_e2b::control_routes(Arc::clone(&e2b)))
        .route_layer(axum::middleware::from_fn_with_state(Arc::clone(&state), auth::require_key));
    let app = Router::new()
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(routes::openapi_json))
        .route("/openapi.yaml", get(routes::openapi_yaml))
        .route("/docs", get(routes::docs))
        .merge(api)
        // The E2B sandbox routes check each sandbox's access token themselves (sandbox-e2b).
        .nest_service(
            "/e2b/sandbox",
            sandbox_e2b::sandbox_routes(e2b)
                .layer(axum::middleware::from_fn_with_state(Arc::clone(&state), forward::e2b_sandbox_to_owner)),
        )
        .fallback(routes::not_found_fallback)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(tracing::Level::INFO))
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .with_state(Arc::clone(&state));
    // Behind wildcard DNS, E2B clients address sandboxes by host: rewritten before routing.
    match state.config().e2b_domain.clone() {
        Some(domain) => {
            let domain = domain.to_ascii_lowercase();
            let by_host = axum::middleware::map_request(move |req: axum::extract::Request| {
                let domain = domain.clone();
                async move { sandbox_e2b::route_by_host(&domain, req) }
            });
            Router::new().fallback_service(tower::Layer::layer(&by_host, app))
        }
        None => app,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Setup(#[from] sandbox_service::SetupError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Unprotected(String),
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<Service>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Binds `config.listen` and serves with the runtime it names. The address bound (a port
    /// 0 made real) is the one the service knows itself by, which other replicas reach by
    /// default.
    pub async fn start(mut config: Config) -> Result<Server, ServerError> {
        let addr = config.listen;
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })?;
        config.listen = listener.local_addr().map_err(|source| ServerError::Bind { addr, source })?;
        let state = Arc::new(sandbox_service::Service::open(config).await?);
        Self::serve_on(state, listener).await
    }

    /// Serves `state` on `listener`.
    async fn serve_on(state: Arc<Service>, listener: tokio::net::TcpListener) -> Result<Server, ServerError> {
        let addr = state.config().listen;
        let mode = state.access_mode(addr).await.map_err(|e| ServerError::Unprotected(e.to_string()))?;
        tracing::info!(%addr, "{mode}");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let router = app(Arc::clone(&state));
        let limits = serve::Limits {
            header_read_timeout: Duration::from_secs_f64(state.config().header_read_timeout_s),
            max_connections: state.config().max_connections,
        };
        let task = tokio::spawn(serve::serve(listener, router, limits, stopped));
        state.start_background().await;
        // Probe once so the first /readyz and the log tell at start-up whether sandboxes work.
        let readiness = state.runtime_readiness().await;
        if readiness.ready {
            state.refill_pools();
            tracing::info!(%addr, runtime = readiness.runtime, detail = ?readiness.detail, "sandboxd ready");
        } else {
            tracing::warn!(%addr, cause = %readiness.message, "sandboxd serving but NOT ready");
        }
        Ok(Server { addr, state, stop, task })
    }

    /// Stops accepting requests, kills every sandbox (in-flight executions end as killed),
    /// and waits briefly for in-flight requests to answer.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.state.shut_down_sandboxes().await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        self.state.unmount_system_dir();
    }
}
