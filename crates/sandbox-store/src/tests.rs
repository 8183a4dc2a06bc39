//! The store's tests, each run on both backends: a SQLite file, and a database of its own on a
//! real PostgreSQL server (see `testing.rs`).

use chrono::Utc;
use sandbox_api::{CallbackAttempt, Execution, ExecutionStatus, Language, Limits, Session, SessionStatus, Template};

use crate::keys::ApiKey;
use crate::testing::TestDatabase;
use crate::{Adopted, Backend, Recovered, Store, StoreError, SCHEMA_VERSIONS};

/// Each test, once per backend: `sqlite::<test>` and `postgres::<test>`.
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    let db = super::TestDatabase::new(super::Backend::Sqlite).await.expect("database");
                    super::$test(db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    let db = super::TestDatabase::new(super::Backend::Postgres).await.expect("database");
                    super::$test(db).await;
                }
            )*
        }
    };
}

on_both_backends!(
    templates_are_stored_whole_and_names_are_unique,
    templates_come_a_page_at_a_time_in_creation_order_shared_ones_to_every_tenant,
    a_tenant_scope_finds_only_that_tenants_sessions_and_executions,
    sessions_and_executions_survive_reopen_and_running_ones_are_closed,
    executions_are_pruned_by_age_and_count_never_while_pending,
    stop_resume_and_retention,
    deleting_twice_reports_false,
    keys_are_kept_found_and_revoked,
    a_newer_schema_is_refused_and_an_older_one_upgraded,
    stores_opened_at_once_migrate_once,
    a_lapsed_replica_is_adopted_once_and_only_its_work_released,
    a_restart_recovers_only_its_own_work,
    a_shared_secret_is_set_once,
    door_sessions_are_kept_replaced_and_forgotten,
    a_template_build_is_taken_over_once_when_its_builder_lapses,
    sessions_whose_sandboxes_outlive_their_replica_are_kept_and_handed_on,
    workspace_sizes_add_up_per_tenant,
);

fn session(id: &str) -> Session {
    Session {
        id: id.into(),
        tenant: "default".into(),
        status: SessionStatus::Running,
        template: "default".into(),
        env: [("A".to_string(), "1".to_string())].into(),
        limits: Limits { memory_mb: 512, pids: 128, cpu: 1.0 },
        timeout_s: 30.0,
        metadata: serde_json::Map::new(),
        kernel: Some("python".into()),
        kernel_restarts: 0,
        isolation: None,
        replica: None,
        last_kernel_death: None,
        from_pool: false,
        idle_timeout_s: 900,
        max_lifetime_s: 86400,
        auto_resume: true,
        stop_reason: None,
        stopped_at: None,
        workspace_removed_at: None,
        created_at: Utc::now(),
        deleted_at: None,
    }
}

fn execution(id: &str, session: &str) -> Execution {
    Execution::new(id.into(), Some(session.into()), Language::Python, ExecutionStatus::Running)
}

async fn templates_are_stored_whole_and_names_are_unique(db: TestDatabase) {
    let store = db.store().await.expect("open");
    let now = Utc::now();
    let t = Template {
        name: "data".into(),
        tenant: Some("acme".into()),
        description: "pandas and friends".into(),
        rootfs: "host".into(),
        image: Some("acme/data:1".into()),
        limits: Limits { memory_mb: 1024, pids: 128, cpu: 2.0 },
        timeout_s: 30.0,
        kernel: Some("python".into()),
        env: [("A".to_string(), "1".to_string())].into(),
        packages: vec!["six".into()],
        pool_size: 1,
        idle_timeout_s: 60,
        max_lifetime_s: 3600,
        allowed_uploads: vec!["csv".into()],
        status: sandbox_api::TemplateStatus::Building,
        error: None,
        installed: vec![],
        builtin: false,
        created_at: now,
        updated_at: now,
    };
    assert!(store.insert_template(&t, Some("r1")).await.expect("insert"));
    assert!(!store.insert_template(&t, None).await.expect("insert again"), "a second template of one name is refused");
    let ready = Template { status: sandbox_api::TemplateStatus::Ready, ..t.clone() };
    assert!(!store.finish_template_build(&ready, "r2", Some("b1")).await.expect("finish"), "r2 does not build it");
    assert!(store.finish_template_build(&ready, "r1", Some("b1")).await.expect("finish"));
    assert!(!store.finish_template_build(&ready, "r1", Some("b2")).await.expect("finish"), "finished once");
    assert_eq!(store.template_environment("data").await.expect("environment").as_deref(), Some("b1"));
    assert_eq!(store.get_template("data").await.expect("get"), Some(ready.clone()));
    assert_eq!(store.list_templates().await.expect("list"), vec![ready]);
    assert!(!store.template_in_use("data").await.expect("in use"));
    store.insert_session(&Session { template: "data".into(), ..session("s1") }, "r1").await.expect("session");
    assert!(store.template_in_use("data").await.expect("in use"));
    store.mark_session_deleted("s1", Utc::now()).await.expect("delete");
    assert!(!store.template_in_use("data").await.expect("in use"));
    assert!(
        store.image_in_use("acme/data:1").await.expect("image")
            && !store.image_in_use("acme/other:1").await.expect("image")
    );
    assert!(store.delete_template("data").await.expect("delete"));
    assert!(!store.image_in_use("acme/data:1").await.expect("image"), "gone with its template");
    assert!(!store.delete_template("data").await.expect("delete again"));
    assert_eq!(store.get_template("data").await.expect("get"), None);
}

