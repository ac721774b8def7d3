//! The shape of a crate, read from its sources: which top-level module
//! imports which, the cycles among them, and file sizes without tests.
//!
//! A cycle usually means two modules share a job that belongs to a third,
//! lower one; without cycles, the modules form layers that import only
//! downward. The rules are those of the review tool `modcycles.py`, so that
//! both find the same cycles:
//! - a top-level module is `src/<m>.rs`, or every file under `src/<m>/`;
//!   `lib.rs` and `main.rs` are the crate root, not modules;
//! - module `m` imports `x` where its code names `crate::x`,
//!   `crate::{x, …}` or, in a file directly under `src/`, `super::x`;
//! - `#[cfg(test)] mod … { … }` blocks are left out first (tests may import
//!   anything), then `//` comments, doc comments included.
//!
//! It reads text, it does not parse Rust: braces in strings inside a test
//! module, or `//` inside a string, can fool it. The crates have neither
//! where it matters, and the tool has the same blind spots.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// One source file of a top-level module.
pub struct Source {
    /// The top-level module the file belongs to.
    pub module: String,
    /// Whether the file is directly under `src/`, where `super::` names the
    /// crate root.
    pub top_level: bool,
    /// The file's text.
    pub text: String,
}

/// Which top-level module of a crate imports which.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleGraph {
    imports: BTreeMap<String, BTreeSet<String>>,
}

/// A set of modules that all reach each other through imports, with the
/// imports among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    /// The modules, sorted.
    pub modules: Vec<String>,
    /// Each `(importer, imported)` pair within the cycle, sorted.
    pub imports: Vec<(String, String)>,
}

impl ModuleGraph {
    /// Reads the top-level modules of the crate whose sources are in `src`.
    pub fn of_crate(src: &Path) -> io::Result<ModuleGraph> {
        let mut modules = BTreeSet::new();
        let mut sources = Vec::new();
        for entry in fs::read_dir(src)? {
            let path = entry?.path();
            let name = file_name(&path);
            if name == "lib.rs" || name == "main.rs" {
                continue;
            }
            let (module, files) = if let Some(module) = name.strip_suffix(".rs") {
                (module.to_owned(), vec![path])
            } else if path.is_dir() {
                (name, rust_files(&path)?)
            } else {
                continue;
            };
            for file in files {
                sources.push(Source {
                    module: module.clone(),
                    top_level: file.parent() == Some(src),
                    text: fs::read_to_string(&file)?,
                });
            }
            modules.insert(module);
        }
        Ok(ModuleGraph::from_modules(modules, &sources))
    }

    /// The graph of the modules that `sources` belong to.
    pub fn from_sources(sources: &[Source]) -> ModuleGraph {
        let modules = sources.iter().map(|s| s.module.clone()).collect();
        ModuleGraph::from_modules(modules, sources)
    }

    fn from_modules(modules: BTreeSet<String>, sources: &[Source]) -> ModuleGraph {
        let mut imports: BTreeMap<String, BTreeSet<String>> = modules
            .iter()
            .map(|module| (module.clone(), BTreeSet::new()))
            .collect();
        for source in sources {
            let code = strip_comments(&strip_test_modules(&source.text));
            for target in named_modules(&code, source.top_level) {
                if target != source.module && modules.contains(target) {
                    imports
                        .get_mut(&source.module)
                        .expect("every source's module is in the graph")
                        .insert(target.to_owned());
                }
            }
        }
        ModuleGraph { imports }
    }

    /// The modules, sorted.
    pub fn modules(&self) -> impl Iterator<Item = &str> {
        self.imports.keys().map(String::as_str)
    }

    /// How many imports there are between distinct modules.
    pub fn import_count(&self) -> usize {
        self.imports.values().map(BTreeSet::len).sum()
    }

    /// Every cycle, as its strongly connected set of modules, ordered by its
    /// first module.
    pub fn cycles(&self) -> Vec<Cycle> {
        let reach: BTreeMap<&str, BTreeSet<&str>> = self
            .modules()
            .map(|module| (module, self.reachable_from(module)))
            .collect();
        let mut seen = BTreeSet::new();
        let mut cycles = Vec::new();
        for (module, reached) in &reach {
            if seen.contains(module) {
                continue;
            }
            let component: BTreeSet<&str> = reached
                .iter()
                .copied()
                .filter(|other| reach[other].contains(module))
                .chain([*module])
                .collect();
            seen.extend(component.iter().copied());
            if component.len() < 2 {
                continue;
            }
            let imports = component
                .iter()
                .flat_map(|from| {
                    self.imports[*from]
                        .iter()
                        .filter(|to| component.contains(&to.as_str()))
                        .map(|to| ((*from).to_owned(), to.clone()))
                })
                .collect();
            cycles.push(Cycle {
                modules: component.into_iter().map(str::to_owned).collect(),
                imports,
            });
        }
        cycles
    }

