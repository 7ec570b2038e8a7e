//! The house is one-way (issue 13): a module is the first path segment under `crate::`, and
//! no chain of `crate::…` paths between modules leads back to where it started. Adapters
//! (`platform`) depend on the domain, never the reverse; the emulators serve only the demo
//! and the tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
pub fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comments (doc links name modules without using them).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The modules a piece of code names: `crate::x…`, `crate::{x, y…}`, and — in a file that
/// is a module of its own at the top — `super::x`.
fn named_modules(code: &str, top_file: bool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut prefixes = vec!["crate::"];
    if top_file {
        prefixes.push("super::");
    }
    for prefix in prefixes {
        for (i, _) in code.match_indices(prefix) {
            if i > 0 && code[..i].ends_with(is_ident) {
                continue; // `closeloop_crate::` and the like
            }
            let rest = &code[i + prefix.len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                for item in group.split(',') {
                    let name: String = item.trim().chars().take_while(|c| is_ident(*c)).collect();
                    if !name.is_empty() {
                        out.insert(name);
                    }
                }
            } else {
                let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        }
    }
    out
}

/// module → the modules it names, with the files that name them.
fn graph() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules: BTreeSet<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let stem = p.file_stem()?.to_str()?.to_string();
            (p.is_dir() || p.extension().is_some_and(|e| e == "rs")).then_some(stem)
        })
        .filter(|m| m != "lib" && m != "main")
        .collect();
    let mut files = Vec::new();
    sources(&root, &mut files);
    let mut edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&root).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap();
        let top_file = rel.components().count() == 1;
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for named in named_modules(&code(&text), top_file) {
            if named != module && modules.contains(&named) {
                edges
                    .entry(module.clone())
                    .or_default()
                    .entry(named)
                    .or_default()
                    .insert(rel.display().to_string());
            }
        }
    }
    edges
}

/// The strongly connected groups of more than one module (Tarjan).
fn cycles(edges: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        if let Some(out) = s.edges.get(v) {
            for w in out.keys() {
                let w = w.as_str();
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let lw = s.low[w];
                    let lv = s.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if s.stack.contains(&w) {
                    let iw = s.index[w];
                    let lv = s.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut group = Vec::new();
            while let Some(w) = s.stack.pop() {
                group.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                s.found.push(group);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found
}

#[test]
fn the_checker_sees_a_cycle_when_there_is_one() {
    type Edges = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;
    fn link(edges: &mut Edges, a: &str, b: &str) {
        edges
            .entry(a.into())
            .or_default()
            .entry(b.into())
            .or_default()
            .insert(format!("{a}.rs"));
    }
    let mut edges = Edges::new();
    link(&mut edges, "cards", "collab");
    link(&mut edges, "collab", "tracking");
    link(&mut edges, "tracking", "db");
    assert!(cycles(&edges).is_empty());
    link(&mut edges, "tracking", "cards");
    assert_eq!(cycles(&edges), [["cards", "collab", "tracking"]]);
    assert_eq!(
        named_modules(
            &code("use crate::{db::Db, error::Result};\n// crate::web::x\nlet x = crate::jobs::KIND; super::cards::f();"),
            true
        ),
        ["cards", "db", "error", "jobs"].map(String::from).into()
    );
}

#[test]
fn no_import_cycle_between_modules() {
    let edges = graph();
    assert!(edges.len() > 20, "the source tree was not found");
    let found = cycles(&edges);
    let explain: Vec<String> = found
        .iter()
        .map(|group| {
            let arrows: Vec<String> = group
                .iter()
                .flat_map(|a| {
                    edges[a]
                        .iter()
                        .filter(|(b, _)| group.contains(b))
                        .map(move |(b, files)| {
                            format!(
                                "  {a} -> {b} ({})",
                                files.iter().cloned().collect::<Vec<_>>().join(", ")
                            )
                        })
                })
                .collect();
            format!("cycle {group:?}:\n{}", arrows.join("\n"))
        })
        .collect();
    assert!(found.is_empty(), "{}", explain.join("\n"));
}

#[test]
fn only_adapters_and_the_entry_points_import_the_platforms_and_the_emulators() {
    let edges = graph();
    let importers = |target: &str| -> BTreeSet<String> {
        edges
            .iter()
            .filter(|(_, out)| out.contains_key(target))
            .map(|(m, _)| m.clone())
            .collect()
    };
    let allowed = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let platform_users = importers("platform");
    // `doctor` checks a configuration against the live platforms with their own clients
    // and callback crypto; only the command line uses it.
    assert!(
        platform_users.is_subset(&allowed(&[
            "app", "http", "demo", "cli", "emulator", "doctor"
        ])),
        "domain modules must reach the platforms through `chat` only: {platform_users:?}"
    );
    let emulator_users = importers("emulator");
    assert!(
        emulator_users.is_subset(&allowed(&["demo", "cli"])),
        "the emulators serve the demo and the tests only: {emulator_users:?}"
    );
}
