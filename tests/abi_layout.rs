//! The two mirrors of the wire ABI must agree: `crates/pinlease-abi` (Rust) and
//! `guest-driver/include/pinlease_abi.h` (C). `docs/abi.md` is the spec
//! both follow.
//!
//! The test parses the header for its `struct pl_*` definitions and `PL_*`
//! macros, generates a C program that prints `sizeof` of every struct,
//! `offsetof` and `sizeof` of every field and the value of every constant,
//! compiles it with gcc, runs it and compares the output with
//! `pinlease_abi::layout_table()` and `pinlease_abi::constant_table()`.
//! Every disagreement is collected and reported in one failure message:
//! sizes, offsets, values, and names present on one side only.

use pinlease_abi as abi;
use pinlease_testkit::c_header::{
    assert_agree, assert_reported, broken_copy, compile, parse_header, probe_mismatches,
    probe_source, run_probe, RustStruct,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `PL_*` macros of the header that are helpers, not ABI values.
const HEADER_HELPER_MACROS: &[&str] = &["PL_ABI_CHECK_SIZE"];

const HEADER_NAME: &str = "pinlease_abi.h";

fn include_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("guest-driver/include")
}

/// `PlReqHdr` -> `pl_req_hdr`.
fn c_struct_name(rust: &str) -> String {
    let mut out = String::new();
    for (i, ch) in rust.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

/// Rust layout, keyed by C struct name: (Rust name, size, fields in order
/// with offset and size).
type RustLayout = BTreeMap<String, (&'static str, usize, Vec<(&'static str, usize, usize)>)>;

fn rust_layout() -> RustLayout {
    let mut out: RustLayout = BTreeMap::new();
    for (s, field, offset, size) in abi::layout_table() {
        let entry = out
            .entry(c_struct_name(s))
            .or_insert_with(|| (s, 0, Vec::new()));
        if field == "-" {
            entry.1 = size;
        } else {
            entry.2.push((field, offset, size));
        }
    }
    out
}

fn rust_constants() -> BTreeMap<&'static str, u64> {
    let mut out = BTreeMap::new();
    for (name, value) in abi::constant_table() {
        assert!(
            out.insert(name, value).is_none(),
            "constant {name} is listed twice on the Rust side"
        );
    }
    out
}