async fn templates_come_a_page_at_a_time_in_creation_order_shared_ones_to_every_tenant(db: TestDatabase) {
    let store = db.store().await.expect("open");
    let names = ["c", "a", "b"];
    let tenants = [None, Some("acme"), Some("other")];
    for (i, (name, tenant)) in names.iter().zip(tenants).enumerate() {
        let at = Utc::now() + chrono::Duration::seconds(i as i64);
        let t = Template {
            name: name.to_string(),
            tenant: tenant.map(String::from),
            description: String::new(),
            rootfs: "host".into(),
            image: None,
            limits: Limits { memory_mb: 512, pids: 64, cpu: 1.0 },
            timeout_s: 30.0,
            kernel: None,
            env: Default::default(),
            packages: vec![],
            pool_size: 0,
            idle_timeout_s: 60,
            max_lifetime_s: 3600,
            allowed_uploads: vec![],
            status: sandbox_api::TemplateStatus::Ready,
            error: None,
            installed: vec![],
            builtin: false,
            created_at: at,
            updated_at: at,
        };
        assert!(store.insert_template(&t, None).await.expect("insert"));
    }
    let first = store.page_templates(2, None, None).await.expect("page");
    let rest = store.page_templates(2, first.next.as_deref(), None).await.expect("page");
    let seen: Vec<&str> = first.items.iter().chain(&rest.items).map(|t| t.name.as_str()).collect();
    assert_eq!((seen, first.next.is_some(), rest.next), (names.to_vec(), true, None));
    let acme = store.page_templates(10, None, Some("acme")).await.expect("page");
    let seen: Vec<&str> = acme.items.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(seen, ["c", "a"], "the shared one and acme's");
}

async fn a_tenant_scope_finds_only_that_tenants_sessions_and_executions(db: TestDatabase) {
    let store = db.store().await.expect("open");
    for (id, tenant) in [("s1", "acme"), ("s2", "other"), ("s3", "acme")] {
        store.insert_session(&Session { tenant: tenant.into(), ..session(id) }, "r1").await.expect("insert");
        store.insert_execution(&execution(&format!("e-{id}"), id), "1", tenant, "r1").await.expect("insert");
    }
    async fn ids(store: &Store, tenant: Option<&str>) -> Vec<String> {
        let page = store.page_sessions(10, None, tenant).await.expect("page");
        page.items.into_iter().map(|s| s.id).collect()
    }
    assert_eq!(ids(&store, Some("acme")).await, ["s1", "s3"]);
    assert_eq!(ids(&store, Some("nobody")).await, Vec::<String>::new());
    assert_eq!(ids(&store, None).await.len(), 3);
    assert_eq!(store.get_session("s2").await.expect("get").map(|s| s.tenant), Some("other".into()));
    assert!(store.get_execution("e-s2", Some("acme")).await.expect("get").is_none(), "not acme's");
    assert!(store.get_execution("e-s2", Some("other")).await.expect("get").is_some());
    assert!(store.get_execution("e-s2", None).await.expect("get").is_some());
}

