//! Builds the guest fixtures (`tests/fixtures/*`) to WebAssembly for the runtime's tests, and
//! tells the tests where they are (`DRAY_FIXTURES_DIR`).

include!("../plugins/build_wasm.rs");

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    build_wasm_workspace(
        &manifest.join("fixtures"),
        &wasm_target_dir("wasm-fixtures"),
        &out,
    );
    println!("cargo:rustc-env=DRAY_FIXTURES_DIR={}", out.display());
}
