//! Dray's built-in verifiers, exported as one component (`builtin:verifiers`): `job`
//! (`plugins/job`), `web` and `prometheus` (`plugins/metrics`).

use dray_sdk::Verifier;
use dray_sdk::verifier::Measurement;
use dray_sdk::{StepContext, StepKind};

type Describe = fn() -> Vec<StepKind>;
type Verify = fn(String, StepContext, String) -> Result<Measurement, String>;

const PARTS: [(Describe, Verify); 2] = [
    (
        <metrics::Metrics as Verifier>::describe,
        <metrics::Metrics as Verifier>::verify,
    ),
    (
        <job::Jobs as Verifier>::describe,
        <job::Jobs as Verifier>::verify,
    ),
];

struct Verifiers;

impl Verifier for Verifiers {
    fn describe() -> Vec<StepKind> {
        PARTS.iter().flat_map(|(describe, _)| describe()).collect()
    }

    fn verify(kind: String, context: StepContext, config: String) -> Result<Measurement, String> {
        match PARTS
            .iter()
            .find(|(describe, _)| describe().iter().any(|k| k.name == kind))
        {
            Some((_, verify)) => verify(kind, context, config),
            None => Err(format!("the built-in verifiers have no kind {kind:?}")),
        }
    }
}

dray_sdk::export_verifier!(Verifiers);
