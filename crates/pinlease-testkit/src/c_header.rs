//! Reading the project's C headers, for the tests that check them against
//! their Rust mirrors: `tests/abi_layout.rs` (pinlease_abi.h vs
//! `pinlease_abi`) and `guest-driver/tools/tests/uapi_layout.rs`
//! (pinlease_uapi.h vs the guest tool's UAPI mirror). Test support, kept in
//! the library so both crates' tests share one copy.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the header text declares, found without a C compiler.
#[derive(Debug, Default)]
pub struct HeaderDecls {
    /// Names of the macros with the header's prefix.
    pub defines: BTreeSet<String>,
    /// Struct definitions with the header's prefix, fields in order.
    pub structs: BTreeMap<String, Vec<String>>,
}

/// The header text without `/* */` and `//` comments.
pub fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let block = rest.find("/*");
        let line = rest.find("//");
        match (block, line) {
            (Some(b), l) if l.is_none_or(|l| b < l) => {
                out.push_str(&rest[..b]);
                out.push(' ');
                rest = match rest[b + 2..].find("*/") {
                    Some(e) => &rest[b + 2 + e + 2..],
                    None => "",
                };
            }
            (_, Some(l)) => {
                out.push_str(&rest[..l]);
                rest = match rest[l..].find('\n') {
                    Some(e) => &rest[l + e..],
                    None => "",
                };
            }
            _ => {
                out.push_str(rest);
                return out;
            }
        }
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The `#define`s whose names start with `macro_prefix` and the
/// `struct <name> { ... }` definitions whose names start with
/// `struct_prefix`, found by reading the text (no C compiler), so a name
/// one side lacks is reported by name rather than as a compile error.
pub fn parse_header(text: &str, macro_prefix: &str, struct_prefix: &str) -> HeaderDecls {
    let text = strip_comments(text).replace("\\\n", " ");
    let mut decls = HeaderDecls::default();

    for line in text.lines() {
        let line = line.trim_start();
        let Some(rest) = line.strip_prefix('#') else {
            continue;
        };
        let Some(rest) = rest.trim_start().strip_prefix("define") else {
            continue;
        };
        let name: String = rest
            .trim_start()
            .chars()
            .take_while(|&c| is_ident_char(c))
            .collect();
        if name.starts_with(macro_prefix) {
            decls.defines.insert(name);
        }
    }

    // Tokenise just enough to find `struct <name> { ... }` definitions.
    let mut rest = text.as_str();
    while let Some(pos) = rest.find("struct") {
        let before_ok = rest[..pos]
            .chars()
            .next_back()
            .is_none_or(|c| !is_ident_char(c));
        let after = &rest[pos + "struct".len()..];
        rest = after;
        if !before_ok || after.chars().next().is_some_and(is_ident_char) {
            continue;
        }
        let after = after.trim_start();
        let name: String = after.chars().take_while(|&c| is_ident_char(c)).collect();
        let after_name = after[name.len()..].trim_start();
        if !name.starts_with(struct_prefix) || !after_name.starts_with('{') {
            continue;
        }
        let body_start = &after_name[1..];
        let Some(end) = body_start.find('}') else {
            continue;
        };
        let fields = body_start[..end]
            .split(';')
            .filter_map(|decl| {
                // `__le64 args[4]` -> `args`; `struct x_id file` -> `file`.
                let decl = decl.split('[').next().unwrap_or("").trim_end();
                let field: String = decl
                    .chars()
                    .rev()
                    .take_while(|&c| is_ident_char(c))
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                (!field.is_empty()).then_some(field)
            })
            .collect();
        decls.structs.insert(name, fields);
        rest = &body_start[end..];
    }
    decls
}

fn gcc_path() -> &'static str {
    match Command::new("gcc").arg("--version").output() {
        Ok(o) if o.status.success() => "gcc",
        Ok(o) => panic!(
            "`gcc --version` failed ({}): the header layout tests need a working gcc \
             to compare the C headers with their Rust mirrors",
            o.status
        ),
        Err(e) => panic!(
            "gcc not found ({e}): the header layout tests compile the C headers \
             with gcc to compare them with their Rust mirrors; install gcc \
             (Debian: apt-get install gcc)"
        ),
    }
}