async fn sessions_and_executions_survive_reopen_and_running_ones_are_closed(db: TestDatabase) {
    {
        let store = db.store().await.expect("open");
        assert_eq!(store.recover("r1", false).await.expect("recover"), Recovered::default());
        store.insert_session(&session("s1"), "r1").await.expect("insert");
        let mut done = execution("e1", "s1");
        store.insert_execution(&done, "print(1)", "default", "r1").await.expect("insert");
        done.status = ExecutionStatus::Succeeded;
        done.exit_code = Some(0);
        done.stdout = "1\n".into();
        done.metrics = Some(sandbox_api::Metrics { wall_ms: 3, cpu_ms: Some(2), peak_memory_bytes: None });
        done.outputs = vec![sandbox_api::Output::Stream { name: sandbox_api::StreamName::Stdout, text: "1\n".into() }];
        done.finished_at = Some(Utc::now());
        store.finish_execution(&done).await.expect("finish");
        store.insert_execution(&execution("e2", "s1"), "while True: pass", "default", "r1").await.expect("insert");
    }
    let store = db.store().await.expect("reopen");
    assert_eq!(store.recover("r1", false).await.expect("recover"), Recovered { executions: 1, sessions: 1 });
    let s1 = store.get_session("s1").await.expect("get").expect("exists");
    assert_eq!(s1.env["A"], "1");
    assert_eq!((s1.status, s1.stop_reason.as_deref()), (SessionStatus::Stopped, Some("server_restart")));
    assert!(s1.stopped_at.is_some());
    let list = store.list_executions("s1", true).await.expect("list");
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].outputs.len(), 1);
    let summaries = store.list_executions("s1", false).await.expect("list");
    assert_eq!(summaries.len(), 2);
    assert!(summaries[0].outputs.is_empty() && summaries[0].stdout.is_empty(), "summaries leave outputs out");
    assert_eq!(summaries[0].metrics, list[0].metrics);
    let e1 = store.get_execution("e1", None).await.expect("get").expect("exists");
    assert_eq!((e1.status, e1.stdout.as_str()), (ExecutionStatus::Succeeded, "1\n"));
    assert_eq!(e1.outputs.len(), 1);
    assert_eq!(e1.metrics.map(|m| m.cpu_ms), Some(Some(2)));
    assert_eq!(store.running_memory_mb().await.expect("sum"), 0, "s1 was stopped by the reopen");
    store.bump_kernel_restarts("s1", Some("exited with code 3")).await.expect("bump");
    store.bump_kernel_restarts("s1", None).await.expect("bump");
    let s1 = store.get_session("s1").await.expect("get").expect("exists");
    assert_eq!((s1.kernel_restarts, s1.last_kernel_death.as_deref()), (2, Some("exited with code 3")));
    let e2 = store.get_execution("e2", None).await.expect("get").expect("exists");
    assert_eq!(
        (e2.status, e2.reason),
        (ExecutionStatus::Interrupted, Some(sandbox_api::ExecutionReason::ServerRestart))
    );
    assert!(e2.finished_at.is_some());
}

async fn executions_are_pruned_by_age_and_count_never_while_pending(db: TestDatabase) {
    let store = db.store().await.expect("open");
    store.insert_session(&session("s1"), "r1").await.expect("insert");
    store.insert_session(&session("s2"), "r1").await.expect("insert");
    assert_eq!(store.running_memory_mb().await.expect("sum"), 1024, "two running sessions of 512 MiB");
    let long_ago = Utc::now() - chrono::Duration::days(30);
    for i in 0..6 {
        let mut e = execution(&format!("e{i}"), "s1");
        e.started_at = long_ago + chrono::Duration::seconds(i);
        e.outputs_truncated = i == 5;
        store.insert_execution(&e, "1", "default", "r1").await.expect("insert");
        if i < 5 {
            e.status = ExecutionStatus::Succeeded;
            // e0 and e1 finished long ago; the others just now.
            e.finished_at = Some(if i < 2 { long_ago } else { Utc::now() });
            store.finish_execution(&e).await.expect("finish");
        }
    }
    store
        .add_callback_attempt("e0", &CallbackAttempt { at: Utc::now(), status: Some(500), error: None })
        .await
        .expect("attempt");
    async fn ids(store: &Store) -> Vec<String> {
        store.list_executions("s1", false).await.expect("list").into_iter().map(|e| e.id).collect()
    }
    assert_eq!(store.prune_executions(Some(Utc::now() - chrono::Duration::days(7)), None).await.expect("prune"), 2);
    assert_eq!(ids(&store).await, ["e2", "e3", "e4", "e5"]);
    // Keep two per session: e5 is running (kept, and counted), so e2 and e3 go.
    assert_eq!(store.prune_executions(None, Some(2)).await.expect("prune"), 2);
    assert_eq!(ids(&store).await, ["e4", "e5"]);
    assert!(store.get_execution("e5", None).await.expect("get").expect("exists").outputs_truncated);
    let orphans: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM callback_attempts").fetch_one(&store.pool).await.expect("count");
    assert_eq!(orphans, 0, "attempts of pruned executions go too");
    assert_eq!(store.prune_executions(None, Some(2)).await.expect("prune"), 0);
}

