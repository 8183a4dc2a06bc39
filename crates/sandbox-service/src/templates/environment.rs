//! Template environments across replicas: built once, by the replica that holds the build
//! (`templates.builder`), and fetched by every other replica whose sandboxes mount it.
//!
//! A build is named (`templates.environment`, `<template>-<id>`). The builder packs the
//! directory it installed into as one archive ([`sandbox_workspace::environment`]) and, with
//! S3 storage, keeps it in the bucket under that name. A replica about to start a sandbox of
//! the template compares the build it has here (a `<template>.build` file beside the
//! directory) with the stored one and, if they differ, fetches and unpacks the stored one
//! first. With local storage there is nowhere to fetch from: only the builder has it, and a
//! session of it elsewhere is refused, saying why.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use sandbox_store::Store;

use crate::error::ServiceError;
use crate::files::workspace::{HostDirs, NamedDirs};
use crate::Service;

/// Where this replica notes which build of `template` its directory holds.
fn marker(templates: &NamedDirs, template: &str) -> PathBuf {
    templates.path(&format!("{template}.build"))
}

/// The build of `template` this replica has, if any.
fn build_here(templates: &NamedDirs, template: &str) -> Option<String> {
    std::fs::read_to_string(marker(templates, template)).ok()
}

fn io(what: &str) -> impl Fn(std::io::Error) -> ServiceError + '_ {
    move |e| ServiceError::Internal(format!("{what}: {e}"))
}

/// Marks the environment just installed for `template` as build `build` and, with S3
/// storage, keeps its archive in the bucket; false with local storage.
pub async fn publish(state: &Service, template: &str, build: &str) -> Result<bool, ServiceError> {
    let dirs = Arc::clone(&state.dirs);
    let archive = dirs.templates.path(&format!(".{build}.tar.gz"));
    if dirs.storage.is_remote() {
        let (from, to) = (dirs.templates.path(template), archive.clone());
        crate::blocking(move || {
            let out = std::fs::File::create(&to).map_err(io("create the environment archive"))?;
            Ok(sandbox_workspace::environment::pack(&from, std::io::BufWriter::new(out))?)
        })
        .await?;
    }
    let kept = dirs.storage.put_environment(build, archive.clone()).await;
    let _ = std::fs::remove_file(&archive);
    std::fs::write(marker(&dirs.templates, template), build).map_err(io("note the environment's build"))?;
    kept
}

/// Makes sure this replica has the stored build of `template`'s environment (if it has one),
/// fetching it from the bucket when not: before a sandbox that mounts it starts here.
pub async fn ensure_here(store: &Store, dirs: &HostDirs, template: &str) -> Result<(), ServiceError> {
    let Some(build) = store.template_environment(template).await? else { return Ok(()) };
    if build_here(&dirs.templates, template).as_deref() == Some(build.as_str()) {
        return Ok(());
    }
    let lock = dirs.environments.lock_of(template);
    let _held = lock.lock().await;
    if build_here(&dirs.templates, template).as_deref() == Some(build.as_str()) {
        return Ok(()); // fetched while this one waited
    }
    if !dirs.storage.is_remote() {
        return Err(ServiceError::Conflict(format!(
            "template {template:?}'s environment was built on another replica, and with local workspace storage \
             replicas cannot share it: run replicas with --storage s3://..."
        )));
    }
    let archive = dirs.templates.path(&format!(".{build}.tar.gz"));
    dirs.storage.get_environment(&build, archive.clone()).await?;
    let (templates, owner, name) = (dirs.templates.clone(), dirs.templates.owner(), template.to_string());
    let unpacked = crate::blocking(move || {
        // Unpacked aside, then put in place whole: a sandbox never mounts half of it.
        let incoming = templates.path(&format!(".{build}.incoming"));
        let _ = std::fs::remove_dir_all(&incoming);
        std::fs::create_dir(&incoming).map_err(io("make the environment's directory"))?;
        let file = std::fs::File::open(&archive).map_err(io("open the environment archive"))?;
        let result = sandbox_workspace::environment::unpack(std::io::BufReader::new(file), &incoming)
            .map_err(ServiceError::from)
            .and_then(|()| give_to(&incoming, owner));
        let _ = std::fs::remove_file(&archive);
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&incoming);
            return Err(e);
        }
        remove_in(&templates, &name);
        std::fs::rename(&incoming, templates.path(&name)).map_err(io("put the environment in place"))?;
        std::fs::write(marker(&templates, &name), &build).map_err(io("note the environment's build"))?;
        Ok(build)
    });
    let build = unpacked.await?;
    dirs.environments.fetched.fetch_add(1, Ordering::Relaxed);
    tracing::info!(template, %build, "template environment fetched from storage");
    Ok(())
}

/// Gives everything under `dir` to the sandbox user (`owner`), as the builder's was: files the
/// build made readable only to it stay readable inside sandboxes here.
fn give_to(dir: &std::path::Path, owner: Option<(u32, u32)>) -> Result<(), ServiceError> {
    let Some((uid, gid)) = owner else { return Ok(()) };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        std::os::unix::fs::lchown(&d, Some(uid), Some(gid)).map_err(io("chown the environment"))?;
        for entry in std::fs::read_dir(&d).map_err(io("read the environment"))? {
            let entry = entry.map_err(io("read the environment"))?;
            let kind = entry.file_type().map_err(io("read the environment"))?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else {
                std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid)).map_err(io("chown the environment"))?;
            }
        }
    }
    Ok(())
}

/// Removes this replica's copy of `template`'s environment.
pub fn remove_here(dirs: &HostDirs, template: &str) {
    remove_in(&dirs.templates, template)
}

fn remove_in(templates: &NamedDirs, template: &str) {
    templates.remove(template);
    let _ = std::fs::remove_file(marker(templates, template));
}

/// The templates whose environments this replica holds a copy of.
pub fn held_here(dirs: &HostDirs) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dirs.templates.path("")) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| !name.starts_with('.') && !name.ends_with(".build"))
        .collect()
}
