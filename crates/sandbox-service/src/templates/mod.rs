//! Templates: named session defaults (limits, timeout, kernel, environment) plus a Python
//! environment of preinstalled packages that their sessions see read-only.
//!
//! "default" is built in: the server's configured defaults and no packages. Others are created
//! through the API and kept in the store. One with packages is built in the background
//! ("building", then "ready" or "failed"); sessions can use a template only when it is ready.
//! Each template may keep a warm pool of its own, on every replica.
//!
//! With several replicas, one builds: the one that created the template, or, if its lease
//! lapses first, the one that takes the build over (`Store::claim_template_builds`). The
//! others fetch the environment it built ([`environment`]) and start their pools once it is
//! ready, at their next sweep ([`sync`]).

pub mod environment;
pub mod packages;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sandbox_api::{CreateTemplate, InstallStatus, LimitsRequest, Template, TemplateStatus};

use crate::access::auth::Caller;
use crate::error::ServiceError;
use crate::executions;
use crate::executions::limits_from;
use crate::Service;

pub const DEFAULT: &str = "default";

/// The built-in template: the server's defaults, no packages, the configured session pool.
pub fn builtin(state: &Service) -> Result<Template, ServiceError> {
    let config = &state.config;
    Ok(Template {
        name: DEFAULT.into(),
        tenant: None,
        description: "The server's defaults: host root filesystem, a Python kernel, no extra packages".into(),
        rootfs: "host".into(),
        image: None,
        limits: executions::resolve_limits(config, None)?,
        timeout_s: config.default_timeout_s,
        kernel: Some("python".into()),
        env: Default::default(),
        packages: Vec::new(),
        pool_size: config.session_pool,
        idle_timeout_s: config.idle_timeout_s,
        max_lifetime_s: config.max_lifetime_s,
        allowed_uploads: Vec::new(),
        status: TemplateStatus::Ready,
        error: None,
        installed: Vec::new(),
        builtin: true,
        created_at: state.started_at,
        updated_at: state.started_at,
    })
}

fn check_name(name: &str) -> Result<(), ServiceError> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ServiceError::Invalid(format!(
            "invalid template name {name:?}: 1 to 64 of a-z 0-9 - _, starting with a letter or digit"
        )))
    }
}

/// "python" or "none" (`None` = the default, python).
pub fn check_kernel(kernel: Option<&str>) -> Result<Option<String>, ServiceError> {
    match kernel {
        None | Some("python") => Ok(Some("python".to_string())),
        Some("none") => Ok(None),
        Some(other) => {
            Err(ServiceError::Invalid(format!("unknown kernel {other:?} (available: \"python\", \"none\")")))
        }
    }
}

/// A template by name, built-in or stored, whoever's it is (a session's own template).
pub async fn find_any(state: &Service, name: &str) -> Result<Option<Template>, ServiceError> {
    if name == DEFAULT {
        return builtin(state).map(Some);
    }
    Ok(state.store.get_template(name).await?)
}

/// A template by name, if `caller` sees it (it is shared, or their tenant's).
pub async fn find(state: &Service, caller: &Caller, name: &str) -> Result<Option<Template>, ServiceError> {
    Ok(find_any(state, name).await?.filter(|t| caller.sees(t.tenant.as_deref())))
}

/// Every template `caller` sees.
pub async fn list(state: &Service, caller: &Caller) -> Result<Vec<Template>, ServiceError> {
    let mut all = vec![builtin(state)?];
    all.extend(state.store.list_templates().await?.into_iter().filter(|t| caller.sees(t.tenant.as_deref())));
    Ok(all)
}

/// The template a new session of `caller`'s asks for, if sessions can use it now.
pub async fn for_session(state: &Service, caller: &Caller, name: &str) -> Result<Template, ServiceError> {
    let Some(t) = find(state, caller, name).await? else {
        let names: Vec<String> = list(state, caller).await?.into_iter().map(|t| format!("{:?}", t.name)).collect();
        return Err(ServiceError::Invalid(format!("unknown template {name:?} (available: {})", names.join(", "))));
    };
    match t.status {
        TemplateStatus::Ready => Ok(t),
        TemplateStatus::Building => Err(ServiceError::Conflict(format!(
            "template {name:?} is still installing its packages; try again shortly"
        ))),
        TemplateStatus::Failed => Err(ServiceError::Conflict(format!(
            "template {name:?} failed to build: {}",
            t.error.as_deref().unwrap_or("unknown error")
        ))),
    }
}

