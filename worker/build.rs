//! Builds kiln's init (`init/init.c`, see `src/init.rs`) as a static executable, which the
//! worker embeds and bind-mounts into fast-path step containers. Static, so it runs in any
//! Linux image whatever libc it has (or none); C, so it needs no second Rust target: the C
//! compiler and static libc are the ones the Rust toolchain already links with here.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = "init/init.c";
    println!("cargo::rerun-if-changed={source}");
    println!("cargo::rerun-if-env-changed=CC");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target = out.join("kiln-init");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let status = Command::new(&cc)
        .args(["-static", "-Os", "-s", "-Wall", "-Werror", "-o"])
        .arg(&target)
        .arg(source)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc:?} for kiln's init: {e}"));
    assert!(
        status.success(),
        "{cc} could not build kiln's init ({source}); it needs a static libc (Debian: libc6-dev)"
    );
}
