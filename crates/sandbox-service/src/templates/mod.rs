//! Templates: named session defaults (limits, timeout, kernel, environment) plus a Python
//! environment of preinstalled packages that their sessions see read-only.
//!
//! "default" is built in: the server's configured defaults and no packages. Others are created
//! through the API and kept in the store. One with packages is built in the background
//! ("building", then "ready" or "failed"); sessions can use a template only when it is ready.
//! Each template may keep a warm pool of its own.

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
    if t.name == DEFAULT || !state.store.insert_template(&t).await? {
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

/// Builds `t` in the background if it is building; gives it its pool once it is ready.
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

/// Picks up stored templates at start-up: pools for ready ones, builds cut off by a restart.
pub async fn resume(state: &Arc<Service>) {
    match state.store.list_templates().await {
        Ok(all) => all.iter().for_each(|t| start(state, t)),
        Err(e) => tracing::error!(error = %e, "cannot read templates"),
    }
}

async fn build(state: Arc<Service>, t: Template) {
    tracing::info!(template = %t.name, packages = ?t.packages, "building template");
    let dirs = &state.dirs;
    // Start from nothing: a build cut off by a restart may have left half an environment.
    dirs.templates.remove(&t.name);
    let result = match dirs.templates.ensure(&t.name) {
        Ok(_) => {
            let timeout = Duration::from_secs(state.config.package_timeout_s);
            let index = state.config.pip_index_url.clone();
            let (name, into) = (format!("template-{}", t.name), sandbox_runtime::Dir::Template(t.name.clone()));
            crate::templates::packages::install(state.runtime.as_ref(), &name, &t.packages, into, index, timeout).await
        }
        Err(e) => Err(e),
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
    if finished.status != TemplateStatus::Ready {
        dirs.templates.remove(&t.name);
    }
    // Deleted meanwhile: leave nothing behind.
    if !matches!(state.store.get_template(&t.name).await, Ok(Some(_))) {
        dirs.templates.remove(&t.name);
        return;
    }
    if let Err(e) = state.store.update_template(&finished).await {
        tracing::error!(template = %t.name, error = %e, "cannot store the template build");
        return;
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
    state.store.delete_template(name).await?;
    state.remove_pool(name).await;
    state.dirs.templates.remove(name);
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
