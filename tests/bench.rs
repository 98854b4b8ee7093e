//! `brook bench` against a real broker, in its short form: the JSON it
//! prints has the fields scripts rely on, and the figures are sane.

use crate::harness;

use harness::Broker;

fn bench_json(broker: &Broker, args: &[&str]) -> serde_json::Value {
    let output = broker.command().arg("bench").args(args).arg("--json").output().expect("run brook bench");
    assert!(output.status.success(), "brook bench {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("one JSON object on stdout")
}

fn number(value: &serde_json::Value, field: &str) -> f64 {
    value[field].as_f64().unwrap_or_else(|| panic!("field {field} missing in {value}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_produce_consume_and_e2e_print_their_results_as_json() {
    let broker = Broker::start().await;
    let produced = bench_json(&broker, &["produce", "--topic", "b", "--partitions", "2", "--records", "20000"]);
    assert_eq!(number(&produced, "records"), 20000.0);
    for field in
        ["records_per_sec", "mb_per_sec", "latency_ms_p50", "latency_ms_p99", "latency_ms_p999", "latency_ms_max"]
    {
        assert!(number(&produced, field) > 0.0, "{field} in {produced}");
    }
    assert!(number(&produced, "latency_ms_p50") <= number(&produced, "latency_ms_p99"));
    assert!(number(&produced, "latency_ms_p99") <= number(&produced, "latency_ms_max"));
    let setup = &produced["setup"];
    assert_eq!(setup["brokers"], 1);
    assert_eq!(setup["partitions"], 2);
    assert_eq!(setup["replication_factor"], 1);
    assert_eq!(setup["acks"], "1");
    assert_eq!(setup["record_size"], 100);
    assert_eq!(setup["batch_size"], 16384);
    assert_eq!(setup["linger_ms"], 5);
    assert_eq!(setup["flush_policy"], "none");

    let consumed = bench_json(&broker, &["consume", "--topic", "b", "--records", "20000"]);
    assert_eq!(number(&consumed, "records"), 20000.0);
    assert!(number(&consumed, "records_per_sec") > 0.0 && number(&consumed, "mb_per_sec") > 0.0);

    let e2e = bench_json(&broker, &["e2e", "--topic", "e", "--records", "2000", "--throughput", "2000"]);
    assert_eq!(number(&e2e, "records"), 2000.0);
    assert!(number(&e2e, "latency_ms_p99") > 0.0);

    let limits = broker
        .command()
        .args(["bench", "limits", "--bytes", "8388608", "--json", "--dir"])
        .arg(broker.dir())
        .output()
        .expect("run limits");
    assert!(limits.status.success(), "{}", String::from_utf8_lossy(&limits.stderr));
    let limits: serde_json::Value = serde_json::from_slice(&limits.stdout).expect("JSON");
    for field in [
        "disk_write_mb_per_sec",
        "disk_read_mb_per_sec",
        "loopback_mb_per_sec",
        "file_to_loopback_copy_mb_per_sec",
        "file_to_loopback_sendfile_mb_per_sec",
    ] {
        assert!(number(&limits, field) > 0.0, "{field} in {limits}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_drawn_only_on_a_terminal_and_a_pipe_gets_just_the_results() {
    let broker = Broker::start().await;
    let output = broker
        .command()
        .args(["bench", "produce", "--topic", "p", "--records", "200000", "--record-size", "10"])
        .output()
        .expect("run brook bench produce");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains('\r') && !stderr.contains("records acked"), "progress on a pipe: {stderr:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("200000 records sent"));
}
