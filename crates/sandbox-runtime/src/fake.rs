//! An in-memory runtime for tests of the layers above (routing, validation, the store): it
//! records what it is asked and answers with the code echoed back, without any sandbox.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sandbox_protocol::{ExecRequest, ExecResult};

use crate::executor_client::OutputSink;
use crate::runtime::{ExecOutcome, InstallOutcome, PackageInstall, Readiness, Runtime, Sandbox, SandboxSpec};
use crate::RuntimeError;

#[derive(Default)]
pub struct FakeRuntime {
    /// Every spec passed to `create`, in order.
    pub created: Arc<Mutex<Vec<SandboxSpec>>>,
    /// When set, `create` and `readiness` fail with this message.
    pub not_ready: Mutex<Option<String>>,
}

#[async_trait]
impl Runtime for FakeRuntime {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn workspace_access(&self) -> crate::WorkspaceAccess {
        crate::WorkspaceAccess::Host
    }

    async fn readiness(&self) -> Readiness {
        let problem = self.not_ready.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Readiness {
            ready: problem.is_none(),
            message: problem.unwrap_or_else(|| "ok".into()),
            detail: Default::default(),
            runtime: "fake",
        }
    }

    fn workspace_owner(&self) -> Option<(u32, u32)> {
        None
    }

    async fn create(&self, spec: SandboxSpec) -> Result<Box<dyn Sandbox>, RuntimeError> {
        if let Some(p) = self.not_ready.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Err(RuntimeError::NotReady(p));
        }
        let name = spec.name.clone();
        self.created.lock().unwrap_or_else(|p| p.into_inner()).push(spec);
        Ok(Box::new(FakeSandbox { name, alive: AtomicBool::new(true) }))
    }

    /// Says each package was installed at version 0, writing nothing.
    async fn install_packages(&self, req: PackageInstall) -> Result<InstallOutcome, RuntimeError> {
        let installed = req
            .packages
            .iter()
            .map(|p| (p.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect(), "0".into()))
            .collect();
        Ok(InstallOutcome { success: true, log: String::new(), timed_out: false, installed })
    }

    async fn check_image(&self, image: &str) -> Result<(), RuntimeError> {
        Err(crate::runtime::no_images("fake", image))
    }

    async fn release_image(&self, _image: &str) {}
}

pub struct FakeSandbox {
    name: String,
    alive: AtomicBool,
}

#[async_trait]
impl Sandbox for FakeSandbox {
    fn name(&self) -> &str {
        &self.name
    }

    async fn exec(&self, req: ExecRequest, _sink: Option<OutputSink>) -> Result<ExecOutcome, RuntimeError> {
        if !self.is_alive() {
            return Err(RuntimeError::SandboxDied("destroyed".into()));
        }
        let result = ExecResult { id: req.id, exit_code: Some(0), stdout: req.code, ..Default::default() };
        Ok(ExecOutcome { result, limit: None, cpu_ms: None, peak_memory_bytes: None })
    }

    async fn start_kernel(&self, _env: std::collections::BTreeMap<String, String>) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn interrupt(&self) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn restart_kernel(&self) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn file(
        &self,
        _op: sandbox_protocol::files::FileOp,
    ) -> Result<sandbox_protocol::files::FileResult, RuntimeError> {
        let message = "the fake runtime's sandboxes keep no files".into();
        Ok(sandbox_protocol::files::FileResult::Failed { fault: sandbox_protocol::files::FileFault::Other { message } })
    }

    fn isolation(&self) -> String {
        "none: a fake sandbox for tests".into()
    }

    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    async fn destroy(&self) {
        self.alive.store(false, Ordering::SeqCst);
    }
}
