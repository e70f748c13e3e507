//! The `dray:plugin/log` interface: a plugin's log lines, with level and fields, into the
//! step's log next to what it printed.

use wasmtime::component::{HasSelf, Linker};

use crate::runtime::bindings::dray::plugin::log::{self, Level};
use crate::runtime::bindings::dray::plugin::types;
use crate::runtime::log::{Source, StepLog, cut};

/// Longest single message kept; longer ones are cut (the log as a whole is bounded too).
const MAX_MESSAGE: usize = 16 * 1024;

impl log::Host for StepLog {
    async fn write(
        &mut self,
        level: Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        let level = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        let message = cut(message, MAX_MESSAGE);
        self.push(
            Source::Log,
            level,
            message,
            fields
                .into_iter()
                .take(32)
                .map(|(k, v)| (cut(k, 256), cut(v, MAX_MESSAGE)))
                .collect(),
        );
        Ok(())
    }
}

impl types::Host for StepLog {}

/// Adds the `log` and `types` interfaces to a plugin's linker; `get` finds the step's log.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut StepLog,
) -> wasmtime::Result<()> {
    log::add_to_linker::<T, HasSelf<StepLog>>(linker, get)?;
    types::add_to_linker::<T, HasSelf<StepLog>>(linker, get)
}
