//! Build script: the plugin's linker version script (src/spank/exports.map), which keeps
//! hooks tre-spank does not implement out of the plugin's dynamic symbols.

fn main() {
    println!("cargo:rerun-if-changed=src/spank/exports.map");
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_PLUGIN").is_none() {
        return;
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={dir}/src/spank/exports.map");
}
