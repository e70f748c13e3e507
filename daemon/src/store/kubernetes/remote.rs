//! The API server side of the Kubernetes store: a put or delete of the store sent as the
//! custom resource (or core Secret / ConfigMap) it is, with the version the mirror read as
//! the precondition, the status through the status subresource; and the conversions between
//! Dray's objects and Kubernetes'.
//!
//! The store's writes are synchronous (they run on tokio's blocking pool, as redb's do); the
//! requests run on the runtime that made the [`Remote`], the store's thread waiting for them.

use std::sync::Arc;

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams, Preconditions};
use serde_json::Value;

use crate::resource::{Kind, Object};
use crate::store::{StatusMode, StoreError};

/// The metadata fields Dray keeps; Kubernetes' others (managed fields, owner references…) are
/// left out of the mirror.
const KEPT_METADATA: [&str; 8] = [
    "name",
    "namespace",
    "labels",
    "annotations",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
];

/// Where a kind lives in the cluster.
pub fn api_resource(kind: Kind) -> ApiResource {
    let (group, version, plural) = super::crds::resource_of(kind).unwrap_or(match kind {
        Kind::Secret => ("", "v1", "secrets"),
        Kind::ConfigMap => ("", "v1", "configmaps"),
        _ => ("", "v1", "events"),
    });
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: if group.is_empty() {
            version.into()
        } else {
            format!("{group}/{version}")
        },
        kind: kind.as_str().into(),
        plural: plural.into(),
    }
}

