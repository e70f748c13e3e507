//! Where the API is served: the TCP listener (HTTPS when `[tls]` names a certificate), and a Unix
//! socket for local use; either may come from systemd (`LISTEN_FDS`). Both stop taking
//! connections on shutdown and finish the open requests.

use std::path::{Path, PathBuf};

use anyhow::Context;
use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use serde::Deserialize;
use tokio::sync::watch;

/// `[tls]`: the API's certificate (with its chain) and private key, PEM files, read at start and
/// again on SIGHUP (renewed certificates are picked up without a restart).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// What the daemon listens on.
pub struct Listeners {
    pub tcp: tokio::net::TcpListener,
    /// A Unix socket: systemd's, or bound from the config's `unix-socket`.
    pub unix: Option<std::os::unix::net::UnixListener>,
}

/// The sockets systemd passed (`LISTEN_FDS`, socket activation): the first TCP and the first
/// Unix stream socket among them. Read once, before any thread starts (the protocol's variables
/// are removed from the environment).
#[derive(Default)]
pub struct Activated {
    pub tcp: Option<std::net::TcpListener>,
    pub unix: Option<std::os::unix::net::UnixListener>,
}

impl Activated {
    pub fn from_env() -> anyhow::Result<Activated> {
        let mut fds = listenfd::ListenFd::from_env();
        let mut activated = Activated::default();
        for i in 0..fds.len() {
            if activated.tcp.is_none()
                && let Ok(Some(tcp)) = fds.take_tcp_listener(i)
            {
                activated.tcp = Some(tcp);
                continue;
            }
            if activated.unix.is_none()
                && let Ok(Some(unix)) = fds.take_unix_listener(i)
            {
                activated.unix = Some(unix);
                continue;
            }
            anyhow::bail!(
                "systemd passed socket {i} (LISTEN_FDS), which is neither the first TCP nor the first Unix stream socket: list one of each at most in the .socket unit"
            );
        }
        Ok(activated)
    }
}

/// Reads the certificate and key; a bad pair stops the start (or is refused by a reload, which
/// keeps the pair in use).
pub async fn load_tls(files: &TlsFiles) -> anyhow::Result<RustlsConfig> {
    crate::tls::install_provider();
    RustlsConfig::from_pem_file(&files.cert_file, &files.key_file)
        .await
        .with_context(|| tls_problem(files))
}

/// Reads the certificate and key again into the running server.
pub async fn reload_tls(config: &RustlsConfig, files: &TlsFiles) -> anyhow::Result<()> {
    config
        .reload_from_pem_file(&files.cert_file, &files.key_file)
        .await
        .with_context(|| tls_problem(files))
}

fn tls_problem(files: &TlsFiles) -> String {
    format!(
        "config [tls]: cannot use cert-file {} with key-file {} (both PEM: the certificate chain, and its private key in PKCS#8, PKCS#1 or SEC1)",
        files.cert_file.display(),
        files.key_file.display()
    )
}

/// Binds the Unix socket at `path`, replacing a stale socket file but nothing else; mode 0600,
/// so only the daemon's user (and root) may connect, and a request on it still needs a token.
pub fn bind_unix(path: &Path) -> anyhow::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            // A daemon still serving there keeps it; a dead one's file is removed.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                anyhow::bail!(
                    "config unix-socket {}: another process is listening there (is another dray running?)",
                    path.display()
                );
            }
            std::fs::remove_file(path).with_context(|| {
                format!(
                    "config unix-socket: cannot remove the stale socket {}",
                    path.display()
                )
            })?;
        }
        Ok(_) => anyhow::bail!(
            "config unix-socket {}: the path exists and is not a socket; name a free path",
            path.display()
        ),
        Err(_) => {}
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("config unix-socket: cannot listen on {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).with_context(|| {
        format!(
            "config unix-socket: cannot make {} private (mode 0600)",
            path.display()
        )
    })?;
    Ok(listener)
}

/// Serves `app` on every listener until `stop` turns true, then lets open requests finish.
pub async fn serve(
    app: Router,
    listeners: Listeners,
    tls: Option<RustlsConfig>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let stopped = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let mut servers = tokio::task::JoinSet::new();
    if let Some(unix) = listeners.unix {
        unix.set_nonblocking(true)?;
        let unix = tokio::net::UnixListener::from_std(unix)?;
        let (app, stop) = (app.clone(), stop.clone());
        servers.spawn(async move {
            axum::serve(unix, app)
                .with_graceful_shutdown(stopped(stop))
                .await
                .context("serving the Unix socket")
        });
    }
    match tls {
        Some(tls) => {
            let handle = axum_server::Handle::new();
            let waiter = handle.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                stopped(stop).await;
                waiter.graceful_shutdown(None);
            });
            let tcp = listeners.tcp.into_std()?;
            servers.spawn(async move {
                axum_server::tls_rustls::from_tcp_rustls(tcp, tls)?
                    .handle(handle)
                    .serve(app.into_make_service())
                    .await
                    .context("serving HTTPS")
            });
        }
        None => {
            servers.spawn(async move {
                axum::serve(listeners.tcp, app)
                    .with_graceful_shutdown(stopped(stop))
                    .await
                    .context("serving HTTP")
            });
        }
    }
    while let Some(ended) = servers.join_next().await {
        ended.context("a server task failed")??;
    }
    Ok(())
}
