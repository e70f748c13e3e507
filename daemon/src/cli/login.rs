//! `dray login` and `dray logout`: people sign in with the daemon's OpenID Connect provider
//! (the OAuth 2.0 device flow, RFC 8628: open a URL anywhere, enter a code), and the CLI keeps
//! the ID token and its refresh token per server in `~/.config/dray/logins.json` (mode 0600),
//! refreshing the ID token when it is about to expire.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::client::{CliError, exit};

/// One server's sign-in.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Login {
    pub id_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    pub token_endpoint: String,
    pub client_id: String,
}

#[derive(Serialize, Deserialize, Default)]
struct Logins {
    #[serde(default)]
    servers: BTreeMap<String, Login>,
}

fn path() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("dray").join("logins.json"))
}

fn read() -> Logins {
    path()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

fn write(logins: &Logins) -> Result<(), CliError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let Some(path) = path() else {
        return Err(CliError::new(
            exit::FAILED,
            "no config directory to keep the sign-in in (set XDG_CONFIG_HOME or HOME)",
        ));
    };
    let fail = |e: std::io::Error| {
        CliError::new(
            exit::FAILED,
            format!("cannot save the sign-in in {}: {e}", path.display()),
        )
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let staged = path.with_extension("json.new");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&staged)
        .map_err(fail)?;
    file.write_all(&serde_json::to_vec_pretty(logins).unwrap_or_default())
        .map_err(fail)?;
    std::fs::rename(&staged, &path).map_err(fail)
}

/// The saved sign-in for `server`, if any.
pub fn saved(server: &str) -> Option<Login> {
    read().servers.get(server).cloned()
}

/// Seconds until `id_token` expires (its `exp`, read without checking: the daemon checks).
fn seconds_left(id_token: &str) -> i64 {
    use base64::Engine;
    let exp = id_token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|c| c["exp"].as_i64())
        .unwrap_or(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    exp - now
}

/// The ID token to send to `server`: the saved one, refreshed first if it expires within a
/// minute and a refresh token is kept. `None` when there is no sign-in for `server`.
pub async fn bearer(http: &reqwest::Client, server: &str) -> Option<String> {
    let mut login = saved(server)?;
    if seconds_left(&login.id_token) > 60 {
        return Some(login.id_token);
    }
    let Some(refresh) = login.refresh_token.clone() else {
        return Some(login.id_token);
    };
    let Ok(tokens) =
        crate::auth::device::refresh(http, &login.token_endpoint, &login.client_id, &refresh).await
    else {
        // Refused (revoked, expired) or the provider is unreachable: the old token goes, and
        // the daemon takes it while it is valid, or says to sign in again.
        return Some(login.id_token);
    };
    login.id_token = tokens.id_token;
    if let Some(r) = tokens.refresh_token {
        login.refresh_token = Some(r);
    }
    let mut logins = read();
    logins.servers.insert(server.to_string(), login.clone());
    let _ = write(&logins);
    Some(login.id_token)
}

/// `dray login`: the device flow against the provider `server` names.
pub async fn login(http: &reqwest::Client, server: &str, base: &str) -> Result<(), CliError> {
    let fail = |m: String| CliError::new(exit::FAILED, m);
    let config: Value = http
        .get(format!("{base}/auth/config"))
        .send()
        .await
        .map_err(|e| CliError::new(exit::UNREACHABLE, format!("cannot reach {server}: {e}")))?
        .json()
        .await
        .map_err(|e| fail(format!("{server} did not say how to sign in: {e}")))?;
    let oidc = &config["oidc"];
    let (Some(issuer), Some(client_id)) = (oidc["issuerURL"].as_str(), oidc["clientID"].as_str())
    else {
        return Err(fail(format!(
            "{server} has no OpenID Connect sign-in ([oidc] in its config): use an API token (--token or DRAY_TOKEN)"
        )));
    };
    let scopes = super::output::strings(&oidc["scopes"]);
    let discovery = crate::auth::oidc::Oidc::discover(http, issuer)
        .await
        .map_err(fail)?;
    let Some(device_endpoint) = discovery.device_authorization_endpoint.clone() else {
        return Err(fail(format!(
            "the provider {issuer} does not offer the device flow (device_authorization_endpoint): enable it for client {client_id}"
        )));
    };
    use crate::auth::device::{self, DeviceError, Poll};
    let started = device::start(http, &device_endpoint, client_id, &scopes.join(" "))
        .await
        .map_err(|e| match e {
            DeviceError::Refused(reason) => {
                fail(format!("the provider refused to start a sign-in: {reason}"))
            }
            e => fail(e.to_string()),
        })?;
    eprintln!(
        "To sign in to {server}, open {} and enter the code {}",
        started.verification_uri, started.user_code
    );
    if let Some(complete) = &started.verification_uri_complete {
        eprintln!("(or open {complete})");
    }
    let mut interval = Duration::from_secs(started.interval);
    let deadline = std::time::Instant::now() + Duration::from_secs(started.expires_in);
    let expired =
        || fail("the code expired before the sign-in ended: run `dray login` again".into());
    let tokens = loop {
        if std::time::Instant::now() > deadline {
            return Err(expired());
        }
        tokio::time::sleep(interval).await;
        match device::poll(
            http,
            &discovery.token_endpoint,
            client_id,
            &started.device_code,
        )
        .await
        {
            Ok(Poll::Done(tokens)) => break tokens,
            Ok(Poll::Pending) => {}
            Ok(Poll::SlowDown) => interval += Duration::from_secs(5),
            Err(DeviceError::Expired) => return Err(expired()),
            Err(DeviceError::Refused(reason)) => {
                return Err(fail(format!("the provider ended the sign-in: {reason}")));
            }
            Err(e) => return Err(fail(e.to_string())),
        }
    };
    let login = Login {
        id_token: tokens.id_token,
        refresh_token: tokens.refresh_token,
        token_endpoint: discovery.token_endpoint,
        client_id: client_id.to_string(),
    };
    let mut logins = read();
    logins.servers.insert(server.to_string(), login);
    write(&logins)
}

/// `dray logout`: forgets the sign-in for `server`.
pub fn logout(server: &str) -> Result<bool, CliError> {
    let mut logins = read();
    let had = logins.servers.remove(server).is_some();
    if had {
        write(&logins)?;
    }
    Ok(had)
}