/// A Kubernetes object (as JSON) as Dray's: its namespace is the project, the metadata Dray
/// does not keep is left out.
pub fn from_cluster(kind: Kind, mut value: Value) -> Result<Object, String> {
    let Some(fields) = value.as_object_mut() else {
        return Err("not an object".into());
    };
    if let Some(Value::Object(metadata)) = fields.get_mut("metadata") {
        metadata.retain(|k, _| KEPT_METADATA.contains(&k.as_str()));
        if !kind.namespaced() {
            metadata.remove("namespace");
        }
        // Core kinds have no generation; Dray's is a number.
        if let Some(generation) = metadata.get("generation")
            && !generation.is_u64()
        {
            metadata.remove("generation");
        }
    }
    fields.insert("kind".into(), Value::from(kind.as_str()));
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// Dray's object as the cluster takes it: the apiVersion of its definition (Dray's own
/// `dray.dev/v1alpha1` is Kargo's there), no status (that goes through its subresource).
fn to_cluster(object: &Object, with_status: bool) -> Result<DynamicObject, StoreError> {
    let mut value =
        serde_json::to_value(object).map_err(|e| StoreError::Database(e.to_string()))?;
    if let Some(fields) = value.as_object_mut() {
        fields.insert(
            "apiVersion".into(),
            Value::from(api_resource(object.kind).api_version),
        );
        if !with_status {
            fields.remove("status");
        }
    }
    serde_json::from_value(value).map_err(|e| StoreError::Database(e.to_string()))
}

/// The Kubernetes API server the store writes to.
pub struct Remote {
    client: kube::Client,
    runtime: tokio::runtime::Handle,
}

impl Remote {
    /// Must be made on the runtime its requests run on.
    pub fn new(client: kube::Client) -> Arc<Remote> {
        Arc::new(Remote {
            client,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    fn api(&self, kind: Kind, project: &str) -> Api<DynamicObject> {
        let resource = api_resource(kind);
        if kind.namespaced() {
            Api::namespaced_with(self.client.clone(), project, &resource)
        } else {
            Api::all_with(self.client.clone(), &resource)
        }
    }

    /// Runs `f` on the runtime and waits for it; the caller is a store thread (tokio's blocking
    /// pool or a plain thread), never a runtime worker.
    fn block_on<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.runtime.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv().map_err(|_| {
            StoreError::Unavailable("the request to the API server was dropped".into())
        })
    }

    /// Sends a put of the store: `object` (its status too with [`StatusMode::Replace`]) in
    /// place of `existing` (which holds the version the change is made on). Returns the object
    /// as the API server keeps it.
    pub fn put(
        &self,
        object: &Object,
        existing: Option<&Object>,
        status: StatusMode,
    ) -> Result<Object, StoreError> {
        let kind = object.kind;
        let project = object.project().to_string();
        let name = object.name().to_string();
        let api = self.api(kind, &project);
        let client = self.client.clone();
        let mut body = to_cluster(object, false)?;
        let write_status = status == StatusMode::Replace
            && object.body.get("status") != existing.and_then(|e| e.body.get("status"));
        let status_value = object.body.get("status").cloned();
        let precondition = existing.and_then(|e| e.metadata.resource_version.clone());
        let conflict = |found: Option<String>| StoreError::Conflict {
            kind,
            name: name.clone(),
            expected: precondition.clone().unwrap_or_default(),
            found: found.unwrap_or_default(),
        };
        let written: Result<DynamicObject, kube::Error> = self.block_on({
            let (project, name, precondition) =
                (project.clone(), name.clone(), precondition.clone());
            async move {
                let params = PostParams::default();
                let mut written = match &precondition {
                    None => match api.create(&params, &body).await {
                        // A project's objects live in its namespace: made with the first.
                        Err(kube::Error::Api(e)) if e.code == 404 && kind.namespaced() => {
                            ensure_namespace(&client, &project).await?;
                            api.create(&params, &body).await?
                        }
                        other => other?,
                    },
                    Some(version) => {
                        body.metadata.resource_version = Some(version.clone());
                        api.replace(&name, &params, &body).await?
                    }
                };
                if kind == Kind::Project {
                    ensure_namespace(&client, &name).await?;
                }
                if write_status && let Some(status) = status_value {
                    let mut with_status = written.clone();
                    with_status.data["status"] = status;
                    written = api.replace_status(&name, &params, &with_status).await?;
                }
                Ok(written)
            }
        })?;
        match written {
            Ok(written) => {
                let value = serde_json::to_value(written)
                    .map_err(|e| StoreError::Database(e.to_string()))?;
                from_cluster(kind, value).map_err(|e| {
                    StoreError::Database(format!("the API server's answer for {kind} {name}: {e}"))
                })
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Err(conflict(None)),
            Err(e) => Err(refused(kind, &project, &name, e)),
        }
    }

    /// The object as the API server has it now (`None`: not there).
    pub async fn get(
        &self,
        kind: Kind,
        project: &str,
        name: &str,
    ) -> Result<Option<Object>, StoreError> {
        let found = self
            .api(kind, project)
            .get_opt(name)
            .await
            .map_err(|e| refused(kind, project, name, e))?;
        found
            .map(|o| {
                let value =
                    serde_json::to_value(o).map_err(|e| StoreError::Database(e.to_string()))?;
                from_cluster(kind, value).map_err(|e| {
                    StoreError::Database(format!("the API server's {kind} {name}: {e}"))
                })
            })
            .transpose()
    }

    /// Deletes `object` if it is still at the version the mirror holds.
    pub fn delete(&self, object: &Object) -> Result<(), StoreError> {
        let (kind, project, name) = (
            object.kind,
            object.project().to_string(),
            object.name().to_string(),
        );
        let api = self.api(kind, &project);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: object.metadata.resource_version.clone(),
                uid: object.metadata.uid.clone(),
            }),
            ..DeleteParams::default()
        };
        let deleted = self.block_on({
            let name = name.clone();
            async move { api.delete(&name, &params).await.map(|_| ()) }
        })?;
        match deleted {
            Ok(()) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Err(StoreError::NotFound {
                kind,
                project,
                name,
            }),
            Err(kube::Error::Api(e)) if e.code == 409 => Err(StoreError::Conflict {
                kind,
                name,
                expected: object.metadata.resource_version.clone().unwrap_or_default(),
                found: String::new(),
            }),
            Err(e) => Err(refused(kind, &project, &name, e)),
        }
    }
}

/// Creates namespace `name` unless it exists, labelled as Kargo labels a project's.
pub async fn ensure_namespace(client: &kube::Client, name: &str) -> Result<(), kube::Error> {
    use k8s_openapi::api::core::v1::Namespace;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("kargo.akuity.io/project".to_string(), "true".to_string());
    let namespace = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            ..Default::default()
        },
        ..Default::default()
    };
    match namespaces.create(&PostParams::default(), &namespace).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// A refusal or failure of the API server as the store reports it: the server's own message
/// (never a token), and unavailable when the server could not be reached.
fn refused(kind: Kind, project: &str, name: &str, error: kube::Error) -> StoreError {
    let at = if project.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {project}/{name}")
    };
    match error {
        kube::Error::Api(e) if e.code == 422 || e.code == 400 || e.code == 403 => {
            StoreError::Database(format!("the API server refused {at}: {}", e.message))
        }
        kube::Error::Api(e) => StoreError::Unavailable(format!(
            "the API server answered {} for {at}: {}",
            e.code, e.message
        )),
        other => StoreError::Unavailable(format!("the API server, writing {at}: {other}")),
    }
}