    /// What `modcycles.py` prints: a line per cycle, then a count.
    pub fn report(&self) -> String {
        let cycles = self.cycles();
        let mut report: String = cycles.iter().map(|cycle| format!("{cycle}\n")).collect();
        report.push_str(&format!(
            "{} modules, {} edges, {} cycle(s)",
            self.imports.len(),
            self.import_count(),
            cycles.len()
        ));
        report
    }

    /// The modules `from` reaches through one or more imports.
    fn reachable_from(&self, from: &str) -> BTreeSet<&str> {
        let mut reached = BTreeSet::new();
        let mut todo = vec![from];
        while let Some(module) = todo.pop() {
            for next in &self.imports[module] {
                if reached.insert(next.as_str()) {
                    todo.push(next);
                }
            }
        }
        reached
    }
}

impl fmt::Display for Cycle {
    /// `cycle: a, b | a->b b->a`, as `modcycles.py` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cycle: {} |", self.modules.join(", "))?;
        for (from, to) in &self.imports {
            write!(f, " {from}->{to}")?;
        }
        Ok(())
    }
}

/// Every `.rs` file under `dir`, at any depth, sorted.
pub fn rust_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(dir) = todo.pop() {
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The files that open a module of the crate in `src`: each `.rs` file
/// directly under it (the crate root included) and each `<m>/mod.rs`,
/// sorted.
pub fn module_files(src: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(src)? {
        let path = entry?.path();
        if path.is_dir() {
            let opening = path.join("mod.rs");
            if opening.is_file() {
                files.push(opening);
            }
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Whether `text` opens with a `//!` line that says something: the module's
/// one job, stated first.
pub fn states_its_job_first(text: &str) -> bool {
    text.lines()
        .next()
        .and_then(|line| line.strip_prefix("//!"))
        .is_some_and(|doc| !doc.trim().is_empty())
}

/// How many lines `text` has once its `#[cfg(test)] mod … { … }` blocks are
/// left out.
pub fn lines_without_tests(text: &str) -> usize {
    strip_test_modules(text).lines().count()
}

/// `text` without its `#[cfg(test)] mod … { … }` blocks (counted by braces).
pub fn strip_test_modules(text: &str) -> String {
    const ATTRIBUTE: &str = "#[cfg(test)]";
    let bytes = text.as_bytes();
    let mut kept = String::with_capacity(text.len());
    let (mut copied_to, mut search_from) = (0, 0);
    while let Some(at) = text[search_from..].find(ATTRIBUTE).map(|i| search_from + i) {
        let Some(mut end) = test_module_body(text, at + ATTRIBUTE.len()) else {
            search_from = at + 1;
            continue;
        };
        let mut depth = 1;
        while end < bytes.len() && depth > 0 {
            match bytes[end] {
                b'{' => depth += 1,
                b'}' => depth -= 1,
                _ => {}
            }
            end += 1;
        }
        kept.push_str(&text[copied_to..at]);
        (copied_to, search_from) = (end, end);
    }
    kept.push_str(&text[copied_to..]);
    kept
}

/// Where the body starts if `text[from..]` goes on with `mod <name> {`
/// (regex `\s*mod\s+\w+\s*\{`).
fn test_module_body(text: &str, from: usize) -> Option<usize> {
    let at = skip_whitespace(text, from);
    let after_mod = at + "mod".len();
    if !text[at..].starts_with("mod") {
        return None;
    }
    let name = skip_whitespace(text, after_mod);
    let name_end = name + word_len(&text[name..]);
    if name == after_mod || name_end == name {
        return None;
    }
    let brace = skip_whitespace(text, name_end);
    text[brace..].starts_with('{').then_some(brace + 1)
}

/// `text` without `//` comments, doc comments included, up to each line's end.
pub fn strip_comments(text: &str) -> String {
    let mut kept = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("//") {
        kept.push_str(&rest[..at]);
        rest = &rest[at..];
        rest = &rest[rest.find('\n').unwrap_or(rest.len())..];
    }
    kept.push_str(rest);
    kept
}

/// The first segment of each `crate::` path in `code`, each head of a
/// `crate::{…}` group, and, in a file directly under `src/`, of each
/// `super::` path.
fn named_modules(code: &str, top_level: bool) -> BTreeSet<&str> {
    let mut names: BTreeSet<&str> = words_after(code, "crate::").into_iter().collect();
    for group in groups_after(code, "crate::{") {
        names.extend(
            group
                .split(',')
                .map(|item| {
                    let item = item.trim_start();
                    &item[..word_len(item)]
                })
                .filter(|name| !name.is_empty()),
        );
    }
    if top_level {
        names.extend(words_after(code, "super::"));
    }
    names
}

/// The word after each `prefix` that starts a word (regex `\bprefix(\w+)`,
/// matches not overlapping).
fn words_after<'a>(code: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut words = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find(prefix).map(|i| from + i) {
        let start = at + prefix.len();
        let len = word_len(&code[start..]);
        if starts_word(code, at) && len > 0 {
            words.push(&code[start..start + len]);
            from = start + len;
        } else {
            from = at + 1;
        }
    }
    words
}

/// What each `prefix` that starts a word opens, up to the first `}`
/// (regex `\bprefix([^}]*)\}`).
fn groups_after<'a>(code: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut groups = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find(prefix).map(|i| from + i) {
        let start = at + prefix.len();
        match code[start..].find('}') {
            Some(len) if starts_word(code, at) => {
                groups.push(&code[start..start + len]);
                from = start + len + 1;
            }
            _ => from = at + 1,
        }
    }
    groups
}

