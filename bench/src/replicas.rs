//! Replicas on PostgreSQL against one sandboxd on SQLite, in one run (issue 19's benchmark):
//!
//! - latency of a stateful `print(1)`: on SQLite; on PostgreSQL through the replica that runs
//!   the session; and through a second replica, which forwards to it. Calls interleaved one by
//!   one, one lean keep-alive client per server.
//! - throughput, `sustained.rs`: one replica on SQLite, one on PostgreSQL, two on PostgreSQL
//!   (each session's calls to the replica that runs it).
//!
//! PostgreSQL is a fresh cluster of `scripts/postgres.sh` with `fsync` on and
//! `synchronous_commit` off: crash-safe, with commits not waiting for a flush, which is what
//! SQLite's WAL with `synchronous = NORMAL` does.

use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use sandbox_api::{CreateExecution, CreateSession, ExecutionStatus, Language};
use sandbox_client::Client;

use crate::{start_sandboxd, stats};

/// A PostgreSQL cluster of `scripts/postgres.sh`, stopped and removed on drop.
struct Postgres {
    dir: tempfile::TempDir,
    url: String,
}

fn script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/postgres.sh")
}

impl Postgres {
    fn start() -> anyhow::Result<Postgres> {
        let dir = tempfile::Builder::new().prefix("sandbox-bench-postgres-").tempdir_in("/tmp")?;
        let out = Command::new(script()).arg("start").arg(dir.path()).env("POSTGRES_DURABLE", "1").output()?;
        anyhow::ensure!(out.status.success(), "postgres.sh: {}", String::from_utf8_lossy(&out.stderr));
        Ok(Postgres { url: String::from_utf8_lossy(&out.stdout).trim().to_string(), dir })
    }

    /// The URL of a new database `name`.
    async fn database(&self, name: &str) -> anyhow::Result<String> {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&self.url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&pool).await?;
        pool.close().await;
        let (base, _) = self.url.rsplit_once('/').context("a database URL")?;
        Ok(format!("{base}/{name}"))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").arg(self.dir.path()).status();
    }
}

async fn ready(c: &Client) -> anyhow::Result<()> {
    let (status, r) = c.readiness().await?;
    anyhow::ensure!(status.is_success(), "not ready: {} / {}", r.sandbox.message, r.replica.message);
    Ok(())
}

/// One stateful `print(1)`, in ms.
async fn print1(c: &Client, session: &str) -> anyhow::Result<f64> {
    let start = Instant::now();
    let e = c.execute(session, &CreateExecution::new(Language::Python, "print(1)")).await?;
    anyhow::ensure!(e.status == ExecutionStatus::Succeeded && e.stdout == "1\n", "{e:?}");
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}

pub async fn run(sandboxd: &std::path::Path, n: usize, sessions: usize, seconds: u64) -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    let (one, two) = (pg.database("bench_one").await?, pg.database("bench_two").await?);
    let quiet = [("SANDBOXD_SESSION_POOL", "0"), ("SANDBOXD_RUN_POOL", "0")];
    let with = |url: &str| {
        let mut env = quiet.to_vec();
        env.push(("SANDBOXD_DATABASE_URL", url));
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>()
    };
    let start = |env: &[(String, String)]| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        start_sandboxd(sandboxd, &env)
    };
    let sqlite = start_sandboxd(sandboxd, &quiet)?;
    let pg_single = start(&with(&one))?;
    let (pg_a, pg_b) = (start(&with(&two))?, start(&with(&two))?);
    let (cs, cp, ca, cb) =
        (Client::new(&sqlite.url), Client::new(&pg_single.url), Client::new(&pg_a.url), Client::new(&pg_b.url));
    for c in [&cs, &cp, &ca, &cb] {
        ready(c).await?;
    }

    // Latency: the same session kernel on each path, interleaved.
    let (ss, sp, sa) = (
        cs.create_session(&CreateSession::default()).await?,
        cp.create_session(&CreateSession::default()).await?,
        ca.create_session(&CreateSession::default()).await?,
    );
    for _ in 0..20 {
        print1(&cs, &ss.id).await?;
        print1(&cp, &sp.id).await?;
        print1(&ca, &sa.id).await?;
        print1(&cb, &sa.id).await?;
    }
    let (mut on_sqlite, mut on_pg, mut owner, mut forwarded) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        on_sqlite.push(print1(&cs, &ss.id).await?);
        on_pg.push(print1(&cp, &sp.id).await?);
        owner.push(print1(&ca, &sa.id).await?);
        forwarded.push(print1(&cb, &sa.id).await?);
    }
    let (s, p, o, f) = (stats(on_sqlite), stats(on_pg), stats(owner), stats(forwarded));
    println!("replicas: stateful print(1), lean keep-alive client, interleaved, n={n}");
    println!("  sqlite, one replica:          p50={:.2}ms p99={:.2}ms", s.p50, s.p99);
    println!("  postgres, one replica:        p50={:.2}ms p99={:.2}ms", p.p50, p.p99);
    println!("  postgres, through the owner:  p50={:.2}ms p99={:.2}ms", o.p50, o.p99);
    println!("  postgres, forwarded by B:     p50={:.2}ms p99={:.2}ms", f.p50, f.p99);
    let (pg_cost, fwd_cost) = (p.p50 - s.p50, f.p50 - o.p50);
    println!(
        "  postgres adds {pg_cost:.2} ms (goal <= 1 ms) {}; forwarding adds {fwd_cost:.2} ms (goal <= 1 ms) {}",
        if pg_cost <= 1.0 { "MET" } else { "MISSED" },
        if fwd_cost <= 1.0 { "MET" } else { "MISSED" }
    );
    for (c, id) in [(&cs, &ss.id), (&cp, &sp.id), (&ca, &sa.id)] {
        c.delete_session(id).await?;
    }

    // Throughput, one configuration after the other on the same machine.
    let rate_sqlite =
        crate::sustained::run(std::slice::from_ref(&cs), sessions, seconds, " [sqlite, 1 replica]").await?;
    drop(sqlite);
    let rate_pg = crate::sustained::run(std::slice::from_ref(&cp), sessions, seconds, " [postgres, 1 replica]").await?;
    drop(pg_single);
    let rate_two = crate::sustained::run(&[ca, cb], sessions, seconds, " [postgres, 2 replicas]").await?;
    println!(
        "  throughput: postgres/sqlite={:.2}, two replicas/one={:.2} (goal >= 1.6 where clients are not the bottleneck)",
        rate_pg / rate_sqlite,
        rate_two / rate_pg
    );
    Ok(())
}