/// Every disagreement between the header in `include` and the Rust side,
/// one line each; empty when the mirrors agree.
fn mismatches(include: &Path) -> Vec<String> {
    let header_path = include.join(HEADER_NAME);
    let header = std::fs::read_to_string(&header_path)
        .unwrap_or_else(|e| panic!("read {}: {e}", header_path.display()));
    let decls = parse_header(&header, "PL_", "pl_");
    let rust = rust_layout();
    let consts = rust_constants();
    let mut bad = Vec::new();
    let mut defer_last = Vec::new();

    // Names present on one side only.
    for (c_name, (r_name, _, fields)) in &rust {
        match decls.structs.get(c_name) {
            None => bad.push(format!(
                "struct {r_name}: Rust has it, header lacks `struct {c_name}`"
            )),
            Some(c_fields) => {
                for (f, _, _) in fields {
                    if !c_fields.iter().any(|c| c == f) {
                        bad.push(format!(
                            "struct {r_name} field {f}: Rust has it, `struct {c_name}` lacks it"
                        ));
                    }
                }
                for f in c_fields {
                    if !fields.iter().any(|(r, _, _)| r == f) {
                        bad.push(format!(
                            "struct {r_name} field {f}: `struct {c_name}` has it, Rust lacks it"
                        ));
                    }
                }
            }
        }
    }
    for c_name in decls.structs.keys() {
        if !rust.contains_key(c_name) {
            bad.push(format!(
                "struct {c_name}: header defines it, Rust side (abi::layout_table) lacks it"
            ));
        }
    }
    for name in consts.keys() {
        if !decls.defines.contains(*name) {
            bad.push(format!(
                "const {name}: Rust has it, header lacks `#define {name}`"
            ));
        }
    }
    for name in &decls.defines {
        if !consts.contains_key(name.as_str()) && !HEADER_HELPER_MACROS.contains(&name.as_str()) {
            bad.push(format!(
                "const {name}: header defines it, Rust side (abi::constant_table) lacks it"
            ));
        }
    }

    // The probe: sizes, offsets and values of everything both sides name.
    // The header's own size assertions are turned off, so that every size
    // mismatch is printed and compared, not only the first gcc sees.
    let prog = probe_source(
        "#define _Static_assert(cond, msg) extern int abi_layout_probe_unused\n",
        HEADER_NAME,
        &decls,
        rust.iter().map(|(c_name, (_, _, fields))| {
            (c_name.as_str(), fields.iter().map(|f| f.0).collect())
        }),
        consts.keys().copied(),
    );

    let dir = tempfile::tempdir().expect("create tempdir");
    // The header on its own, with its size assertions, and no padding.
    let alone = compile(
        dir.path(),
        include,
        "header_alone",
        "#include \"pinlease_abi.h\"\nint main(void)\n{\n\treturn 0;\n}\n",
        &["-Wextra", "-Wpadded"],
    );
    if let Err(diag) = alone {
        // Reported last: the comparisons below say more precisely what is wrong.
        let diag = indent(&diag);
        defer_last.push(format!(
            "header does not compile cleanly on its own \
             (gcc -std=gnu11 -Wall -Wextra -Wpadded -Werror):\n{diag}"
        ));
    }
    let exe = match compile(dir.path(), include, "abi_probe", &prog, &[]) {
        Ok(exe) => exe,
        Err(diag) => {
            let (diag, prog) = (indent(&diag), indent(&prog));
            bad.push(format!(
                "generated probe does not compile:\n{diag}\n    --- probe source ---\n{prog}"
            ));
            bad.append(&mut defer_last);
            return bad;
        }
    };
    bad.extend(probe_mismatches(
        &run_probe(&exe),
        rust.iter()
            .map(|(c_name, (r_name, size, fields))| RustStruct {
                c_name,
                rust_name: Some(r_name),
                size: *size,
                fields,
            }),
        consts.iter().map(|(name, value)| (*name, *value)),
    ));
    bad.append(&mut defer_last);
    bad
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn c_header_matches_rust_abi() {
    assert_agree(
        &mismatches(&include_dir()),
        &format!("crates/pinlease-abi and guest-driver/include/{HEADER_NAME}"),
    );
}

/// The checker itself: a header with deliberate mistakes must be caught,
/// every mistake at once.
#[test]
fn checker_catches_a_broken_header_copy() {
    let edits = [
        // Wrong field type: changes the field's size and later offsets.
        ("\t__le32 npages;", "\t__le64 npages;"),
        // Wrong value.
        ("#define PL_OP_FILL\t\t13", "#define PL_OP_FILL\t\t31"),
        // Missing field.
        ("\t__le64 swap;", ""),
        // Extra constant and extra struct the Rust side lacks.
        (
            "#endif /* _PINLEASE_ABI_H */",
            "#define PL_BOGUS 1\nstruct pl_bogus {\n\t__le32 x;\n};\n#endif",
        ),
    ];
    let dir = broken_copy(&include_dir(), HEADER_NAME, &edits);
    assert_reported(
        &mismatches(dir.path()),
        &[
            "struct PlRegMrReq field npages size: Rust 4, C 8",
            "struct PlRegMrReq field first_page_offset offset: Rust 12, C 16",
            "struct PlRegMrReq (struct pl_reg_mr_req) sizeof: Rust 56, C 64",
            "const PL_OP_FILL: Rust 13",
            "struct PlAtomicReq field swap: Rust has it, `struct pl_atomic_req` lacks it",
            "struct PlAtomicReq (struct pl_atomic_req) sizeof: Rust 32, C 24",
            "const PL_BOGUS: header defines it",
            "struct pl_bogus: header defines it",
            "header does not compile cleanly on its own",
        ],
    );
}

#[test]
fn struct_names_map_to_c() {
    assert_eq!(c_struct_name("PlReqHdr"), "pl_req_hdr");
    assert_eq!(c_struct_name("PlQueryDeviceResp"), "pl_query_device_resp");
    assert_eq!(c_struct_name("PlEvent"), "pl_event");
}

/// The guest module's debugfs name tables (`pl_faults.c`), written as
/// `[PL_PREFIX_NAME] = "name",` rows: `(constant, name)` in file order.
fn module_name_table(source: &str, table: &str) -> Vec<(String, String)> {
    let start = source
        .find(&format!("{table}["))
        .unwrap_or_else(|| panic!("pl_faults.c has no table {table}"));
    let body = &source[start..];
    let body = &body[..body.find("};").expect("table ends with };")];
    body.lines()
        .filter_map(|l| {
            let l = l.trim().strip_prefix('[')?;
            let (constant, rest) = l.split_once("] = \"")?;
            let name = rest.strip_suffix("\",")?;
            Some((constant.to_string(), name.to_string()))
        })
        .filter(|(constant, _)| constant != "0") // [0] = "other"
        .collect()
}

/// pl_faults.c names event kinds and fault actions for debugfs (the suite
/// reads `device fault_injected needs_reset` there): each row's name must
/// be its constant's suffix in lower case, and the rows must be the ABI's.
#[test]
fn module_debugfs_names_are_the_abis() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest-driver/module/pl_faults.c");
    let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let check = |table: &str, prefix: &str, want: Vec<&str>| {
        let rows = module_name_table(&source, table);
        let constants: Vec<&str> = rows.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(
            constants, want,
            "{table} in {path:?}: rows differ from the ABI's"
        );
        for (constant, name) in &rows {
            let suffix = constant.strip_prefix(prefix).unwrap();
            assert_eq!(name, &suffix.to_ascii_lowercase(), "{table}: {constant}");
        }
    };
    check(
        "pl_fault_action_names",
        "PL_FAULT_ACTION_",
        abi::FAULT_ACTIONS.iter().map(|&(_, c, _)| c).collect(),
    );
    check(
        "pl_event_kind_names",
        "PL_EVENT_",
        abi::EVENT_KINDS.iter().map(|&(_, c)| c).collect(),
    );
}
