//! Running one Promotion: its steps in order, in a work directory under the data dir.
//!
//! The Promotion's [`PromotionStatus`] is the whole truth: `currentStep`,
//! `stepExecutionMetadata` (one entry per step: alias, status, times, error count, message) and
//! `state` (the outputs by alias) are written after every step, and a step is marked `Running`
//! before it is called. So when the daemon dies, the next start resumes at the step that was
//! running and runs it again; the work directory (`<data dir>/work/<project>/<promotion>`)
//! survives the restart and is removed once the Promotion ends.
//!
//! What follows what (an `if`, `continueOnError`, retries, timeouts, the phase at the end) is
//! decided by [`crate::rules::steps`]; this module evaluates expressions, calls the plugin and
//! writes down what the rules decided.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::engine::decisions::stage::{self, Ended};
use crate::engine::{Engine, logs};
use crate::metrics::CallResult;
use crate::resource::status::{
    FreightReference, LoopProgress, PromotionPhase, PromotionStatus, StepExecution, StepStatus,
};
use crate::resource::{Kind, NamedValue, PromotionSpec, PromotionStep, StageSpec, now};
use crate::rules::expr::{self, FreightView, Lookup, Scope};
use crate::rules::steps::{self, AfterFailure, Start, StillRunning};
use crate::runtime::{self, log::Line};
use crate::store::{Reader, StatusMode, StoreError};

/// How long to wait before reading the store again after it failed.
const STORE_RETRY: Duration = Duration::from_secs(5);

/// What a step calls: the plugin, the kind, the call's policy, and (for a plugin from a
/// registry) the pinned reference the Promotion records.
struct Callee {
    plugin: Arc<runtime::Plugin>,
    kind: String,
    limits: runtime::Limits,
    pinned: Option<String>,
}

/// What to do after one pass over a step.
enum StepEnd {
    /// Move on to the next step.
    Next,
    /// Call the same step again after this long.
    Again(Duration),
    /// Stop: the Promotion was aborted or deleted.
    Aborted,
}

/// One Promotion being run.
struct Run {
    engine: Engine,
    project: String,
    name: String,
    spec: PromotionSpec,
    stage_vars: Vec<NamedValue>,
    status: PromotionStatus,
    workdir: PathBuf,
    abort: watch::Receiver<bool>,
    /// Notified when something the running step waits for may have changed (a pull request
    /// webhook): the step is asked again at once instead of at its next poll.
    wake: std::sync::Arc<tokio::sync::Notify>,
    /// `ctx.meta.promotion`: who created it (Kargo's `create-actor` annotation) and whether it
    /// is a rollback (`kargo.akuity.io/rollback: "true"`).
    meta: Value,
    /// The values of the project's generic Secrets, hidden in every message and log line the
    /// run keeps (a step's config may carry one, and a failing step may echo its config).
    redactor: crate::credentials::Redactor,
}

/// What a step's expressions may read besides its variables.
struct Lookups {
    secrets: Arc<BTreeMap<String, BTreeMap<String, String>>>,
    /// What [`Lookup`]s answer, keyed as [`crate::engine::lookup_key`] says.
    resources: Arc<BTreeMap<String, Value>>,
}

impl Lookups {
    fn secret(&self) -> impl Fn(&str, bool) -> BTreeMap<String, String> + Sync + 'static {
        let secrets = self.secrets.clone();
        move |name: &str, shared: bool| {
            let key = if shared {
                format!("shared/{name}")
            } else {
                format!("project/{name}")
            };
            secrets.get(&key).cloned().unwrap_or_default()
        }
    }

    fn resources(&self) -> impl Fn(Lookup, &str) -> Value + Sync + 'static {
        let resources = self.resources.clone();
        move |what: Lookup, name: &str| {
            resources
                .get(&crate::engine::lookup_key(what, name))
                .cloned()
                .unwrap_or(Value::Null)
        }
    }
}

/// Reads with `read` until it succeeds or the Promotion is aborted (`None`): a store fault must
/// neither run the Promotion with what it could not read nor end it.
async fn read_until<T, F, Fut>(
    abort: &mut watch::Receiver<bool>,
    what: &str,
    mut read: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    loop {
        match read().await {
            Ok(v) => return Some(v),
            Err(e) => {
                tracing::error!(error = %e, "cannot read {what}; trying again in 5s");
                tokio::select! {
                    _ = tokio::time::sleep(STORE_RETRY) => {}
                    _ = abort.wait_for(|a| *a) => return None,
                }
            }
        }
    }
}

