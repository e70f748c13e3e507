//! A real OpenID Connect provider (the `oidc-provider` package from npm, installed by
//! tests/run.sh into `~/.cache/dray-tools/oidc`, or `DRAY_OIDC_PROVIDER`), run by Node.js from
//! `tests/servers/oidc_provider.mjs` with the device flow and its development sign-in pages; and
//! [`approve`], which plays the person at the browser: enters the code, signs in, consents.
//! Stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct OidcProvider {
    /// The issuer: `http://127.0.0.1:PORT`.
    pub issuer: String,
    child: Child,
}

fn package() -> PathBuf {
    if let Some(path) = std::env::var_os("DRAY_OIDC_PROVIDER") {
        return path.into();
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/dray-tools/oidc/node_modules/oidc-provider")
}

impl OidcProvider {
    /// Accounts as `name=group,group` (`bob=` has none); any password signs in.
    pub fn start(accounts: &[&str]) -> OidcProvider {
        OidcProvider::start_with_ttl(accounts, 3600)
    }

    /// [`OidcProvider::start`], its ID tokens valid for `id_token_ttl` seconds.
    pub fn start_with_ttl(accounts: &[&str], id_token_ttl: u32) -> OidcProvider {
        let package = package();
        assert!(
            package.join("package.json").exists(),
            "{} is missing: run tests/run.sh, which installs it (npm install oidc-provider@8.8.1 into ~/.cache/dray-tools/oidc)",
            package.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let script = crate::repo_root().join("tests/servers/oidc_provider.mjs");
        let child = Command::new("node")
            .arg(script)
            .arg(port.to_string())
            .args(accounts)
            .env("DRAY_OIDC_PROVIDER", &package)
            .env("OIDC_ID_TOKEN_TTL", id_token_ttl.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run node ({e}): install nodejs (tests/run.sh does)")
            });
        let issuer = format!("http://127.0.0.1:{port}");
        let client = crate::blocking_client();
        let deadline = Instant::now() + Duration::from_secs(30);
        while client
            .get(format!("{issuer}/.well-known/openid-configuration"))
            .send()
            .map_or(true, |r| !r.status().is_success())
        {
            assert!(
                Instant::now() < deadline,
                "the OIDC provider did not start in 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        OidcProvider { issuer, child }
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the hidden input `name` in `html`.
fn hidden(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\" value=\""))?;
    let rest = &html[at + name.len() + 15..];
    Some(rest[..rest.find('"')?].to_string())
}

/// Plays the person at the browser: opens `verification_uri`, enters `user_code`, confirms,
/// signs in as `login` and consents, as the provider's development pages ask.
pub fn approve(verification_uri: &str, user_code: &str, login: &str) {
    dray::tls::install_provider();
    let client = reqwest::blocking::ClientBuilder::new()
        .cookie_store(true)
        .build()
        .expect("a client with cookies");
    let page = client
        .get(verification_uri)
        .send()
        .expect("the code page")
        .text()
        .expect("text");
    let xsrf = hidden(&page, "xsrf").unwrap_or_else(|| panic!("no xsrf in:\n{page}"));
    let page = client
        .post(verification_uri)
        .form(&[("xsrf", xsrf.as_str()), ("user_code", user_code)])
        .send()
        .expect("the code is entered")
        .text()
        .expect("text");
    let xsrf = hidden(&page, "xsrf").unwrap_or_else(|| panic!("no confirmation in:\n{page}"));
    // Confirming redirects to the sign-in page (the client follows redirects).
    let signin = client
        .post(verification_uri)
        .form(&[
            ("xsrf", xsrf.as_str()),
            ("user_code", user_code),
            ("confirm", "yes"),
        ])
        .send()
        .expect("confirmed");
    let signin_url = signin.url().to_string();
    let consent = client
        .post(&signin_url)
        .form(&[("prompt", "login"), ("login", login), ("password", "any")])
        .send()
        .expect("signed in");
    let consent_url = consent.url().to_string();
    let page = consent.text().expect("text");
    assert!(
        page.contains("consent"),
        "no consent page at {consent_url}:\n{page}"
    );
    let done = client
        .post(&consent_url)
        .form(&[("prompt", "consent")])
        .send()
        .expect("consented")
        .text()
        .expect("text");
    assert!(done.contains("Sign-in Success"), "{done}");
}
