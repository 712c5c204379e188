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
    if let Some(d) = boards_dir {
        c.arg("--boards-dir").arg(d);
    }
    let out = run_ok(c.args(["boards", "--json"]));
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
        if let Some(d) = dir {
            c.arg("--boards-dir").arg(d);
        }
        let script = d.path().join("boardsmith.bash");
        std::fs::write(&script, run_ok(c.args(["completions", "bash"])).stdout).unwrap();
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