async fn stop_resume_and_retention(db: TestDatabase) {
    let store = db.store().await.expect("open");
    for id in ["s1", "s2", "s3"] {
        store.insert_session(&session(id), "r1").await.expect("insert");
    }
    let long_ago = Utc::now() - chrono::Duration::hours(48);
    assert!(store.mark_session_stopped("s1", "idle", long_ago).await.expect("stop"));
    assert!(!store.mark_session_stopped("s1", "idle", long_ago).await.expect("stop again"), "only a running one");
    assert!(store.mark_session_stopped("s2", "lifetime", Utc::now()).await.expect("stop"));
    store.mark_session_deleted("s3", long_ago).await.expect("delete");
    let due = store.workspaces_to_remove(Utc::now() - chrono::Duration::hours(24)).await.expect("due");
    assert_eq!(due, ["s1", "s3"]);
    let before_removal = Utc::now().to_rfc3339();
    store.mark_workspace_removed("s1", Utc::now()).await.expect("removed");
    let removed = store.workspaces_removed_since(&before_removal).await.expect("removed since");
    assert_eq!(removed.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["s1"]);
    let after = store.workspaces_removed_since(&Utc::now().to_rfc3339()).await.expect("removed since");
    assert!(after.is_empty(), "{after:?}");
    let due = store.workspaces_to_remove(Utc::now() - chrono::Duration::hours(24)).await.expect("due");
    assert_eq!(due, ["s3"]);
    assert!(store.mark_session_resumed("s2", "r1").await.expect("resume"));
    let s2 = store.get_session("s2").await.expect("get").expect("exists");
    assert_eq!((s2.status, s2.stop_reason, s2.stopped_at), (SessionStatus::Running, None, None));
    assert!(!store.mark_session_resumed("s3", "r1").await.expect("deleted"), "a deleted session never resumes");
    let (sessions, _) = store.counts().await.expect("counts");
    assert_eq!(sessions, [("deleted".to_string(), 1), ("running".to_string(), 1), ("stopped".to_string(), 1)]);
    assert_eq!(store.sessions_with_status(SessionStatus::Running).await.expect("running").len(), 1);
}

async fn deleting_twice_reports_false(db: TestDatabase) {
    let store = db.store().await.expect("open");
    store.insert_session(&session("s1"), "r1").await.expect("insert");
    assert!(store.mark_session_deleted("s1", Utc::now()).await.expect("delete"));
    assert!(!store.mark_session_deleted("s1", Utc::now()).await.expect("delete"));
    assert_eq!(store.get_session("s1").await.expect("get").expect("exists").status, SessionStatus::Deleted);
    assert!(store.get_session("nope").await.expect("get").is_none());
    store.check_writable().await.expect("writable");
}

async fn keys_are_kept_found_and_revoked(db: TestDatabase) {
    let store = db.store().await.expect("open");
    assert!(!store.has_keys().await.expect("has"));
    let key =
        ApiKey { id: "key_1".into(), tenant: "acme".into(), admin: true, created_at: Utc::now(), revoked_at: None };
    store.insert_key(&key, "abc123").await.expect("insert");
    assert!(store.has_keys().await.expect("has"));
    let (found, hash) = store.key_with_hash("key_1").await.expect("get").expect("the key");
    assert_eq!((found.tenant.as_str(), found.admin, hash.as_str()), ("acme", true, "abc123"));
    assert!(store.key_with_hash("key_2").await.expect("get").is_none());
    assert!(store.revoke_key("key_1", Utc::now()).await.expect("revoke"));
    assert!(!store.revoke_key("key_1", Utc::now()).await.expect("revoke"), "revoked once");
    assert!(!store.has_keys().await.expect("has"), "a revoked key is not in force");
    assert!(store.keys().await.expect("keys")[0].revoked_at.is_some());
}