/// A session's limits: those it asks for, else its template's.
pub fn session_limits(
    state: &Service,
    t: &Template,
    req: Option<&LimitsRequest>,
) -> Result<sandbox_api::Limits, ServiceError> {
    let req = req.cloned().unwrap_or_default();
    let merged = LimitsRequest {
        memory_mb: req.memory_mb.or(Some(t.limits.memory_mb)),
        pids: req.pids.or(Some(t.limits.pids)),
        cpu: req.cpu.or(Some(t.limits.cpu)),
    };
    executions::resolve_limits(&state.config, Some(&merged))
}

/// Validates and stores a new template, and starts building it if it has packages. A tenant
/// key's template is its tenant's; an admin's (or one made with no key) is shared.
pub async fn create(state: &Arc<Service>, caller: &Caller, req: CreateTemplate) -> Result<Template, ServiceError> {
    check_name(&req.name)?;
    let rootfs = req.rootfs.unwrap_or_else(|| "host".into());
    if rootfs != "host" {
        return Err(ServiceError::Invalid(format!(
            "rootfs {rootfs:?} is not available: the {} runtime offers only \"host\"",
            state.runtime.name()
        )));
    }
    if let Some(image) = &req.image {
        check_image_name(image)?;
        state.runtime.check_image(image).await?;
    }
    let env = req.env.unwrap_or_default();
    executions::check_env(&env)?;
    let packages = req.packages.unwrap_or_default();
    if !packages.is_empty() {
        crate::templates::packages::check_specs(&packages)?;
    }
    let pool_size = req.pool_size.unwrap_or(0);
    if pool_size > MAX_POOL {
        return Err(ServiceError::Invalid(format!("pool_size must be at most {MAX_POOL}")));
    }
    let kernel = check_kernel(req.kernel.as_deref())?;
    let idle_timeout_s = check_seconds("idle_timeout_s", req.idle_timeout_s, state.config.idle_timeout_s)?;
    let max_lifetime_s = check_seconds("max_lifetime_s", req.max_lifetime_s, state.config.max_lifetime_s)?;
    let allowed_uploads =
        req.allowed_uploads.unwrap_or_default().iter().map(|e| check_extension(e)).collect::<Result<_, _>>()?;
    if kernel.is_none() && pool_size > 0 {
        return Err(ServiceError::Invalid("pool_size needs a kernel: warm pools keep started Python kernels".into()));
    }
    let now = Utc::now();
    let t = Template {
        name: req.name,
        tenant: (!caller.shares()).then(|| caller.tenant().to_string()),
        description: req.description.unwrap_or_default(),
        rootfs,
        image: req.image,
        limits: executions::resolve_limits(&state.config, req.limits.as_ref())?,
        timeout_s: executions::check_timeout(&state.config, req.timeout_s, state.config.default_timeout_s)?,
        kernel,
        env,
        status: if packages.is_empty() { TemplateStatus::Ready } else { TemplateStatus::Building },
        packages,
        pool_size,
        idle_timeout_s,
        max_lifetime_s,
        allowed_uploads,
        error: None,
        installed: Vec::new(),
        builtin: false,
        created_at: now,
        updated_at: now,
    };
    let builder = (t.status == TemplateStatus::Building).then_some(state.replica.id.as_str());
    if t.name == DEFAULT || !state.store.insert_template(&t, builder).await? {
        return Err(ServiceError::Conflict(format!("template {:?} already exists", t.name)));
    }
    start(state, &t);
    Ok(t)
}

const MAX_POOL: usize = 16;

/// An upload allowlist entry: `.xlsx` or `xlsx`, kept as `xlsx`.
fn check_extension(given: &str) -> Result<String, ServiceError> {
    let ext = given.strip_prefix('.').unwrap_or(given).to_ascii_lowercase();
    if (1..=16).contains(&ext.len()) && ext.chars().all(|c| c.is_ascii_alphanumeric()) {
        Ok(ext)
    } else {
        Err(ServiceError::Invalid(format!("allowed_uploads: {given:?} is not a file extension such as \".xlsx\"")))
    }
}

/// The longest idle timeout or lifetime: ten years (longer ones overflowed the store's integers).
pub const MAX_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// A number of seconds from 1 to [`MAX_SECONDS`] (`None`: `default`).
pub fn check_seconds(field: &str, given: Option<u64>, default: u64) -> Result<u64, ServiceError> {
    match given.unwrap_or(default) {
        n @ 1..=MAX_SECONDS => Ok(n),
        _ => Err(ServiceError::Invalid(format!("{field} must be from 1 to {MAX_SECONDS} seconds"))),
    }
}

