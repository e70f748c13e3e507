//! Dray's built-in steps, exported as one component (`builtin:steps`). Each crate beside this one
//! offers the kinds of one area (Git, files, Helm, kustomize…) as a library implementing
//! [`Step`]; this crate describes them all and hands each call to the part that offers its kind.

use dray_sdk::{Step, StepContext, StepError, StepKind, StepResult};

type Describe = fn() -> Vec<StepKind>;
type Run = fn(String, StepContext, String) -> Result<StepResult, StepError>;

/// One family: the kinds it offers, its `describe` and its `run`.
struct Part {
    kinds: &'static [&'static str],
    describe: Describe,
    run: Run,
}

/// The part of family `S`, which offers `kinds`.
const fn part<S: Step>(kinds: &'static [&'static str]) -> Part {
    Part {
        kinds,
        describe: S::describe,
        run: S::run,
    }
}

/// Every family, in the order `describe` lists them. A call finds its part by these names, not
/// by `describe`: making every schema on each call cost a no-op step ~20 µs (BENCHMARKS.md). A
/// test checks the names against each part's `describe`.
const PARTS: [Part; 9] = [
    part::<control::Control>(&[
        "compose-output",
        "fail",
        "set-metadata",
        "set-freight-alias",
    ]),
    part::<git::Git>(&[
        "git-clone",
        "git-clear",
        "git-commit",
        "git-tag",
        "git-push",
        "github-push",
        "git-open-pr",
        "git-wait-for-pr",
        "git-merge-pr",
    ]),
    part::<files::Files>(&["copy", "delete", "file-write", "tar", "untar"]),
    part::<data::Data>(&[
        "yaml-update",
        "yaml-parse",
        "json-update",
        "json-parse",
        "toml-update",
        "toml-parse",
        "yaml-merge",
    ]),
    part::<kustomize::Kustomize>(&["kustomize-set-image", "kustomize-build"]),
    part::<helm::Helm>(&["helm-template", "helm-update-chart"]),
    part::<http::Http>(&["http", "http-download"]),
    part::<oci::Oci>(&["oci-push", "oci-download"]),
    part::<argocd::ArgoCd>(&["argocd-update", "argocd-wait"]),
];

struct Steps;

impl Step for Steps {
    fn describe() -> Vec<StepKind> {
        PARTS.iter().flat_map(|part| (part.describe)()).collect()
    }

    fn run(kind: String, context: StepContext, config: String) -> Result<StepResult, StepError> {
        match PARTS
            .iter()
            .find(|part| part.kinds.contains(&kind.as_str()))
        {
            Some(part) => (part.run)(kind, context, config),
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
    fn each_part_names_exactly_the_kinds_it_describes() {
        let mut seen = std::collections::BTreeSet::new();
        for part in &PARTS {
            let described: Vec<String> = (part.describe)().into_iter().map(|k| k.name).collect();
            assert_eq!(described, part.kinds, "update the kinds of this part");
            for kind in described {
                assert!(seen.insert(kind.clone()), "{kind} is offered twice");
            }
        }
    }
}
