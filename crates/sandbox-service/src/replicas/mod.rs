//! Replicas: the sandboxd processes that share one database. This is the one place that knows
//! who runs what.
//!
//! - Each replica has an id (`--replica-id`; by default a tag of its data dir, so a restart
//!   on the same data dir is the same replica) and an address other replicas reach it at
//!   (`--advertise-url`). It registers at start and renews a lease: a heartbeat every third of
//!   `--replica-lease-s`, on the database's clock.
//! - A running session belongs to the replica that runs its sandbox (`sessions.owner`, set
//!   when it starts or resumes there); a stopped one to none, and it resumes wherever it is
//!   next used. A restart recovers only the replica's own earlier work (`Store::recover`).
//! - Every heartbeat also looks for replicas whose lease lapsed. One replica adopts each, once
//!   (one `UPDATE` decides): their queued and running executions become `interrupted`, their
//!   sessions `stopped` (`replica_lost`). Where sandboxes outlive their replica (a cluster's
//!   pods: `Runtime::keeps_sandboxes`), the sessions stay running and become the adopter's,
//!   which finds each sandbox again when the session is next used (`Runtime::reattach`).
//! - A replica that finds its own lease gone (it stalled past the lease, and another adopted
//!   its work) destroys its sandboxes, which the database no longer calls its own (or, where
//!   they outlive it, lets go of them for the adopter), and registers again. `/readyz` says
//!   so meanwhile.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::access::auth::Caller;
use crate::config::Config;
use crate::{Service, SetupError};

/// What local workspace storage means on a database that replicas share, said at start and
/// by `/readyz`.
pub const LOCAL_STORAGE_ON_SHARED_DATABASE: &str = "workspaces are on this host's disk, which other replicas do not \
     see: a stopped session resumes with its files only here (several replicas need shared storage: \
     --storage s3://... or one shared filesystem)";

/// This process as a replica.
pub struct Replica {
    pub id: String,
    /// Where other replicas reach this one.
    pub address: String,
    /// How long a heartbeat holds.
    pub lease: Duration,
    /// When the lease was last renewed.
    renewed: Mutex<Instant>,
    /// Another replica adopted this one's work since.
    adopted: AtomicBool,
}

impl Replica {
    /// This process's identity, from `config`.
    pub fn of(config: &Config) -> Result<Replica, SetupError> {
        let id = match &config.replica_id {
            Some(id) => id.clone(),
            None => {
                let dir = std::fs::canonicalize(&config.data_dir).unwrap_or_else(|_| config.data_dir.clone());
                sandbox_runtime::local::tag(&dir.to_string_lossy())
            }
        };
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(SetupError::Config(format!("replica id {id:?}: 1 to 64 letters, digits, '-' or '_'")));
        }
        let address = config.advertise_url.clone().unwrap_or_else(|| format!("http://{}", config.listen));
        let lease = Duration::from_secs_f64(config.replica_lease_s);
        Ok(Replica { id, address, lease, renewed: Mutex::new(Instant::now()), adopted: AtomicBool::new(false) })
    }

    /// Why this replica holds no lease now, if it holds none: its heartbeats fail (the
    /// database is out of reach), or another replica adopted its work.
    pub fn lease_lost(&self) -> Option<String> {
        if self.adopted.load(Ordering::SeqCst) {
            return Some("another replica adopted this one's work after its lease lapsed".into());
        }
        let since = self.renewed.lock().unwrap_or_else(|p| p.into_inner()).elapsed();
        (since > self.lease).then(|| format!("no heartbeat reached the database for {} ms", since.as_millis()))
    }

    /// The lease in milliseconds, as the database measures heartbeats.
    pub fn lease_ms(&self) -> u64 {
        u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX)
    }

    fn renewed(&self) {
        *self.renewed.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.adopted.store(false, Ordering::SeqCst);
    }
}

