//! The README's quickstart, run as written: every line of its shell block,
//! in order, against a real three-broker cluster, with `brook` on the
//! PATH. A line that fails, fails the test with what it printed.

use crate::harness;

use std::process::Command;

use harness::{TestCluster, BROOK};

/// The lines of the first ```sh block after `## Quickstart`.
fn quickstart_lines() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).expect("README.md");
    let section = &readme[readme.find("## Quickstart").expect("a Quickstart section")..];
    let block = &section[section.find("```sh\n").expect("a shell block") + "```sh\n".len()..];
    let block = &block[..block.find("```").expect("the block's end")];
    block.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')).map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_quickstart_command_runs_as_written() {
    let cluster = TestCluster::start(3).await;
    let work = tempfile::tempdir().expect("a working directory");
    // `brook` on the PATH, as the README's alias gives it.
    let bin = work.path().join("bin");
    std::fs::create_dir(&bin).expect("bin dir");
    std::os::unix::fs::symlink(BROOK, bin.join("brook")).expect("link brook");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let lines = quickstart_lines();
    assert!(lines.len() > 20, "the quickstart has its commands: {lines:?}");
    let mut outputs = Vec::new();
    for line in &lines {
        let output = Command::new("bash")
            .args(["-o", "pipefail", "-c", line])
            .current_dir(work.path())
            .env("PATH", &path)
            .env("BROOK_BOOTSTRAP", cluster.bootstrap())
            .env_remove("RUST_LOG")
            .output()
            .expect("run bash");
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(
            output.status.success(),
            "README line failed: {line}\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        outputs.push((line.clone(), stdout));
    }
    let printed = |prefix: &str| {
        outputs.iter().find(|(line, _)| line.starts_with(prefix)).map(|(_, out)| out.clone()).expect(prefix)
    };
    assert_eq!(printed("brook consume copy").lines().count(), 11, "the copy holds every record");
    assert!(printed("brook consume copy").contains("alice=1 [source=quickstart]"));
    assert!(printed("brook group list").contains("audit\tstate=Empty"));
    assert!(printed("brook consume orders --group audit --idle-timeout").is_empty(), "the group resumed at its end");
    assert!(std::fs::read_to_string(work.path().join("brook.bash")).expect("completions").contains("_brook"));
}

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"))).expect(path)
}

/// The code map names only files and directories that exist.
#[test]
fn every_path_in_the_code_map_exists() {
    let map = repo_file("docs/architecture.md");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut checked = 0;
    for quoted in map.split('`').skip(1).step_by(2) {
        let looks_like_a_path =
            (quoted.starts_with("crates/") || quoted.starts_with("tests/") || quoted.starts_with("proto/"))
                && !quoted.contains(' ');
        if looks_like_a_path {
            assert!(root.join(quoted).exists(), "docs/architecture.md names {quoted}, which does not exist");
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} paths found in the code map");
}

/// The README's settings table has a row for every broker setting.
#[test]
fn the_settings_table_lists_every_setting() {
    let readme = repo_file("README.md");
    let table = &readme[readme.find("## Configuration").expect("a Configuration section")..];
    for field in brook_broker::BrokerConfig::FIELDS {
        let wanted = if *field == "cluster_secret" { "cluster_secret_file".to_string() } else { field.to_string() };
        assert!(table.contains(&format!("| `{wanted}` |")), "the README's settings table lacks {wanted}");
    }
}
