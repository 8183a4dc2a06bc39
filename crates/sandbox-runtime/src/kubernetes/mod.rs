//! The Kubernetes runtime (issue 20, in progress): each sandbox a hardened Pod, its executor
//! reached over the pod network with a token of its own (`sandbox_executor::network`).
//!
//! Built so far: the objects it sends ([`spec`]). Next: the runtime itself over kube's
//! client (create, watch until ready, connect, OOM status, delete, list by label, reconcile),
//! tested against a fake of the API server.

pub mod spec;
