//! API tokens: made with `dray token create`, shown once, stored as their SHA-256.
//!
//! A token is `dray_` and 64 hex digits (256 random bits); the prefix lets secret scanners
//! find one pasted where it should not be. The store keeps only the hash, keyed by it, with
//! the token's name, role and projects: a stolen data file or backup grants nothing, and a
//! request is authenticated by one lookup. The hash of a 256-bit random value needs no salt
//! and no slow hash: nothing can be guessed from it.

use sha2::{Digest, Sha256};

use super::{Principal, Role, Scope};
use crate::resource::validate::check_label;
use crate::store::{ReadTx, StoreError, WriteTx};

/// What every token made here begins with.
pub const PREFIX: &str = "dray_";

/// A token as stored: everything but the token itself.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Token {
    /// Unique; the principal's actor is `token:NAME`.
    pub name: String,
    pub role: Role,
    pub scope: Scope,
    /// RFC 3339.
    pub created: String,
    /// The actor who made it.
    pub created_by: String,
}

impl Token {
    pub fn principal(&self) -> Principal {
        Principal {
            actor: format!("token:{}", self.name),
            grants: vec![super::Grant {
                role: self.role,
                scope: self.scope.clone(),
            }],
        }
    }
}

/// Why a token cannot be made or revoked.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token name {0}")]
    BadName(String),
    #[error("a token named {0:?} exists: revoke it first, or pick another name")]
    Exists(String),
    #[error("no token named {0:?}: see `dray token list`")]
    NotFound(String),
    #[error(
        "role {0} holds in projects: name them (-p PROJECT, repeatable) or pass --all-projects"
    )]
    NoProjects(Role),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The key a token is stored under.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Stores `token` and returns the secret to hand to its holder, once.
pub fn create(tx: &mut WriteTx, token: Token) -> Result<String, TokenError> {
    check_label(&token.name).map_err(TokenError::BadName)?;
    if matches!(&token.scope, Scope::Projects(p) if p.is_empty()) && token.role != Role::SystemAdmin
    {
        return Err(TokenError::NoProjects(token.role));
    }
    if tx.tokens()?.iter().any(|(_, t)| t.name == token.name) {
        return Err(TokenError::Exists(token.name));
    }
    let mut bytes = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut bytes);
    let secret = format!("{PREFIX}{}", hex::encode(bytes));
    tx.put_token(&hash(&secret), &token)?;
    Ok(secret)
}

/// Removes the token named `name`; requests that carry it are refused from now on.
pub fn revoke(tx: &mut WriteTx, name: &str) -> Result<Token, TokenError> {
    let (key, token) = tx
        .tokens()?
        .into_iter()
        .find(|(_, t)| t.name == name)
        .ok_or_else(|| TokenError::NotFound(name.to_string()))?;
    tx.delete_token(&key)?;
    Ok(token)
}

/// Every token, by name.
pub fn list(r: &ReadTx) -> Result<Vec<Token>, StoreError> {
    let mut tokens: Vec<Token> = r.tokens()?.into_iter().map(|(_, t)| t).collect();
    tokens.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(tokens)
}

/// The principal holding `secret`, if it is a live token.
pub fn authenticate(r: &ReadTx, secret: &str) -> Result<Option<Principal>, StoreError> {
    if !secret.starts_with(PREFIX) {
        return Ok(None);
    }
    Ok(r.token(&hash(secret))?.map(|t| t.principal()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn token(name: &str, role: Role, projects: &[&str]) -> Token {
        Token {
            name: name.into(),
            role,
            scope: Scope::Projects(projects.iter().map(|p| p.to_string()).collect()),
            created: crate::resource::now(),
            created_by: "admin".into(),
        }
    }

    #[test]
    fn a_token_is_stored_hashed_and_works_until_revoked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dray.redb");
        let store = Store::open(&path).expect("store");
        let secret = store
            .write(|tx| create(tx, token("ci-bot", Role::Promoter, &["shop"])))
            .expect("created");
        assert!(secret.starts_with(PREFIX) && secret.len() == PREFIX.len() + 64);
        let principal = store
            .read(|r| authenticate(r, &secret))
            .expect("read")
            .expect("a principal");
        assert_eq!(principal.actor, "token:ci-bot");
        assert_eq!(principal.to_string(), "token:ci-bot (promoter in shop)");
        assert_eq!(
            store
                .read(|r| authenticate(r, &format!("{secret}0")))
                .expect("read"),
            None
        );
        drop(store);
        let file = std::fs::read(&path).expect("the data file");
        let hex_secret = &secret.as_bytes()[PREFIX.len()..];
        assert!(
            !file.windows(hex_secret.len()).any(|w| w == hex_secret),
            "the token itself must not be in the data file"
        );
        let store = Store::open(&path).expect("store");
        store.write(|tx| revoke(tx, "ci-bot")).expect("revoked");
        assert_eq!(
            store.read(|r| authenticate(r, &secret)).expect("read"),
            None
        );
    }

    #[test]
    fn names_are_unique_and_checked_and_a_scoped_role_needs_projects() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("dray.redb")).expect("store");
        store
            .write(|tx| create(tx, token("ci", Role::Viewer, &["shop"])))
            .expect("created");
        let again = store.write(|tx| create(tx, token("ci", Role::Admin, &["shop"])));
        assert!(matches!(again, Err(TokenError::Exists(_))), "{again:?}");
        let bad = store.write(|tx| create(tx, token("CI Bot", Role::Viewer, &["shop"])));
        assert!(matches!(bad, Err(TokenError::BadName(_))), "{bad:?}");
        let unscoped = store.write(|tx| create(tx, token("x", Role::Admin, &[])));
        assert!(
            matches!(unscoped, Err(TokenError::NoProjects(_))),
            "{unscoped:?}"
        );
        let gone = store.write(|tx| revoke(tx, "nobody"));
        assert!(matches!(gone, Err(TokenError::NotFound(_))), "{gone:?}");
        let names: Vec<String> = store
            .read(list)
            .expect("list")
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["ci"]);
    }
}
