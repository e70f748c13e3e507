//! The mirror: a replica's copy of the cluster's objects in the store's in-memory database,
//! filled by one list per kind and kept current by that kind's watch (kube's `watcher`, which
//! lists again when a watch can no longer resume). Reads never reach the API server; an idle
//! replica sends it nothing but the open watches.

use futures_util::StreamExt;
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::{WatchStreamExt, watcher};

use super::remote::{api_resource, from_cluster};
use crate::resource::Kind;
use crate::store::{Reader, Store, StoreError};

/// The kinds the mirror follows so far: the custom resources; Secrets labelled with Kargo's
/// `kargo.akuity.io/cred-type` (credentials and generic Secrets, as Kargo reads them); the
/// Events Dray records (`source: dray`). Not yet ConfigMaps.
pub const MIRRORED: [Kind; 14] = [
    Kind::Secret,
    Kind::Event,
    Kind::Project,
    Kind::ProjectConfig,
    Kind::ClusterConfig,
    Kind::Warehouse,
    Kind::Stage,
    Kind::Freight,
    Kind::Promotion,
    Kind::PromotionTask,
    Kind::ClusterPromotionTask,
    Kind::AnalysisTemplate,
    Kind::ClusterAnalysisTemplate,
    Kind::AnalysisRun,
];

/// Fills `store` (made with [`Store::open_mirror`]) from the cluster and keeps it current;
/// returns once every kind has been listed. Fails at once, saying what to do, when a kind is
/// not served (its CRD is not installed) or may not be read.
pub async fn follow(
    store: &Store,
    client: &kube::Client,
    kinds: &[Kind],
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    for &kind in kinds {
        let resource = api_resource(kind);
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let (labels, fields) = selectors(kind);
        let mut params = ListParams::default().limit(1);
        if let Some(labels) = labels {
            params = params.labels(labels);
        }
        if let Some(fields) = fields {
            params = params.fields(fields);
        }
        if let Err(e) = api.list(&params).await {
            return Err(match e {
                kube::Error::Api(s) if s.code == 404 => format!(
                    "the cluster does not serve {} ({}): install the CRDs with `dray crds | kubectl apply -f -`",
                    kind, resource.api_version
                ),
                kube::Error::Api(s) if s.code == 403 => format!(
                    "the cluster does not let Dray list {}: {} (grant list and watch on {}.{})",
                    resource.plural, s.message, resource.plural, resource.group
                ),
                other => format!("listing {}: {other}", resource.plural),
            });
        }
    }
    let mut tasks = Vec::new();
    let mut listed = Vec::new();
    for &kind in kinds {
        let (ready, first_list) = tokio::sync::oneshot::channel();
        listed.push(first_list);
        let store = store.clone();
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &api_resource(kind));
        let (labels, fields) = selectors(kind);
        let mut config = watcher::Config::default();
        if let Some(labels) = labels {
            config = config.labels(labels);
        }
        if let Some(fields) = fields {
            config = config.fields(fields);
        }
        tasks.push(tokio::spawn(follow_kind(store, api, config, kind, ready)));
    }
    for first_list in listed {
        let _ = first_list.await;
    }
    Ok(tasks)
}

/// Which of a kind's objects are Dray's: a label selector and a field selector.
fn selectors(kind: Kind) -> (Option<&'static str>, Option<&'static str>) {
    match kind {
        Kind::Secret => (Some(crate::resource::CRED_TYPE_LABEL), None),
        Kind::Event => (None, Some("source=dray")),
        _ => (None, None),
    }
}

/// One kind's watch, applied to the mirror until the task is dropped.
async fn follow_kind(
    store: Store,
    api: Api<DynamicObject>,
    config: watcher::Config,
    kind: Kind,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut listing: Vec<crate::resource::Object> = Vec::new();
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(%kind, error = %e, "the watch of the cluster failed; it resumes");
                continue;
            }
        };
        let object = |o: DynamicObject| match serde_json::to_value(o)
            .map_err(|e| e.to_string())
            .and_then(|v| from_cluster(kind, v))
        {
            Ok(object) => Some(object),
            Err(e) => {
                tracing::warn!(%kind, error = %e, "an object of the cluster that Dray cannot read is left out");
                None
            }
        };
        let list_done = matches!(event, watcher::Event::InitDone);
        let written = match event {
            watcher::Event::Init => {
                listing.clear();
                continue;
            }
            watcher::Event::InitApply(o) => {
                listing.extend(object(o));
                continue;
            }
            watcher::Event::InitDone => {
                let all = std::mem::take(&mut listing);
                write(&store, move |tx| {
                    let kept: std::collections::BTreeSet<(String, String)> = all
                        .iter()
                        .map(|o| (o.project().to_string(), o.name().to_string()))
                        .collect();
                    for gone in tx.list(kind, None, None)? {
                        if !kept.contains(&(gone.project().to_string(), gone.name().to_string())) {
                            tx.mirror_delete(kind, gone.project(), gone.name(), None)?;
                        }
                    }
                    for o in &all {
                        tx.mirror_put(o)?;
                    }
                    Ok(())
                })
                .await
            }
            watcher::Event::Apply(o) => match object(o) {
                Some(o) => write(&store, move |tx| tx.mirror_put(&o).map(|_| ())).await,
                None => Ok(()),
            },
            watcher::Event::Delete(o) => match object(o) {
                Some(o) => {
                    write(&store, move |tx| {
                        tx.mirror_delete(
                            kind,
                            o.project(),
                            o.name(),
                            o.metadata.resource_version.as_deref(),
                        )
                        .map(|_| ())
                    })
                    .await
                }
                None => Ok(()),
            },
        };
        if let Err(e) = written {
            tracing::error!(%kind, error = %e, "the mirror could not keep a change of the cluster");
        }
        if list_done && let Some(ready) = ready.take() {
            let _ = ready.send(());
        }
    }
}

async fn write(
    store: &Store,
    f: impl FnOnce(&mut crate::store::WriteTx) -> Result<(), StoreError> + Send + 'static,
) -> Result<(), StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.mirror_write(f))
        .await
        .map_err(|e| StoreError::Database(format!("mirror task failed: {e}")))?
}
