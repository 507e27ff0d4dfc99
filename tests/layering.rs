//! The dependency arrows of `src/`, checked (GUIDE §3.3): no import cycle between files,
//! no import of a higher layer from a lower one, `smtp` and `imap` never importing each
//! other, and nothing but `store` naming sled. A failure names the offending `use` line.
//!
//! Reading is textual but exact enough for our own code: comments, string literals and
//! `#[cfg(test)]` items are blanked first (test code may reach anywhere), then every `use`
//! tree and every inline `crate::`/`super::`/`self::` path is resolved to the file that
//! defines it, following the `pub use` re-exports of module facades.
//!
//! A file's imports from its own ancestors (`super::Error` defined in `store/mod.rs`) are
//! not cycle edges: a parent module declaring its children and sharing its types with them
//! is how Rust modules nest. Imports between siblings, or into another module's subtree,
//! are.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Write as _,
    path::Path,
};

/// Layers, bottom first. A module may import its own layer or lower ones; same-layer
/// imports must still be acyclic, and `FORBIDDEN` pairs never meet.
const LAYERS: &[(&str, &[&str])] = &[
    ("bottom vocabulary", &["mail"]),
    ("configuration", &["config"]),
    ("networking", &["net"]),
    ("storage", &["store"]),
    ("observability", &["metrics", "reload"]),
    ("search index", &["fts"]),
    (
        "pure domain",
        &["message", "contacts", "threading", "forward", "compose"],
    ),
    ("policy", &["auth", "filter", "replying"]),
    (
        "domain pipelines",
        &["ingest", "submit", "admin", "outbound"],
    ),
    ("protocols", &["smtp", "imap", "control"]),
    ("wiring", &["daemon"]),
    ("entry and test support", &["cli", "fuzzing", "test_corpus"]),
];

/// Pairs of top-level modules that must not import each other in either direction.
const FORBIDDEN: &[(&str, &str)] = &[("smtp", "imap")];

/// The only top-level module allowed to name sled.
const SLED_OWNER: &str = "store";

#[test]
fn src_has_no_cycles_and_no_upward_imports() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = read_tree(&root);
    assert!(
        files.len() > 20,
        "read only {} files under {}",
        files.len(),
        root.display()
    );
    let problems = check(&files);
    assert!(
        problems.is_empty(),
        "layering problems in src/:\n{}",
        problems.join("\n")
    );
}

#[test]
fn a_back_edge_is_reported_with_its_use_line() {
    let mut tree = small_tree();
    assert_eq!(
        check(&tree),
        Vec::<String>::new(),
        "the clean tree must pass"
    );
    tree.insert(
        "mail/mod.rs".into(),
        "//! Bottom.\npub struct Id;\nuse crate::store::Store;\n".into(),
    );
    let problems = check(&tree).join("\n");
    assert!(
        problems.contains("mail/mod.rs:3: `use crate::store::Store;`"),
        "{problems}"
    );
    assert!(problems.contains("layer"), "{problems}");
}

#[test]
fn a_cycle_between_siblings_is_reported() {
    let mut tree = small_tree();
    tree.insert(
        "store/a.rs".into(),
        "use super::b::B;\n/// \"use super::c\" in a doc is ignored\npub struct A;\n".into(),
    );
    tree.insert(
        "store/b.rs".into(),
        "pub struct B;\nfn f() { let _ = super::a::A; }\n".into(),
    );
    let problems = check(&tree).join("\n");
    assert!(problems.contains("import cycle"), "{problems}");
    assert!(
        problems.contains("store/a.rs:1: `use super::b::B;`"),
        "{problems}"
    );
    assert!(problems.contains("store/b.rs:2:"), "{problems}");
}

#[test]
fn protocols_and_sled_rules_are_enforced() {
    let mut tree = small_tree();
    tree.insert(
        "imap/mod.rs".into(),
        "use crate::smtp::Envelope;\nfn f() -> sled::Result<()> { Ok(()) }\n".into(),
    );
    let problems = check(&tree).join("\n");
    assert!(
        problems.contains("imap/mod.rs:1: `use crate::smtp::Envelope;`"),
        "{problems}"
    );
    assert!(
        problems.contains("imap/mod.rs:2:") && problems.contains("sled"),
        "{problems}"
    );
}