/// The schema version as the backend records it.
async fn schema_version(store: &Store) -> i64 {
    let query = match store.backend {
        Backend::Sqlite => "PRAGMA user_version",
        Backend::Postgres => "SELECT MAX(version) FROM schema_version",
    };
    sqlx::query_scalar(query).fetch_one(&store.pool).await.expect("version")
}

async fn a_newer_schema_is_refused_and_an_older_one_upgraded(db: TestDatabase) {
    let store = db.store().await.expect("open");
    let known = match db.backend {
        Backend::Sqlite => SCHEMA_VERSIONS.0,
        Backend::Postgres => SCHEMA_VERSIONS.1,
    };
    assert_eq!(schema_version(&store).await, known as i64);
    // Reopening migrates nothing and loses nothing.
    store.insert_session(&session("s1"), "r1").await.expect("insert");
    drop(store);
    let store = db.store().await.expect("reopen");
    assert!(store.get_session("s1").await.expect("get").is_some());
    // A newer sandboxd's schema.
    let bump = match db.backend {
        Backend::Sqlite => format!("PRAGMA user_version = {}", known + 1),
        Backend::Postgres => format!("INSERT INTO schema_version (version) VALUES ({})", known + 1),
    };
    sqlx::query(sqlx::AssertSqlSafe(bump)).execute(&store.pool).await.expect("bump");
    store.pool.close().await;
    let refused = db.store().await.err().expect("a newer schema is refused");
    assert!(
        matches!(refused, StoreError::SchemaTooNew { found, known: k } if found == known + 1 && k == known),
        "{refused}"
    );
    assert!(refused.to_string().contains("newer than this sandboxd knows"), "{refused}");
}

async fn stores_opened_at_once_migrate_once(db: TestDatabase) {
    let opened = futures_join(db.store(), db.store()).await;
    let (a, b) = (opened.0.expect("first"), opened.1.expect("second"));
    let known = match db.backend {
        Backend::Sqlite => SCHEMA_VERSIONS.0,
        Backend::Postgres => SCHEMA_VERSIONS.1,
    };
    assert_eq!(schema_version(&a).await, known as i64);
    if db.backend == Backend::Postgres {
        let rows: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM schema_version").fetch_one(&b.pool).await.expect("count");
        assert_eq!(rows, known as i64, "each step recorded once");
    }
    a.insert_session(&session("s1"), "r1").await.expect("insert through one");
    assert!(b.get_session("s1").await.expect("get").is_some(), "seen through the other");
}

async fn futures_join<A: std::future::Future, B: std::future::Future>(a: A, b: B) -> (A::Output, B::Output) {
    tokio::join!(a, b)
}

/// A data dir from before the last migration: its database is brought up to date in place, its
/// records kept.
#[tokio::test]
async fn an_older_sqlite_database_upgrades_in_place() {
    let db = TestDatabase::new(Backend::Sqlite).await.expect("database");
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url).await.expect("connect");
    let older = SCHEMA_VERSIONS.0 - 1;
    for step in &crate::migrate::SQLITE[..older] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(*step)).execute(&pool).await.expect("old step");
    }
    sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA user_version = {older}"))).execute(&pool).await.expect("version");
    let spec = r#"{"env":{},"limits":{"memory_mb":512,"pids":64,"cpu":1.0},"timeout_s":30.0,"metadata":{}}"#;
    sqlx::query(
        "INSERT INTO sessions (id, status, template, spec, created_at, tenant)
         VALUES ('old', 'stopped', 'default', $1, '2026-01-01T00:00:00+00:00', 'acme')",
    )
    .bind(spec)
    .execute(&pool)
    .await
    .expect("old row");
    // A build cut off before replicas held builds: any replica may take it up.
    let cut_off = serde_json::to_string(&building("cut-off")).expect("record");
    sqlx::query("INSERT INTO templates (name, record, created_at) VALUES ('cut-off', $1, '2026-01-01T00:00:00+00:00')")
        .bind(cut_off)
        .execute(&pool)
        .await
        .expect("old template");
    pool.close().await;
    let store = db.store().await.expect("upgrade");
    assert_eq!(schema_version(&store).await, SCHEMA_VERSIONS.0 as i64);
    let old = store.get_session("old").await.expect("get").expect("kept");
    assert_eq!((old.tenant.as_str(), old.status, old.isolation), ("acme", SessionStatus::Stopped, None));
    assert!(old.auto_resume, "fields the old record lacks take their defaults");
    let taken = store.claim_template_builds("r1", 1000, false).await.expect("claim");
    assert_eq!(taken.into_iter().map(|t| t.name).collect::<Vec<_>>(), ["cut-off"]);
}

