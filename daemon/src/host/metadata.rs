//! The `dray:plugin/metadata` interface (capability `metadata`): a step records metadata on
//! the promotion's Stage or on a Freight of its project, as Kargo's `set-metadata` does. Where
//! it is written is the caller's business ([`MetadataSink`]): the daemon writes the Stage's or
//! Freight's `status.metadata` in the store; `dray plugin run` only logs what it would set.

use crate::resource::status::{FreightStatus, StageStatus};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{Map, Value};
use wasmtime::component::{HasSelf, Linker};

use crate::resource::{Kind, freight};
use crate::runtime::bindings::dray::plugin::metadata::{self, ResourceKind};
use crate::runtime::log::Source;
use crate::runtime::log::StepLog;
use crate::store::{Reader, StatusMode, Store, StoreError};

/// The largest `values` one call may set (its JSON).
pub const MAX_VALUES_BYTES: usize = 64 * 1024;
/// The largest a resource's whole metadata may grow to (its JSON), however many calls set it.
pub const MAX_METADATA_BYTES: usize = 256 * 1024;
/// The most `set` calls one step call may make (each is a write to the store).
pub const MAX_CALLS: u32 = 100;

/// A boxed future, as a trait object can return one.
pub type Pending<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Where metadata goes.
pub trait MetadataSink: Send + Sync {
    /// Merges `values` into the named resource's metadata; the error is for the step.
    fn set(&self, kind: Kind, name: String, values: Map<String, Value>) -> Pending<'_>;
}

/// The sink of one call; none by default (the call then gets an error saying so).
#[derive(Clone, Default)]
pub struct Metadata(pub Option<Arc<dyn MetadataSink>>);

impl std::fmt::Debug for Metadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Metadata(some)"
        } else {
            "Metadata(none)"
        })
    }
}

/// Writes into the store, within one project.
pub struct ProjectMetadata {
    pub store: Store,
    pub project: String,
}

impl MetadataSink for ProjectMetadata {
    fn set(&self, kind: Kind, name: String, values: Map<String, Value>) -> Pending<'_> {
        let (store, project) = (self.store.clone(), self.project.clone());
        Box::pin(async move {
            let written = store
                .write_async(move |tx| {
                    let found = match kind {
                        Kind::Freight => freight::find(&*tx, &project, &name)?,
                        _ => tx.get(kind, &project, &name)?,
                    };
                    let Some(mut object) = found else {
                        return Ok::<_, StoreError>(Err(format!(
                            "project {project} has no {} {name:?}",
                            kind.as_str()
                        )));
                    };
                    // Stages and Freight keep `status.metadata` in their typed status.
                    fn merge<T: Default + serde::de::DeserializeOwned + serde::Serialize>(
                        object: &mut crate::resource::Object,
                        values: Map<String, Value>,
                        field: fn(&mut T) -> &mut Option<Map<String, Value>>,
                    ) -> Result<usize, StoreError> {
                        let mut status: T = object.status_of()?;
                        let metadata = field(&mut status).get_or_insert_with(Map::new);
                        metadata.extend(values);
                        let size = serde_json::to_string(metadata).map_or(usize::MAX, |t| t.len());
                        object.set_status(&status);
                        Ok(size)
                    }
                    let size = match kind {
                        Kind::Stage => merge::<StageStatus>(&mut object, values, |s| &mut s.metadata)?,
                        _ => merge::<FreightStatus>(&mut object, values, |s| &mut s.metadata)?,
                    };
                    if size > MAX_METADATA_BYTES {
                        return Ok(Err(format!(
                            "the metadata of {} {name:?} would be {size} bytes; it may hold at most {MAX_METADATA_BYTES}",
                            kind.as_str()
                        )));
                    }
                    tx.put(object, None, StatusMode::Replace)?;
                    Ok(Ok(()))
                })
                .await;
            written.map_err(|e| format!("cannot record the metadata: {e}"))?
        })
    }
}

/// Only says what it would set (`dray plugin run`, where there is no Stage or Freight).
pub struct LogOnly;

impl MetadataSink for LogOnly {
    fn set(&self, _kind: Kind, _name: String, _values: Map<String, Value>) -> Pending<'_> {
        Box::pin(async { Ok(()) })
    }
}

/// What the `metadata` capability keeps for one call: where it writes, how many calls it made
/// (bounded by [`MAX_CALLS`]), and the step's log.
pub struct MetadataState {
    pub sink: Metadata,
    pub calls: u32,
    pub log: StepLog,
}

impl metadata::Host for MetadataState {
    async fn set(
        &mut self,
        kind: ResourceKind,
        name: String,
        values: String,
    ) -> wasmtime::Result<Result<(), String>> {
        let Some(sink) = self.sink.0.clone() else {
            return Ok(Err("this step may not set metadata".into()));
        };
        self.calls += 1;
        if self.calls > MAX_CALLS {
            return Ok(Err(format!(
                "a step may set metadata at most {MAX_CALLS} times; set several keys in one call"
            )));
        }
        if values.len() > MAX_VALUES_BYTES {
            return Ok(Err(format!(
                "values are {} bytes; one call may set at most {MAX_VALUES_BYTES}",
                values.len()
            )));
        }
        let values = match serde_json::from_str::<Value>(&values) {
            Ok(Value::Object(map)) => map,
            Ok(_) | Err(_) => return Ok(Err("values must be a JSON object".into())),
        };
        let kind = match kind {
            ResourceKind::Stage => Kind::Stage,
            ResourceKind::Freight => Kind::Freight,
        };
        let keys: Vec<&str> = values.keys().map(String::as_str).collect();
        let line = format!(
            "set metadata {} on {} {name}",
            keys.join(", "),
            kind.as_str()
        );
        let result = sink.set(kind, name, values.clone()).await;
        if result.is_ok() {
            self.log.push(Source::Host, "info", line, Vec::new());
        }
        Ok(result)
    }
}

/// Adds the `metadata` interface to a plugin's linker; `get` finds the capability's state.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut MetadataState,
) -> wasmtime::Result<()> {
    metadata::add_to_linker::<T, HasSelf<MetadataState>>(linker, get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_resources_metadata_stops_growing_at_its_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("db")).expect("store");
        store
            .write(|tx| {
                let stage = crate::resource::decode(
                    serde_json::json!({
                        "apiVersion": "kargo.akuity.io/v1alpha1", "kind": "Stage",
                        "metadata": {"name": "dev", "namespace": "p"},
                        "spec": {"requestedFreight": [{"origin": {"kind": "Warehouse", "name": "w"}, "sources": {"direct": true}}]},
                    }),
                    None,
                )
                .expect("a valid Stage");
                tx.put(stage, None, StatusMode::Replace).map(|_| ())
            })
            .expect("written");
        let sink = ProjectMetadata {
            store,
            project: "p".into(),
        };
        let mut refused = None;
        for n in 0..10 {
            let mut values = Map::new();
            values.insert(format!("k{n}"), Value::String("v".repeat(60 * 1024)));
            if let Err(e) = sink.set(Kind::Stage, "dev".into(), values).await {
                refused = Some((n, e));
                break;
            }
        }
        let (n, message) = refused.expect("refused before 10 calls of 60 KiB");
        assert_eq!(n, 4, "four fit in 256 KiB: {message}");
        assert!(message.contains("at most 262144"), "{message}");
    }
}
