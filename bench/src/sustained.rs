//! Sustained throughput: `sessions` sessions, each running stateful `print(1)` in its kernel
//! in a loop for `seconds`, all at once, over keep-alive connections. Reports executions per
//! second and the p50 and p99 of one execution as its client saw it. With several servers
//! (replicas), sessions are made on each in turn and each session's calls go to the server
//! that made it. There is no anchor (nothing else does this): replicas are held to one server.

use std::time::{Duration, Instant};

use sandbox_api::{CreateExecution, CreateSession, ExecutionStatus, Language, LimitsRequest};
use sandbox_client::Client;

/// Runs the load on `servers` and prints one line labelled `label`; returns executions per second.
pub async fn run(servers: &[Client], sessions: usize, seconds: u64, label: &str) -> anyhow::Result<f64> {
    let limits = LimitsRequest { memory_mb: Some(128), ..Default::default() };
    let mut ids = Vec::new();
    for i in 0..sessions {
        let client = &servers[i % servers.len()];
        let s = client.create_session(&CreateSession { limits: Some(limits.clone()), ..Default::default() }).await?;
        ids.push((client.clone(), s.id));
    }
    let print = CreateExecution::new(Language::Python, "print(1)");
    // Every kernel has answered once before the clock starts.
    for (client, id) in &ids {
        client.execute(id, &print).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let loops = ids.iter().map(|(client, id)| {
        let print = print.clone();
        async move {
            let (mut times, mut failed) = (Vec::new(), 0usize);
            while Instant::now() < deadline {
                let t = Instant::now();
                match client.execute(id, &print).await {
                    Ok(e) if e.status == ExecutionStatus::Succeeded && e.stdout == "1\n" => {
                        times.push(t.elapsed().as_secs_f64() * 1000.0)
                    }
                    _ => failed += 1,
                }
            }
            (times, failed)
        }
    });
    let results = futures_util::future::join_all(loops).await;
    let elapsed = started.elapsed().as_secs_f64();
    let failed: usize = results.iter().map(|(_, f)| f).sum();
    let mut times: Vec<f64> = results.into_iter().flat_map(|(t, _)| t).collect();
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times.get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1))).copied();
    let rate = times.len() as f64 / elapsed;
    println!(
        "sustained{label}: {sessions} sessions x stateful print(1) for {seconds} s: {} executions, {rate:.1} exec/s, \
         p50 {:.1} ms, p99 {:.1} ms, {failed} failed",
        times.len(),
        at(0.50).unwrap_or(f64::NAN),
        at(0.99).unwrap_or(f64::NAN),
    );
    for (client, id) in &ids {
        client.delete_session(id).await?;
    }
    Ok(rate)
}