/// Runs (or resumes) Promotion `name` of `project` to its end.
pub(crate) async fn run(
    engine: Engine,
    project: String,
    name: String,
    mut abort: watch::Receiver<bool>,
    wake: std::sync::Arc<tokio::sync::Notify>,
) {
    let store = engine.store().clone();
    let (p, n) = (project.clone(), name.clone());
    let loaded = read_until(&mut abort, "the promotion", || {
        let (store, p, n) = (store.clone(), p.clone(), n.clone());
        async move {
            store
                .read_async(move |r| r.get(Kind::Promotion, &p, &n))
                .await
        }
    })
    .await;
    let Some(Some(object)) = loaded else { return };
    let spec: PromotionSpec = match serde_json::from_value(object.spec().clone()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%project, promotion = %name, error = %e, "unreadable promotion spec");
            return;
        }
    };
    let status: PromotionStatus = match object.status_of() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%project, promotion = %name, error = %e, "unreadable promotion status");
            return;
        }
    };
    let annotations = &object.metadata.annotations;
    let meta = json!({
        "actor": annotations.get(crate::engine::decisions::promotion::ACTOR_ANNOTATION),
        "rollback": annotations.get(crate::engine::decisions::auto::ROLLBACK_ANNOTATION).is_some_and(|v| v == "true"),
    });
    let (p, s) = (project.clone(), spec.stage.clone());
    let stage = read_until(&mut abort, "the promotion's Stage", || {
        let (store, p, s) = (store.clone(), p.clone(), s.clone());
        async move { store.read_async(move |r| r.get(Kind::Stage, &p, &s)).await }
    })
    .await;
    let Some(stage) = stage else { return };
    let stage_vars = stage
        .and_then(|s| serde_json::from_value::<StageSpec>(s.spec().clone()).ok())
        .map(|s| s.vars)
        .unwrap_or_default();
    let workdir = engine.data_dir().join("work").join(&project).join(&name);
    let mut run = Run {
        engine,
        project,
        name,
        spec,
        stage_vars,
        status,
        workdir,
        abort,
        wake,
        meta,
        redactor: Default::default(),
    };
    let ending = run.steps().await;
    run.finish(ending).await;
}

impl Run {
    fn aborted(&self) -> bool {
        *self.abort.borrow()
    }

    fn log(&self, alias: &str, lines: &[Line]) {
        let redacted: Vec<Line>;
        let lines = if self.redactor.is_empty() {
            lines
        } else {
            redacted = lines.iter().map(|l| l.redacted(&self.redactor)).collect();
            &redacted
        };
        logs::append(
            self.engine.data_dir(),
            &self.project,
            &self.name,
            alias,
            lines,
        );
    }

    fn note(&self, alias: &str, level: &str, message: String) {
        self.log(
            alias,
            &[Line {
                time: now(),
                source: runtime::log::Source::Host,
                level: level.into(),
                message,
                fields: Vec::new(),
            }],
        );
    }

    /// Writes the status; false if the Promotion is gone (deleted meanwhile).
    async fn save(&self) -> bool {
        let (project, name, status) =
            (self.project.clone(), self.name.clone(), self.status.clone());
        let saved = self
            .engine
            .store()
            .write_retrying(move |tx| {
                let Some(mut object) = tx.get(Kind::Promotion, &project, &name)? else {
                    return Ok::<bool, StoreError>(false);
                };
                object.set_status(&status);
                tx.put(object, None, StatusMode::Replace)?;
                Ok(true)
            })
            .await;
        saved.unwrap_or_else(|e| {
            tracing::error!(project = %self.project, promotion = %self.name, error = %e, "cannot save the promotion's status");
            false
        })
    }

    fn meta(&mut self, index: usize) -> &mut StepExecution {
        &mut self.status.step_execution_metadata[index]
    }

    fn freight_views(&self) -> Vec<FreightView> {
        self.status
            .items()
            .iter()
            .map(|f| FreightView::of(&serde_json::to_value(f).unwrap_or_default()))
            .collect()
    }