/// Builds `t` in the background if it is building (this replica holds its build); gives it
/// its pool once it is ready.
fn start(state: &Arc<Service>, t: &Template) {
    match t.status {
        TemplateStatus::Building => {
            let (state, t) = (Arc::clone(state), t.clone());
            tokio::spawn(async move { build(state, t).await });
        }
        TemplateStatus::Ready => state.add_pool(t),
        TemplateStatus::Failed => {}
    }
}

/// At start-up: takes up this replica's builds that a restart cut off, then [`sync`]s.
pub async fn resume(state: &Arc<Service>) {
    take_builds(state, true).await;
    sync(state).await;
}

/// Starts the builds this replica takes over: those whose builder's lease lapsed and, with
/// `own`, its own from before a restart.
async fn take_builds(state: &Arc<Service>, own: bool) {
    let me = &state.replica;
    match state.store.claim_template_builds(&me.id, me.lease_ms(), own).await {
        Ok(taken) => taken.iter().for_each(|t| start(state, t)),
        Err(e) => tracing::warn!(error = %e, "cannot look for template builds to take over"),
    }
}

/// Brings this replica in line with the stored templates (at start, then every sweep):
/// builds whose builder was lost are taken over, each ready template with a pool has its
/// pool here (its environment fetched first), and a deleted template's pool and environment
/// go.
pub async fn sync(state: &Arc<Service>) {
    take_builds(state, false).await;
    let stored = match state.store.list_templates().await {
        Ok(all) => all,
        Err(e) => return tracing::warn!(error = %e, "cannot read templates"),
    };
    for t in stored.iter().filter(|t| t.status == TemplateStatus::Ready && t.pool_size > 0) {
        if state.session_pool(&t.name).is_some() {
            continue;
        }
        match environment::ensure_here(&state.store, &state.dirs, &t.name).await {
            Ok(()) => state.add_pool(t),
            Err(e) => tracing::warn!(template = %t.name, error = %e, "no pool: the environment is not here"),
        }
    }
    // Gone from the list read above, and still gone now (one made since is no stale leftover).
    let listed = |name: &str| stored.iter().any(|t| t.name == name);
    let pooled = state.pooled_templates().into_iter().filter(|n| n != DEFAULT && !listed(n));
    let held = environment::held_here(&state.dirs).into_iter().filter(|n| !listed(n));
    for name in pooled.chain(held) {
        if matches!(state.store.get_template(&name).await, Ok(None)) {
            state.remove_pool(&name).await;
            environment::remove_here(&state.dirs, &name);
        }
    }
}

async fn build(state: Arc<Service>, t: Template) {
    tracing::info!(template = %t.name, packages = ?t.packages, "building template");
    let dirs = &state.dirs;
    // Start from nothing: a build cut off by a restart may have left half an environment.
    environment::remove_here(dirs, &t.name);
    let result = match dirs.templates.ensure(&t.name) {
        Ok(_) => {
            let timeout = Duration::from_secs(state.config.package_timeout_s);
            let index = state.config.pip_index_url.clone();
            let (name, into) = (format!("template-{}", t.name), sandbox_runtime::Dir::Template(t.name.clone()));
            crate::templates::packages::install(state.runtime.as_ref(), &name, &t.packages, into, index, timeout).await
        }
        Err(e) => Err(e),
    };
    // Kept for the other replicas under a name of its own.
    let build = executions::new_id(&t.name);
    let result = match result {
        Ok(r) if r.status == InstallStatus::Succeeded => environment::publish(&state, &t.name, &build).await.map(|_| r),
        other => other,
    };
    let finished = match result {
        Ok(r) if r.status == InstallStatus::Succeeded => {
            Template { status: TemplateStatus::Ready, installed: r.installed, ..t.clone() }
        }
        Ok(r) => Template { status: TemplateStatus::Failed, error: r.error, ..t.clone() },
        Err(e) => {
            if let ServiceError::Internal(detail) = &e {
                tracing::error!(template = %t.name, %detail, "template build failed");
            }
            Template { status: TemplateStatus::Failed, error: Some(e.public_message()), ..t.clone() }
        }
    };
    let finished = Template { updated_at: Utc::now(), ..finished };
    let ready = finished.status == TemplateStatus::Ready;
    if ready {
        dirs.environments.built.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    } else {
        environment::remove_here(dirs, &t.name);
    }
    let recorded = state.store.finish_template_build(&finished, &state.replica.id, ready.then_some(&build)).await;
    match recorded {
        Ok(true) => {}
        // Deleted meanwhile, or taken over by another replica (this one lost its lease): this
        // build is nobody's.
        other => {
            if let Err(e) = other {
                tracing::error!(template = %t.name, error = %e, "cannot store the template build");
            }
            if ready {
                if let Err(e) = dirs.storage.forget_environment(&build).await {
                    tracing::warn!(template = %t.name, error = %e, "cannot remove an unused environment from storage");
                }
            }
            if !matches!(state.store.get_template(&t.name).await, Ok(Some(_))) {
                environment::remove_here(dirs, &t.name);
            }
            return;
        }
    }
    tracing::info!(template = %t.name, status = ?finished.status, error = ?finished.error, "template built");
    start(&state, &finished);
}