/// Whether no word character comes right before `at` (regex `\b`, where
/// `code[at]` is one).
fn starts_word(code: &str, at: usize) -> bool {
    at == 0 || !is_word_byte(code.as_bytes()[at - 1])
}

/// How many bytes of word characters `text` starts with (regex `\w*`).
/// Non-ASCII characters count as word characters, as letters would.
fn word_len(text: &str) -> usize {
    text.bytes().take_while(|&b| is_word_byte(b)).count()
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

fn skip_whitespace(text: &str, from: usize) -> usize {
    text[from..]
        .char_indices()
        .find(|(_, c)| !c.is_whitespace())
        .map_or(text.len(), |(i, _)| from + i)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(module: &str, text: &str) -> Source {
        Source {
            module: module.to_owned(),
            top_level: true,
            text: text.to_owned(),
        }
    }

    fn pairs(imports: &[(&str, &str)]) -> Vec<(String, String)> {
        imports
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn a_cycle_is_found_with_the_imports_that_close_it() {
        let graph = ModuleGraph::from_sources(&[
            source("a", "use crate::b::Thing;"),
            source("b", "pub fn f() { crate::c::g() }"),
            source("c", "use crate::{a, d};"),
            source("d", "use crate::a::Other;"),
            source("leaf", ""),
            source("top", "use crate::a;"),
        ]);
        let cycles = graph.cycles();
        assert_eq!(cycles.len(), 1, "{}", graph.report());
        assert_eq!(cycles[0].modules, ["a", "b", "c", "d"]);
        assert_eq!(
            cycles[0].imports,
            pairs(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "a")])
        );
        assert_eq!(
            graph.report(),
            "cycle: a, b, c, d | a->b b->c c->a c->d d->a\n6 modules, 6 edges, 1 cycle(s)"
        );
    }

    #[test]
    fn separate_cycles_are_reported_apart() {
        let graph = ModuleGraph::from_sources(&[
            source("db", "use crate::repo::User;"),
            source("repo", "use crate::db::Db;"),
            source("x", "use super::y;"),
            source("y", "use super::x;"),
        ]);
        let cycles: Vec<String> = graph.cycles().iter().map(Cycle::to_string).collect();
        assert_eq!(
            cycles,
            [
                "cycle: db, repo | db->repo repo->db",
                "cycle: x, y | x->y y->x"
            ]
        );
    }

    #[test]
    fn layers_that_import_downward_pass() {
        let graph = ModuleGraph::from_sources(&[
            source(
                "front",
                "use crate::{store, keys}; use crate::store::Store;",
            ),
            source("store", "use crate::keys::render;\nuse crate::codec;"),
            source("codec", ""),
            source("keys", "use crate::keys::helper; // itself"),
        ]);
        assert_eq!(graph.cycles(), []);
        assert_eq!(graph.import_count(), 4);
        assert_eq!(graph.report(), "4 modules, 4 edges, 0 cycle(s)");
    }

    #[test]
    fn test_modules_and_comments_import_nothing() {
        let graph = ModuleGraph::from_sources(&[
            source(
                "low",
                "//! See [`crate::high`].\n\
                 pub fn f() {} // crate::high::g() would be a cycle\n\
                 /// Unlike [`crate::high::H`].\n\
                 pub struct L;\n\
                 #[cfg(test)]\n\
                 mod tests {\n    use crate::high::H;\n    fn t() { if true { super::super::high::g() } }\n}\n",
            ),
            source("high", "use crate::low::L;"),
        ]);
        assert_eq!(graph.cycles(), [], "{}", graph.report());
        assert_eq!(graph.import_count(), 1);
    }

    #[test]
    fn code_after_a_test_module_still_counts() {
        let graph = ModuleGraph::from_sources(&[
            source(
                "low",
                "#[cfg(test)] mod tests { fn t() { {} } }\nuse crate::high::H;",
            ),
            source("high", "use crate::low::L;"),
        ]);
        assert_eq!(graph.cycles().len(), 1);
    }

    #[test]
    fn super_names_the_crate_root_only_in_top_level_files() {
        let nested = Source {
            module: "dir".to_owned(),
            top_level: false,
            text: "use super::other;".to_owned(),
        };
        let graph = ModuleGraph::from_sources(&[nested, source("other", "use super::dir;")]);
        assert_eq!(graph.import_count(), 1);
        assert_eq!(graph.cycles(), []);
    }

    #[test]
    fn only_whole_words_are_paths() {
        let graph = ModuleGraph::from_sources(&[
            source("a", "use my_crate::b; use $crate::b;"),
            source(
                "b",
                "use cache_runtime::__private::a; fn f() { notsuper::a() }",
            ),
        ]);
        assert_eq!(graph.import_count(), 1, "only `$crate::b`");
    }

    #[test]
    fn a_crate_on_disk_has_file_and_directory_modules() {
        let root =
            std::env::temp_dir().join(format!("cache-tests-architecture-{}", std::process::id()));
        let src = root.join("src");
        fs::create_dir_all(src.join("store/redis")).unwrap();
        for (file, text) in [
            (
                "lib.rs",
                "//! The crate.\nmod store;\nuse crate::front::Cache;",
            ),
            ("front.rs", "//! The front.\nuse crate::store::Store;"),
            ("store/mod.rs", "//! The store.\nmod redis;"),
            ("store/redis/send.rs", "use crate::front::Cache;"),
            ("notes.txt", "crate::front"),
        ] {
            fs::write(src.join(file), text).unwrap();
        }
        let graph = ModuleGraph::of_crate(&src);
        let files = module_files(&src);
        let all = rust_files(&src);
        let _ = fs::remove_dir_all(&root);

        let graph = graph.unwrap();
        assert_eq!(graph.modules().collect::<Vec<_>>(), ["front", "store"]);
        assert_eq!(
            graph.report(),
            "cycle: front, store | front->store store->front\n2 modules, 2 edges, 1 cycle(s)"
        );
        let names = |files: Vec<PathBuf>| -> Vec<String> {
            files
                .iter()
                .map(|f| f.strip_prefix(&src).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(
            names(files.unwrap()),
            ["front.rs", "lib.rs", "store/mod.rs"]
        );
        assert_eq!(
            names(all.unwrap()),
            ["front.rs", "lib.rs", "store/mod.rs", "store/redis/send.rs"]
        );
    }

    #[test]
    fn lines_are_counted_without_test_modules() {
        let text = "//! Job.\nfn a() {}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn t() {\n        let _ = 1;\n    }\n}\n";
        assert_eq!(text.lines().count(), 10);
        assert_eq!(lines_without_tests(text), 4);
        assert_eq!(lines_without_tests("#[cfg(test)]\nfn helper() {}\n"), 2);
    }

    #[test]
    fn a_module_states_its_job_on_its_first_line() {
        assert!(states_its_job_first("//! Keys: rendering.\nuse x;"));
        assert!(!states_its_job_first("use x;\n//! Keys."));
        assert!(!states_its_job_first("//!\n//! Keys."));
        assert!(!states_its_job_first("/// Not a module doc.\n"));
        assert!(!states_its_job_first(""));
    }
}