    fn ctx(&self, alias: &str) -> Value {
        let freight = self.status.freight.clone().unwrap_or_default();
        json!({
            "project": self.project,
            "stage": self.spec.stage,
            "promotion": self.name,
            "targetFreight": {
                "name": freight.name,
                "alias": freight.alias,
                "origin": {"name": freight.origin.name},
            },
            // Dray: the whole collection the Stage will hold, for `forEach`.
            "freight": self.status.items(),
            "meta": {
                "promotion": self.meta,
                "step": {"alias": alias},
            },
        })
    }

    /// The variables every expression of a step sees: `ctx`, `outputs`, and `task` inside a
    /// task.
    fn base(&self, alias: &str) -> Map<String, Value> {
        let mut base = Map::new();
        base.insert("ctx".into(), self.ctx(alias));
        base.insert("outputs".into(), Value::Object(self.status.state.clone()));
        if let Some(siblings) = steps::task_outputs(&self.status.state, alias) {
            base.insert("task".into(), json!({"outputs": siblings}));
        }
        base
    }

    /// The step's variables: Stage vars < Promotion vars < step vars, each evaluated in order.
    fn vars(
        &self,
        step: &PromotionStep,
        base: &Map<String, Value>,
        freight: &[FreightView],
        lookups: &Lookups,
    ) -> Result<Map<String, Value>, String> {
        let (secret, resources) = (lookups.secret(), lookups.resources());
        let mut vars = Map::new();
        let layers: [(&str, &[NamedValue], bool); 3] = [
            ("Stage var", &self.stage_vars, false),
            ("promotion var", &self.spec.vars, false),
            ("step var", &step.vars, true),
        ];
        for (what, list, with_outputs) in layers {
            for var in list {
                let mut variables = base.clone();
                variables.insert("vars".into(), Value::Object(vars.clone()));
                if !with_outputs {
                    variables.remove("outputs");
                    variables.remove("task");
                }
                let scope = Scope {
                    variables,
                    freight,
                    secret: Some(&secret),
                    resources: Some(&resources),
                    ..Scope::default()
                };
                let text = var.value.clone().unwrap_or_default();
                let value = expr::eval_string(&text, &scope)
                    .map_err(|e| format!("{what} {:?}: {e}", var.name))?;
                vars.insert(var.name.clone(), value);
            }
        }
        Ok(vars)
    }

    /// Marks the Promotion Running (once) and makes its work directory; `None` when it may go
    /// on, else how it ends.
    async fn begin(&mut self) -> Option<PromotionPhase> {
        if self.status.phase() != PromotionPhase::Running {
            self.take_current_collection().await;
            self.status.phase = Some(PromotionPhase::Running);
            self.status.started_at = Some(now());
            self.status.message = None;
            if !self.save().await {
                return Some(PromotionPhase::Aborted);
            }
            let (project, stage, name) = (
                self.project.clone(),
                self.spec.stage.clone(),
                self.name.clone(),
            );
            let marked = self
                .engine
                .store()
                .write_async(move |tx| stage::started(tx, &project, &stage, &name))
                .await;
            if let Err(e) = marked {
                tracing::error!(error = %e, "cannot mark the Stage as promoting");
            }
        }
        if let Err(e) = std::fs::create_dir_all(&self.workdir) {
            self.status.message = Some(format!(
                "cannot create the work directory {}: {e}",
                self.workdir.display()
            ));
            return Some(PromotionPhase::Errored);
        }
        None
    }

