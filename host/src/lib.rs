//! NanoClaw host library: the core behind the `nanoclaw` binary.
//!
//! See `docs/ARCHITECTURE.md` for the map of modules and the message flow.

pub mod access;
pub mod cli;
pub mod config;
pub mod container;
pub mod db;
pub mod error;
pub mod ids;
pub mod plugins;
pub mod router;
pub mod sessions;
pub mod store;

pub use error::{Error, Result};
