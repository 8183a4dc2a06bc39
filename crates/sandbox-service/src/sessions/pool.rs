//! Pools of started, idle sandboxes, so work does not wait for a sandbox to start (the cold
//! path pays ~7 ms of kernel cgroup migration alone, and a Python kernel ~0.3 s more).
//!
//! One pool serves `POST /v1/run` (bare sandboxes); each template with a `pool_size` has one
//! for its new sessions (their kernel started and warmed by a first cell, their template's
//! environment mounted). Pooled sandboxes have their pool's limits and environment and empty
//! directories of their own; anything else starts cold. Each one taken is replaced in the
//! background.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use std::collections::BTreeMap;

use sandbox_protocol::{ExecRequest, Language};
use sandbox_runtime::{ResourceLimits, Runtime, Sandbox};

use crate::executions::new_id;
use crate::files::workspace::HostDirs;

/// A started sandbox waiting for work, with the workspace it was started on.
pub struct Warm {
    /// Its name, and its workspace's; in a session pool, the id of the session that takes it.
    pub name: String,
    pub sandbox: Box<dyn Sandbox>,
}

/// What a session pool's sandboxes are for.
pub struct PoolSession {
    pub template: String,
    /// The template's own image, if any.
    pub image: Option<String>,
    /// The environment the kernel starts with (warmed by one cell).
    pub env: BTreeMap<String, String>,
}

pub struct Pool {
    size: usize,
    limits: ResourceLimits,
    /// For session pools: what their sandboxes are for.
    session: Option<PoolSession>,
    ready: Mutex<VecDeque<Warm>>,
    /// Sandboxes being started right now, so refills do not overshoot.
    starting: AtomicUsize,
    /// Drained for good (server shutdown): nothing more is started.
    closed: AtomicBool,
}

impl Pool {
    /// A pool of bare sandboxes (`session` `None`) or of session sandboxes of a template with a
    /// warm kernel started with an environment.
    pub fn new(size: usize, limits: ResourceLimits, session: Option<PoolSession>) -> Pool {
        Pool {
            size,
            limits,
            session,
            ready: Mutex::new(VecDeque::new()),
            starting: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        }
    }

    pub fn limits(&self) -> ResourceLimits {
        self.limits
    }

    /// How many sandboxes it keeps when full.
    pub fn size(&self) -> usize {
        self.size
    }

    pub fn len(&self) -> usize {
        self.ready.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A live warm sandbox, if there is one. Dead ones met on the way are cleaned up.
    pub fn take(&self, dirs: &Arc<HostDirs>) -> Option<Warm> {
        let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(w) = ready.pop_front() {
            if w.sandbox.is_alive() {
                return Some(w);
            }
            let dirs = Arc::clone(dirs);
            tokio::spawn(async move {
                w.sandbox.destroy().await;
                dirs.remove(&w.name);
            });
        }
        None
    }

    /// Starts sandboxes in the background until the pool is full again. Holds the runtime and
    /// directories only weakly: a pool never keeps a stopped server alive.
    pub fn refill(self: &Arc<Self>, runtime: &Arc<dyn Runtime>, dirs: &Arc<HostDirs>) {
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return;
            }
            let starting = self.starting.load(Ordering::SeqCst);
            if self.len() + starting >= self.size {
                return;
            }
            if self.starting.compare_exchange(starting, starting + 1, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                break;
            }
        }
        let (pool, runtime, dirs) = (Arc::downgrade(self), Arc::downgrade(runtime), Arc::downgrade(dirs));
        tokio::spawn(async move { start_one(pool, runtime, dirs).await });
    }

    /// Destroys every waiting sandbox (server shutdown) and removes their workspaces, after the
    /// starts in flight have finished (so that none is left behind with a workspace mounted).
    pub async fn drain(&self, dirs: &HostDirs) {
        self.closed.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
        while self.starting.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let all: Vec<Warm> = self.ready.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect();
        for w in all {
            w.sandbox.destroy().await;
            dirs.remove(&w.name);
        }
    }
}

async fn start_one(pool: Weak<Pool>, runtime: Weak<dyn Runtime>, dirs: Weak<HostDirs>) {
    let (Some(p), Some(rt), Some(ws)) = (pool.upgrade(), runtime.upgrade(), dirs.upgrade()) else { return };
    // A session sandbox is named (and its workspace and packages made) under the id its
    // session will have: taking it needs no rename, which only a shared disk could do under a
    // live mount.
    let name = match &p.session {
        Some(_) => new_id("ses"),
        None => format!("run-{}", new_id("pool")),
    };
    // The workspace first, off the async threads (it may be a new volume).
    let spec = match &p.session {
        Some(s) => ws
            .workspaces
            .ensure_soon(&name)
            .await
            .and_then(|_| ws.session_spec(&name, &s.template, s.image.as_deref(), None, p.limits)),
        None => ws.bare_spec(&name, p.limits).await,
    };
    let started = match spec {
        Ok(spec) => rt.create(spec).await.ok(),
        Err(_) => None,
    };
    let started = match (started, &p.session) {
        (Some(sandbox), Some(s)) => warm_kernel(sandbox, s.env.clone()).await,
        (started, _) => started,
    };
    let started = match started {
        Some(sandbox) if p.closed.load(Ordering::SeqCst) => {
            sandbox.destroy().await;
            None
        }
        other => other,
    };
    // In the pool before the start counts as over: a drain waiting for starts then finds it.
    let started_one = started.is_some();
    match started {
        Some(sandbox) => p.ready.lock().unwrap_or_else(|e| e.into_inner()).push_back(Warm { name, sandbox }),
        // Not ready (no bubblewrap, ...), or closed: leave the pool empty; runs go the cold way
        // and report why.
        None => ws.remove(&name),
    }
    p.starting.fetch_sub(1, Ordering::SeqCst);
    if started_one {
        // Keep going until full (one start at a time per call keeps the host calm).
        p.refill(&rt, &ws);
    }
}

/// Starts the kernel and runs a first cell, so the session's first cell finds it warm.
async fn warm_kernel(sandbox: Box<dyn Sandbox>, env: BTreeMap<String, String>) -> Option<Box<dyn Sandbox>> {
    sandbox.start_kernel(env.clone()).await.ok()?;
    let warmup = ExecRequest {
        id: new_id("warm"),
        language: Language::Python,
        code: "pass".into(),
        stdin: None,
        env,
        timeout_ms: 120_000,
        output_limit: 1024,
        outputs_limit: 4096,
        kernel: true,
        context: None,
        forget_context: false,
        stream: false,
    };
    match sandbox.exec(warmup, None).await {
        Ok(o) if o.result.exit_code == Some(0) => Some(sandbox),
        _ => {
            sandbox.destroy().await;
            None
        }
    }
}
