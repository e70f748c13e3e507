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
    /// Gives the Freight named `freight` (name or alias) the alias `alias`.
    fn set_alias(&self, freight: String, alias: String) -> Pending<'_>;
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

    fn set_alias(&self, name: String, alias: String) -> Pending<'_> {
        let (store, project) = (self.store.clone(), self.project.clone());
        Box::pin(async move {
            crate::resource::validate::check_label(&alias)
                .map_err(|e| format!("alias {alias:?}: {e}"))?;
            let written = store
                .write_async(move |tx| {
                    let Some(mut object) = freight::find(&*tx, &project, &name)? else {
                        return Ok::<_, StoreError>(Err(format!(
                            "project {project} has no Freight {name:?}"
                        )));
                    };
                    if let Some(other) = freight::find(&*tx, &project, &alias)?
                        && other.name() != object.name()
                    {
                        return Ok(Err(format!(
                            "alias {alias:?} is already used by Freight {} in project {project}",
                            other.name()
                        )));
                    }
                    object
                        .body
                        .insert("alias".into(), Value::String(alias.clone()));
                    object
                        .metadata
                        .labels
                        .insert(freight::ALIAS_LABEL.into(), alias);
                    tx.put(object, None, StatusMode::Keep)?;
                    Ok(Ok(()))
                })
                .await;
            written.map_err(|e| format!("cannot set the alias: {e}"))?
        })
    }
}

/// Only says what it would set (`dray plugin run`, where there is no Stage or Freight).
pub struct LogOnly;

impl MetadataSink for LogOnly {
    fn set(&self, _kind: Kind, _name: String, _values: Map<String, Value>) -> Pending<'_> {
        Box::pin(async { Ok(()) })
    }

    fn set_alias(&self, _freight: String, _alias: String) -> Pending<'_> {
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
        let sink = match self.admit() {
            Ok(sink) => sink,
            Err(e) => return Ok(Err(e)),
        };
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

    async fn set_freight_alias(
        &mut self,
        freight: String,
        alias: String,
    ) -> wasmtime::Result<Result<(), String>> {
        let sink = match self.admit() {
            Ok(sink) => sink,
            Err(e) => return Ok(Err(e)),
        };
        if freight.len() > 253 || alias.len() > 253 {
            return Ok(Err(
                "a Freight's name and alias are at most 253 bytes".into()
            ));
        }
        let line = format!("set the alias of Freight {freight} to {alias}");
        let result = sink.set_alias(freight, alias).await;
        if result.is_ok() {
            self.log.push(Source::Host, "info", line, Vec::new());
        }
        Ok(result)
    }
}

impl MetadataState {
    /// Counts a call against [`MAX_CALLS`]; the sink, or why the call may not be made.
    fn admit(&mut self) -> Result<Arc<dyn MetadataSink>, String> {
        let sink = self
            .sink
            .0
            .clone()
            .ok_or("this step may not set metadata")?;
        self.calls += 1;
        if self.calls > MAX_CALLS {
            return Err(format!(
                "a step may set metadata at most {MAX_CALLS} times; set several keys in one call"
            ));
        }
        Ok(sink)
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

    #[tokio::test]
    async fn an_alias_must_be_a_label_and_unused_by_other_freight() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("db")).expect("store");
        let sources: Vec<crate::admission::Source> = ["a", "b"]
            .iter()
            .map(|alias| crate::admission::Source {
                name: format!("{alias}.yaml"),
                content: format!(
                    "apiVersion: kargo.akuity.io/v1alpha1\nkind: Project\nmetadata: {{name: p}}\n---\napiVersion: kargo.akuity.io/v1alpha1\nkind: Warehouse\nmetadata: {{name: w, namespace: p}}\nspec:\n  subscriptions: [{{image: {{repoURL: r}}}}]\n---\napiVersion: kargo.akuity.io/v1alpha1\nkind: Freight\nmetadata: {{name: x, namespace: p}}\nalias: {alias}\norigin: {{kind: Warehouse, name: w}}\nimages: [{{repoURL: r, tag: '{alias}'}}]\n"
                ),
            })
            .collect();
        for source in sources {
            crate::admission::apply(&store, &[source], None, false, None).expect("applied");
        }
        let sink = ProjectMetadata {
            store: store.clone(),
            project: "p".into(),
        };
        let taken = sink.set_alias("a".into(), "b".into()).await.unwrap_err();
        assert!(taken.contains("already used by Freight"), "{taken}");
        let invalid = sink
            .set_alias("a".into(), "no spaces".into())
            .await
            .unwrap_err();
        assert!(invalid.starts_with("alias \"no spaces\""), "{invalid}");
        let missing = sink.set_alias("c".into(), "d".into()).await.unwrap_err();
        assert!(missing.contains("no Freight \"c\""), "{missing}");
        sink.set_alias("a".into(), "release-1".into())
            .await
            .expect("renamed");
        let found = store
            .read(|r| freight::find(r, "p", "release-1"))
            .expect("read")
            .expect("found by its new alias");
        assert_eq!(found.body["alias"], "release-1");
        assert!(
            store
                .read(|r| freight::find(r, "p", "a"))
                .unwrap()
                .is_none()
        );
    }
}
