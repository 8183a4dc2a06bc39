//! Who may do what: API keys and the callers they make (auth.rs), what a caller may hold at
//! once on this host and for its tenant (admission.rs), and where the server itself may send
//! requests (outbound.rs).

pub mod admission;
pub mod auth;
pub mod outbound;
