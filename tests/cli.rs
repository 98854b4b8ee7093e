//! The `brook` command line against a real broker: the produce/consume
//! round trip, topic commands, and one-line errors with non-zero exits.

use crate::harness;

use std::io::Write;
use std::process::{Output, Stdio};

use harness::Broker;

fn run(broker: &Broker, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = broker
        .command()
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run brook");
    if let Some(input) = stdin {
        child.stdin.take().expect("stdin").write_all(input).expect("write stdin");
    }
    child.wait_with_output().expect("brook finishes")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_through_produce_and_consume_prints_the_same_lines() {
    let broker = Broker::start().await;
    let created = run(&broker, &["topic", "create", "t"], None);
    assert!(created.status.success(), "{}", text(&created.stderr));

    let lines: String = (1..=100_000).map(|n| format!("{n}\n")).collect();
    let produced = run(&broker, &["produce", "t"], Some(lines.as_bytes()));
    assert!(produced.status.success(), "produce failed: {}", text(&produced.stderr));

    let consumed = run(&broker, &["consume", "t", "--from-beginning", "--max-messages", "100000"], None);
    assert!(consumed.status.success(), "consume failed: {}", text(&consumed.stderr));
    assert!(text(&consumed.stdout) == lines, "consume printed other lines than were produced");

    // Keys, offsets, and stopping when idle.
    let keyed = run(&broker, &["produce", "t", "--key-separator", ":", "--acks", "1"], Some(b"k1:v1\nk2:v2\n"));
    assert!(keyed.status.success(), "{}", text(&keyed.stderr));
    let tail = run(
        &broker,
        &["consume", "t", "--offset", "100000", "--print-key", "--print-offset", "--idle-timeout", "500"],
        None,
    );
    assert!(tail.status.success(), "{}", text(&tail.stderr));
    assert_eq!(text(&tail.stdout), "0:100000\tk1\tv1\n0:100001\tk2\tv2\n");

    // acks=0 does not wait for the broker, but the records still land.
    let unacknowledged = run(&broker, &["produce", "t", "--acks", "0"], Some(b"fire\nforget\n"));
    assert!(unacknowledged.status.success(), "{}", text(&unacknowledged.stderr));
    let landed = run(&broker, &["consume", "t", "--offset", "100002", "--max-messages", "2"], None);
    assert_eq!(text(&landed.stdout), "fire\nforget\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_commands_and_errors_are_one_clear_line_with_a_nonzero_exit() {
    let broker = Broker::start().await;
    let created =
        run(&broker, &["topic", "create", "payments", "--partitions", "3", "--config", "retention.ms=60000"], None);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let listed = run(&broker, &["topic", "list"], None);
    assert_eq!(text(&listed.stdout), "payments\tpartitions=3\treplication-factor=1\n");
    let described = run(&broker, &["topic", "describe", "payments"], None);
    let description = text(&described.stdout);
    assert!(
        description.contains("retention.ms=60000") && description.contains("partition 2\tleader=1"),
        "{description}"
    );

    for (args, stdin, expected) in [
        (vec!["topic", "create", "payments"], None, "error: topic 'payments' already exists\n"),
        (vec!["topic", "describe", "nope"], None, "error: topic 'nope' does not exist\n"),
        (
            vec!["produce", "nope"],
            Some(&b"x\n"[..]),
            "error: 0 of 1 records were acknowledged; first error: topic 'nope' does not exist\n",
        ),
        (
            vec!["produce", "payments", "--partition", "7"],
            Some(&b"x\n"[..]),
            "error: 0 of 1 records were acknowledged; first error: topic 'payments' has 3 partitions; partition 7 does not exist\n",
        ),
    ] {
        let output = run(&broker, &args, stdin);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert_eq!(text(&output.stderr), expected, "{args:?}");
    }

    let long_key = "k".repeat(256);
    let refused = run(&broker, &["produce", "payments", "--producer-key", &long_key], Some(b"x\n"));
    assert!(!refused.status.success());
    assert_eq!(
        text(&refused.stderr),
        format!(
            "error: 0 of 1 records were acknowledged; first error: invalid request: invalid producer key '{long_key}': \
             must be 1-255 bytes without NUL\n"
        )
    );

    let unreachable = broker.command().args(["--bootstrap", "127.0.0.1:1", "topic", "list"]).output().expect("run");
    assert!(!unreachable.status.success());
    let message = text(&unreachable.stderr);
    assert!(
        message.starts_with("error: no broker reachable at 127.0.0.1:1") && message.lines().count() == 1,
        "{message}"
    );

    let deleted = run(&broker, &["topic", "delete", "payments"], None);
    assert!(deleted.status.success(), "{}", text(&deleted.stderr));
    assert_eq!(text(&run(&broker, &["topic", "list"], None).stdout), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reads_a_config_file_and_flags_override_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file_port = harness::free_port();
    let flag_port = harness::free_port();
    let config = dir.path().join("brook.toml");
    std::fs::write(
        &config,
        format!(
            "id = 7\nlisten = \"127.0.0.1:{file_port}\"\ndata_dir = \"{}\"\nmax_fetch_bytes = 65536\n",
            dir.path().join("data").display()
        ),
    )
    .expect("write config");
    // The file sets id, listen and data dir; --listen overrides the file.
    let flag_address = format!("127.0.0.1:{flag_port}");
    let child = std::process::Command::new(harness::BROOK)
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", &flag_address, "--kafka-listen", "off"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start brook serve");
    let child = harness::KillOnDrop(child);
    let admin = harness::eventually("the broker on the flag's port", std::time::Duration::from_secs(30), || {
        let address = flag_address.clone();
        async move { brook_client::Admin::connect(&address).await.map_err(|e| e.to_string()) }
    })
    .await;
    let cluster = admin.describe_cluster().await.expect("describe");
    assert_eq!(cluster.brokers[0].id, 7, "the id comes from the file");
    assert!(dir.path().join("data").join("metadata").exists(), "the data dir comes from the file");
    drop(child);

    std::fs::write(&config, "colour = \"blue\"\n").expect("write config");
    let refused =
        std::process::Command::new(harness::BROOK).args(["serve", "--config"]).arg(&config).output().expect("run");
    assert!(!refused.status.success());
    let message = text(&refused.stderr);
    assert!(message.contains("invalid config file") && message.contains("colour"), "{message}");

    // Settings out of their limits are refused at start, each by name.
    let data = dir.path().join("data").display().to_string();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "short").expect("write secret");
    let cases: [(&str, &[&str], &str); 5] = [
        ("heartbeat_interval_ms = 0\n", &[], "heartbeat_interval_ms must be positive"),
        ("session_timeout_ms = 150\n", &[], "session_timeout_ms (150) must be at least two heartbeat intervals"),
        ("", &["--peers", "1=127.0.0.1:1,2=127.0.0.1:2"], "--internal-listen is required with --peers"),
        ("", &["--peers", "1=127.0.0.1:1,2=127.0.0.1:2", "--internal-listen", "127.0.0.1:0"], "needs a secret"),
        ("", &["--cluster-secret-file", &secret.display().to_string()], "at least 16 printable ASCII characters"),
    ];
    for (file, flags, expected) in cases {
        std::fs::write(&config, format!("data_dir = \"{data}\"\n{file}")).expect("write config");
        let refused = std::process::Command::new(harness::BROOK)
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .args(flags)
            .env_remove("BROOK_CLUSTER_SECRET")
            .output()
            .expect("run");
        assert!(!refused.status.success(), "{file}{flags:?} was accepted");
        let message = text(&refused.stderr);
        assert!(message.contains(expected), "{file}{flags:?}: {message}");
    }
}

#[test]
fn serve_refuses_a_data_dir_in_the_old_single_node_format() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(data_dir.join("catalog")).expect("an old catalog");
    let port = harness::free_port();
    let refused = std::process::Command::new(harness::BROOK)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&data_dir)
        .output()
        .expect("run brook serve");
    assert!(!refused.status.success(), "an old data dir is refused");
    let message = text(&refused.stderr);
    assert!(message.contains("old single-node format") && message.contains("empty data directory"), "{message}");
    assert!(data_dir.join("catalog").is_dir(), "nothing in it is touched");
    assert!(!data_dir.join("metadata").exists(), "nothing is added to it");
}

