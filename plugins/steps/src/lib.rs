//! Dray's built-in steps, exported as one component (`builtin:steps`). Each crate beside this one
//! offers the kinds of one area (Git, files, Helm, kustomize…) as a library implementing
//! [`Step`]; this crate describes them all and hands each call to the part that offers its kind.

use dray_sdk::{Step, StepContext, StepError, StepKind, StepResult};

type Describe = fn() -> Vec<StepKind>;
type Run = fn(String, StepContext, String) -> Result<StepResult, StepError>;

/// Every part, in the order `describe` lists their kinds.
const PARTS: [(Describe, Run); 9] = [
    (
        <control::Control as Step>::describe,
        <control::Control as Step>::run,
    ),
    (<git::Git as Step>::describe, <git::Git as Step>::run),
    (
        <files::Files as Step>::describe,
        <files::Files as Step>::run,
    ),
    (<data::Data as Step>::describe, <data::Data as Step>::run),
    (
        <kustomize::Kustomize as Step>::describe,
        <kustomize::Kustomize as Step>::run,
    ),
    (<helm::Helm as Step>::describe, <helm::Helm as Step>::run),
    (<http::Http as Step>::describe, <http::Http as Step>::run),
    (<oci::Oci as Step>::describe, <oci::Oci as Step>::run),
    (
        <argocd::ArgoCd as Step>::describe,
        <argocd::ArgoCd as Step>::run,
    ),
];

struct Steps;

impl Step for Steps {
    fn describe() -> Vec<StepKind> {
        PARTS.iter().flat_map(|(describe, _)| describe()).collect()
    }

    fn run(kind: String, context: StepContext, config: String) -> Result<StepResult, StepError> {
        match PARTS
            .iter()
            .find(|(describe, _)| describe().iter().any(|k| k.name == kind))
        {
            Some((_, run)) => run(kind, context, config),
            // The host calls only described kinds; a direct caller gets told.
            None => Err(StepError::InvalidConfig(format!(
                "the built-in steps have no kind {kind:?}"
            ))),
        }
    }
}

dray_sdk::export_step!(Steps);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_offered_by_one_part() {
        let mut seen = std::collections::BTreeSet::new();
        for kind in Steps::describe() {
            assert!(
                seen.insert(kind.name.clone()),
                "{} is offered twice",
                kind.name
            );
        }
        for kind in [
            "git-clone",
            "helm-template",
            "kustomize-build",
            "yaml-update",
            "http",
        ] {
            assert!(seen.contains(kind), "{kind} is missing");
        }
    }
}
