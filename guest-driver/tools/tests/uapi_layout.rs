//! `src/uapi.rs` must mirror `guest-driver/include/pinlease_uapi.h`
//! exactly: struct sizes, field offsets and sizes, `PINLEASE_*` constants
//! and ioctl numbers, and the same set of names on both sides.
//!
//! Same approach as the root crate's `tests/abi_layout.rs`: parse the header
//! for its `struct pinlease_*` definitions and `PINLEASE_*` macros, generate
//! a C program printing `sizeof`/`offsetof`/values, compile it with gcc, run
//! it and compare with `uapi::layout_table()` and `uapi::constant_table()`.
//! Every disagreement is reported in one failure message.

use pinlease_guest::uapi;
use pinlease_testkit::c_header::{compile, parse_header, probe_source, run_probe, ProbeOutput};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const HEADER_NAME: &str = "pinlease_uapi.h";

/// `PINLEASE_*` macros that are not values (include guards and helpers).
const HEADER_NON_VALUES: &[&str] = &[];

fn include_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../include")
}

type RustLayout = BTreeMap<&'static str, (usize, Vec<(&'static str, usize, usize)>)>;

fn rust_layout() -> RustLayout {
    let mut out: RustLayout = BTreeMap::new();
    for (s, field, offset, size) in uapi::layout_table() {
        let e = out.entry(s).or_insert_with(|| (0, Vec::new()));
        if field == "-" {
            e.0 = size;
        } else {
            e.1.push((field, offset, size));
        }
    }
    out
}

