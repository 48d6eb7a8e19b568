//! TLS setup shared by the HTTP and WebSocket clients.

/// Makes ring the process's rustls provider (reqwest is built with `rustls-no-provider`,
/// and a cdylib has its own copy of rustls, so each plugin needs one). Idempotent.
pub fn install_crypto_provider() {
    // An error only means a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