#[test]
fn serve_settings_come_from_flag_then_environment_then_file_and_print_config_says_which() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("brook.toml");
    std::fs::write(
        &config,
        "data_dir = \"/from/file\"\nmax_connections = 50\nsession_timeout_ms = 900\nmax_fetch_bytes = 65536\n",
    )
    .expect("write config");
    let printed = std::process::Command::new(harness::BROOK)
        .args(["serve", "--print-config", "--max-connections", "70", "--config"])
        .arg(&config)
        .env("BROOK_DATA_DIR", "/from/env")
        .env("BROOK_SESSION_TIMEOUT_MS", "950")
        .env("BROOK_MAX_CONNECTIONS", "60")
        .env_remove("BROOK_CLUSTER_SECRET")
        .output()
        .expect("run brook serve --print-config");
    assert!(printed.status.success(), "{}", text(&printed.stderr));
    let shown = text(&printed.stdout);
    for line in [
        "max_connections = 70  # flag --max-connections",
        "data_dir = \"/from/env\"  # environment BROOK_DATA_DIR",
        "session_timeout_ms = 950  # environment BROOK_SESSION_TIMEOUT_MS",
        &format!("max_fetch_bytes = 65536  # file {}", config.display()),
        "heartbeat_interval_ms = 100  # default",
    ] {
        assert!(shown.lines().any(|shown| shown == line), "missing '{line}' in:\n{shown}");
    }
    // A bad value from the environment is refused, naming the setting.
    let refused = std::process::Command::new(harness::BROOK)
        .args(["serve", "--print-config"])
        .env("BROOK_MAX_CONNECTIONS", "lots")
        .output()
        .expect("run");
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("--max-connections"), "{}", text(&refused.stderr));
    let refused = std::process::Command::new(harness::BROOK)
        .args(["serve", "--print-config"])
        .env("BROOK_HEARTBEAT_INTERVAL_MS", "0")
        .output()
        .expect("run");
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("heartbeat_interval_ms must be positive"), "{}", text(&refused.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_json_object_per_line() {
    let mut broker = harness::Broker::start_with(&["--log-format", "json"]).await;
    let status = broker.terminate();
    assert!(status.success(), "{status}");
    let log = broker.log();
    let mut messages = Vec::new();
    for line in log.lines() {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
        assert!(object["timestamp"].is_string() && object["level"].is_string(), "{line}");
        messages.push(object["fields"]["message"].as_str().unwrap_or_default().to_string());
    }
    assert!(messages.iter().any(|message| message.contains("ready on")), "{log}");
    assert!(messages.iter().any(|message| message.contains("logs closed cleanly")), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_consume_output_round_trips_through_json_produce_byte_exact() {
    let broker = Broker::start().await;
    for topic in ["first", "second"] {
        assert!(run(&broker, &["topic", "create", topic], None).status.success());
    }
    // Binary and text keys, values and headers, a null value, a set timestamp.
    let input = concat!(
        "{\"key\":{\"base64\":\"AP8=\"},\"value\":{\"base64\":\"gICA/w==\"},\"headers\":[{\"key\":\"h\",\"value\":{\"base64\":\"AQI=\"}}],\"timestamp_ms\":1700000000123}\n",
        "{\"key\":\"plain\",\"value\":\"tab\\tand newline\\n\",\"headers\":[{\"key\":\"empty\",\"value\":null}]}\n",
        "{\"key\":null,\"value\":null}\n",
    );
    let produced =
        run(&broker, &["produce", "first", "--format", "json", "--header", "via=cli"], Some(input.as_bytes()));
    assert!(produced.status.success(), "{}", text(&produced.stderr));
    let consume_json = |topic: &str| {
        let output =
            run(&broker, &["consume", topic, "--from-beginning", "--max-messages", "3", "--format", "json"], None);
        assert!(output.status.success(), "{}", text(&output.stderr));
        text(&output.stdout)
    };
    let first = consume_json("first");
    assert_eq!(first.lines().count(), 3, "{first}");
    let produced = run(&broker, &["produce", "second", "--format", "json"], Some(first.as_bytes()));
    assert!(produced.status.success(), "{}", text(&produced.stderr));
    let second = consume_json("second");
    // Everything but where the record was read is the same.
    let comparable = |lines: &str| -> Vec<serde_json::Value> {
        lines
            .lines()
            .map(|line| {
                let mut record: serde_json::Value = serde_json::from_str(line).expect("JSON");
                let object = record.as_object_mut().expect("an object");
                object.remove("topic");
                record
            })
            .collect()
    };
    assert_eq!(comparable(&first), comparable(&second));
    let records = comparable(&first);
    assert_eq!(records[0]["key"], serde_json::json!({"base64": "AP8="}));
    assert_eq!(records[0]["value"], serde_json::json!({"base64": "gICA/w=="}));
    assert_eq!(records[0]["timestamp_ms"], 1_700_000_000_123i64);
    assert_eq!(records[0]["headers"][1], serde_json::json!({"key": "via", "value": "cli"}));
    assert_eq!(records[1]["value"], "tab\tand newline\n");
    assert!(records[2]["value"].is_null() && records[2]["key"].is_null());

    let templated = run(
        &broker,
        &["consume", "first", "--from-beginning", "--max-messages", "3", "--format", "{offset}|{key}|{headers}\\n"],
        None,
    );
    assert!(templated.status.success(), "{}", text(&templated.stderr));
    assert!(
        templated.stdout.starts_with(b"0|\x00\xff|h=\x01\x02,via=cli\n1|plain|empty=null,via=cli\n"),
        "{:?}",
        templated.stdout
    );
    let bad = run(&broker, &["produce", "first", "--format", "json"], Some(b"{\"value\": 5}\n"));
    assert!(!bad.status.success() && text(&bad.stderr).contains("line 1 is not a record"), "{}", text(&bad.stderr));
    let bad_format = run(&broker, &["consume", "first", "--format", "xml"], None);
    assert!(!bad_format.status.success() && text(&bad_format.stderr).contains("--format must be"));
}

#[test]
fn completions_are_generated_for_each_shell() {
    for (shell, expected) in [("bash", "_brook()"), ("zsh", "#compdef brook"), ("fish", "complete -c brook")] {
        let output = std::process::Command::new(harness::BROOK).args(["completions", shell]).output().expect("run");
        assert!(output.status.success(), "{shell}: {}", text(&output.stderr));
        let script = text(&output.stdout);
        assert!(script.contains(expected) && script.contains("reset-offsets"), "{shell}: {script}");
    }
    let unknown = std::process::Command::new(harness::BROOK).args(["completions", "cmd.exe"]).output().expect("run");
    assert!(!unknown.status.success() && text(&unknown.stderr).contains("possible values"));
}

/// The partition lines of `brook topic describe`.
fn described_partitions(broker: &Broker, topic: &str) -> Vec<String> {
    let described = run(broker, &["topic", "describe", topic], None);
    assert!(described.status.success(), "{}", text(&described.stderr));
    text(&described.stdout).lines().filter(|line| line.starts_with("partition ")).map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alter_config_changes_retention_and_add_partitions_grows_a_topic_producers_then_use() {
    let broker = Broker::start_with(&["--log-maintenance-interval-ms", "200"]).await;
    assert!(run(&broker, &["topic", "create", "a"], None).status.success());
    let lines: String = (0..2000).map(|index| format!("record-{index:06}-{}\n", "x".repeat(64))).collect();
    assert!(run(&broker, &["produce", "a"], Some(lines.as_bytes())).status.success());
    let altered = run(
        &broker,
        &["topic", "alter-config", "a", "--set", "segment.bytes=16384", "--set", "retention.bytes=32768"],
        None,
    );
    assert!(altered.status.success(), "{}", text(&altered.stderr));
    assert!(text(&altered.stdout).contains("retention.bytes=32768"), "{}", text(&altered.stdout));
    // The next appends roll small segments, and retention drops the old ones.
    assert!(run(&broker, &["produce", "a"], Some(lines.as_bytes())).status.success());
    let start = harness::eventually("retention moved the log start", std::time::Duration::from_secs(20), || async {
        let described = described_partitions(&broker, "a");
        let line = described.first().cloned().unwrap_or_default();
        let start: i64 = line
            .split('\t')
            .find_map(|field| field.strip_prefix("log-start="))
            .and_then(|value| value.parse().ok())
            .unwrap_or(0);
        if start > 0 {
            Ok(start)
        } else {
            Err(line)
        }
    })
    .await;
    assert!(start > 2000, "the records before the change are gone: log start {start}");
    let deleted = run(&broker, &["topic", "alter-config", "a", "--delete", "retention.bytes"], None);
    assert!(
        deleted.status.success() && text(&deleted.stdout).contains("retention.bytes=-1"),
        "{}",
        text(&deleted.stdout)
    );
    let bad = run(&broker, &["topic", "alter-config", "a", "--set", "retention.ms=soon"], None);
    assert!(!bad.status.success() && text(&bad.stderr).contains("retention.ms"), "{}", text(&bad.stderr));

    assert!(run(&broker, &["topic", "create", "g", "--partitions", "2"], None).status.success());
    let grown = run(&broker, &["topic", "add-partitions", "g", "--to", "4"], None);
    assert!(grown.status.success() && text(&grown.stdout).contains("now has 4 partitions"), "{}", text(&grown.stderr));
    let shrink = run(&broker, &["topic", "add-partitions", "g", "--to", "3"], None);
    assert!(!shrink.status.success() && text(&shrink.stderr).contains("can only grow"), "{}", text(&shrink.stderr));
    let produced = run(&broker, &["produce", "g", "--partition", "3"], Some(b"on the new partition\n"));
    assert!(produced.status.success(), "{}", text(&produced.stderr));
    let consumed = run(&broker, &["consume", "g", "--partition", "3", "--from-beginning", "--max-messages", "1"], None);
    assert_eq!(text(&consumed.stdout), "on the new partition\n");
}

#[test]
fn every_command_has_an_example_in_its_help() {
    let commands: &[&[&str]] = &[
        &["serve"],
        &["dev"],
        &["health"],
        &["cluster", "info"],
        &["cluster", "health"],
        &["topic", "create"],
        &["topic", "list"],
        &["topic", "describe"],
        &["topic", "delete"],
        &["topic", "alter-config"],
        &["topic", "add-partitions"],
        &["group", "list"],
        &["group", "describe"],
        &["group", "reset-offsets"],
        &["group", "delete"],
        &["produce"],
        &["consume"],
        &["completions"],
        &["bench", "produce"],
        &["bench", "consume"],
        &["bench", "e2e"],
        &["bench", "metadata"],
        &["bench", "group-commits"],
        &["bench", "limits"],
    ];
    for command in commands {
        let output = std::process::Command::new(harness::BROOK).args(*command).arg("--help").output().expect("run");
        assert!(output.status.success(), "{command:?}: {}", text(&output.stderr));
        assert!(
            text(&output.stdout).contains("Example: "),
            "{command:?} --help has no example:\n{}",
            text(&output.stdout)
        );
    }
}

/// Runs `brook args`, reads `lines` lines of its stdout and closes the pipe
/// (as `| head -n lines` does; 0 closes it before anything is printed);
/// what it printed, its exit and its stderr.
fn run_into_closed_pipe(
    broker: &Broker,
    args: &[&str],
    lines: usize,
) -> (Vec<String>, std::process::ExitStatus, String) {
    use std::io::{BufRead, Read};
    let mut child = broker
        .command()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run brook");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut read = Vec::new();
    for _ in 0..lines {
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read a line");
        read.push(line);
    }
    drop(stdout);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("brook {args:?} still running 30 s after its reader went away");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("stderr");
    (read, status, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_end_quietly_when_their_reader_goes_away() {
    let broker = Broker::start().await;
    let created = run(&broker, &["topic", "create", "piped"], None);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let lines: String = (1..=50_000).map(|n| format!("{n}\n")).collect();
    let produced = run(&broker, &["produce", "piped"], Some(lines.as_bytes()));
    assert!(produced.status.success(), "{}", text(&produced.stderr));
    // `brook consume piped --from-beginning | head -1`: one line read, the
    // rest (far more than a pipe holds) meets a closed pipe.
    let (read, status, stderr) = run_into_closed_pipe(&broker, &["consume", "piped", "--from-beginning"], 1);
    assert_eq!(read, vec!["1\n".to_string()]);
    assert!(status.success() && stderr.is_empty(), "consume into a closed pipe: {status}, stderr {stderr:?}");
    // The reader gone before anything is printed: each printing command.
    for args in [
        &["cluster", "info"][..],
        &["topic", "list"],
        &["topic", "describe", "piped"],
        &["group", "list"],
        &["serve", "--print-config"],
    ] {
        let (_, status, stderr) = run_into_closed_pipe(&broker, args, 0);
        assert!(
            status.success() && stderr.is_empty(),
            "brook {args:?} into a closed pipe: {status}, stderr {stderr:?}"
        );
    }
}
