//! NanoClaw host library: the core behind the `nanoclaw` binary.
//!
//! See `docs/ARCHITECTURE.md` for the map of modules and the message flow.

pub mod access;
pub mod agent_creation;
pub mod approvals;
pub mod chat_requests;
pub mod cli;
pub mod config;
pub mod container;
pub mod control;
pub mod daemon;
pub mod db;
pub mod delivery;
pub mod error;
pub mod footprint;
pub mod ids;
pub mod model_proxy;
pub mod pairing;
pub mod plugins;
pub mod questions;
pub mod router;
pub mod scheduling;
pub mod self_mod;
pub mod sessions;
pub mod store;
pub mod supervisor;
pub mod webhooks;

pub use error::{Error, Result};
