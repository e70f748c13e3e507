//! Builds the built-in plugins (`plugins/*`) to WebAssembly and generates the table that embeds
//! them in the `dray` binary.

use std::io::Write;

include!("../plugins/build_wasm.rs");

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let components = build_wasm_workspace(
        &manifest.join("../plugins"),
        &wasm_target_dir("wasm-plugins"),
        &out,
    );
    let mut table =
        std::fs::File::create(out.join("builtin_plugins.rs")).expect("create the plugin table");
    writeln!(table, "/// The built-in plugins: (name, component bytes).").expect("write");
    writeln!(table, "pub static BUILTIN_PLUGINS: &[(&str, &[u8])] = &[").expect("write");
    for (name, path) in components {
        writeln!(
            table,
            "    ({name:?}, include_bytes!({:?})),",
            path.display().to_string()
        )
        .expect("write");
    }
    writeln!(table, "];").expect("write");
}
