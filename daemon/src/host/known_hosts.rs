//! SSH host keys. Before Dray reads from (or sends a key to) a Git remote over SSH, the remote's
//! host key must be listed for it in the operator's known-hosts file (the `ssh-known-hosts`
//! setting; OpenSSH's format, hashed names and `[host]:port` included), as `ssh` with
//! `StrictHostKeyChecking yes` would. Without that setting libgit2 checks the daemon user's
//! `~/.ssh/known_hosts` itself. The file is parsed by the `ssh-key` crate; only the matching of
//! names against its patterns is done here.

use std::path::Path;

use hmac::{Hmac, Mac};
use ssh_key::PublicKey;
use ssh_key::known_hosts::{HostPatterns, KnownHosts, Marker};

thread_local! {
    /// Why the last host-key check on this thread refused: libgit2 replaces a refusal's message
    /// with its own ("invalid or unknown remote ssh hostkey"), and calls the check on the thread
    /// that asked it to connect, so the reason is kept here until [`take_refusal`] reads it.
    static REFUSAL: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// [`check`], remembering a refusal's reason for [`take_refusal`].
pub fn verify(file: &Path, host: &str, port: u16, key: &[u8]) -> bool {
    let verdict = check(file, host, port, key);
    let ok = verdict.is_ok();
    REFUSAL.with(|r| *r.borrow_mut() = verdict.err());
    ok
}

/// Why the last [`verify`] on this thread refused, if it did.
pub fn take_refusal() -> Option<String> {
    REFUSAL.with(|r| r.borrow_mut().take())
}

/// The port of an SSH remote URL: `ssh://[user@]host[:port]/path` (22 unless given), or the
/// scp-like `user@host:path` (always 22).
pub fn ssh_port(url: &str) -> u16 {
    url.strip_prefix("ssh://")
        .and_then(|rest| rest.split('/').next())
        .map(|authority| authority.rsplit_once('@').map_or(authority, |(_, h)| h))
        .and_then(|host| host.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(22)
}

/// Whether `key` (the SSH wire encoding the server sent) is a known host key of `host` on
/// `port` in `file`; the error says what is wrong and how to mend it.
pub fn check(file: &Path, host: &str, port: u16, key: &[u8]) -> Result<(), String> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        format!(
            "cannot read the SSH known-hosts file {} (ssh-known-hosts in the config): {e}",
            file.display()
        )
    })?;
    let name = if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    };
    let presented = PublicKey::from_bytes(key)
        .map_err(|e| format!("{name} sent an SSH host key Dray cannot read: {e}"))?;
    let mut listed_other = false;
    for (line, entry) in KnownHosts::new(&text).enumerate() {
        let entry = entry.map_err(|e| {
            format!(
                "{}: an entry cannot be read ({e}); its lines are `host-patterns key-type base64-key`",
                file.display()
            )
        })?;
        if !matches(entry.host_patterns(), &name) {
            continue;
        }
        let same = entry.public_key().key_data() == presented.key_data();
        match (entry.marker(), same) {
            (Some(Marker::Revoked), true) => {
                return Err(format!(
                    "the SSH host key of {name} is revoked in {} (entry {})",
                    file.display(),
                    line + 1
                ));
            }
            (None, true) => return Ok(()),
            (None, false) => listed_other = true,
            _ => {}
        }
    }
    let fingerprint = presented.fingerprint(ssh_key::HashAlg::Sha256);
    if listed_other {
        Err(format!(
            "the SSH host key of {name} ({fingerprint}) is not the one {} lists for it: the host's key was replaced, or something is in between; confirm the new key with the host's operator before changing the file",
            file.display()
        ))
    } else {
        Err(format!(
            "the SSH host key of {name} ({fingerprint}) is unknown: add it to {} once you have checked it, e.g. `ssh-keyscan -p {port} {host} >> {}`",
            file.display(),
            file.display()
        ))
    }
}

fn matches(patterns: &HostPatterns, name: &str) -> bool {
    match patterns {
        HostPatterns::HashedName { salt, hash } => {
            let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(salt) else {
                return false;
            };
            mac.update(name.as_bytes());
            mac.verify_slice(hash).is_ok()
        }
        HostPatterns::Patterns(list) => {
            let mut hit = false;
            for pattern in list {
                match pattern.strip_prefix('!') {
                    Some(negated) if glob(negated, name) => return false,
                    Some(_) => {}
                    None => hit |= glob(pattern, name),
                }
            }
            hit
        }
    }
}

/// OpenSSH's host pattern match: `*` any run, `?` any one character, case-insensitive.
fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two ed25519 public keys, as `ssh-keygen -t ed25519` writes them.
    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIHKe0qqYGOqBi6JN9fGIRULXaWFWahoZb5wzqwqLxPw2";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIFltRvOGlq+JCQVIhqfJ+A5s6SkbyM5VETdeihE5PmIz";

    fn wire(key: &str) -> Vec<u8> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(key)
            .expect("base64")
    }

    #[test]
    fn a_listed_key_passes_and_a_changed_or_unknown_one_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("known_hosts");
        std::fs::write(
            &file,
            format!(
                "# the forge\n[git.internal]:2222,!evil.internal ssh-ed25519 {KEY_A}\n*.corp ssh-ed25519 {KEY_A}\n"
            ),
        )
        .expect("write");
        assert!(check(&file, "git.internal", 2222, &wire(KEY_A)).is_ok());
        assert!(check(&file, "build.CORP", 22, &wire(KEY_A)).is_ok());
        let changed = check(&file, "git.internal", 2222, &wire(KEY_B)).unwrap_err();
        assert!(changed.contains("not the one"), "{changed}");
        let unknown = check(&file, "git.internal", 22, &wire(KEY_A)).unwrap_err();
        assert!(
            unknown.contains("ssh-keyscan -p 22 git.internal"),
            "{unknown}"
        );
    }

    #[test]
    fn hashed_names_match_as_openssh_writes_them() {
        use base64::Engine as _;
        let salt = b"0123456789abcdefghij";
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(salt).expect("key");
        mac.update(b"[127.0.0.1]:2299");
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let line = format!(
            "|1|{}|{} ssh-ed25519 {KEY_A}\n",
            b64(salt),
            b64(&mac.finalize().into_bytes())
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("known_hosts");
        std::fs::write(&file, line).expect("write");
        assert!(check(&file, "127.0.0.1", 2299, &wire(KEY_A)).is_ok());
        assert!(check(&file, "127.0.0.1", 22, &wire(KEY_A)).is_err());
    }

    #[test]
    fn the_port_comes_from_the_url() {
        assert_eq!(ssh_port("ssh://git@h:2222/r.git"), 2222);
        assert_eq!(ssh_port("ssh://h/r.git"), 22);
        assert_eq!(ssh_port("git@h:org/r.git"), 22);
    }
}
