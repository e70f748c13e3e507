//! TLS of Dray's HTTP clients: rustls on ring, one provider for the whole process.
//!
//! reqwest, oci-client and kube are built without a provider of their own (their default,
//! aws-lc-rs, would be a second provider in the process, and a C library in the build), so they
//! take rustls' process default, which [`install_provider`] sets. Build clients with [`client`] or [`client_builder`]
//! (clippy.toml forbids `reqwest::Client::new` and `builder`, which would panic without it).

use std::sync::Once;

/// Makes ring the process' rustls provider, once; a provider installed before stays.
pub fn install_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// An HTTP client with reqwest's defaults.
pub fn client() -> reqwest::Client {
    client_builder()
        .build()
        .expect("an HTTP client with the default settings")
}

/// A builder of an HTTP client, with the TLS provider installed.
#[allow(clippy::disallowed_methods)]
pub fn client_builder() -> reqwest::ClientBuilder {
    install_provider();
    reqwest::Client::builder()
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_client_speaks_tls_on_the_installed_provider() {
        // Building the TLS config is where a missing provider panics.
        let client = super::client_builder().https_only(true).build();
        assert!(client.is_ok());
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