impl Service {
    /// This process as a replica.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// Every replica of the database, with its heartbeat's age and the sessions it runs: for
    /// operators (an admin key, or no key in force).
    pub async fn replicas(&self, caller: &Caller) -> Result<Vec<sandbox_api::Replica>, crate::ServiceError> {
        if caller.scope().is_some() {
            return Err(crate::ServiceError::Forbidden("the replicas are for admin keys".into()));
        }
        let lease_ms = self.replica.lease_ms();
        let listed = self.store.replicas().await?;
        Ok(listed
            .into_iter()
            .map(|r| sandbox_api::Replica {
                this: r.id == self.replica.id,
                alive: r.alive(lease_ms),
                id: r.id,
                address: r.address,
                version: r.version,
                started_at: r.started_at,
                heartbeat_age_ms: r.heartbeat_age_ms,
                adopted_by: r.adopted_by,
                sessions: r.sessions,
            })
            .collect())
    }

    /// Refuses work on `session` here while another replica runs its sandbox: that replica
    /// holds its kernel and its files. The REST door forwards such requests to it
    /// ([`Service::owner_elsewhere`]); a door that does not yet (MCP, the E2B API) gets this
    /// answer, naming the replica. A stopped session runs wherever it is next used.
    pub(crate) async fn runs_here(&self, session: &sandbox_api::Session) -> Result<(), crate::ServiceError> {
        let Some(owner) = session.replica.as_deref().filter(|o| *o != self.replica.id) else { return Ok(()) };
        let lease_ms = self.replica.lease_ms();
        let known = self.store.replicas().await?;
        let id = &session.id;
        match known.iter().find(|r| r.id == owner) {
            Some(r) if r.alive(lease_ms) => Err(crate::ServiceError::Conflict(format!(
                "session {id} runs on replica {owner} ({}): send its requests there",
                r.address
            ))),
            _ => Err(crate::ServiceError::SandboxFailed(format!(
                "replica {owner}, which runs session {id}, stopped answering; once its lease lapses \
                 (--replica-lease-s) another replica stops the session and it resumes anywhere: try again shortly"
            ))),
        }
    }

