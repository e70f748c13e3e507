//! Admission: what may enter the store. An apply is parsed, read through the typed gate, then
//! checked against the store's current state and written, all in one transaction: a batch with
//! one bad document writes nothing.
//!
//! Every problem is reported with the source it came from, the document's index, the field path
//! and, where the field was written, its line and column.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};

use crate::engine::decisions::events;
use crate::manifest::{self, Position};
use crate::resource::freight::{ALIAS_LABEL, generate_alias};
use crate::resource::{self, FieldError, Kind, Object, SHARED_NAMESPACE, StageSpec};
use crate::store::{Change, Reader, StatusMode, StoreError, WriteTx};

mod compat;
mod steps;
pub use steps::{ConfigProblem, StepKinds};

/// One file (or request body) of an apply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Source {
    /// What to call it in errors: a file path, `-` for standard input.
    pub name: String,
    pub content: String,
}

impl Source {
    /// Reads files, every `.yaml`/`.yml`/`.json` file of a directory (in name order), or `-`
    /// (standard input) into named sources.
    pub fn read_all(paths: &[impl AsRef<std::path::Path>]) -> Result<Vec<Source>, String> {
        use std::io::Read;
        let unreadable = |path: &str, e: std::io::Error| format!("cannot read {path}: {e}");
        let mut sources = Vec::new();
        for path in paths {
            let path = path.as_ref();
            let shown = path.display().to_string();
            if shown == "-" {
                let mut content = String::new();
                std::io::stdin()
                    .read_to_string(&mut content)
                    .map_err(|e| unreadable("standard input", e))?;
                sources.push(Source {
                    name: "-".into(),
                    content,
                });
            } else if path.is_dir() {
                let mut entries: Vec<std::path::PathBuf> = std::fs::read_dir(path)
                    .map_err(|e| unreadable(&shown, e))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.is_file()
                            && p.extension()
                                .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
                    })
                    .collect();
                entries.sort();
                if entries.is_empty() {
                    return Err(format!("{shown} has no .yaml, .yml or .json files"));
                }
                for entry in entries {
                    let name = entry.display().to_string();
                    let content =
                        std::fs::read_to_string(&entry).map_err(|e| unreadable(&name, e))?;
                    sources.push(Source { name, content });
                }
            } else {
                let content = std::fs::read_to_string(path).map_err(|e| unreadable(&shown, e))?;
                sources.push(Source {
                    name: shown,
                    content,
                });
            }
        }
        Ok(sources)
    }
}

/// A problem with one document, located as precisely as possible.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    pub source: String,
    /// 1-based index of the document in its source.
    pub document: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.source)?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, ":{l}:{c}")?;
        }
        write!(f, ": document {}", self.document)?;
        if let (Some(k), Some(n)) = (&self.kind, &self.name)
            && !n.is_empty()
        {
            write!(f, " ({k} {n:?})")?;
        }
        if self.path.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.path, self.message)
        }
    }
}