/// Deletes a stored template that no session uses. A shared one only an admin key may delete.
pub async fn delete(state: &Service, caller: &Caller, name: &str) -> Result<(), ServiceError> {
    let Some(t) = find(state, caller, name).await? else {
        return Err(ServiceError::not_found("template", name));
    };
    if t.builtin {
        return Err(ServiceError::Conflict(format!("template {name:?} is built in and cannot be deleted")));
    }
    if t.tenant.is_none() && !caller.shares() {
        return Err(ServiceError::Forbidden(format!(
            "template {name:?} is shared with every tenant: only an admin key may delete it"
        )));
    }
    if state.store.template_in_use(name).await? {
        return Err(ServiceError::Conflict(format!("template {name:?} is used by sessions; delete them first")));
    }
    let build = state.store.template_environment(name).await?;
    state.store.delete_template(name).await?;
    state.remove_pool(name).await;
    environment::remove_here(&state.dirs, name);
    if let Some(build) = build {
        if let Err(e) = state.dirs.storage.forget_environment(&build).await {
            tracing::warn!(template = %name, error = %e, "cannot remove the environment from storage");
        }
    }
    if let Some(image) = &t.image {
        if !state.store.image_in_use(image).await? {
            state.runtime.release_image(image).await;
        }
    }
    Ok(())
}

/// An image reference as the engine takes it (`name[:tag]`, `registry/name@sha256:...`): at
/// most 255 characters of letters, digits and `. _ - / : @`, not starting with `-`.
fn check_image_name(image: &str) -> Result<(), ServiceError> {
    let ok = (1..=255).contains(&image.len())
        && !image.starts_with('-')
        && image.chars().all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c));
    match ok {
        true => Ok(()),
        false => Err(ServiceError::Invalid(format!("image {image:?} is not an image reference such as \"name:tag\""))),
    }
}

/// Whether a session of template `t` with these settings is like the sandboxes in its pool.
pub fn poolable(t: &Template, session: &sandbox_api::Session) -> bool {
    session.kernel.is_some() && session.env == t.env && limits_from(&session.limits) == limits_from(&t.limits)
}

impl Service {
    /// A page of the templates `caller` sees, the built-in `default` first, and the next
    /// page's cursor.
    pub async fn templates(
        &self,
        caller: &Caller,
        page: crate::Page,
    ) -> Result<(Vec<Template>, Option<String>), ServiceError> {
        let limit = page.limit();
        let scope = caller.scope();
        // The built-in one is not stored: it heads the first page.
        let Some(cursor) = page.cursor else {
            let first = builtin(self)?;
            if limit == 1 {
                let more = !self.store.page_templates(1, None, scope).await?.items.is_empty();
                return Ok((vec![first], more.then(sandbox_store::cursor::start)));
            }
            let rest = self.store.page_templates(limit - 1, Some(&sandbox_store::cursor::start()), scope).await?;
            return Ok((std::iter::once(first).chain(rest.items).collect(), rest.next));
        };
        let p = self.store.page_templates(limit, Some(&cursor), scope).await?;
        Ok((p.items, p.next))
    }

    /// Template `name`, if `caller` sees it.
    pub async fn template(&self, caller: &Caller, name: &str) -> Result<Template, ServiceError> {
        find(self, caller, name).await?.ok_or_else(|| ServiceError::not_found("template", name))
    }

    /// Creates a template; with packages it is `building` until they are installed.
    pub async fn create_template(
        self: &Arc<Self>,
        caller: &Caller,
        req: CreateTemplate,
    ) -> Result<Template, ServiceError> {
        let t = create(self, caller, req).await?;
        tracing::info!(template = %t.name, status = ?t.status, "template created");
        Ok(t)
    }

    /// Deletes template `name`: refused while a session uses it, and for the built-in one.
    pub async fn delete_template(&self, caller: &Caller, name: &str) -> Result<(), ServiceError> {
        delete(self, caller, name).await
    }
}
