//! API keys: who is calling. Until the first key is made, sandboxd is open (and refuses to
//! listen beyond loopback unless told `--insecure-no-auth`); from then on every request to the
//! API needs a key in force.
//!
//! A key reads `sbx_<id>_<secret>`: the id finds its record, and the secret's SHA-256 is
//! compared with the one kept, in constant time. The secret has 256 random bits, so a plain
//! hash is enough (no slow KDF: there is nothing to guess); it is shown once, when made.

use std::io::Read;

use chrono::Utc;
use sandbox_store::keys::ApiKey;
use sandbox_store::Store;
use sha2::{Digest, Sha256};

use crate::error::ServiceError;
use crate::Service;

const PREFIX: &str = "sbx_";

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Caller {
    /// No key is in force: sandboxd is open (on loopback, or `--insecure-no-auth`).
    Open,
    /// A key in force.
    Key { id: String, tenant: String, admin: bool },
}

impl Caller {
    /// The tenant whose sessions, executions and templates this caller sees; `None`: all of
    /// them (an admin key, or no key in force).
    pub fn scope(&self) -> Option<&str> {
        match self {
            Caller::Key { tenant, admin: false, .. } => Some(tenant),
            Caller::Key { admin: true, .. } | Caller::Open => None,
        }
    }

    /// The tenant what this caller makes belongs to.
    pub fn tenant(&self) -> &str {
        match self {
            Caller::Key { tenant, .. } => tenant,
            Caller::Open => sandbox_api::DEFAULT_TENANT,
        }
    }

    /// Whether this caller may see what belongs to `tenant` (`None`: shared with all).
    pub fn sees(&self, tenant: Option<&str>) -> bool {
        match (self.scope(), tenant) {
            (None, _) | (_, None) => true,
            (Some(mine), Some(theirs)) => mine == theirs,
        }
    }

    /// Whether what this caller makes is shared with every tenant (templates): it is when no
    /// tenant key made it.
    pub fn shares(&self) -> bool {
        self.scope().is_none()
    }

    /// This caller as one replica names it to another on a forwarded request (`open`, or
    /// `key <admin 0|1> <tenant> <key id>`; tenants and key ids hold no spaces).
    pub fn to_forwarded(&self) -> String {
        match self {
            Caller::Open => "open".into(),
            Caller::Key { id, tenant, admin } => format!("key {} {tenant} {id}", u8::from(*admin)),
        }
    }

    /// The caller [`Caller::to_forwarded`] named.
    fn from_forwarded(text: &str) -> Option<Caller> {
        let mut words = text.split(' ');
        match (words.next()?, words.next(), words.next(), words.next(), words.next()) {
            ("open", None, ..) => Some(Caller::Open),
            ("key", Some(admin @ ("0" | "1")), Some(tenant), Some(id), None) => {
                Some(Caller::Key { id: id.into(), tenant: tenant.into(), admin: admin == "1" })
            }
            _ => None,
        }
    }
}

/// A key just made, and its one showing.
pub struct NewKey {
    pub key: ApiKey,
    /// The whole key, as clients send it. Not kept anywhere.
    pub token: String,
}

fn sha256_hex(secret: &str) -> String {
    sandbox_workspace::hex(&Sha256::digest(secret.as_bytes()))
}

/// Equal strings, in a time that depends on their length only.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `len` random bytes, from the kernel.
fn random_bytes(len: usize) -> std::io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; len];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// `len` random bytes as hex.
fn random_hex(len: usize) -> std::io::Result<String> {
    random_bytes(len).map(|b| sandbox_workspace::hex(&b))
}

/// A tenant's name: what keys, and later sessions, are grouped by.
pub fn check_tenant(name: &str) -> Result<(), ServiceError> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    match ok {
        true => Ok(()),
        false => Err(ServiceError::Invalid(format!(
            "invalid tenant {name:?}: 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit"
        ))),
    }
}