/// Compiles `source` in `dir` with the header from `include`; Err holds
/// gcc's diagnostics.
pub fn compile(
    dir: &Path,
    include: &Path,
    stem: &str,
    source: &str,
    extra: &[&str],
) -> Result<PathBuf, String> {
    let src = dir.join(format!("{stem}.c"));
    let exe = dir.join(stem);
    std::fs::write(&src, source).expect("write generated C source");
    let out = Command::new(gcc_path())
        .args(["-std=gnu11", "-Wall", "-Werror"])
        .args(extra)
        .arg("-I")
        .arg(include)
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("run gcc");
    if out.status.success() {
        Ok(exe)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// What a probe program (see [`probe_source`]) printed.
#[derive(Debug, Default)]
pub struct ProbeOutput {
    /// `sizeof(struct s)` by C struct name.
    pub sizes: BTreeMap<String, u64>,
    /// (offset, size) by (C struct name, field name).
    pub fields: BTreeMap<(String, String), (u64, u64)>,
    /// Constant values by macro name.
    pub consts: BTreeMap<String, u64>,
}

/// C source of a program printing, for each of `structs` (C name and field
/// names) that `decls` says the header defines, its size and the offset and
/// size of each of its fields the header has, and the value of each of
/// `consts` the header defines. `prelude` goes before `#include "header"`
/// (e.g. to turn the header's own size assertions off, so every mismatch
/// is printed rather than the first one gcc meets).
pub fn probe_source<'a>(
    prelude: &str,
    header: &str,
    decls: &HeaderDecls,
    structs: impl IntoIterator<Item = (&'a str, Vec<&'a str>)>,
    consts: impl IntoIterator<Item = &'a str>,
) -> String {
    use std::fmt::Write as _;
    let mut prog = format!(
        "#include <stddef.h>\n#include <stdio.h>\n{prelude}#include \"{header}\"\n\
         #define FIELD(s, f) printf(\"field %s %s %zu %zu\\n\", #s, #f, \\\n\
         \toffsetof(struct s, f), sizeof(((struct s *)0)->f))\n\
         int main(void)\n{{\n"
    );
    for (c_name, fields) in structs {
        let Some(c_fields) = decls.structs.get(c_name) else {
            continue;
        };
        let _ = writeln!(
            prog,
            "\tprintf(\"struct %s %zu\\n\", \"{c_name}\", sizeof(struct {c_name}));"
        );
        for f in fields {
            if c_fields.iter().any(|c| c == f) {
                let _ = writeln!(prog, "\tFIELD({c_name}, {f});");
            }
        }
    }
    for name in consts {
        if decls.defines.contains(name) {
            let _ = writeln!(
                prog,
                "\tprintf(\"const %s %llu\\n\", \"{name}\", (unsigned long long)({name}));"
            );
        }
    }
    prog.push_str("\treturn 0;\n}\n");
    prog
}

/// Runs a compiled probe and parses what it printed; panics (these are
/// test helpers) on a failed run or a line it did not expect.
pub fn run_probe(exe: &Path) -> ProbeOutput {
    let out = Command::new(exe).output().expect("run the probe");
    assert!(out.status.success(), "probe exited with {}", out.status);
    let stdout = String::from_utf8(out.stdout).expect("probe output is UTF-8");
    let mut p = ProbeOutput::default();
    for line in stdout.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        let num = |s: &str| -> u64 { s.parse().unwrap_or_else(|_| panic!("probe line {line:?}")) };
        match w.as_slice() {
            ["struct", s, size] => {
                p.sizes.insert(s.to_string(), num(size));
            }
            ["field", s, f, off, size] => {
                p.fields
                    .insert((s.to_string(), f.to_string()), (num(off), num(size)));
            }
            ["const", n, v] => {
                p.consts.insert(n.to_string(), num(v));
            }
            _ => panic!("unexpected probe output line {line:?}"),
        }
    }
    p
}

