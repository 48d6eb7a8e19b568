//! NanoClaw host library.

pub mod plugins;