/// Makes a key for `tenant` and records its hash.
pub async fn create_key(store: &Store, tenant: &str, admin: bool) -> Result<NewKey, ServiceError> {
    check_tenant(tenant)?;
    let random = |len| random_hex(len).map_err(|e| ServiceError::Internal(format!("cannot read /dev/urandom: {e}")));
    let (id, secret) = (random(12)?, random(32)?);
    let key =
        ApiKey { id: format!("key_{id}"), tenant: tenant.to_string(), admin, created_at: Utc::now(), revoked_at: None };
    store.insert_key(&key, &sha256_hex(&secret)).await?;
    Ok(NewKey { token: format!("{PREFIX}{id}_{secret}"), key })
}

/// Revokes key `id`: requests with it are refused from now on.
pub async fn revoke_key(store: &Store, id: &str) -> Result<(), ServiceError> {
    match store.revoke_key(id, Utc::now()).await? {
        true => Ok(()),
        false => Err(ServiceError::NotFound(format!("no key {id} in force"))),
    }
}

/// What every replica of a database holds alike, kept in the database (`secrets`), the first
/// replica to start making them.
pub(crate) struct Secrets {
    /// What session tokens are derived from: a token made by one replica opens the session on
    /// any.
    session_token: Vec<u8>,
    /// What one replica shows another when it forwards a request to it.
    pub(crate) replica: String,
}

impl Secrets {
    /// Secrets of this process alone (a service over a store no other replica shares).
    pub(crate) fn random() -> std::io::Result<Secrets> {
        Ok(Secrets { session_token: random_bytes(32)?, replica: random_hex(32)? })
    }

    /// The secrets of `store`'s database, made now if it has none. A data dir from before
    /// replicas keeps its session token secret (`db/session-tokens.key`), so that the tokens
    /// its clients hold still open their sessions.
    pub(crate) async fn shared(store: &Store, data_dir: &std::path::Path) -> Result<Secrets, ServiceError> {
        let legacy = data_dir.join("db").join("session-tokens.key");
        let failed = |e: std::io::Error| ServiceError::Internal(format!("secret: {e}"));
        let candidate = match std::fs::read(&legacy) {
            Ok(secret) if secret.len() == 32 => secret,
            _ => random_bytes(32).map_err(failed)?,
        };
        let session_token = store.shared_secret("session_token", &sandbox_workspace::hex(&candidate)).await?;
        let session_token = unhex(&session_token)
            .ok_or_else(|| ServiceError::Internal("the stored session token secret is not hex".into()))?;
        let replica = store.shared_secret("replica", &random_hex(32).map_err(failed)?).await?;
        Ok(Secrets { session_token, replica })
    }
}

/// The bytes of hex text `s`, if it is hex.
fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

impl Service {
    /// The token that lets a client reach session `id`'s sandbox without an API key (the E2B
    /// SDK sends it as `X-Access-Token` to the sandbox routes): a hash of the replicas' shared
    /// secret and the id, so only sandboxd can make one, and only for that session.
    pub fn session_token(&self, id: &str) -> Result<String, ServiceError> {
        let mut hash = Sha256::new();
        hash.update(&self.secrets.session_token);
        hash.update(b"session:");
        hash.update(id.as_bytes());
        Ok(sandbox_workspace::hex(&hash.finalize()))
    }

    /// The caller of a request another replica forwarded here, if it shows the replicas'
    /// shared secret: that replica checked the caller's key already.
    pub fn forwarded_caller(&self, secret: &str, caller: &str) -> Result<Caller, ServiceError> {
        if !self.is_replica_secret(secret) {
            return Err(ServiceError::Unauthorized("a forwarded request without the replicas' secret".into()));
        }
        Caller::from_forwarded(caller)
            .ok_or_else(|| ServiceError::Malformed(format!("a forwarded request names no caller: {caller:?}")))
    }

    /// Whether `secret` is the one the replicas share (compared in constant time).
    pub fn is_replica_secret(&self, secret: &str) -> bool {
        same(secret, &self.secrets.replica)
    }

    /// What this replica shows another when it forwards a request to it.
    pub fn replica_secret(&self) -> &str {
        &self.secrets.replica
    }

