//! Builds the guest fixtures (`tests/fixtures/*`) and the `examples/hello-step` plugin to
//! WebAssembly for the tests, and tells the tests where they are (`DRAY_FIXTURES_DIR`).

include!("../plugins/build_wasm.rs");

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    build_wasm_workspace(
        &manifest.join("fixtures"),
        &wasm_target_dir("wasm-fixtures"),
        &out,
    );
    // The custom step example is built the way its README says (its own workspace), so the
    // tests prove the example works.
    build_wasm_workspace(
        &manifest.join("../examples/hello-step"),
        &wasm_target_dir("wasm-examples"),
        &out,
    );
    println!("cargo:rustc-env=DRAY_FIXTURES_DIR={}", out.display());
}