fn mismatches(include: &Path) -> Vec<String> {
    let header = std::fs::read_to_string(include.join(HEADER_NAME)).expect("read header");
    let decls = parse_header(&header, "PINLEASE_", "pinlease_");
    let rust = rust_layout();
    let consts: BTreeMap<&str, u64> = uapi::constant_table().into_iter().collect();
    assert_eq!(
        consts.len(),
        uapi::constant_table().len(),
        "a constant is listed twice"
    );
    let mut bad = Vec::new();

    for (c_name, (_, fields)) in &rust {
        match decls.structs.get(*c_name) {
            None => bad.push(format!("struct {c_name}: Rust has it, header lacks it")),
            Some(c_fields) => {
                let r: Vec<&str> = fields.iter().map(|f| f.0).collect();
                let c: Vec<&str> = c_fields.iter().map(String::as_str).collect();
                for f in &r {
                    if !c.contains(f) {
                        bad.push(format!(
                            "struct {c_name} field {f}: Rust has it, header lacks it"
                        ));
                    }
                }
                for f in &c {
                    if !r.contains(f) {
                        bad.push(format!(
                            "struct {c_name} field {f}: header has it, Rust lacks it"
                        ));
                    }
                }
            }
        }
    }
    for c_name in decls.structs.keys() {
        if !rust.contains_key(c_name.as_str()) {
            bad.push(format!(
                "struct {c_name}: header defines it, Rust (uapi::layout_table) lacks it"
            ));
        }
    }
    for name in consts.keys() {
        if !decls.defines.contains(*name) {
            bad.push(format!("const {name}: Rust has it, header lacks it"));
        }
    }
    for name in &decls.defines {
        if !consts.contains_key(name.as_str())
            && !HEADER_NON_VALUES.contains(&name.as_str())
            && name != "PINLEASE_UAPI_H"
        {
            bad.push(format!(
                "const {name}: header defines it, Rust (uapi::constant_table) lacks it"
            ));
        }
    }

    let prog = probe_source(
        "",
        HEADER_NAME,
        &decls,
        rust.iter()
            .map(|(c_name, (_, fields))| (*c_name, fields.iter().map(|f| f.0).collect())),
        consts.keys().copied(),
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let mut last = Vec::new();
    // The header alone: compiles cleanly, no implicit padding, and the same
    // layout in 32-bit user space (only checked if gcc can target it).
    if let Err(d) = compile(
        dir.path(),
        include,
        "alone",
        "#include \"pinlease_uapi.h\"\nint main(void)\n{\n\treturn 0;\n}\n",
        &["-Wextra", "-Wpadded", "-c"],
    ) {
        last.push(format!(
            "header does not compile cleanly alone (-Wextra -Wpadded -Werror):\n{d}"
        ));
    }
    let exe = match compile(dir.path(), include, "probe", &prog, &[]) {
        Ok(e) => e,
        Err(d) => {
            bad.push(format!(
                "generated probe does not compile:\n{d}\n--- probe ---\n{prog}"
            ));
            bad.append(&mut last);
            return bad;
        }
    };
    let ProbeOutput {
        sizes,
        fields,
        consts: vals,
    } = run_probe(&exe);
    for (c_name, (size, fs)) in &rust {
        if let Some(&c) = sizes.get(*c_name) {
            if c != *size as u64 {
                bad.push(format!("struct {c_name} sizeof: Rust {size}, C {c}"));
            }
        }
        for (f, off, fsize) in fs {
            let Some(&(co, cs)) = fields.get(&(c_name.to_string(), f.to_string())) else {
                continue;
            };
            if co != *off as u64 {
                bad.push(format!(
                    "struct {c_name} field {f} offset: Rust {off}, C {co}"
                ));
            }
            if cs != *fsize as u64 {
                bad.push(format!(
                    "struct {c_name} field {f} size: Rust {fsize}, C {cs}"
                ));
            }
        }
    }
    for (name, v) in &consts {
        if let Some(&c) = vals.get(*name) {
            if c != *v {
                bad.push(format!("const {name}: Rust {v} ({v:#x}), C {c} ({c:#x})"));
            }
        }
    }
    bad.append(&mut last);
    bad
}

#[test]
fn c_uapi_header_matches_rust_mirror() {
    let bad = mismatches(&include_dir());
    assert!(
        bad.is_empty(),
        "src/uapi.rs and guest-driver/include/{HEADER_NAME} disagree ({} problems):\n  {}",
        bad.len(),
        bad.join("\n  ")
    );
}

/// The checker catches deliberate mistakes, all at once.
#[test]
fn checker_catches_a_broken_header_copy() {
    let good = std::fs::read_to_string(include_dir().join(HEADER_NAME)).unwrap();
    let edits = [
        // Field type change: size of the field, the struct and the ioctl number.
        (
            "\t__u32 npages;\t\t\t/* out: pages pinned */",
            "\t__u64 npages;",
        ),
        // Wrong ioctl nr.
        (
            "_IOWR(PINLEASE_IOC_MAGIC, 0x03,",
            "_IOWR(PINLEASE_IOC_MAGIC, 0x13,",
        ),
        // Missing field.
        ("\t__u64 swap;\n", ""),
        // Extra names.
        (
            "#endif /* _PINLEASE_UAPI_H */",
            "#define PINLEASE_BOGUS 1\nstruct pinlease_bogus {\n\t__u32 x;\n};\n#endif",
        ),
    ];
    let mut broken = good.clone();
    for (from, to) in edits {
        assert!(
            broken.contains(from),
            "self-check edit target {from:?} not in the header"
        );
        broken = broken.replacen(from, to, 1);
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(HEADER_NAME), broken).unwrap();
    let report = mismatches(dir.path()).join("\n");
    for want in [
        "struct pinlease_reg_mr field npages size: Rust 4, C 8",
        "struct pinlease_reg_mr sizeof: Rust 48, C 56",
        "const PINLEASE_IOC_REG_MR: Rust",
        "const PINLEASE_IOC_DMA: Rust",
        "struct pinlease_dma field swap: Rust has it, header lacks it",
        "const PINLEASE_BOGUS: header defines it",
        "struct pinlease_bogus: header defines it",
        "header does not compile cleanly alone",
    ] {
        assert!(
            report.contains(want),
            "checker missed {want:?}; it reported:\n{report}"
        );
    }
}