#[test]
fn test_code_strings_and_relative_child_paths_are_understood() {
    let mut tree = small_tree();
    tree.insert(
        "mail/mod.rs".into(),
        concat!(
            "mod id;\npub use id::Id;\n",
            "#[cfg(test)]\nmod tests {\n    use crate::store::Store;\n}\n",
            "const S: &str = \"crate::store::Store\";\nconst C: char = '\"';\n",
            "fn f<'a>(x: &'a str) -> &'a str { x }\n",
        )
        .into(),
    );
    tree.insert("mail/id.rs".into(), "pub struct Id;\n".into());
    tree.insert(
        "store/mod.rs".into(),
        "use crate::mail::Id;\npub struct Store(Id);\n".into(),
    );
    assert_eq!(check(&tree), Vec::<String>::new());
    let graph = resolve_all(&tree);
    let store = graph.get("store/mod.rs").expect("store parsed");
    assert!(
        store.iter().any(|e| e.target == "mail/id.rs"),
        "re-export not followed: {store:?}"
    );
}

/// A minimal valid tree for the self-tests.
fn small_tree() -> BTreeMap<String, String> {
    let mut t = BTreeMap::new();
    t.insert(
        "lib.rs".into(),
        "pub mod mail;\npub mod store;\npub mod smtp;\npub mod imap;\n".into(),
    );
    t.insert("mail/mod.rs".into(), "pub struct Id;\n".into());
    t.insert(
        "store/mod.rs".into(),
        "use crate::mail::Id;\npub struct Store;\n".into(),
    );
    t.insert(
        "smtp/mod.rs".into(),
        "use crate::store::Store;\npub struct Envelope;\n".into(),
    );
    t.insert("imap/mod.rs".into(), "use crate::store::Store;\n".into());
    t
}

// ---------------------------------------------------------------------------------------
// Reading the tree

/// Every `.rs` file below `root`, keyed by its path relative to `root` with `/`.
fn read_tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let rel = path.strip_prefix(root).expect("below root");
                let rel = rel.to_string_lossy().replace('\\', "/");
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                out.insert(rel, text);
            }
        }
    }
    out
}

/// `store/writer.rs` → `["store", "writer"]`; `store/mod.rs` → `["store"]`; `lib.rs` → `[]`.
/// `main.rs` is the binary, outside the library's module tree.
fn module_of(file: &str) -> Option<Vec<String>> {
    if file == "main.rs" {
        return None;
    }
    let stem = file.strip_suffix(".rs")?;
    let mut parts: Vec<String> = stem.split('/').map(str::to_owned).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    Some(parts)
}

