//! Sandbox starts in turn: a decorator over any [`Runtime`] that lets a few starts run at
//! once and the rest wait in arrival order, up to a bound past which a start is refused at
//! once ([`RuntimeError::Busy`]).
//!
//! Without it a burst started every sandbox at once: 200 creates on 2 cores took 29 s at p99,
//! and three failed because their sandboxes, starved of CPU, missed the start timeout. Here
//! the timeout runs only once a start has its turn.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Semaphore;

use crate::runtime::{InstallOutcome, PackageInstall, Readiness, Runtime, Sandbox, SandboxSpec};
use crate::RuntimeError;

pub struct StartQueue {
    inner: Arc<dyn Runtime>,
    /// Tokio's semaphore is fair: waiters get permits in the order they asked.
    running: Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
}

impl StartQueue {
    /// At most `concurrent` starts at once, and `max_waiting` more waiting for their turn.
    pub fn new(inner: Arc<dyn Runtime>, concurrent: usize, max_waiting: usize) -> StartQueue {
        StartQueue { inner, running: Semaphore::new(concurrent.max(1)), waiting: AtomicUsize::new(0), max_waiting }
    }

    /// Starts waiting for a turn now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}

/// Counts one waiter for as long as it waits, also when its caller gives up (a dropped future).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Runtime for StartQueue {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn readiness(&self) -> Readiness {
        self.inner.readiness().await
    }

    fn workspace_access(&self) -> crate::WorkspaceAccess {
        self.inner.workspace_access()
    }

    fn workspace_owner(&self) -> Option<(u32, u32)> {
        self.inner.workspace_owner()
    }

    async fn create(&self, spec: SandboxSpec) -> Result<Box<dyn Sandbox>, RuntimeError> {
        let permit = match self.running.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(RuntimeError::Busy(format!(
                        "{} sandbox starts are already waiting for their turn",
                        self.max_waiting
                    )));
                }
                let _waiting = Waiting(&self.waiting);
                self.running.acquire().await.map_err(|_| RuntimeError::NotReady("shutting down".into()))?
            }
        };
        let created = self.inner.create(spec).await;
        drop(permit);
        created
    }

    async fn install_packages(&self, req: PackageInstall) -> Result<InstallOutcome, RuntimeError> {
        self.inner.install_packages(req).await
    }

    async fn check_image(&self, image: &str) -> Result<(), RuntimeError> {
        self.inner.check_image(image).await
    }

    async fn release_image(&self, image: &str) {
        self.inner.release_image(image).await
    }

    fn copies_workspace(&self) -> bool {
        self.inner.copies_workspace()
    }

    fn keeps_sandboxes(&self) -> bool {
        self.inner.keeps_sandboxes()
    }

    async fn reattach(&self, name: &str) -> Result<Option<Box<dyn Sandbox>>, RuntimeError> {
        self.inner.reattach(name).await
    }

    async fn remove(&self, name: &str) {
        self.inner.remove(name).await
    }

    async fn kept_sandboxes(&self) -> Result<Vec<crate::runtime::KeptSandbox>, RuntimeError> {
        self.inner.kept_sandboxes().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeRuntime;

    fn spec(name: &str) -> SandboxSpec {
        SandboxSpec {
            name: name.into(),
            workspace: "/nonexistent".into(),
            limits: crate::ResourceLimits { memory_bytes: 1 << 20, pids: 8, cpus: 1.0 },
            mounts: Vec::new(),
            image: None,
            template: None,
            tenant: None,
        }
    }

    #[tokio::test]
    async fn starts_past_the_queue_are_refused_at_once_and_the_rest_run_in_turn() {
        let fake = Arc::new(FakeRuntime::default());
        let queue = Arc::new(StartQueue::new(fake.clone(), 1, 2));
        // Hold the only turn, so the next ones must wait.
        let held = queue.running.try_acquire().expect("free");
        let waiters: Vec<_> = (0..2)
            .map(|i| {
                let q = Arc::clone(&queue);
                tokio::spawn(async move { q.create(spec(&format!("w{i}"))).await.map(|s| s.name().to_string()) })
            })
            .collect();
        while queue.waiting() < 2 {
            tokio::task::yield_now().await;
        }
        match queue.create(spec("late")).await {
            Err(RuntimeError::Busy(msg)) => assert!(msg.contains("2 sandbox starts"), "{msg}"),
            other => panic!("expected Busy, got {:?}", other.map(|s| s.name().to_string())),
        }
        drop(held);
        let mut names = Vec::new();
        for w in waiters {
            names.push(w.await.expect("join").expect("created"));
        }
        assert_eq!(names, ["w0", "w1"]);
        assert_eq!(queue.waiting(), 0);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_frees_its_place() {
        let queue = StartQueue::new(Arc::new(FakeRuntime::default()), 1, 1);
        let held = queue.running.try_acquire().expect("free");
        let gave_up = tokio::time::timeout(std::time::Duration::from_millis(20), queue.create(spec("a"))).await;
        assert!(gave_up.is_err());
        assert_eq!(queue.waiting(), 0);
        drop(held);
        assert!(queue.create(spec("b")).await.is_ok());
    }
}