    /// Where to send a request for session `id` that `caller` makes, when another live
    /// replica runs its sandbox: that replica's address. `None`: serve it here (this replica
    /// runs it, none does, or the caller may not see it, which the request will say).
    pub async fn owner_elsewhere(&self, caller: &Caller, id: &str) -> Result<Option<String>, crate::ServiceError> {
        // One SQLite database has one replica: nothing to ask the database. A session whose
        // sandbox runs here is this replica's (the request's own read of the session checks
        // it again, `runs_here`): the owner's requests, the most common, cost no query here.
        if self.store.backend() == sandbox_store::Backend::Sqlite || self.sessions.has_sandbox(id) {
            return Ok(None);
        }
        let owner = match self.store.session_owner(id).await? {
            Some(owner) if owner != self.replica.id => owner,
            _ => return Ok(None),
        };
        match self.session(caller, id).await {
            Ok(_) => {}
            Err(crate::ServiceError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        }
        let lease_ms = self.replica.lease_ms();
        let known = self.store.replicas().await?;
        Ok(known.into_iter().find(|r| r.id == owner && r.alive(lease_ms)).map(|r| r.address))
    }

    /// Whether this replica does the work the replicas share, which must be done once, not
    /// once per replica (retention of workspaces in shared storage, pruning of records): the
    /// live replica of the lowest id does. While the replicas change, two may both think so
    /// for a sweep; that work is safe to do twice.
    pub(crate) async fn does_shared_work(&self) -> Result<bool, crate::ServiceError> {
        if self.store.backend() == sandbox_store::Backend::Sqlite {
            return Ok(true);
        }
        if self.replica.lease_lost().is_some() {
            return Ok(false);
        }
        let lease_ms = self.replica.lease_ms();
        let known = self.store.replicas().await?;
        let first_alive = known.iter().filter(|r| r.alive(lease_ms)).map(|r| &r.id).min();
        Ok(first_alive.is_none_or(|id| *id == self.replica.id))
    }

    /// What door `door` kept of its client session `id` (an MCP session's `initialize`), on
    /// whichever replica the session began: any replica takes it up.
    pub async fn door_session(&self, door: &str, id: &str) -> Result<Option<String>, crate::ServiceError> {
        Ok(self.store.door_session(door, id).await?)
    }

    /// Keeps what door `door` needs of its client session `id` for every replica.
    pub async fn keep_door_session(&self, door: &str, id: &str, state: &str) -> Result<(), crate::ServiceError> {
        Ok(self.store.put_door_session(door, id, state).await?)
    }

    /// Forgets door `door`'s client session `id` (the client closed it).
    pub async fn forget_door_session(&self, door: &str, id: &str) -> Result<(), crate::ServiceError> {
        Ok(self.store.delete_door_session(door, id).await?)
    }

    /// Registers this replica (at start, before any sandbox runs).
    pub(crate) async fn register_replica(&self) -> Result<(), crate::ServiceError> {
        let r = &self.replica;
        self.store.register_replica(&r.id, &r.address, env!("CARGO_PKG_VERSION")).await?;
        r.renewed();
        Ok(())
    }
}

/// Refuses to start as replica `me` while another process of that id keeps its lease: two
/// processes of one id would each take the other's work for their own. A fresh heartbeat from
/// another address may be this replica's own last one (it crashed and is starting again on
/// another port), so it is watched for a lease or two: one that keeps beating is another
/// process.
pub(crate) async fn refuse_a_live_namesake(store: &sandbox_store::Store, me: &Replica) -> Result<(), SetupError> {
    let lease_ms = me.lease_ms();
    let deadline = std::time::Instant::now() + me.lease * 2;
    loop {
        let known = store.replicas().await.map_err(SetupError::Store)?;
        let namesake = known.into_iter().find(|r| r.id == me.id && r.address != me.address && r.alive(lease_ms));
        let Some(r) = namesake else { return Ok(()) };
        if std::time::Instant::now() >= deadline {
            return Err(SetupError::Config(format!(
                "replica id {} is in use by a live replica at {}: give this one an id of its own (--replica-id)",
                r.id, r.address
            )));
        }
        tokio::time::sleep(me.lease / 3).await;
    }
}

/// Renews the lease and adopts lapsed replicas, every third of the lease, until the server is
/// gone.
pub fn spawn_heartbeat(state: &Arc<Service>) {
    let every = state.replica.lease.as_secs_f64() / 3.0;
    crate::sessions::lifecycle::spawn_every(state, every, |state| async move {
        beat(&state).await;
    });
}

async fn beat(state: &Arc<Service>) {
    let me = &state.replica;
    match state.store.heartbeat_replica(&me.id).await {
        Ok(true) => me.renewed(),
        Ok(false) => return lease_lost(state).await,
        // The database is out of reach: the lease runs out unless it comes back in time.
        Err(e) => {
            tracing::warn!(error = %e, "replica heartbeat failed");
            return;
        }
    }
    let lease_ms = me.lease_ms();
    match state.store.adopt_lapsed_replicas(&me.id, lease_ms, state.runtime.keeps_sandboxes()).await {
        Ok(adopted) => {
            for a in adopted {
                tracing::warn!(
                    replica = %a.replica,
                    executions = a.released.executions,
                    sessions = a.released.sessions,
                    "adopted a replica whose lease lapsed: its executions are interrupted, its sessions stopped"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot look for lapsed replicas"),
    }
}

/// Another replica adopted this one's work: what runs here is no longer ours in the database.
async fn lease_lost(state: &Arc<Service>) {
    let me = &state.replica;
    if !me.adopted.swap(true, Ordering::SeqCst) {
        tracing::error!(replica = %me.id, "this replica's lease lapsed and another adopted its work: destroying its sandboxes");
    }
    // Its sandboxes are the adopter's now: where they outlive a replica, it finds them again
    // (and its connection cuts this one's off); else they end here.
    match state.runtime.keeps_sandboxes() {
        true => state.sessions.let_go_running(),
        false => state.sessions.destroy_running().await,
    }
    match state.register_replica().await {
        Ok(()) => tracing::info!(replica = %me.id, "registered again"),
        Err(e) => tracing::warn!(error = %e, "cannot register again; retrying at the next heartbeat"),
    }
}
