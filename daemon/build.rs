//! Builds the built-in plugins (`plugins/*`) to WebAssembly and generates the table that embeds
//! them in the `dray` binary; encodes the WIT contract (`wit/`) as a binary WIT package, which
//! `dray plugin push-wit` publishes.

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
    encode_wit(&manifest.join("../wit"), &out.join("dray-plugin.wasm"));
}

/// The WIT package in `dir`, encoded as a component (what `wkg wit build` makes).
fn encode_wit(dir: &std::path::Path, out: &std::path::Path) {
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve
        .push_dir(dir)
        .unwrap_or_else(|e| panic!("the WIT in {} does not parse: {e:#}", dir.display()));
    let bytes = wit_component::encode(&resolve, package)
        .unwrap_or_else(|e| panic!("cannot encode the WIT package: {e:#}"));
    std::fs::write(out, bytes).expect("write the WIT package");
}
