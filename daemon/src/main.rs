//! The `dray` binary: all of it lives in the library (see `dray::cli`).

fn main() -> std::process::ExitCode {
    dray::alloc::limit_arenas();
    dray::cli::main()
}
