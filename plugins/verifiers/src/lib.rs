//! Dray's built-in verifiers, exported as one component (`builtin:verifiers`): `web` and
//! `prometheus` (`plugins/metrics`), `job` (`plugins/job`).

use dray_sdk::Verifier;
use dray_sdk::verifier::Measurement;
use dray_sdk::{StepContext, StepKind};

type Describe = fn() -> Vec<StepKind>;
type Verify = fn(String, StepContext, String) -> Result<Measurement, String>;

/// One family: the verifiers it offers (checked against its `describe` by a test), its
/// `describe` and its `verify`.
struct Part {
    kinds: &'static [&'static str],
    describe: Describe,
    verify: Verify,
}

/// The part of family `V`, which offers `kinds`.
const fn part<V: Verifier>(kinds: &'static [&'static str]) -> Part {
    Part {
        kinds,
        describe: V::describe,
        verify: V::verify,
    }
}

const PARTS: [Part; 2] = [
    part::<metrics::Metrics>(&["web", "prometheus"]),
    part::<job::Jobs>(&["job"]),
];

struct Verifiers;

impl Verifier for Verifiers {
    fn describe() -> Vec<StepKind> {
        PARTS.iter().flat_map(|part| (part.describe)()).collect()
    }

    fn verify(kind: String, context: StepContext, config: String) -> Result<Measurement, String> {
        match PARTS
            .iter()
            .find(|part| part.kinds.contains(&kind.as_str()))
        {
            Some(part) => (part.verify)(kind, context, config),
            None => Err(format!("the built-in verifiers have no kind {kind:?}")),
        }
    }
}

dray_sdk::export_verifier!(Verifiers);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_part_names_exactly_the_kinds_it_describes() {
        for part in &PARTS {
            let described: Vec<String> = (part.describe)().into_iter().map(|k| k.name).collect();
            assert_eq!(described, part.kinds, "update the kinds of this part");
        }
    }
}
