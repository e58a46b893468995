//! `pinlease generate`: man pages and shell completions rendered from the
//! command line's own clap definition, so they cannot drift from it.
//! The rendered files are committed under contrib/ (for packagers and for
//! readers without a build); a test renders them again and fails when the
//! committed copies differ, naming the file and the command that refreshes
//! them (`scripts/generate-cli-docs`).

use std::path::{Path, PathBuf};

use clap::Subcommand;
use clap_complete::Shell;

/// What `pinlease generate` produces.
#[derive(Subcommand, Debug)]
pub enum Generate {
    /// Write pinlease.1 and one page per subcommand (pinlease-serve.1,
    /// pinlease-inject-add.1, ...) into DIR, which must exist.
    Man { dir: PathBuf },
    /// Print the completion script for SHELL on standard output.
    Completions { shell: Shell },
}

/// A page or script that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing the {shell} completions to standard output: {source}")]
    Completions {
        shell: Shell,
        source: std::io::Error,
    },
}

/// Every man page of `cmd` and its visible subcommands, as (file name,
/// roff text): the same set clap_mangen::generate_to writes, in memory.
pub fn man_pages(cmd: clap::Command) -> Vec<(String, Vec<u8>)> {
    fn render(cmd: clap::Command, pages: &mut Vec<(String, Vec<u8>)>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            render(sub, pages);
        }
        let man = clap_mangen::Man::new(cmd);
        let mut text = Vec::new();
        man.render(&mut text)
            .expect("rendering into a Vec<u8> cannot fail");
        pages.push((man.get_filename(), text));
    }
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    render(cmd, &mut pages);
    pages.sort();
    pages
}

/// The completion script of `cmd` for `shell`.
pub fn completions(mut cmd: clap::Command, shell: Shell) -> Vec<u8> {
    let name = cmd.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    script
}

/// Runs `pinlease generate`.
pub fn generate(what: Generate, cmd: clap::Command) -> Result<(), GenerateError> {
    use std::io::Write;
    match what {
        Generate::Man { dir } => write_pages(&dir, man_pages(cmd)),
        Generate::Completions { shell } => std::io::stdout()
            .write_all(&completions(cmd, shell))
            .map_err(|source| GenerateError::Completions { shell, source }),
    }
}

fn write_pages(dir: &Path, pages: Vec<(String, Vec<u8>)>) -> Result<(), GenerateError> {
    // Refuse a missing DIR rather than create it: a typo would otherwise
    // scatter pages somewhere unexpected.
    if !dir.is_dir() {
        return Err(GenerateError::Write {
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
        });
    }
    for (name, text) in pages {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| GenerateError::Write { path, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::Cli;

    const REFRESH: &str = "run scripts/generate-cli-docs and commit the result";
    /// Where scripts/generate-cli-docs writes, relative to the repository.
    const MAN_DIR: &str = "contrib/man";
    const COMPLETIONS_DIR: &str = "contrib/completions";
    /// The shells whose completions are committed, with their conventional
    /// file names (bash-completion, zsh's fpath, fish's vendor_completions.d).
    const COMMITTED_COMPLETIONS: [(Shell, &str); 3] = [
        (Shell::Bash, "pinlease.bash"),
        (Shell::Zsh, "_pinlease"),
        (Shell::Fish, "pinlease.fish"),
    ];

    fn repo() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    #[track_caller]
    fn assert_committed(path: &Path, rendered: &[u8]) {
        let committed =
            std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e} ({REFRESH})", path.display()));
        assert!(
            committed == rendered,
            "{} differs from what the clap definition renders ({REFRESH})",
            path.display()
        );
    }

    #[test]
    fn committed_man_pages_match_the_command_line() {
        let pages = man_pages(Cli::command());
        let dir = repo().join(MAN_DIR);
        let mut committed: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} ({REFRESH})", dir.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        committed.sort();
        let rendered: Vec<&String> = pages.iter().map(|(n, _)| n).collect();
        assert_eq!(
            committed.iter().collect::<Vec<_>>(),
            rendered,
            "pages in {MAN_DIR} ({REFRESH})"
        );
        for (name, text) in &pages {
            assert_committed(&dir.join(name), text);
        }
    }

    #[test]
    fn committed_completions_match_the_command_line() {
        for (shell, file) in COMMITTED_COMPLETIONS {
            let path = repo().join(COMPLETIONS_DIR).join(file);
            assert_committed(&path, &completions(Cli::command(), shell));
        }
    }

    #[test]
    fn every_subcommand_has_a_page_naming_its_flags() {
        let pages = man_pages(Cli::command());
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        for want in [
            "pinlease.1",
            "pinlease-serve.1",
            "pinlease-status.1",
            "pinlease-inject-add.1",
            "pinlease-generate-man.1",
        ] {
            assert!(names.contains(&want), "no {want} in {names:?}");
        }
        let serve = &pages
            .iter()
            .find(|(n, _)| n == "pinlease-serve.1")
            .unwrap()
            .1;
        let serve = String::from_utf8_lossy(serve);
        assert!(serve.contains("socket\\-path"), "serve page: {serve}");
        let status = &pages
            .iter()
            .find(|(n, _)| n == "pinlease-status.1")
            .unwrap()
            .1;
        assert!(String::from_utf8_lossy(status).contains("watch"));
    }

    #[test]
    fn completions_know_the_subcommands_and_flags() {
        let bash = String::from_utf8(completions(Cli::command(), Shell::Bash)).unwrap();
        for word in ["serve", "status", "inject", "--watch", "--socket-path"] {
            assert!(bash.contains(word), "bash completion lacks {word}");
        }
    }

    #[test]
    fn man_into_a_missing_directory_names_it_and_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("no-such-dir");
        let err = generate(
            Generate::Man {
                dir: missing.clone(),
            },
            Cli::command(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("no-such-dir"), "{err}");
        assert!(!missing.exists());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn man_writes_every_page_into_an_existing_directory() {
        let tmp = tempfile::tempdir().unwrap();
        generate(
            Generate::Man {
                dir: tmp.path().to_path_buf(),
            },
            Cli::command(),
        )
        .unwrap();
        let n = std::fs::read_dir(tmp.path()).unwrap().count();
        assert_eq!(n, man_pages(Cli::command()).len());
    }
}