/// Sessions and executions of replicas "a" and "b": one running session each, with one queued
/// and one running execution.
async fn work_of_two_replicas(store: &Store) {
    for replica in ["a", "b"] {
        store.insert_session(&session(&format!("s-{replica}")), replica).await.expect("session");
        for (n, status) in [(1, ExecutionStatus::Queued), (2, ExecutionStatus::Running)] {
            let mut e = execution(&format!("e-{replica}{n}"), &format!("s-{replica}"));
            e.status = status;
            store.insert_execution(&e, "1", "default", replica).await.expect("execution");
        }
    }
}

async fn a_lapsed_replica_is_adopted_once_and_only_its_work_released(db: TestDatabase) {
    let (one, two) = (db.store().await.expect("open"), db.store().await.expect("open"));
    for replica in ["a", "b", "c"] {
        one.register_replica(replica, &format!("http://{replica}"), "1").await.expect("register");
    }
    work_of_two_replicas(&one).await;
    assert_eq!(one.session_owner("s-a").await.expect("owner").as_deref(), Some("a"));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(one.heartbeat_replica("b").await.expect("beat") && one.heartbeat_replica("c").await.expect("beat"));
    // b and c both look for lapsed replicas at once: a is adopted once.
    let (by_b, by_c) =
        tokio::join!(one.adopt_lapsed_replicas("b", 200, false), two.adopt_lapsed_replicas("c", 200, false));
    let mut adopted: Vec<Adopted> = by_b.expect("adopt").into_iter().chain(by_c.expect("adopt")).collect();
    assert_eq!(adopted.len(), 1, "{adopted:?}");
    let a = adopted.pop().expect("one");
    assert_eq!((a.replica.as_str(), a.released), ("a", Recovered { executions: 2, sessions: 1 }));
    let s_a = one.get_session("s-a").await.expect("get").expect("kept");
    assert_eq!((s_a.status, s_a.stop_reason.as_deref()), (SessionStatus::Stopped, Some("replica_lost")));
    assert_eq!(one.session_owner("s-a").await.expect("owner"), None, "a stopped session belongs to none");
    for e in ["e-a1", "e-a2"] {
        assert_eq!(one.get_execution(e, None).await.expect("get").expect("kept").status, ExecutionStatus::Interrupted);
    }
    assert!(one.sessions_running_on("a").await.expect("a's").is_empty());
    let b_runs: Vec<String> = one.sessions_running_on("b").await.expect("b's").into_iter().map(|s| s.id).collect();
    assert_eq!(b_runs, ["s-b"]);
    // b's work is b's: untouched.
    assert_eq!(one.get_session("s-b").await.expect("get").expect("kept").status, SessionStatus::Running);
    assert_eq!(one.get_execution("e-b2", None).await.expect("get").expect("kept").status, ExecutionStatus::Running);
    // a's lease is gone: its next heartbeat says so, until it registers again.
    assert!(!one.heartbeat_replica("a").await.expect("beat"), "an adopted replica has no lease");
    let listed = one.replicas().await.expect("list");
    let a_row = listed.iter().find(|r| r.id == "a").expect("listed");
    assert!(a_row.adopted_by.is_some() && a_row.heartbeat_age_ms >= 200, "{a_row:?}");
    assert_eq!(listed.iter().find(|r| r.id == "b").expect("listed").sessions, 1);
    one.register_replica("a", "http://a", "2").await.expect("register again");
    assert!(one.heartbeat_replica("a").await.expect("beat"), "registered again, it has a lease");
    assert!(one.adopt_lapsed_replicas("b", 60_000, false).await.expect("adopt").is_empty(), "nobody lapsed");
}

