// The store embeds `migrations/` with `sqlx::migrate!`; rebuild when a migration changes.
//
// The web app (`web/`, built by `scripts/build-web.sh` into `web/dist`) is embedded into the
// binary: this writes `$OUT_DIR/web_assets.rs`, a table of every file of `web/dist` with
// `include_bytes!`, so one `kiln` file serves the app. Without a build there is nothing to
// serve, and the compile stops here saying how to make one.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web/dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    if !dist.join("index.html").is_file() {
        panic!(
            "\n\nthe web app is not built: {} has no index.html.\n\
             Run `scripts/build-web.sh` (npm ci && npm run build in web/; scripts/up.sh and \
             scripts/test.sh run it) before building kiln.\n\n",
            dist.display()
        );
    }
    let mut files = Vec::new();
    walk(&dist, &mut files);
    files.sort();
    let mut out = String::from(
        "/// Every file of the built web app: its URL path and its bytes.\npub static ASSETS: &[(&str, &[u8])] = &[\n",
    );
    for file in files {
        println!("cargo:rerun-if-changed={}", file.display());
        let url =
            file.strip_prefix(&dist).expect("under dist").to_string_lossy().replace('\\', "/");
        let path = file.canonicalize().expect("a built file");
        writeln!(out, "    ({:?}, include_bytes!({:?})),", format!("/{url}"), path)
            .expect("a string");
    }
    out.push_str("];\n");
    let target = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(target.join("web_assets.rs"), out).expect("writing web_assets.rs");
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading web/dist") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            walk(&path, files);
        } else {
            files.push(path);
        }
    }
}
