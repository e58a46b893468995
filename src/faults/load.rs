//! Fault plan files (docs/faults.md 1.1): reading and validating the file
//! `--faults` and `pinlease inject load` name, and the `--fault-seed`
//! override. Every error names the file.

use std::path::{Path, PathBuf};

use crate::faults::plan::{parse_plan, Plan, PlanError};

/// A plan file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading fault plan {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("fault plan {}: {source}", path.display())]
    Invalid { path: PathBuf, source: PlanError },
}

/// A plan file's text and the plan it validated to. `pinlease inject load`
/// sends the text, so the daemon parses what the operator wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanFile {
    pub text: String,
    pub plan: Plan,
}

impl PlanFile {
    pub fn read(path: &Path) -> Result<PlanFile, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let plan = parse_plan(&text).map_err(|source| LoadError::Invalid {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(PlanFile { text, plan })
    }
}

impl Plan {
    /// The plan of `--faults PATH` (no path: no rules), its seed replaced
    /// by `seed_override` (`--fault-seed`) when one is given.
    pub fn load(path: Option<&Path>, seed_override: Option<u64>) -> Result<Plan, LoadError> {
        let mut plan = match path {
            Some(p) => PlanFile::read(p)?.plan,
            None => Plan::default(),
        };
        if let Some(seed) = seed_override {
            plan.seed = seed;
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    const ONE_RULE: &str = "seed = 3\n[[rule]]\npoint = \"event:*\"\naction = \"drop\"\n";

    #[test]
    fn loads_the_file_and_keeps_its_text() {
        let f = file(ONE_RULE);
        let pf = PlanFile::read(f.path()).unwrap();
        assert_eq!(pf.text, ONE_RULE);
        assert_eq!(pf.plan, parse_plan(ONE_RULE).unwrap());
        assert_eq!(Plan::load(Some(f.path()), None).unwrap(), pf.plan);
    }

    #[test]
    fn seed_override_replaces_the_files_seed_or_seeds_an_empty_plan() {
        let f = file(ONE_RULE);
        let plan = Plan::load(Some(f.path()), Some(11)).unwrap();
        assert_eq!((plan.seed, plan.rules.len()), (11, 1));
        assert_eq!(Plan::load(None, None).unwrap(), Plan::default());
        let plan = Plan::load(None, Some(5)).unwrap();
        assert_eq!((plan.seed, plan.rules.len()), (5, 0));
    }

    #[test]
    fn errors_name_the_file_and_what_was_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.toml");
        let e = Plan::load(Some(&missing), Some(1)).unwrap_err();
        assert!(matches!(e, LoadError::Read { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("reading fault plan {}: ", missing.display())),
            "{msg}"
        );

        let f = file("seed = -1\n");
        let e = Plan::load(Some(f.path()), None).unwrap_err();
        assert!(matches!(e, LoadError::Invalid { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "fault plan {}: top level: key \"seed\" = -1: must be a non-negative integer",
                f.path().display()
            )
        );
    }
}
