//! Child bookkeeping for PID 1: reaps every zombie (orphans re-parented to us included) and
//! hands the exit status of the processes we started to whoever waits for them.
//!
//! The reaper peeks at a zombie (`WNOWAIT`) before it takes the map lock, and [`Children::spawn`]
//! holds that lock across `spawn`. So a pid is always registered before its status is read, and
//! a child that std reaps itself (when exec fails) is never reaped twice.

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use sandbox_sys::ExitStatus;

#[derive(Default)]
pub struct Children {
    inner: Mutex<Inner>,
    spawned: Condvar,
}

#[derive(Default)]
struct Inner {
    waiting: HashMap<i32, Sender<ExitStatus>>,
    /// Bumped at every spawn, so the reaper never sleeps through a new child.
    generation: u64,
}

impl Children {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Spawns `cmd` and returns the child with a receiver for its exit status.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<(Child, Receiver<ExitStatus>)> {
        let mut inner = self.lock();
        let child = cmd.spawn()?;
        let (tx, rx) = mpsc::channel();
        inner.waiting.insert(child.id() as i32, tx);
        inner.generation += 1;
        self.spawned.notify_all();
        Ok((child, rx))
    }

    /// Reaps forever. Run it on a thread of its own.
    pub fn reap_forever(&self) {
        loop {
            let generation = self.lock().generation;
            match sandbox_sys::wait_any_exited_peek() {
                Ok(Some(pid)) => {
                    let mut inner = self.lock();
                    if let Ok(Some(status)) = sandbox_sys::reap(pid) {
                        if let Some(tx) = inner.waiting.remove(&pid) {
                            let _ = tx.send(status);
                        }
                    }
                }
                Ok(None) => {
                    let inner = self.lock();
                    if inner.generation == generation {
                        let _ = self.spawned.wait_timeout(inner, Duration::from_secs(5));
                    }
                }
                Err(e) => {
                    eprintln!("sandbox-executor: waitid: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}
