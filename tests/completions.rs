//! `boardsmith completions`: the bash script, run by bash itself, offers the catalogue's board names
//! for every BOARD argument (embedded boards, and those of --boards-dir when it is given).

mod cli_definition;
mod support;

use std::path::Path;
use std::process::Command;

use clap::CommandFactory;
use support::{boardsmith, run_ok};

/// What bash's completion function offers after `boardsmith WORDS... ` (an empty word being completed).
fn complete(script: &Path, words: &str) -> Vec<String> {
    let program = format!(
        r#"source "$1"
COMP_WORDS=(boardsmith {words} "")
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="${{COMP_WORDS[*]}}"
COMP_POINT=${{#COMP_LINE}}
_boardsmith boardsmith "" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#
    );
    let o = run_ok(
        Command::new("bash")
            .args(["--norc", "--noprofile", "-c", &program, "bash"])
            .arg(script),
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn board_names(boards_dir: Option<&Path>) -> Vec<String> {
    let mut c = boardsmith();
    c.args(["boards", "--json"]);
    if let Some(d) = boards_dir {
        c.arg("--boards-dir").arg(d);
    }
    let out = run_ok(&mut c);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn board_arguments_complete_to_the_board_names() {
    let d = tempfile::tempdir().unwrap();
    let boards = d.path().join("boards");
    std::fs::create_dir(&boards).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("boards/cubieboard.toml"),
        boards.join("myboard.toml"),
    )
    .unwrap();
    // Every command with a BOARD argument, from clap's definition (positional, or --board).
    let cli = cli_definition::Cli::command();
    let contexts: Vec<String> = cli
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .filter_map(|c| {
            let a = c.get_arguments().find(|a| a.get_id() == "board")?;
            Some(match a.get_long() {
                Some(l) => format!("{} --{l}", c.get_name()),
                None => c.get_name().to_string(),
            })
        })
        .collect();
    let commands = [
        "show",
        "build",
        "rootfs",
        "kconfig",
        "kernel",
        "boot --board",
    ];
    support::assert_has_all(&contexts, &commands);
    for (dir, must_have) in [(None, "cubieboard"), (Some(boards.as_path()), "myboard")] {
        let names = board_names(dir);
        assert!(names.iter().any(|n| n == must_have), "{names:?}");
        let mut c = boardsmith();
        c.args(["completions", "bash"]);
        if let Some(d) = dir {
            c.arg("--boards-dir").arg(d);
        }
        let script = d.path().join("boardsmith.bash");
        std::fs::write(&script, run_ok(&mut c).stdout).unwrap();
        for context in &contexts {
            let offered = complete(&script, context);
            for n in &names {
                assert!(offered.contains(n), "{context}: {n} not in {offered:?}");
            }
        }
        // Not offered where no board goes.
        let offered = complete(&script, "write");
        assert!(
            !offered.iter().any(|o| names.contains(o)),
            "write: {offered:?}"
        );
    }
}

/// `--boards-dir` belongs to the commands that read a board profile (a BOARD argument, `boards`,
/// `completions`), from one flattened definition; anywhere else it would have no effect, so clap
/// refuses it there as an unknown option (exit 2) instead of ignoring it.
#[test]
fn boards_dir_only_where_a_profile_is_read() {
    let cli = cli_definition::Cli::command();
    for c in cli.get_subcommands().filter(|c| !c.is_hide_set()) {
        let reads_profiles = c.get_arguments().any(|a| a.get_id() == "board")
            || ["boards", "completions"].contains(&c.get_name());
        let takes_dir = c
            .get_arguments()
            .any(|a| a.get_long() == Some("boards-dir"));
        assert_eq!(
            takes_dir,
            reads_profiles,
            "{}: --boards-dir offered {takes_dir}, reads profiles {reads_profiles}",
            c.get_name()
        );
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_string_lossy().into_owned();
    for args in [
        &["write", "a.img", "b.img"][..],
        &["grow", "b.img"],
        &["cache", "list"],
        &["man"],
    ] {
        support::run_err(boardsmith().args(args).args(["--boards-dir", &dir]))
            .expect(2, &["--boards-dir"]);
    }
    // Where it belongs it is read: a profile only that directory has is found.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("boards/cubieboard.toml"),
        d.path().join("myboard.toml"),
    )
    .unwrap();
    run_ok(boardsmith().args(["show", "myboard", "--boards-dir", &dir]));
}