/// The source with comments, string and char literals blanked (newlines kept, so byte
/// offsets and line numbers stay those of the original).
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |p| i + p);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0usize;
                let mut j = i;
                while j < b.len() {
                    if b[j..].starts_with(b"/*") {
                        depth += 1;
                        j += 2;
                    } else if b[j..].starts_with(b"*/") {
                        depth -= 1;
                        j += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        j += 1;
                    }
                }
                blank(&mut out, i, j);
                i = j;
            }
            b'r' if starts_raw_string(b, i) => {
                let (hashes, open) = raw_string_start(b, i + 1).unwrap_or((0, i + 1));
                let mut close = Vec::from(&b"\""[..]);
                close.extend(std::iter::repeat_n(b'#', hashes));
                let end = find(b, &close, open + 1).map_or(b.len(), |p| p + close.len());
                blank(&mut out, i, end);
                i = end;
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                blank(&mut out, i, j + 1);
                i = j + 1;
            }
            b'\'' => {
                // A char literal ('x', '\n', '\u{..}', '"'); otherwise a lifetime.
                let end = if b.get(i + 1) == Some(&b'\\') {
                    find(b, b"'", i + 2).map(|p| p + 1)
                } else {
                    let ch_len = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                    (b.get(i + 1 + ch_len) == Some(&b'\'')).then_some(i + 2 + ch_len)
                };
                match end {
                    Some(end) => {
                        blank(&mut out, i, end);
                        i = end;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `r"`, `r#"` or `br"` at `i` (the `r`), not the end of an identifier.
fn starts_raw_string(b: &[u8], i: usize) -> bool {
    let byte_prefix = i > 0 && b[i - 1] == b'b' && !prev_is_ident(b, i - 1);
    (!prev_is_ident(b, i) || byte_prefix) && raw_string_start(b, i + 1).is_some()
}

fn prev_is_ident(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// After an `r` (or `br`): `#`* then `"`; the hash count and the quote's offset.
fn raw_string_start(b: &[u8], mut i: usize) -> Option<(usize, usize)> {
    let start = i;
    while b.get(i) == Some(&b'#') {
        i += 1;
    }
    (b.get(i) == Some(&b'"')).then_some((i - start, i))
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Blanks every item behind `#[cfg(test)]` and returns the names of test-only child
/// modules declared as `#[cfg(test)] mod name;`.
fn strip_test_items(code: &mut String) -> Vec<String> {
    let mut test_mods = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("#[cfg(test)]").map(|p| p + from) {
        let b = code.as_bytes();
        // The item ends at a `;` or `,` outside brackets, at the `}` closing its block, or
        // before a `}` that closes its parent (a field or arm).
        let mut j = at + "#[cfg(test)]".len();
        let mut depth = 0i32;
        let mut end = b.len();
        while j < b.len() {
            match b[j] {
                b'{' | b'(' | b'[' => depth += 1,
                b'}' | b')' | b']' => {
                    depth -= 1;
                    if depth < 0 {
                        end = j;
                        break;
                    }
                    if depth == 0 && b[j] == b'}' {
                        end = j + 1;
                        break;
                    }
                }
                b';' | b',' if depth == 0 => {
                    end = j + 1;
                    break;
                }
                _ => {}
            }
            j += 1;
        }
        let item = &code[at..end];
        if !item.contains('{') {
            let words: Vec<&str> = item
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .collect();
            if let Some(pos) = words.iter().position(|w| *w == "mod")
                && let Some(name) = words[pos + 1..].iter().find(|w| !w.is_empty())
            {
                test_mods.push((*name).to_owned());
            }
        }
        let blanked: String = item
            .chars()
            .map(|c| if c == '\n' { '\n' } else { ' ' })
            .collect();
        code.replace_range(at..end, &blanked);
        from = at + blanked.len();
    }
    test_mods
}

// ---------------------------------------------------------------------------------------
// Paths

/// One import of one file, resolved.
#[derive(Debug, Clone)]
struct Edge {
    /// The file the path lands in (relative to src/).
    target: String,
    line: usize,
    /// The source line, trimmed, as shown in a failure.
    text: String,
}

/// A path as written: segments, the byte offset where it starts, and whether it is a
/// `pub use` (a re-export) with the name it exports under.
#[derive(Debug)]
struct RawPath {
    segments: Vec<String>,
    offset: usize,
    /// For a `use` tree, where the statement ends: the line shown is the one naming the
    /// path's last segment, not the `use crate::{` line.
    tree_end: Option<usize>,
    reexport_as: Option<String>,
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Every `use` tree (expanded) and every inline `crate::`/`super::`/`self::` path.
fn paths_in(code: &str) -> Vec<RawPath> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut use_spans = Vec::new();
    let mut i = 0;
    while let Some(at) = find(b, b"use", i) {
        i = at + 3;
        if prev_is_ident(b, at) || b.get(at + 3).is_none_or(|c| is_ident(*c)) {
            continue;
        }
        let Some(end) = find(b, b";", at) else { break };
        let before = code[..at].trim_end();
        let public = before.rsplit_once("pub").is_some_and(|(_, rest)| {
            rest.is_empty()
                || (rest.starts_with('(') && rest.ends_with(')') && !rest.contains('\n'))
        });
        let tree = &code[at + 3..end];
        let mut expanded = Vec::new();
        expand_tree(tree, &mut Vec::new(), &mut expanded);
        for (segments, alias) in expanded {
            let reexport_as = public
                .then(|| alias.or_else(|| segments.last().cloned()))
                .flatten();
            out.push(RawPath {
                segments,
                offset: at,
                tree_end: Some(end),
                reexport_as,
            });
        }
        use_spans.push((at, end));
        i = end;
    }
    for head in ["crate::", "super::", "self::"] {
        let mut i = 0;
        while let Some(at) = find(b, head.as_bytes(), i) {
            i = at + head.len();
            if prev_is_ident(b, at)
                || (at >= 2 && &b[at - 2..at] == b"::")
                || use_spans.iter().any(|(s, e)| (*s..*e).contains(&at))
            {
                continue;
            }
            let mut j = at;
            while j < b.len() && (is_ident(b[j]) || b[j..].starts_with(b"::")) {
                j += if b[j] == b':' { 2 } else { 1 };
            }
            let segments = code[at..j]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            out.push(RawPath {
                segments,
                offset: at,
                tree_end: None,
                reexport_as: None,
            });
        }
    }
    out
}

/// Expands `a::{b, c::{d as e, self}, *}` into full paths (with their `as` alias).
fn expand_tree(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<(Vec<String>, Option<String>)>) {
    let tree = tree.trim().trim_start_matches("::");
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open]
            .split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let close = tree.rfind('}').unwrap_or(tree.len());
        let inner = &tree[open + 1..close];
        let depth_before = prefix.len();
        prefix.extend(head);
        let mut depth = 0;
        let mut start = 0;
        for (k, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand_tree(&inner[start..k], prefix, out);
                    start = k + 1;
                }
                _ => {}
            }
        }
        expand_tree(&inner[start..], prefix, out);
        prefix.truncate(depth_before);
        return;
    }
    if tree.is_empty() {
        return;
    }
    let (path, alias) = match tree.split_once(" as ") {
        Some((p, a)) => (p.trim(), Some(a.trim().to_owned())),
        None => (tree, None),
    };
    let mut segments = prefix.clone();
    for s in path.split("::").map(str::trim).filter(|s| !s.is_empty()) {
        if s == "self" && !segments.is_empty() {
            continue;
        }
        segments.push(s.to_owned());
    }
    if segments.last().is_some_and(|s| s == "*") {
        segments.pop();
    }
    let alias = alias.filter(|a| a != "_");
    out.push((segments, alias));
}

/// The parsed tree: module path → file, each file's raw paths and its blanked code.
struct Tree {
    file_of: HashMap<Vec<String>, String>,
    module: HashMap<String, Vec<String>>,
    /// A file's directory-module-ness: `mod.rs`/`lib.rs` own the directory they are in.
    paths: BTreeMap<String, Vec<RawPath>>,
    code: BTreeMap<String, String>,
    originals: BTreeMap<String, Vec<String>>,
}

fn parse(files: &BTreeMap<String, String>) -> Tree {
    let mut code = BTreeMap::new();
    let mut test_only: BTreeSet<Vec<String>> = BTreeSet::new();
    for (file, text) in files {
        let mut c = code_only(text);
        let Some(module) = module_of(file) else {
            continue;
        };
        for name in strip_test_items(&mut c) {
            let mut m = module.clone();
            m.push(name);
            test_only.insert(m);
        }
        code.insert(file.clone(), c);
    }
    let mut tree = Tree {
        file_of: HashMap::new(),
        module: HashMap::new(),
        paths: BTreeMap::new(),
        code: BTreeMap::new(),
        originals: BTreeMap::new(),
    };
    for (file, c) in code {
        let Some(module) = module_of(&file) else {
            continue;
        };
        // Test-only files (and everything below them) are test code.
        if (1..=module.len()).any(|n| test_only.contains(&module[..n])) {
            continue;
        }
        tree.file_of.insert(module.clone(), file.clone());
        tree.module.insert(file.clone(), module);
        tree.paths.insert(file.clone(), paths_in(&c));
        tree.originals.insert(
            file.clone(),
            files[&file].lines().map(str::to_owned).collect(),
        );
        tree.code.insert(file, c);
    }
    tree
}

impl Tree {
    /// Makes a written path absolute from the module it is written in; `None` for paths
    /// into other crates (std, tokio, …).
    fn absolute(&self, from: &[String], segments: &[String]) -> Option<Vec<String>> {
        let first = segments.first()?;
        let mut base: Vec<String> = match first.as_str() {
            "crate" => Vec::new(),
            "self" => from.to_vec(),
            "super" => {
                let mut b = from.to_vec();
                let mut rest = segments;
                while rest.first().is_some_and(|s| s == "super") {
                    b.pop()?;
                    rest = &rest[1..];
                }
                b.extend(rest.iter().cloned());
                return Some(b);
            }
            // Uniform paths: a child module of the current one, named bare.
            name => {
                let mut child = from.to_vec();
                child.push(name.to_owned());
                if self.file_of.contains_key(&child) {
                    from.to_vec()
                } else {
                    return None;
                }
            }
        };
        let skip = usize::from(matches!(first.as_str(), "crate" | "self"));
        base.extend(segments[skip..].iter().cloned());
        Some(base)
    }

    /// The file defining an absolute path: the deepest module on it, then through that
    /// module's re-export of the next name, if it has one (bounded: re-export chains are
    /// short, and a loop must not hang the test).
    fn file_for(
        &self,
        path: &[String],
        reexports: &HashMap<(String, String), Vec<String>>,
    ) -> Option<String> {
        let mut path = path.to_vec();
        for _ in 0..8 {
            let depth = (0..=path.len())
                .rev()
                .find(|n| self.file_of.contains_key(&path[..*n]))?;
            let file = self.file_of[&path[..depth]].clone();
            match path
                .get(depth)
                .and_then(|name| reexports.get(&(file.clone(), name.clone())))
            {
                Some(target) if *target != path => {
                    let mut next = target.clone();
                    next.extend(path[depth + 1..].iter().cloned());
                    path = next;
                }
                _ => return Some(file),
            }
        }
        None
    }
}

/// Every file's resolved imports.
fn resolve_all(files: &BTreeMap<String, String>) -> BTreeMap<String, Vec<Edge>> {
    let tree = parse(files);
    let mut reexports: HashMap<(String, String), Vec<String>> = HashMap::new();
    for (file, paths) in &tree.paths {
        let from = &tree.module[file];
        for p in paths {
            if let (Some(name), Some(abs)) = (&p.reexport_as, tree.absolute(from, &p.segments)) {
                reexports.insert((file.clone(), name.clone()), abs);
            }
        }
    }
    let mut out = BTreeMap::new();
    for (file, paths) in &tree.paths {
        let from = &tree.module[file];
        let code = &tree.code[file];
        let mut edges = Vec::new();
        for p in paths {
            let Some(abs) = tree.absolute(from, &p.segments) else {
                continue;
            };
            let Some(target) = tree.file_for(&abs, &reexports) else {
                continue;
            };
            let shown_at = p
                .tree_end
                .zip(p.segments.last())
                .and_then(|(end, last)| word_at(code, last, p.offset, end))
                .unwrap_or(p.offset);
            let line = code[..shown_at].matches('\n').count() + 1;
            if target == *file
                || edges
                    .iter()
                    .any(|e: &Edge| e.target == target && e.line == line)
            {
                continue;
            }
            let text = tree.originals[file]
                .get(line - 1)
                .map_or("", |l| l.trim())
                .to_owned();
            edges.push(Edge { target, line, text });
        }
        out.insert(file.clone(), edges);
    }
    out
}

/// The first place in `code[from..to]` where `word` stands as a whole identifier.
fn word_at(code: &str, word: &str, from: usize, to: usize) -> Option<usize> {
    let b = code.as_bytes();
    let mut i = from;
    while let Some(at) = find(b, word.as_bytes(), i).filter(|at| *at < to) {
        if !prev_is_ident(b, at) && b.get(at + word.len()).is_none_or(|c| !is_ident(*c)) {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

// ---------------------------------------------------------------------------------------
// The rules

fn top_of(file: &str) -> Option<String> {
    module_of(file)?.first().cloned()
}

fn layer_of(top: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, mods)| mods.contains(&top))
}

/// Every rule broken, one line each, naming the file, line and `use` line.
fn check(files: &BTreeMap<String, String>) -> Vec<String> {
    let graph = resolve_all(files);
    let tree = parse(files);
    let mut problems = Vec::new();
    for (file, edges) in &graph {
        let Some(from_top) = top_of(file) else {
            continue;
        };
        if layer_of(&from_top).is_none() {
            problems.push(format!(
                "{file}: top-level module `{from_top}` has no layer in LAYERS"
            ));
            continue;
        }
        for e in edges {
            let Some(to_top) = top_of(&e.target) else {
                continue;
            };
            if to_top == from_top {
                continue;
            }
            let (from_layer, to_layer) = (layer_of(&from_top), layer_of(&to_top));
            if let (Some(f), Some(t)) = (from_layer, to_layer)
                && t > f
            {
                problems.push(format!(
                    "{file}:{}: `{}`: layer `{}` ({from_top}) imports the higher layer `{}` ({to_top})",
                    e.line, e.text, LAYERS[f].0, LAYERS[t].0
                ));
            }
            if FORBIDDEN
                .iter()
                .any(|(a, b)| (*a == from_top && *b == to_top) || (*b == from_top && *a == to_top))
            {
                problems.push(format!(
                    "{file}:{}: `{}`: {from_top} and {to_top} must not import each other",
                    e.line, e.text
                ));
            }
        }
    }
    for (file, code) in &tree.code {
        if top_of(file).is_some_and(|t| t == SLED_OWNER) {
            continue;
        }
        for (n, line) in code.lines().enumerate() {
            let b = line.as_bytes();
            let named = (0..b.len()).any(|i| {
                b[i..].starts_with(b"sled")
                    && !prev_is_ident(b, i)
                    && b.get(i + 4).is_none_or(|c| !is_ident(*c))
                    && (b[i + 4..].starts_with(b"::") || line[..i].trim_end().ends_with("use"))
            });
            if named {
                let text = tree.originals[file].get(n).map_or("", |l| l.trim());
                problems.push(format!(
                    "{file}:{}: `{text}`: only {SLED_OWNER} names sled",
                    n + 1
                ));
            }
        }
    }
    problems.extend(cycles(&graph, &tree));
    problems
}

/// Import cycles between files (child → ancestor imports excluded, see the module doc),
/// each reported with one `use` line per edge on the cycle.
fn cycles(graph: &BTreeMap<String, Vec<Edge>>, tree: &Tree) -> Vec<String> {
    let is_ancestor = |from: &str, to: &str| {
        let (Some(f), Some(t)) = (tree.module.get(from), tree.module.get(to)) else {
            return false;
        };
        t.len() < f.len() && f.starts_with(t)
    };
    let nodes: Vec<&String> = graph.keys().collect();
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let adj: Vec<Vec<usize>> = nodes
        .iter()
        .map(|n| {
            let set: BTreeSet<usize> = graph[*n]
                .iter()
                .filter(|e| !is_ancestor(n, &e.target))
                .filter_map(|e| index.get(e.target.as_str()).copied())
                .collect();
            set.into_iter().collect()
        })
        .collect();
    let mut problems = Vec::new();
    for scc in strongly_connected(&adj) {
        if scc.len() < 2 {
            continue;
        }
        let members: BTreeSet<usize> = scc.iter().copied().collect();
        let mut msg = format!(
            "import cycle between {}:",
            scc.iter()
                .map(|i| nodes[*i].as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        for &i in &scc {
            for e in &graph[nodes[i]] {
                let in_cycle = index
                    .get(e.target.as_str())
                    .is_some_and(|t| members.contains(t));
                if in_cycle && !is_ancestor(nodes[i], &e.target) {
                    let _ = write!(
                        msg,
                        "\n    {}:{}: `{}` → {}",
                        nodes[i], e.line, e.text, e.target
                    );
                }
            }
        }
        problems.push(msg);
    }
    problems
}

/// Tarjan's algorithm, iterative (no recursion depth to worry about).
fn strongly_connected(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = adj.len();
    let (mut index, mut low, mut on_stack) = (vec![usize::MAX; n], vec![0; n], vec![false; n]);
    let (mut stack, mut out, mut next) = (Vec::new(), Vec::new(), 0);
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work = vec![(root, 0usize)];
        while let Some((v, child)) = work.pop() {
            if child == 0 {
                index[v] = next;
                low[v] = next;
                next += 1;
                stack.push(v);
                on_stack[v] = true;
            }
            if let Some(&w) = adj[v].get(child) {
                work.push((v, child + 1));
                if index[w] == usize::MAX {
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            if low[v] == index[v] {
                let mut scc = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    scc.push(w);
                    if w == v {
                        break;
                    }
                }
                out.push(scc);
            }
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
        }
    }
    out
}