/// One struct as a Rust mirror lays it out, to compare with a probe.
pub struct RustStruct<'a> {
    /// The C struct's name (`pl_req_hdr`).
    pub c_name: &'a str,
    /// The Rust type's name, when the messages should say it (`PlReqHdr`).
    pub rust_name: Option<&'a str>,
    /// `size_of` the Rust type.
    pub size: usize,
    /// `(field, offset, size)` of each Rust field.
    pub fields: &'a [(&'a str, usize, usize)],
}

/// Where [`run_probe`]'s answer disagrees with the Rust side: struct sizes,
/// field offsets and sizes, and constant values, of what both sides name
/// (a name one side lacks is the caller's to report). One message a
/// difference, in the order of `structs`, then of `consts`.
pub fn probe_mismatches<'a>(
    probe: &ProbeOutput,
    structs: impl IntoIterator<Item = RustStruct<'a>>,
    consts: impl IntoIterator<Item = (&'a str, u64)>,
) -> Vec<String> {
    let mut bad = Vec::new();
    for s in structs {
        let (c_name, size) = (s.c_name, s.size);
        let name = s.rust_name.unwrap_or(c_name);
        if let Some(&c_size) = probe.sizes.get(c_name) {
            if c_size != size as u64 {
                let what = match s.rust_name {
                    Some(r) => format!("{r} (struct {c_name})"),
                    None => c_name.to_string(),
                };
                bad.push(format!("struct {what} sizeof: Rust {size}, C {c_size}"));
            }
        }
        for &(f, off, fsize) in s.fields {
            let Some(&(c_off, c_fsize)) = probe.fields.get(&(c_name.to_string(), f.to_string()))
            else {
                continue;
            };
            if c_off != off as u64 {
                bad.push(format!(
                    "struct {name} field {f} offset: Rust {off}, C {c_off}"
                ));
            }
            if c_fsize != fsize as u64 {
                bad.push(format!(
                    "struct {name} field {f} size: Rust {fsize}, C {c_fsize}"
                ));
            }
        }
    }
    for (name, value) in consts {
        if let Some(&c_value) = probe.consts.get(name) {
            if c_value != value {
                bad.push(format!(
                    "const {name}: Rust {value} ({value:#x}), C {c_value} ({c_value:#x})"
                ));
            }
        }
    }
    bad
}

/// For a checker's self-test: header `name` of `include` with each of
/// `edits` (`from`, `to`) made once, written into a fresh temporary
/// directory, which is returned. Panics when a `from` is not in the header.
pub fn broken_copy(include: &Path, name: &str, edits: &[(&str, &str)]) -> tempfile::TempDir {
    let mut broken = std::fs::read_to_string(include.join(name)).expect("read header");
    for (from, to) in edits {
        assert!(
            broken.contains(from),
            "self-check edit target {from:?} not in header"
        );
        broken = broken.replacen(from, to, 1);
    }
    let dir = tempfile::tempdir().expect("create tempdir");
    std::fs::write(dir.path().join(name), broken).expect("write broken header");
    dir
}

/// For a checker's self-test: each of `expected` is part of one of the
/// messages in `bad`.
#[track_caller]
pub fn assert_reported(bad: &[String], expected: &[&str]) {
    let report = bad.join("\n");
    for expected in expected {
        assert!(
            report.contains(expected),
            "checker missed {expected:?}; it reported:\n{report}"
        );
    }
}

/// A checker's verdict: no mismatches in `bad`, or one failure listing
/// them all and saying which two sides disagree (`sides`).
#[track_caller]
pub fn assert_agree(bad: &[String], sides: &str) {
    assert!(
        bad.is_empty(),
        "{sides} disagree ({} problems):\n  {}",
        bad.len(),
        bad.join("\n  ")
    );
}
