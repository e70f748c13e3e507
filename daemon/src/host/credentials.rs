//! The `dray:plugin/credentials` interface: one generic secret, by name, for plugins granted
//! `credentials`. Where secrets come from is the caller's business ([`SecretSource`]): the
//! daemon reads `generic` Secrets of the Stage's project and the shared namespace; `dray plugin
//! run --secret NAME=FILE` reads a file. A guest never sees any other secret.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use crate::runtime::bindings::dray::plugin::credentials::{self, CredentialsError};
use crate::runtime::log::Source;
use crate::runtime::log::StepLog;

/// Finds a secret's keys and values by name.
pub trait SecretSource: Send + Sync {
    fn get(&self, name: &str) -> Option<BTreeMap<String, String>>;

    /// Whether the plugin may read `name` at all (asked before [`SecretSource::get`]).
    fn allows(&self, _name: &str) -> bool {
        true
    }
}

/// A fixed set of secrets (for `dray plugin run` and tests).
impl SecretSource for BTreeMap<String, BTreeMap<String, String>> {
    fn get(&self, name: &str) -> Option<BTreeMap<String, String>> {
        BTreeMap::get(self, name).cloned()
    }
}

/// The secrets one call may read; none by default.
#[derive(Clone, Default)]
pub struct Secrets(pub Option<Arc<dyn SecretSource>>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Secrets(some)"
        } else {
            "Secrets(none)"
        })
    }
}

/// What the `credentials` capability keeps for one call: the secrets it may read, and the
/// step's log, where it says which it read.
pub struct CredentialsState {
    pub secrets: Secrets,
    pub log: StepLog,
}

impl credentials::Host for CredentialsState {
    async fn get(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Vec<(String, String)>, CredentialsError>> {
        let Some(source) = self.secrets.0.clone() else {
            return Ok(Err(CredentialsError::Denied(
                "no secrets are available to this step".into(),
            )));
        };
        if !source.allows(&name) {
            return Ok(Err(CredentialsError::Denied(format!(
                "this plugin may not read secret {name:?}: the operator grants it in the daemon config (`secrets = [...]` of the plugin's [[steps.plugins]] entry)"
            ))));
        }
        Ok(match source.get(&name) {
            Some(values) => {
                // The name is logged, never a value.
                self.log.push(
                    Source::Host,
                    "info",
                    format!("the step read secret {name:?}"),
                    Vec::new(),
                );
                Ok(values.into_iter().collect())
            }
            None => Err(CredentialsError::NotFound(format!(
                "no secret named {name:?}"
            ))),
        })
    }
}

/// Adds the `credentials` interface to a plugin's linker; `get` finds the capability's state.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut CredentialsState,
) -> wasmtime::Result<()> {
    credentials::add_to_linker::<T, HasSelf<CredentialsState>>(linker, get)
}