    /// Takes into the Freight collection what the Stage holds now from other origins (it may
    /// have changed since the Promotion was created: one Promotion per origin, queued).
    async fn take_current_collection(&mut self) {
        let mine: Vec<&String> = self.spec.freight.iter().chain(&self.spec.batch).collect();
        let own: Vec<FreightReference> = self
            .status
            .freight_collection
            .as_ref()
            .map(|c| {
                c.items
                    .iter()
                    .filter(|i| mine.contains(&&i.name))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if own.is_empty() {
            return;
        }
        let (project, stage) = (self.project.clone(), self.spec.stage.clone());
        let found = self
            .engine
            .store()
            .read_async(move |r| r.get(Kind::Stage, &project, &stage))
            .await;
        match found {
            Ok(Some(stage)) => {
                match crate::engine::decisions::promotion::collection(&stage, &own) {
                    Ok(items) => {
                        if let Some(c) = self.status.freight_collection.as_mut() {
                            c.items = items;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read what the Stage holds"),
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read what the Stage holds"),
        }
    }

    /// Runs the steps from `currentStep`; returns how the Promotion ends.
    async fn steps(&mut self) -> PromotionPhase {
        if let Some(ending) = self.begin().await {
            return ending;
        }
        let all = self.spec.steps.clone();
        while let Some(step) = all.get(self.status.current_step) {
            let current = self.status.current_step;
            if self.aborted() {
                return PromotionPhase::Aborted;
            }
            let metas = &mut self.status.step_execution_metadata;
            while metas.len() <= current {
                metas.push(StepExecution {
                    alias: steps::alias(&all[metas.len()], metas.len()),
                    ..StepExecution::default()
                });
            }
            let alias = steps::alias(step, current);
            match self.step(current, step, &alias).await {
                StepEnd::Next => {
                    self.status.current_step = current + 1;
                    if !self.save().await {
                        return PromotionPhase::Aborted;
                    }
                }
                StepEnd::Again(wait) => {
                    if !self.save().await {
                        return PromotionPhase::Aborted;
                    }
                    let mut abort = self.abort.clone();
                    let wake = self.wake.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = wake.notified() => {
                            self.note(&alias, "info", format!("step {alias} woken by a webhook; asking again now"));
                        }
                        _ = abort.wait_for(|a| *a) => return PromotionPhase::Aborted,
                    }
                }
                StepEnd::Aborted => return PromotionPhase::Aborted,
            }
        }
        let (phase, message) = steps::ending(&self.status.step_execution_metadata);
        self.status.message = Some(message);
        phase
    }

    /// What the step's expressions may read: the project's generic Secrets (read for every
    /// step, since a step granted `credentials` may print what it reads, and the redactor
    /// needs them) and, for steps that call for it, the project's metadata.
    async fn lookups(&mut self, step: &PromotionStep) -> Result<Lookups, (String, StoreError)> {
        let secrets = self
            .engine
            .generic_secrets(&self.project)
            .await
            .map_err(|e| ("the project's Secrets".to_string(), e))?;
        self.redactor = crate::credentials::Redactor::of(&secrets);
        let vars: Vec<&NamedValue> = self.stage_vars.iter().chain(&self.spec.vars).collect();
        let resources = if steps::calls(step, &vars, &steps::LOOKUP_FUNCTIONS) {
            self.engine
                .lookups(&self.project)
                .await
                .map_err(|e| ("the project's metadata".to_string(), e))?
        } else {
            BTreeMap::new()
        };
        Ok(Lookups {
            secrets: Arc::new(secrets),
            resources: Arc::new(resources),
        })
    }

    /// The first time a step is reached: evaluates its `if` and records the start; `Some` when
    /// the step ends here (skipped, or an `if` that cannot be decided).
    fn start(
        &mut self,
        index: usize,
        step: &PromotionStep,
        alias: &str,
        scope: Scope<'_>,
    ) -> Option<StepEnd> {
        let metas = &self.status.step_execution_metadata;
        let failed = steps::failed_before(metas, index);
        let statuses = steps::statuses(metas, index);
        let condition = step.if_.as_deref().map(|code| {
            let scope = Scope {
                statuses: Some(&statuses),
                failed,
                ..scope
            };
            (
                code,
                expr::eval_expression(expr::condition_code(code), &scope),
            )
        });
        let decided = steps::start(condition, failed);
        let meta = self.meta(index);
        meta.started_at = Some(now());
        meta.continue_on_error = Some(step.continue_on_error);
        match decided {
            Start::Run => None,
            Start::Skip => {
                meta.status = Some(StepStatus::Skipped);
                meta.finished_at = meta.started_at.clone();
                self.note(alias, "info", format!("step {alias} skipped"));
                Some(StepEnd::Next)
            }
            Start::Error(message) => Some(self.fail(index, alias, StepStatus::Errored, message)),
        }
    }

    async fn step(&mut self, index: usize, step: &PromotionStep, alias: &str) -> StepEnd {
        let lookups = match self.lookups(step).await {
            Ok(l) => l,
            Err((what, e)) => return self.store_fault(alias, &what, e),
        };
        let (secret, resources) = (lookups.secret(), lookups.resources());
        let freight = self.freight_views();
        let base = self.base(alias);
        // The step's vars, once: for its `if` and for its config.
        let vars = self.vars(step, &base, &freight, &lookups);
        let scope_with = |vars: Map<String, Value>, item: Option<(usize, &Value)>| {
            let mut variables = base.clone();
            variables.insert("vars".into(), Value::Object(vars));
            if let Some((index, item)) = item {
                variables.insert("item".into(), item.clone());
                variables.insert("index".into(), json!(index));
            }
            Scope {
                variables,
                freight: &freight,
                secret: Some(&secret),
                resources: Some(&resources),
                ..Scope::default()
            }
        };
        let scope = |vars: Map<String, Value>| scope_with(vars, None);
        if self.meta(index).status.is_none() {
            let known = vars.as_ref().cloned().unwrap_or_default();
            if let Some(end) = self.start(index, step, alias, scope(known)) {
                return end;
            }
        }
        let uses = step.uses.clone().unwrap_or_default();
        let callee = match self.callee(&uses).await {
            Ok(c) => c,
            Err(message) => return self.fail(index, alias, StepStatus::Errored, message),
        };
        let vars = match vars {
            Ok(v) => v,
            Err(e) => {
                let message = format!("step {alias}: {e}");
                return self.fail(index, alias, StepStatus::Errored, message);
            }
        };
        // A loop: the next item, or the step's end once every item is done.
        let item = match &step.for_each {
            None => None,
            Some(for_each) => match self.next_item(index, for_each, &scope(vars.clone())) {
                Ok(Some(next)) => Some(next),
                Ok(None) => return self.loop_done(index, &uses, alias),
                Err(e) => {
                    let message = format!("step {alias}: forEach: {e}");
                    return self.fail(index, alias, StepStatus::Errored, message);
                }
            },
        };
        let config = step.config.clone().unwrap_or_else(|| json!({}));
        let at = item.as_ref().map(|(i, _, value)| (*i, value));
        let config = match expr::eval_config(&config, &scope_with(vars.clone(), at)) {
            Ok(c) => c,
            Err(e) => {
                let which = item
                    .as_ref()
                    .map(|(i, total, _)| format!(", item {}/{total}", i + 1))
                    .unwrap_or_default();
                let message = format!("step {alias} ({uses}{which}): {e}");
                return self.fail(index, alias, StepStatus::Errored, message);
            }
        };
        let item = item.map(|(i, total, _)| (i, total));
        self.call(index, step, alias, &callee, config, vars, item)
            .await
    }

    /// The next item of a looping step (its position, the number of items, the item), `None`
    /// once every item is done. The items are the step's `forEach`, evaluated at its first
    /// item and kept in its status.
    fn next_item(
        &mut self,
        index: usize,
        for_each: &Value,
        scope: &Scope<'_>,
    ) -> Result<Option<(usize, usize, Value)>, String> {
        if self.meta(index).loop_progress.is_none() {
            let items = match expr::eval_config(for_each, scope).map_err(|e| e.to_string())? {
                Value::Array(items) => items,
                other => {
                    let kind = match other {
                        Value::Null => "nothing",
                        Value::Object(_) => "a mapping",
                        Value::String(_) => "a string",
                        _ => "a single value",
                    };
                    return Err(format!("gave {kind}, not a list"));
                }
            };
            if items.len() > crate::resource::MAX_LOOP_ITEMS {
                return Err(format!(
                    "gave {} items; a step loops over at most {}",
                    items.len(),
                    crate::resource::MAX_LOOP_ITEMS
                ));
            }
            self.meta(index).loop_progress = Some(LoopProgress {
                items,
                outputs: Vec::new(),
            });
        }
        let progress = self.meta(index).loop_progress.as_ref().expect("set above");
        let done = progress.outputs.len();
        let total = progress.items.len();
        Ok(progress
            .items
            .get(done)
            .cloned()
            .map(|item| (done, total, item)))
    }

    /// Every item of a looping step is done: its outputs are the list of theirs.
    fn loop_done(&mut self, index: usize, uses: &str, alias: &str) -> StepEnd {
        let outputs = self
            .meta(index)
            .loop_progress
            .as_ref()
            .map(|p| p.outputs.clone())
            .unwrap_or_default();
        let count = outputs.len();
        steps::publish(&mut self.status.state, uses, alias, Value::Array(outputs));
        let meta = self.meta(index);
        meta.status = Some(StepStatus::Succeeded);
        meta.finished_at = Some(now());
        meta.message = Some(format!("ran for {count} item(s)"));
        self.note(
            alias,
            "info",
            format!("step {alias} succeeded for its {count} item(s)"),
        );
        StepEnd::Next
    }

    /// The plugin and kind a step's `uses` names: a kind of a loaded plugin, or a plugin from a
    /// registry (`oci://…`), pinned and checked against the daemon's policy.
    async fn callee(&self, uses: &str) -> Result<Callee, String> {
        if crate::oci::PluginRef::is_oci(uses) {
            let resolved = self.engine.registry_plugin(uses, &self.project).await?;
            if resolved.plugin.role != runtime::Role::Step {
                return Err(format!(
                    "{} is a verifier, not a step; name it in an AnalysisTemplate's provider (plugin: {{{uses}: …}})",
                    resolved.pinned
                ));
            }
            let mut limits = self.engine.limits_with(&self.project, resolved.secrets);
            limits.kube.rules = resolved.kube;
            return Ok(Callee {
                plugin: resolved.plugin,
                kind: resolved.kind,
                limits,
                pinned: Some(resolved.pinned),
            });
        }
        let plugin = self.engine.plugin_for(uses).ok_or_else(|| {
            let known = self.engine.step_kinds().join(", ");
            format!("there is no step kind {uses:?}; Dray offers {known} (or a plugin from a registry: oci://HOST/REPO:TAG)")
        })?;
        Ok(Callee {
            limits: self.engine.limits(&self.project, &plugin.name),
            plugin,
            kind: uses.to_string(),
            pinned: None,
        })
    }

    /// Calls the step's plugin and records what came of it; for a looping step, the call for
    /// `item` (its position and the number of items).
    #[allow(clippy::too_many_arguments)]
    async fn call(
        &mut self,
        index: usize,
        step: &PromotionStep,
        alias: &str,
        callee: &Callee,
        config: Value,
        vars: Map<String, Value>,
        item: Option<(usize, usize)>,
    ) -> StepEnd {
        let which = item
            .map(|(i, total)| format!(" item {}/{total}", i + 1))
            .unwrap_or_default();
        let uses = step.uses.clone().unwrap_or_default();
        let (plugin, kind, limits) = (&callee.plugin, &callee.kind, &callee.limits);
        self.meta(index).status = Some(StepStatus::Running);
        self.meta(index).plugin.clone_from(&callee.pinned);
        if !self.save().await {
            return StepEnd::Aborted;
        }
        let context = runtime::StepContext {
            project: self.project.clone(),
            stage: self.spec.stage.clone(),
            promotion: self.name.clone(),
            step_alias: alias.to_string(),
            freight: self.status.items().iter().map(wit_freight).collect(),
            vars: Value::Object(vars).to_string(),
            outputs: Value::Object(self.status.state.clone()).to_string(),
        };
        let ran = callee.pinned.as_deref().unwrap_or(&uses);
        self.note(
            alias,
            "info",
            format!("step {alias} ({ran}){which} started"),
        );
        // The call's log is followed while it runs: `dray logs promotion -f` shows a long
        // step's lines as they come.
        let log = runtime::log::StepLog::new(limits.log_bytes);
        let limits = runtime::Limits {
            log: Some(log.clone()),
            ..limits.clone()
        };
        let workdir = self.workdir.clone();
        let mut abort = self.abort.clone();
        let run = async {
            tokio::select! {
                report = plugin.run(kind, &context, &config, &workdir, &limits) => Some(report),
                _ = abort.wait_for(|a| *a) => None,
            }
        };
        let (report, written) = logs::followed(&log, |lines| self.log(alias, lines), run).await;
        let Some(mut report) = report else {
            self.note(
                alias,
                "warn",
                format!("step {alias} stopped: the promotion was aborted"),
            );
            let meta = self.meta(index);
            meta.status = Some(StepStatus::Aborted);
            meta.finished_at = Some(now());
            return StepEnd::Aborted;
        };
        self.log(alias, report.log.get(written..).unwrap_or_default());
        // The work directory is measured after every call too: a short call (or the host on
        // its behalf, as in a clone) may have filled it between two of the watch's looks.
        if report.outcome.is_ok()
            && let Some(reason) = runtime::disk::check(&self.workdir, limits.disk).await
        {
            report.outcome = Err(runtime::over_quota(reason));
        }
        let took = format!("{:.0} ms", report.duration.as_secs_f64() * 1000.0);
        let (result, failure) = match &report.outcome {
            Ok(done) if done.status == runtime::Status::Running => (CallResult::Running, None),
            Ok(_) => (CallResult::Succeeded, None),
            Err(failure) => (CallResult::Failed, Some(failure.kind)),
        };
        self.engine
            .metrics()
            .step_called(kind, result, failure, report.duration.as_secs_f64());
        match report.outcome {
            Ok(done) if done.status == runtime::Status::Running => {
                self.still_running(index, step, alias, done)
            }
            Ok(done) if item.is_some() => {
                // One item done: its outputs kept, the next item at once.
                let meta = self.meta(index);
                meta.error_count = 0;
                meta.loop_progress
                    .get_or_insert_with(LoopProgress::default)
                    .outputs
                    .push(Value::Object(done.outputs));
                self.note(
                    alias,
                    "info",
                    format!("step {alias}{which} succeeded in {took}"),
                );
                StepEnd::Again(Duration::ZERO)
            }
            Ok(done) => {
                steps::publish(
                    &mut self.status.state,
                    &uses,
                    alias,
                    Value::Object(done.outputs),
                );
                let message = done.message.as_deref().map(|m| self.redactor.redact(m));
                let meta = self.meta(index);
                meta.status = Some(StepStatus::Succeeded);
                meta.finished_at = Some(now());
                if message.is_some() {
                    meta.message.clone_from(&message);
                }
                let said = message.map(|m| format!(": {m}")).unwrap_or_default();
                self.note(
                    alias,
                    "info",
                    format!("step {alias} succeeded in {took}{said}"),
                );
                StepEnd::Next
            }
            Err(failure) => self.failed_call(index, step, alias, failure),
        }
    }

    /// A step that answered `running`: asked again later, or failed past its timeout.
    fn still_running(
        &mut self,
        index: usize,
        step: &PromotionStep,
        alias: &str,
        done: runtime::Finished,
    ) -> StepEnd {
        let started =
            crate::rules::availability::parse_time(self.meta(index).started_at.as_deref());
        let decided = steps::still_running(
            step.uses.as_deref().unwrap_or_default(),
            started,
            SystemTime::now(),
            step.retry.as_ref(),
            done.retry_after,
        );
        match decided {
            StillRunning::TimedOut(limit) => {
                let last = done
                    .message
                    .as_deref()
                    .map(|m| format!(": {}", self.redactor.redact(m)))
                    .unwrap_or_default();
                let message = format!(
                    "still running after its retry.timeout of {}{last}",
                    humantime::format_duration(limit)
                );
                self.fail(index, alias, StepStatus::Failed, message)
            }
            StillRunning::AskAgain(wait) => {
                let message = done.message.as_deref().map(|m| self.redactor.redact(m));
                self.meta(index).message = message;
                let wait_text = humantime::format_duration(wait);
                self.note(
                    alias,
                    "info",
                    format!("step {alias} is still running; asking again in {wait_text}"),
                );
                StepEnd::Again(wait)
            }
        }
    }

    /// A failed call: retried, or the step's end (see [`steps::after_failure`]).
    fn failed_call(
        &mut self,
        index: usize,
        step: &PromotionStep,
        alias: &str,
        failure: runtime::Failure,
    ) -> StepEnd {
        let meta = self.meta(index);
        meta.error_count += 1;
        let errors = meta.error_count;
        match steps::after_failure(failure.kind, errors, step.retry.as_ref()) {
            AfterFailure::Retry(wait) => {
                let threshold = steps::threshold(step.retry.as_ref());
                let message = self.redactor.redact(&failure.message);
                self.meta(index).message = Some(message);
                self.note(
                    alias,
                    "warn",
                    format!(
                        "step {alias} failed ({errors} of {threshold} allowed): {}; retrying in {}",
                        failure.message,
                        humantime::format_duration(wait)
                    ),
                );
                StepEnd::Again(wait)
            }
            AfterFailure::Give(status) => self.fail(index, alias, status, failure.message),
        }
    }

    /// A step that cannot read what it needs from the store waits and tries again: a store
    /// fault (a full disk) must not run it with no secrets, nor fail the Promotion for good.
    fn store_fault(&self, alias: &str, what: &str, e: StoreError) -> StepEnd {
        self.note(
            alias,
            "warn",
            format!("step {alias} waits: cannot read {what} ({e}); trying again in 5s"),
        );
        StepEnd::Again(STORE_RETRY)
    }

    fn fail(&mut self, index: usize, alias: &str, status: StepStatus, message: String) -> StepEnd {
        let message = self.redactor.redact(&message);
        let said = status.as_str().to_lowercase();
        self.note(alias, "error", format!("step {alias} {said}: {message}"));
        let meta = self.meta(index);
        meta.status = Some(status);
        meta.message = Some(message);
        meta.finished_at = Some(now());
        if meta.started_at.is_none() {
            meta.started_at.clone_from(&meta.finished_at);
        }
        StepEnd::Next
    }

    /// Records the end: the phase, the Stage's history, and the work directory removed.
    async fn finish(&mut self, phase: PromotionPhase) {
        self.status.phase = Some(phase);
        self.status.finished_at = Some(now());
        if phase == PromotionPhase::Aborted && self.status.message.is_none() {
            self.status.message = Some("aborted".into());
        }
        let summary = format!(
            "promotion {}: {}",
            phase.as_str().to_lowercase(),
            self.status.message.as_deref().unwrap_or_default()
        );
        let level = if phase == PromotionPhase::Succeeded {
            "info"
        } else {
            "error"
        };
        self.note("", level, summary);
        // The work directory goes before the final status is written: a reader that sees the
        // end sees it gone, and a crash in between only repeats this end (no step runs again).
        // Both found before either goes (the repositories' place is found from the work dir).
        for dir in [
            crate::host::git::repositories_dir(&self.workdir),
            self.workdir.clone(),
        ] {
            if let Err(e) = std::fs::remove_dir_all(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the promotion's work directory");
            }
        }
        let kinds: Vec<Option<&str>> = self.spec.steps.iter().map(|s| s.uses.as_deref()).collect();
        let health_checks = crate::rules::health::checks(
            &kinds,
            &self.status.step_execution_metadata,
            &self.status.state,
        );
        let (project, name, stage, status) = (
            self.project.clone(),
            self.name.clone(),
            self.spec.stage.clone(),
            self.status.clone(),
        );
        let saved = self
            .engine
            .store()
            .write_retrying(move |tx| {
                let Some(mut promotion) = tx.get(Kind::Promotion, &project, &name)? else {
                    return Ok::<(), StoreError>(());
                };
                promotion.set_status(&status);
                let annotations = promotion.metadata.annotations.clone();
                tx.put(promotion, None, StatusMode::Replace)?;
                if let Some(stage) = tx.get(Kind::Stage, &project, &stage)? {
                    let ended = Ended {
                        name: &name,
                        annotations: &annotations,
                        status: &status,
                        health_checks: &health_checks,
                    };
                    stage::record_end(tx, stage, ended, SystemTime::now())?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = saved {
            tracing::error!(project = %self.project, promotion = %self.name, error = %e, "cannot record the promotion's end");
        }
        let took = crate::rules::availability::parse_time(self.status.started_at.as_deref())
            .and_then(|start| SystemTime::now().duration_since(start).ok())
            .map(|d| d.as_secs_f64());
        self.engine.metrics().promotion_ended(
            &self.project,
            &self.spec.stage,
            phase.as_str(),
            took,
        );
        tracing::info!(project = %self.project, promotion = %self.name, phase = phase.as_str(), "promotion finished");
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// A Freight of the collection as the WIT contract gives it to a step.
fn wit_freight(f: &FreightReference) -> runtime::Freight {
    runtime::Freight {
        name: f.name.clone(),
        alias: f.alias.clone(),
        origin: f.origin.name.clone(),
        commits: f
            .commits
            .iter()
            .map(|c| runtime::Commit {
                repo_url: c.repo_url.clone(),
                id: c.id.clone(),
                branch: non_empty(&c.branch),
                tag: non_empty(&c.tag),
                message: non_empty(&c.message),
                author: non_empty(&c.author),
            })
            .collect(),
        images: f
            .images
            .iter()
            .map(|i| runtime::Image {
                repo_url: i.repo_url.clone(),
                tag: non_empty(&i.tag),
                digest: non_empty(&i.digest),
                annotations: i
                    .annotations
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            })
            .collect(),
        charts: f
            .charts
            .iter()
            .map(|c| runtime::Chart {
                repo_url: c.repo_url.clone(),
                name: non_empty(&c.name),
                version: c.version.clone(),
            })
            .collect(),
    }
}
