// Shared by daemon/build.rs and tests/build.rs (through `include!`): builds a workspace of guest
// crates to wasm32-wasip2 with a nested cargo, and returns the components it made.

use std::path::{Path, PathBuf};
use std::process::Command;

const WASM_TARGET: &str = "wasm32-wasip2";

/// Makes sure the toolchain has the wasm target; rust-toolchain.toml names it, but rustup adds
/// targets only when it installs a toolchain, not to one that is already there.
fn ensure_wasm_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc).args(["--print", "sysroot"]).output().expect("rustc runs");
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    if Path::new(&sysroot).join("lib/rustlib").join(WASM_TARGET).exists() {
        return;
    }
    println!("cargo:warning=installing the {WASM_TARGET} target with rustup (needed to build Dray's plugins)");
    let status = Command::new("rustup").args(["target", "add", WASM_TARGET]).status();
    match status {
        Ok(s) if s.success() => {}
        _ => panic!("the {WASM_TARGET} target is missing and `rustup target add {WASM_TARGET}` failed: run it by hand"),
    }
}

/// Builds `workspace` (a directory with its own Cargo.toml and Cargo.lock) in release mode and
/// copies every component to `out`; returns `(crate name, path)` pairs.
fn build_wasm_workspace(workspace: &Path, target_dir: &Path, out: &Path) -> Vec<(String, PathBuf)> {
    ensure_wasm_target();
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR")).join("..");
    // The guest workspace and every crate of this repository it builds from.
    let watched_crates = ["sdk", "wit", "expr-syntax", "chart", "gotmpl"];
    let crates = watched_crates.iter().map(|c| root.join(c));
    for watched in std::iter::once(workspace.to_path_buf()).chain(crates) {
        println!("cargo:rerun-if-changed={}", watched.display());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "--release", "--locked", "--target", WASM_TARGET, "--manifest-path"])
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    // The outer build's flags are for the host, not for wasm.
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_RUSTFLAGS", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET"] {
        command.env_remove(var);
    }
    // The artifacts cargo reports, not every .wasm in the directory: one left by an earlier
    // build of a crate that is a library now would be embedded too.
    let output = command
        .args(["--message-format", "json-render-diagnostics"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("cargo runs");
    assert!(output.status.success(), "building the wasm components in {} failed (see above)", workspace.display());
    let mut components = Vec::new();
    for line in output.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let message: serde_json::Value = serde_json::from_slice(line).expect("cargo's JSON messages");
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let files = message["filenames"].as_array().into_iter().flatten().filter_map(|f| f.as_str());
        for file in files.filter(|f| f.ends_with(".wasm")) {
            let path = PathBuf::from(file);
            let name = path.file_stem().expect("a file name").to_string_lossy().replace('_', "-");
            let dest = out.join(path.file_name().expect("a file name"));
            std::fs::copy(&path, &dest).expect("copy the component");
            components.push((name, dest));
        }
    }
    components.sort();
    components
}

/// A wasm build directory beside the outer target's profile directories (shared by debug and
/// release builds), found from OUT_DIR (`<target>/<profile>/build/<pkg>/out`).
fn wasm_target_dir(name: &str) -> PathBuf {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let target = out.ancestors().nth(4).map(Path::to_path_buf).unwrap_or_else(|| out.clone());
    target.join(name)
}