async fn a_restart_recovers_only_its_own_work(db: TestDatabase) {
    let store = db.store().await.expect("open");
    work_of_two_replicas(&store).await;
    assert_eq!(store.recover("a", false).await.expect("recover"), Recovered { executions: 2, sessions: 1 });
    let s_a = store.get_session("s-a").await.expect("get").expect("kept");
    assert_eq!((s_a.status, s_a.stop_reason.as_deref()), (SessionStatus::Stopped, Some("server_restart")));
    assert_eq!(store.get_session("s-b").await.expect("get").expect("kept").status, SessionStatus::Running);
    assert_eq!(store.get_execution("e-b1", None).await.expect("get").expect("kept").status, ExecutionStatus::Queued);
    assert!(store.mark_session_resumed("s-a", "b").await.expect("resume"), "it resumes anywhere");
    assert_eq!(store.session_owner("s-a").await.expect("owner").as_deref(), Some("b"));
}

async fn a_shared_secret_is_set_once(db: TestDatabase) {
    let (one, two) = (db.store().await.expect("open"), db.store().await.expect("open"));
    let (a, b) = tokio::join!(one.shared_secret("replica", "aaa"), two.shared_secret("replica", "bbb"));
    let (a, b) = (a.expect("secret"), b.expect("secret"));
    assert_eq!(a, b, "both replicas hold the same");
    assert!(a == "aaa" || a == "bbb");
    assert_eq!(one.shared_secret("replica", "ccc").await.expect("secret"), a, "never replaced");
    assert_eq!(one.shared_secret("other", "ddd").await.expect("secret"), "ddd");
}

async fn door_sessions_are_kept_replaced_and_forgotten(db: TestDatabase) {
    let (one, two) = (db.store().await.expect("open"), db.store().await.expect("open"));
    assert_eq!(one.door_session("mcp", "m1").await.expect("get"), None);
    one.put_door_session("mcp", "m1", "{\"a\":1}").await.expect("put");
    assert_eq!(two.door_session("mcp", "m1").await.expect("get").as_deref(), Some("{\"a\":1}"), "seen by another");
    two.put_door_session("mcp", "m1", "{\"a\":2}").await.expect("replace");
    assert_eq!(one.door_session("mcp", "m1").await.expect("get").as_deref(), Some("{\"a\":2}"));
    assert_eq!(one.door_session("e2b", "m1").await.expect("get"), None, "each door its own");
    one.delete_door_session("mcp", "m1").await.expect("delete");
    assert_eq!(two.door_session("mcp", "m1").await.expect("get"), None);
}

fn building(name: &str) -> Template {
    let now = Utc::now();
    Template {
        name: name.into(),
        tenant: None,
        description: String::new(),
        rootfs: "host".into(),
        image: None,
        limits: Limits { memory_mb: 512, pids: 64, cpu: 1.0 },
        timeout_s: 30.0,
        kernel: Some("python".into()),
        env: Default::default(),
        packages: vec!["six".into()],
        pool_size: 0,
        idle_timeout_s: 60,
        max_lifetime_s: 3600,
        allowed_uploads: vec![],
        status: sandbox_api::TemplateStatus::Building,
        error: None,
        installed: vec![],
        builtin: false,
        created_at: now,
        updated_at: now,
    }
}

