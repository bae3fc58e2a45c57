//! One TLS crypto provider for the whole process: ring, for the source client (reqwest) and
//! object storage (object_store) alike, installed before either builds a client.

/// Installs ring as the process's rustls provider; later calls (and a provider already
/// installed) leave it as it is.
pub fn install() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
