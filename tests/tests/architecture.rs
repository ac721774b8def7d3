//! The workspace's shape: each crate's top-level modules import one way
//! (no cycle), no runtime file grows past what one can read in a sitting,
//! and every module states its one job on its first line. The rules are in
//! `cache_tests::architecture`.

use std::fs;
use std::path::{Path, PathBuf};

use cache_tests::architecture::{
    ModuleGraph, lines_without_tests, module_files, rust_files, states_its_job_first,
};

const CRATES: [&str; 3] = ["cache-runtime", "cache-macro", "demo-app"];

/// The most lines a runtime source file may have, its tests left out.
const MAX_RUNTIME_LINES: usize = 700;

fn src(krate: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("src")
}

/// `path`, from the workspace root.
fn shown(path: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn top_level_modules_import_one_way() {
    let mut cycles = String::new();
    for krate in CRATES {
        let graph = ModuleGraph::of_crate(&src(krate)).expect("read the crate's sources");
        if !graph.cycles().is_empty() {
            cycles.push_str(&format!("{krate}/src:\n{}\n", graph.report()));
        }
    }
    assert!(
        cycles.is_empty(),
        "module cycles: each module should import only modules below it, \
         and a shared job belongs in a lower module of its own\n{cycles}"
    );
}

#[test]
fn no_runtime_file_is_over_700_lines_tests_aside() {
    let oversize: Vec<String> = rust_files(&src("cache-runtime"))
        .expect("list the runtime's sources")
        .iter()
        .filter_map(|file| {
            let lines = lines_without_tests(&read(file));
            (lines > MAX_RUNTIME_LINES).then(|| format!("{}: {lines} lines", shown(file)))
        })
        .collect();
    assert!(
        oversize.is_empty(),
        "runtime files over {MAX_RUNTIME_LINES} lines, not counting #[cfg(test)] modules:\n{}",
        oversize.join("\n")
    );
}

#[test]
fn every_module_states_its_job_on_its_first_line() {
    let mut silent = Vec::new();
    for krate in CRATES {
        for file in module_files(&src(krate)).expect("list the crate's modules") {
            if !states_its_job_first(&read(&file)) {
                silent.push(shown(&file));
            }
        }
    }
    assert!(
        silent.is_empty(),
        "modules whose first line is not a `//!` line stating their job:\n{}",
        silent.join("\n")
    );
}