async fn a_template_build_is_taken_over_once_when_its_builder_lapses(db: TestDatabase) {
    let (one, two) = (db.store().await.expect("open"), db.store().await.expect("open"));
    for replica in ["a", "b", "c"] {
        one.register_replica(replica, &format!("http://{replica}"), "1").await.expect("register");
    }
    assert!(one.insert_template(&building("by-a"), Some("a")).await.expect("insert"));
    assert!(one.insert_template(&building("by-b"), Some("b")).await.expect("insert"));
    let names = |ts: Vec<Template>| ts.into_iter().map(|t| t.name).collect::<Vec<_>>();
    // While its builder lives, a build is nobody else's; the builder takes its own back only
    // when it asks for them (after a restart).
    assert!(one.claim_template_builds("c", 60_000, false).await.expect("claim").is_empty());
    assert!(one.claim_template_builds("b", 60_000, false).await.expect("claim").is_empty());
    assert_eq!(names(one.claim_template_builds("b", 60_000, true).await.expect("claim")), ["by-b"]);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(one.heartbeat_replica("b").await.expect("beat") && one.heartbeat_replica("c").await.expect("beat"));
    // a lapsed: b and c look at once, and one of them takes its build.
    let (by_b, by_c) =
        tokio::join!(one.claim_template_builds("b", 200, false), two.claim_template_builds("c", 200, false));
    let (by_b, by_c) = (names(by_b.expect("claim")), names(by_c.expect("claim")));
    let (winner, loser) = match (by_b.as_slice(), by_c.as_slice()) {
        ([one], []) if one == "by-a" => ("b", "c"),
        ([], [one]) if one == "by-a" => ("c", "b"),
        other => panic!("by-a taken once: {other:?}"),
    };
    let ready = Template { status: sandbox_api::TemplateStatus::Ready, ..building("by-a") };
    assert!(!one.finish_template_build(&ready, "a", Some("late")).await.expect("finish"), "a lost it");
    assert!(!one.finish_template_build(&ready, loser, Some("x")).await.expect("finish"));
    assert!(one.finish_template_build(&ready, winner, Some("built")).await.expect("finish"));
    assert_eq!(one.template_environment("by-a").await.expect("environment").as_deref(), Some("built"));
    // Finished, by-a is nobody's to take any more (b still holds by-b: it may be the loser).
    let pending = names(one.claim_template_builds(loser, 200, true).await.expect("claim"));
    assert!(!pending.contains(&"by-a".to_string()), "by-a is built: {pending:?}");
}

async fn workspace_sizes_add_up_per_tenant(db: TestDatabase) {
    let store = db.store().await.expect("open");
    for (id, tenant) in [("s1", "acme"), ("s2", "acme"), ("s3", "rival")] {
        store.insert_session(&Session { tenant: tenant.into(), ..session(id) }, "r1").await.expect("session");
    }
    assert_eq!(store.tenant_workspace_bytes("acme", None).await.expect("sum"), 0);
    for (id, bytes) in [("s1", 1000), ("s2", 20), ("s3", 5)] {
        store.set_workspace_bytes(id, bytes).await.expect("set");
    }
    assert_eq!(store.tenant_workspace_bytes("acme", None).await.expect("sum"), 1020);
    assert_eq!(store.tenant_workspace_bytes("acme", Some("s1")).await.expect("sum"), 20);
    store.set_workspace_bytes("s1", 10).await.expect("set again");
    assert_eq!(store.tenant_workspace_bytes("acme", None).await.expect("sum"), 30);
    store.mark_workspace_removed("s2", Utc::now()).await.expect("removed");
    assert_eq!(store.tenant_workspace_bytes("acme", None).await.expect("sum"), 10, "a removed workspace holds nothing");
}

/// With sandboxes that outlive sandboxd (a cluster's pods), a restart and an adoption
/// interrupt the executions but keep the sessions running, now the heir's.
async fn sessions_whose_sandboxes_outlive_their_replica_are_kept_and_handed_on(db: TestDatabase) {
    let store = db.store().await.expect("open");
    work_of_two_replicas(&store).await;
    assert_eq!(store.recover("a", true).await.expect("recover"), Recovered { executions: 2, sessions: 0 });
    let s_a = store.get_session("s-a").await.expect("get").expect("kept");
    assert_eq!(s_a.status, SessionStatus::Running);
    assert_eq!(store.session_owner("s-a").await.expect("owner").as_deref(), Some("a"));
    assert_eq!(
        store.get_execution("e-a2", None).await.expect("get").expect("kept").status,
        ExecutionStatus::Interrupted
    );

    for replica in ["a", "b"] {
        store.register_replica(replica, &format!("http://{replica}"), "1").await.expect("register");
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(store.heartbeat_replica("b").await.expect("beat"));
    let adopted = store.adopt_lapsed_replicas("b", 200, true).await.expect("adopt");
    assert_eq!(adopted.len(), 1, "{adopted:?}");
    let s_a = store.get_session("s-a").await.expect("get").expect("kept");
    assert_eq!(s_a.status, SessionStatus::Running, "kept running");
    assert_eq!(store.session_owner("s-a").await.expect("owner").as_deref(), Some("b"), "now b's");
}
