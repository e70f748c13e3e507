//! SIGHUP: the config file read again, and what can change while the daemon runs put in force
//! without dropping work.
//!
//! Reloaded: step grants and allowed hosts, plugins from registries (`[[steps.oci]]`), secret
//! and kube grants, Git hosts, known SSH hosts, local Git roots, clusters, garbage collection,
//! work-directory quotas, and the TLS certificate. Nothing running is stopped: a step call under
//! way finishes with the settings it started with, and the next call (of the same Promotion too)
//! gets the new ones, so a revoked grant holds from the next call on. Kept until a restart,
//! and said so in the log when they changed: the data dir, the listen address, the Unix socket,
//! TLS on or off, `[oidc]`, the log format, `[[steps.plugins]]` files and the registries' rate and mirrors.
//! A config that does not load or check is refused whole: the running settings stay.

use std::path::PathBuf;
use std::sync::Arc;

use axum_server::tls_rustls::RustlsConfig;

use super::{Config, listeners, notify};
use crate::store::Store;

/// What a reload needs to reach.
pub(super) struct Running {
    pub config: Config,
    pub runtime: crate::runtime::Runtime,
    pub store: Store,
    pub engine: crate::engine::Engine,
    pub discovery: crate::discovery::Discovery,
    pub tls: Option<RustlsConfig>,
}

/// Reloads on every SIGHUP until `stop` turns true (then it lets go of the engine and the
/// store, so that shutdown can close them).
pub(super) async fn on_hangup(mut running: Running, mut stop: tokio::sync::watch::Receiver<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; the config is read at start only");
        return;
    };
    loop {
        tokio::select! {
            hangup = hangups.recv() => if hangup.is_none() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        // systemd (Type=notify-reload, v253+) wants the time with the reload message.
        match sd_notify::NotifyState::monotonic_usec_now() {
            Ok(now) => notify(&[sd_notify::NotifyState::Reloading, now]),
            Err(_) => notify(&[sd_notify::NotifyState::Reloading]),
        }
        match reload(&mut running).await {
            Ok(()) => tracing::info!(file = ?running.config.file, "config reloaded"),
            Err(e) => tracing::error!(
                file = ?running.config.file,
                error = format!("{e:#}"),
                "config not reloaded; the running settings stay"
            ),
        }
        notify(&[sd_notify::NotifyState::Ready]);
    }
}

async fn reload(running: &mut Running) -> anyhow::Result<()> {
    let old = &running.config;
    let mut new = Config::load(old.file.as_deref(), |k| std::env::var(k).ok())?;
    // What only a restart changes keeps its running value, so the check below and the next
    // reload compare like with like.
    new.data_dir.clone_from(&old.data_dir);
    new.listen = old.listen;
    new.log_format = old.log_format;
    new.apply.clone_from(&old.apply);
    new.check()?;
    for (key, changed) in needs_restart(old, &new) {
        if changed {
            tracing::warn!(
                key,
                "changed in the config file; it takes effect at the next start"
            );
        }
    }
    let tls = match (&running.tls, &new.tls) {
        (Some(server), Some(files)) => Some((server, files)),
        _ => None,
    };
    // Everything is made before anything is swapped: a failure leaves it all as it was.
    if let Some((_, files)) = tls {
        listeners::load_tls(files).await?;
    }
    let registries = running
        .engine
        .settings()
        .registries
        .clone()
        .unwrap_or_else(|| {
            Arc::new(crate::discovery::registry::Registries::new(
                new.discovery.registry_requests_per_second,
                new.discovery.registry_mirrors.clone(),
            ))
        });
    let settings = super::engine_settings(
        &new,
        &running.runtime,
        &running.store,
        running.engine.metrics(),
        registries,
    )
    .await?;
    if let Some((server, files)) = tls {
        listeners::reload_tls(server, files).await?;
    }
    running.engine.reload(settings);
    running.discovery.reload(
        new.steps.git_local_roots.clone(),
        new.ssh_known_hosts.clone(),
    );
    running.config = new;
    Ok(())
}

/// The settings a reload cannot change, and whether the file now says otherwise.
fn needs_restart(old: &Config, new: &Config) -> [(&'static str, bool); 6] {
    // A plugin's capabilities are linked when it loads; its secrets and kube rules reload.
    let plugin_files = |c: &Config| -> Vec<(PathBuf, Vec<String>)> {
        c.steps
            .plugins
            .iter()
            .map(|p| (p.file.clone(), p.grants.clone()))
            .collect()
    };
    [
        ("unix-socket", old.unix_socket != new.unix_socket),
        ("oidc", old.oidc != new.oidc),
        ("tls (on or off)", old.tls.is_some() != new.tls.is_some()),
        (
            "steps.plugins files and grants",
            plugin_files(old) != plugin_files(new),
        ),
        (
            "discovery.registry-requests-per-second",
            old.discovery.registry_requests_per_second
                != new.discovery.registry_requests_per_second,
        ),
        (
            "discovery.registry-mirrors",
            old.discovery.registry_mirrors != new.discovery.registry_mirrors,
        ),
    ]
}