/// Why an apply was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The manifests are wrong; nothing was written.
    #[error("{} problem(s) in the manifests; nothing was applied", .0.len())]
    Invalid(Vec<Problem>),
    /// Some documents are outside what the caller may change; nothing was written.
    #[error(
        "{} document(s) are outside what this token may change; nothing was applied",
        .0.len()
    )]
    Forbidden(Vec<Problem>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What happened to one object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Outcome {
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub project: String,
    pub name: String,
    pub action: Change,
    /// What was applied but likely not meant (a YAML tag where an expression was meant, a
    /// deprecated field): located as problems are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Problem>,
}

/// A document that passed the typed gate, with what is needed to locate later problems in it.
pub struct Parsed {
    object: Object,
    /// `metadata.resourceVersion` as written: when set, the object is written only if it still
    /// has that version (optimistic concurrency, as in Kubernetes).
    expected_version: Option<String>,
    source: String,
    document: manifest::Document,
}

impl Parsed {
    fn problem(&self, path: impl AsRef<str>, message: impl Into<String>) -> Problem {
        let path = path.as_ref();
        let at = self.document.position(path);
        Problem {
            source: self.source.clone(),
            document: self.document.index,
            kind: Some(self.object.kind.to_string()),
            name: Some(self.object.name().to_string()),
            path: path.to_string(),
            line: Some(at.line),
            column: Some(at.column),
            message: message.into(),
        }
    }
}

/// Parses and type-checks every document of every source; needs no store.
pub fn parse(sources: &[Source], default_project: Option<&str>) -> Result<Vec<Parsed>, ApplyError> {
    let mut problems = Vec::new();
    let mut parsed = Vec::new();
    for source in sources {
        let documents = match manifest::parse(&source.content) {
            Ok(d) => d,
            Err(e) => {
                problems.push(Problem {
                    source: source.name.clone(),
                    document: e.document,
                    kind: None,
                    name: None,
                    path: String::new(),
                    line: Some(e.position.line),
                    column: Some(e.position.column),
                    message: format!("not valid YAML: {}", e.message),
                });
                continue;
            }
        };
        for mut document in documents {
            let upgraded = compat::upgrade(&mut document.value);
            document.warnings.extend(upgraded);
            let locate = |e: FieldError, doc: &manifest::Document| {
                let Position { line, column } = doc.position(&e.path);
                Problem {
                    source: source.name.clone(),
                    document: doc.index,
                    kind: doc
                        .value
                        .get("kind")
                        .and_then(|k| k.as_str())
                        .map(str::to_string),
                    name: doc
                        .value
                        .pointer("/metadata/name")
                        .and_then(|k| k.as_str())
                        .map(str::to_string),
                    path: e.path,
                    line: Some(line),
                    column: Some(column),
                    message: e.message,
                }
            };
            if !document.value.is_object() {
                problems.push(locate(
                    FieldError {
                        path: String::new(),
                        message: "a document must be a mapping with apiVersion, kind and metadata"
                            .into(),
                    },
                    &document,
                ));
                continue;
            }
            match resource::decode(document.value.clone(), default_project) {
                Ok(object) => parsed.push(Parsed {
                    object,
                    expected_version: document
                        .value
                        .pointer("/metadata/resourceVersion")
                        .and_then(|v| {
                            v.as_str()
                                .map(str::to_string)
                                .or_else(|| v.as_u64().map(|n| n.to_string()))
                        }),
                    source: source.name.clone(),
                    document,
                }),
                Err(errors) => problems.extend(errors.into_iter().map(|mut e| {
                    // An error where YAML read a tag is most likely explained by the tag.
                    if let Some((_, warning)) =
                        document.warnings.iter().find(|(path, _)| *path == e.path)
                    {
                        e.message = format!("{} ({warning})", e.message.trim_end());
                    }
                    locate(e, &document)
                })),
            }
        }
    }
    if problems.is_empty() {
        Ok(parsed)
    } else {
        Err(ApplyError::Invalid(problems))
    }
}

/// Checks the batch against the store (and its steps against `kinds`, when given) and writes
/// it. Call inside [`crate::store::Store::write`]: on `Err` the transaction is dropped and
/// nothing is written.
/// With an `actor`, every object created or changed gets an Event saying who did it.
pub fn admit(
    tx: &mut WriteTx,
    batch: Vec<Parsed>,
    kinds: Option<&dyn StepKinds>,
    actor: Option<&str>,
) -> Result<Vec<Outcome>, ApplyError> {
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    let batch_projects: BTreeSet<String> = batch
        .iter()
        .filter(|p| p.object.kind == Kind::Project)
        .map(|p| p.object.name().to_string())
        .collect();
    for p in &batch {
        let o = &p.object;
        if !seen.insert((o.kind, o.project().to_string(), o.name().to_string())) {
            problems.push(p.problem(
                "metadata.name",
                format!("{} {:?} appears twice in this apply", o.kind, o.name()),
            ));
        }
        if o.kind.namespaced() {
            let project = o.project();
            let shared_secret = (matches!(o.kind, Kind::Secret | Kind::ConfigMap)
                && project == SHARED_NAMESPACE)
                || (o.kind == Kind::Secret && project == resource::SYSTEM_NAMESPACE);
            if !shared_secret
                && !batch_projects.contains(project)
                && tx.get(Kind::Project, "", project)?.is_none()
            {
                problems.push(p.problem(
                    "metadata.namespace",
                    format!("project {project:?} does not exist: apply its Project first, or in the same apply"),
                ));
            }
        }
        if o.kind == Kind::Promotion {
            problems.push(p.problem(
                "kind",
                "Promotions are created by Dray from a Stage's template (dray promote), not applied",
            ));
        }
    }
    check_stage_graphs(tx, &batch, &mut problems)?;
    if let Some(kinds) = kinds {
        steps::check(tx, &batch, kinds, &mut problems)?;
    }
    let mut outcomes = Vec::new();
    let mut aliases_in_batch: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // A Freight may name a Warehouse of the same apply (not written yet when a problem stops
    // the writes: that must not read as a second problem).
    let warehouses_in_batch: BTreeSet<(String, String)> = batch
        .iter()
        .filter(|p| p.object.kind == Kind::Warehouse)
        .map(|p| (p.object.project().to_string(), p.object.name().to_string()))
        .collect();
    for p in batch {
        let warnings: Vec<Problem> = p
            .document
            .warnings
            .iter()
            .map(|(path, message)| p.problem(path, message.clone()))
            .collect();
        let mut object = p.object.clone();
        if object.kind == Kind::Freight {
            match admit_freight(
                tx,
                &p,
                &mut object,
                &mut aliases_in_batch,
                &warehouses_in_batch,
            )? {
                Ok(()) => {}
                Err(problem) => {
                    problems.push(problem);
                    continue;
                }
            }
        }
        if !problems.is_empty() {
            continue;
        }
        let (stored, action) = tx.put(object, p.expected_version.as_deref(), StatusMode::Keep)?;
        if stored.kind == Kind::Freight && action == Change::Created {
            let alias = stored
                .body
                .get("alias")
                .and_then(|a| a.as_str())
                .unwrap_or_default();
            let origin = crate::rules::availability::origin_key(
                &crate::rules::availability::freight_origin(&stored),
            );
            let by = actor.map(|a| format!(" by {a}")).unwrap_or_default();
            events::record(
                tx,
                stored.project(),
                "FreightCreated",
                format!("Freight {alias} created from {origin}{by}"),
                (Kind::Freight, stored.name()),
                events::About {
                    actor,
                    freight: Some(stored.name()),
                    ..Default::default()
                },
            )?;
        } else if let Some(actor) = actor {
            let verb = match action {
                Change::Created => Some("Created"),
                Change::Configured => Some("Configured"),
                Change::Unchanged => None,
            };
            if let Some(verb) = verb
                && !events::record_change(tx, &stored, verb, actor)?
            {
                tracing::info!(kind = %stored.kind, name = stored.name(), %actor, "{}", verb.to_lowercase());
            }
        }
        outcomes.push(Outcome {
            kind: stored.kind,
            project: stored.project().to_string(),
            name: stored.name().to_string(),
            action,
            warnings,
        });
    }
    if problems.is_empty() {
        Ok(outcomes)
    } else {
        Err(ApplyError::Invalid(problems))
    }
}

/// Freight is immutable: re-applying the same artifacts may only change the alias. A new Freight
/// gets a generated alias unless it names one; aliases are unique per project.
fn admit_freight(
    tx: &WriteTx,
    p: &Parsed,
    object: &mut Object,
    batch_aliases: &mut BTreeMap<String, BTreeSet<String>>,
    batch_warehouses: &BTreeSet<(String, String)>,
) -> Result<Result<(), Problem>, StoreError> {
    let project = object.project().to_string();
    let warehouse = object
        .body
        .get("origin")
        .and_then(|o| o.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("");
    let in_batch = batch_warehouses.contains(&(project.clone(), warehouse.to_string()));
    if !in_batch && tx.get(Kind::Warehouse, &project, warehouse)?.is_none() {
        return Ok(Err(p.problem(
            "origin.name",
            format!("Warehouse {warehouse:?} does not exist in project {project:?}"),
        )));
    }
    let existing = tx.get(Kind::Freight, &project, object.name())?;
    let requested = object
        .body
        .get("alias")
        .and_then(|a| a.as_str())
        .map(str::to_string);
    if let Some(old) = &existing {
        // Same name means same artifacts; keep everything stored except a new alias.
        let alias = requested.or_else(|| {
            old.body
                .get("alias")
                .and_then(|a| a.as_str())
                .map(str::to_string)
        });
        *object = old.clone();
        if let Some(alias) = alias {
            object.body.insert("alias".into(), alias.clone().into());
            object.metadata.labels.insert(ALIAS_LABEL.into(), alias);
        }
    }
    let taken_in_store = |alias: &str| -> Result<bool, StoreError> {
        Ok(tx
            .freight_named_by_alias(&project, alias)?
            .iter()
            .any(|name| name != object.name()))
    };
    let in_batch = batch_aliases.entry(project.clone()).or_default();
    let alias = match object.body.get("alias").and_then(|a| a.as_str()) {
        Some(alias) => {
            if taken_in_store(alias)? || in_batch.contains(alias) {
                return Ok(Err(p.problem(
                    "alias",
                    format!(
                        "alias {alias:?} is already used by other Freight in project {project:?}"
                    ),
                )));
            }
            alias.to_string()
        }
        None => {
            let mut store_error = None;
            let alias = generate_alias(|a| {
                in_batch.contains(a)
                    || taken_in_store(a).unwrap_or_else(|e| {
                        store_error = Some(e);
                        false
                    })
            });
            if let Some(e) = store_error {
                return Err(e);
            }
            alias
        }
    };
    in_batch.insert(alias.clone());
    object.body.insert("alias".into(), alias.clone().into());
    object.metadata.labels.insert(ALIAS_LABEL.into(), alias);
    if !object.body.contains_key("discoveredAt") {
        let now = crate::resource::now();
        object.body.insert("discoveredAt".into(), now.into());
    }
    Ok(Ok(()))
}

/// Stage sources must form a DAG in every project the batch touches (stored Stages plus the
/// batch's, the batch's winning).
fn check_stage_graphs(
    tx: &WriteTx,
    batch: &[Parsed],
    problems: &mut Vec<Problem>,
) -> Result<(), StoreError> {
    let projects: BTreeSet<&str> = batch
        .iter()
        .filter(|p| p.object.kind == Kind::Stage)
        .map(|p| p.object.project())
        .collect();
    for project in projects {
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut add = |o: &Object| {
            let upstream = o
                .typed::<resource::Manifest<StageSpec>>()
                .map(|m| m.spec.upstream().into_iter().map(str::to_string).collect())
                .unwrap_or_default();
            graph.insert(o.name().to_string(), upstream);
        };
        for stored in tx.list(Kind::Stage, Some(project), None)? {
            add(&stored);
        }
        for p in batch
            .iter()
            .filter(|p| p.object.kind == Kind::Stage && p.object.project() == project)
        {
            add(&p.object);
        }
        if let Some(cycle) = resource::find_cycle(&graph) {
            let first = batch
                .iter()
                .find(|p| {
                    p.object.kind == Kind::Stage
                        && p.object.project() == project
                        && cycle.contains(&p.object.name().to_string())
                })
                .or_else(|| {
                    batch
                        .iter()
                        .find(|p| p.object.kind == Kind::Stage && p.object.project() == project)
                });
            let message = format!(
                "Stages in project {project:?} form a cycle: {} (a Stage cannot take Freight from itself through its upstream stages)",
                cycle.join(" -> ")
            );
            if let Some(p) = first {
                problems.push(p.problem("spec.requestedFreight", message));
            }
        }
    }
    Ok(())
}

/// Parses, checks and writes `sources` in one transaction. With `dry_run`, checks everything
/// against the current state and writes nothing. With `kinds`, steps are checked against the
/// step kinds the daemon runs.
pub fn apply(
    store: &crate::store::Store,
    sources: &[Source],
    default_project: Option<&str>,
    dry_run: bool,
    kinds: Option<&dyn StepKinds>,
) -> Result<Vec<Outcome>, ApplyError> {
    apply_as(
        store,
        sources,
        default_project,
        dry_run,
        kinds,
        None,
        &|_| None,
    )
}

/// [`apply`] on behalf of a caller: `refusal` says why the caller may not write an object
/// (`None` when it may), and any refusal refuses the whole batch before the store is touched.
/// With an `actor`, each object created or changed gets an Event naming it.
pub fn apply_as(
    store: &crate::store::Store,
    sources: &[Source],
    default_project: Option<&str>,
    dry_run: bool,
    kinds: Option<&dyn StepKinds>,
    actor: Option<&str>,
    refusal: &(dyn Fn(&Object) -> Option<String> + Sync),
) -> Result<Vec<Outcome>, ApplyError> {
    let parsed = parse(sources, default_project)?;
    let refused: Vec<Problem> = parsed
        .iter()
        .filter_map(|p| {
            let path = match p.object.kind {
                Kind::Project => "metadata.name",
                kind if kind.namespaced() => "metadata.namespace",
                _ => "kind",
            };
            refusal(&p.object).map(|why| p.problem(path, why))
        })
        .collect();
    if !refused.is_empty() {
        return Err(ApplyError::Forbidden(refused));
    }
    if parsed.is_empty() {
        return Err(ApplyError::Invalid(vec![Problem {
            source: sources
                .first()
                .map_or_else(|| "request".to_string(), |s| s.name.clone()),
            document: 0,
            kind: None,
            name: None,
            path: String::new(),
            line: None,
            column: None,
            message: "no documents to apply".into(),
        }]));
    }
    /// Carries a dry run's outcomes out of the transaction that must not commit.
    enum Abort {
        DryRun(Vec<Outcome>),
        Failed(ApplyError),
    }
    impl From<StoreError> for Abort {
        fn from(e: StoreError) -> Self {
            Abort::Failed(e.into())
        }
    }
    let result = store.write(|tx| {
        let outcomes = admit(tx, parsed, kinds, actor).map_err(Abort::Failed)?;
        if dry_run {
            Err(Abort::DryRun(outcomes))
        } else {
            Ok(outcomes)
        }
    });
    match result {
        Ok(outcomes) | Err(Abort::DryRun(outcomes)) => Ok(outcomes),
        Err(Abort::Failed(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    const PROJECT: &str =
        "apiVersion: kargo.akuity.io/v1alpha1\nkind: Project\nmetadata: {name: demo}\n";
    const WAREHOUSE: &str = "apiVersion: kargo.akuity.io/v1alpha1\nkind: Warehouse\nmetadata: {name: w, namespace: demo}\nspec:\n  subscriptions:\n  - image: {repoURL: nginx}\n";

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("dray.redb")).expect("open");
        (dir, store)
    }

    fn source(content: &str) -> Vec<Source> {
        vec![Source {
            name: "test.yaml".into(),
            content: content.into(),
        }]
    }

    fn problems(result: Result<Vec<Outcome>, ApplyError>) -> Vec<Problem> {
        match result {
            Err(ApplyError::Invalid(p)) => p,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn what_was_likely_not_meant_is_applied_with_a_located_warning() {
        let (_dir, store) = store();
        let warehouse = "apiVersion: kargo.akuity.io/v1alpha1\nkind: Warehouse\nmetadata:\n  name: w\n  namespace: demo\n  annotations:\n    note: !important keep\nspec:\n  subscriptions:\n  - git:\n      repoURL: https://git.example/app.git\n      expressionFilter: !(author contains 'bot')\n  - image: {repoURL: nginx, allowTags: '^1'}\n";
        // The filter is YAML's tag `!(author` on the text `contains 'bot')`: refused, with why.
        let found = problems(apply(
            &store,
            &source(&format!("{PROJECT}---\n{warehouse}")),
            None,
            false,
            None,
        ));
        assert_eq!(found[0].path, "spec.subscriptions[0].git.expressionFilter");
        assert_eq!(found[0].line, Some(16));
        assert!(
            found[0]
                .message
                .contains("starts with '!', which YAML reads as a tag"),
            "{}",
            found[0].message
        );
        // Without it, the rest applies with warnings.
        let warehouse = warehouse.replace("      expressionFilter: !(author contains 'bot')\n", "");
        let outcomes = apply(
            &store,
            &source(&format!("{PROJECT}---\n{warehouse}")),
            None,
            false,
            None,
        )
        .expect("applies");
        let warnings = &outcomes[1].warnings;
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert_eq!(warnings[0].path, "metadata.annotations.note");
        assert_eq!(warnings[0].line, Some(11));
        assert!(
            warnings[0].message.contains("as a tag"),
            "{}",
            warnings[0].message
        );
        assert_eq!(warnings[1].path, "spec.subscriptions[1].image.allowTags");
        let stored = store
            .read(|r| r.get(Kind::Warehouse, "demo", "w"))
            .unwrap()
            .unwrap();
        assert_eq!(
            stored.spec()["subscriptions"][1]["image"]["allowTagsRegexes"],
            serde_json::json!(["^1"])
        );
    }

    #[test]
    fn a_tagged_secret_value_is_never_echoed() {
        let (_dir, store) = store();
        let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: demo}\nstringData:\n  password: !hunter2 rest-of-it\n";
        let outcomes = apply(
            &store,
            &source(&format!("{PROJECT}---\n{secret}")),
            None,
            false,
            None,
        )
        .expect("applies");
        let warnings = format!("{:?}", outcomes[1].warnings);
        assert!(warnings.contains("stringData.password"), "{warnings}");
        assert!(
            !warnings.contains("hunter2") && !warnings.contains("rest-of-it"),
            "{warnings}"
        );
        let broken = "apiVersion: v1\nkind: Secret\nmetadata: {name: t, namespace: demo}\nstringData:\n  password: !hunter2\n";
        let found = format!(
            "{:?}",
            problems(apply(
                &store,
                &source(&format!("{PROJECT}---\n{broken}")),
                None,
                false,
                None
            ))
        );
        assert!(found.contains("YAML reads as a tag"), "{found}");
        assert!(!found.contains("hunter2"), "{found}");
    }

    #[test]
    fn a_dry_run_checks_everything_and_writes_nothing() {
        let (_dir, store) = store();
        let outcomes = apply(
            &store,
            &source(&format!("{PROJECT}---\n{WAREHOUSE}")),
            None,
            true,
            None,
        )
        .expect("valid");
        assert_eq!(outcomes.len(), 2);
        assert!(outcomes.iter().all(|o| o.action == Change::Created));
        assert_eq!(store.last_seq(), 0, "nothing was written");
    }

    #[test]
    fn a_resource_needs_its_project_in_the_store_or_the_same_apply() {
        let (_dir, store) = store();
        let found = problems(apply(&store, &source(WAREHOUSE), None, false, None));
        assert_eq!(found[0].path, "metadata.namespace");
        assert!(
            found[0].message.contains("project \"demo\" does not exist"),
            "{}",
            found[0]
        );
        assert_eq!(found[0].line, Some(3));
        apply(&store, &source(PROJECT), None, false, None).expect("project");
        apply(&store, &source(WAREHOUSE), None, false, None).expect("now it exists");
    }

    #[test]
    fn the_default_project_fills_a_missing_namespace() {
        let (_dir, store) = store();
        apply(&store, &source(PROJECT), None, false, None).expect("project");
        let no_namespace = WAREHOUSE.replace(", namespace: demo", "");
        let found = problems(apply(&store, &source(&no_namespace), None, false, None));
        assert!(found[0].message.contains("--project"), "{}", found[0]);
        let done = apply(&store, &source(&no_namespace), Some("demo"), false, None)
            .expect("with a default");
        assert_eq!(done[0].project, "demo");
    }

    #[test]
    fn the_same_object_twice_in_one_apply_is_refused() {
        let (_dir, store) = store();
        let found = problems(apply(
            &store,
            &source(&format!("{PROJECT}---\n{PROJECT}")),
            None,
            false,
            None,
        ));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].document, 2);
        assert!(found[0].message.contains("twice"));
    }

    #[test]
    fn a_freight_of_a_warehouse_in_the_same_apply_is_not_a_second_problem() {
        let (_dir, store) = store();
        let config = "apiVersion: kargo.akuity.io/v1alpha1\nkind: ProjectConfig\nmetadata: {name: other, namespace: demo}\n";
        let freight = "apiVersion: kargo.akuity.io/v1alpha1\nkind: Freight\nmetadata: {name: x, namespace: demo}\norigin: {kind: Warehouse, name: w}\nimages: [{repoURL: nginx, tag: '1'}]\n";
        let found = problems(apply(
            &store,
            &source(&format!(
                "{PROJECT}---\n{config}---\n{WAREHOUSE}---\n{freight}"
            )),
            None,
            false,
            None,
        ));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "metadata.name");
    }

    #[test]
    fn a_project_config_is_named_after_its_project() {
        let (_dir, store) = store();
        let config = "apiVersion: kargo.akuity.io/v1alpha1\nkind: ProjectConfig\nmetadata: {name: other, namespace: demo}\n";
        let found = problems(apply(
            &store,
            &source(&format!("{PROJECT}---\n{config}")),
            None,
            false,
            None,
        ));
        assert_eq!(found[0].path, "metadata.name");
    }

    #[test]
    fn a_stale_resource_version_is_a_conflict_and_changes_nothing() {
        let (_dir, store) = store();
        apply(
            &store,
            &source(&format!("{PROJECT}---\n{WAREHOUSE}")),
            None,
            false,
            None,
        )
        .expect("apply");
        let stale = WAREHOUSE
            .replace(
                "namespace: demo}",
                "namespace: demo, resourceVersion: \"1\"}",
            )
            .replace("5m0s", "1m");
        let edited = stale.replace("subscriptions:", "interval: 1m\n  subscriptions:");
        match apply(&store, &source(&edited), None, false, None) {
            Err(ApplyError::Store(StoreError::Conflict { found, .. })) => assert_eq!(found, "2"),
            other => panic!("expected a conflict, got {other:?}"),
        }
        let current = edited.replace("resourceVersion: \"1\"", "resourceVersion: \"2\"");
        let done = apply(&store, &source(&current), None, false, None)
            .expect("the current version applies");
        assert_eq!(done[0].action, Change::Configured);
    }
}
