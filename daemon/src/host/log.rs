//! The `dray:plugin/log` interface: a plugin's log lines, with level and fields, into the
//! step's log next to what it printed.

use wasmtime::component::{HasSelf, Linker};

use crate::runtime::bindings::dray::plugin::log::{self, Level};
use crate::runtime::bindings::dray::plugin::types;
use crate::runtime::log::Source;
use crate::runtime::sandbox::StepState;

/// Longest single message kept; longer ones are cut (the log as a whole is bounded too).
const MAX_MESSAGE: usize = 16 * 1024;

impl log::Host for StepState {
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
        let mut message = message;
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" [cut]");
        }
        self.log.push(
            Source::Log,
            level,
            message,
            fields.into_iter().take(32).collect(),
        );
        Ok(())
    }
}

impl types::Host for StepState {}

/// Adds the `log` and `types` interfaces to a plugin's linker.
pub fn add_to_linker(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
    log::add_to_linker::<_, HasSelf<StepState>>(linker, |s| s)?;
    types::add_to_linker::<_, HasSelf<StepState>>(linker, |s| s)
}