    /// Who sends `token` for session `id`: a caller of the session's tenant that sees that
    /// session. A token that is not this session's is answered as an id that does not exist
    /// (whether the session exists is not told); without a token, as a request without a key.
    pub async fn session_caller(&self, id: &str, token: Option<&str>) -> Result<Caller, ServiceError> {
        let Some(token) = token else { return self.authenticate(None).await };
        let session = match same(token, &self.session_token(id)?) {
            true => self.store.get_session(id).await?,
            false => None,
        };
        match session {
            Some(s) => Ok(Caller::Key { id: format!("session:{id}"), tenant: s.tenant, admin: false }),
            None => Err(ServiceError::not_found("session", id)),
        }
    }

    /// Whether requests without a key are served while no key is in force: on loopback, or
    /// when told `--insecure-no-auth`.
    pub fn open_without_keys(&self) -> bool {
        self.config.listen.ip().is_loopback() || self.config.insecure_no_auth
    }

    /// How requests are let in, in words, for the log at start; an error when the server must
    /// not start (no key in force, an address beyond loopback, and no `--insecure-no-auth`).
    pub async fn access_mode(&self, addr: std::net::SocketAddr) -> Result<String, ServiceError> {
        let keyed = self.store.has_keys().await?;
        if keyed {
            return Ok("API keys in force: every /v1 request needs one".into());
        }
        if self.open_without_keys() {
            return Ok(match addr.ip().is_loopback() {
                true => "no API key yet: open to this machine only (loopback)".into(),
                false => format!("no API key and --insecure-no-auth: anyone who reaches {addr} can run code"),
            });
        }
        Err(ServiceError::Unauthorized(format!(
            "{addr} is beyond loopback and no API key is in force: make one (sandboxd keys create --tenant NAME) \
             or pass --insecure-no-auth"
        )))
    }

    /// Who sends `token` (the key a request carries, if any).
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Caller, ServiceError> {
        if !self.store.has_keys().await? {
            // The last key revoked while serving beyond loopback: closed, not open.
            return match self.open_without_keys() {
                true => Ok(Caller::Open),
                false => Err(ServiceError::Unauthorized(
                    "no API key is in force on a server that listens beyond loopback: make one (sandboxd keys create)"
                        .into(),
                )),
            };
        }
        let refused =
            |why: &str| ServiceError::Unauthorized(format!("{why}: send an API key as Authorization: Bearer <key>"));
        let Some(token) = token else { return Err(refused("this server needs an API key")) };
        let Some((id, secret)) = token.strip_prefix(PREFIX).and_then(|rest| rest.split_once('_')) else {
            return Err(refused("that is not an API key of this server"));
        };
        let found = self.store.key_with_hash(&format!("key_{id}")).await?;
        let known = found.filter(|(key, hash)| same(hash, &sha256_hex(secret)) && key.revoked_at.is_none());
        match known {
            Some((key, _)) => Ok(Caller::Key { id: key.id, tenant: key.tenant, admin: key.admin }),
            None => Err(refused("unknown or revoked API key")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_made_shown_once_and_checked_by_its_hash() -> Result<(), ServiceError> {
        let store = Store::open_in_memory().await?;
        let made = create_key(&store, "acme", true).await?;
        assert!(made.token.starts_with("sbx_") && made.token.len() > 80, "{}", made.token);
        let kept = store.key_with_hash(&made.key.id).await?;
        let (kept, hash) = kept.ok_or_else(|| ServiceError::Internal("kept".into()))?;
        assert!(!hash.contains(made.token.rsplit('_').next().unwrap_or("")), "only a hash is kept");
        assert_eq!((kept.tenant.as_str(), kept.admin), ("acme", true));
        assert!(create_key(&store, "../x", false).await.is_err());
        assert!(create_key(&store, "", false).await.is_err());
        Ok(())
    }

    #[test]
    fn a_forwarded_caller_reads_back_as_itself() {
        let key = Caller::Key { id: "key_1".into(), tenant: "acme".into(), admin: true };
        for caller in [Caller::Open, key] {
            assert_eq!(Caller::from_forwarded(&caller.to_forwarded()), Some(caller));
        }
        for bad in ["", "key", "key 2 acme key_1", "key 1 acme", "key 1 a b c", "opened"] {
            assert_eq!(Caller::from_forwarded(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn comparison_is_exact() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd") && !same("abc", "ab") && !same("", "a"));
    }
}
