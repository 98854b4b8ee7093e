//! `brook bench` against a real broker, in its short form: the JSON it
//! prints has the fields scripts rely on, and the figures are sane.

mod harness;

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
async fn the_prototype_sendfile_fetch_reads_what_grpc_reads_and_refuses_bad_frames() {
    use std::io::{Read, Write};

    let sendfile_address = format!("127.0.0.1:{}", harness::free_port());
    let broker = Broker::start_with(&["--raw-listen", &sendfile_address]).await;
    bench_json(&broker, &["produce", "--topic", "s", "--partitions", "3", "--records", "30000"]);
    let grpc = bench_json(&broker, &["consume", "--topic", "s", "--records", "30000"]);
    let sendfile =
        bench_json(&broker, &["consume", "--topic", "s", "--records", "30000", "--sendfile", &sendfile_address]);
    assert_eq!(sendfile["transport"], "sendfile");
    assert_eq!(grpc["transport"], "grpc");
    assert_eq!(number(&sendfile, "records"), 30000.0);
    let per_record = |value: &serde_json::Value| number(value, "mb_per_sec") / number(value, "records_per_sec");
    assert!(
        (per_record(&sendfile) - per_record(&grpc)).abs() < 1e-9,
        "the same value bytes per record either way: {sendfile} vs {grpc}"
    );

    // An oversized frame and an unknown topic: an error answer, and the
    // broker keeps serving.
    let mut raw = std::net::TcpStream::connect(&sendfile_address).expect("connect");
    raw.write_all(&1_000_000u32.to_be_bytes()).expect("write");
    raw.write_all(&[0]).expect("write"); // a fetch
    let mut status = [0u8; 1];
    raw.read_exact(&mut status).expect("status");
    assert_eq!(status[0], 1, "an error answer");
    let mut length = [0u8; 4];
    raw.read_exact(&mut length).expect("length");
    let mut message = vec![0u8; u32::from_be_bytes(length) as usize];
    raw.read_exact(&mut message).expect("message");
    assert!(String::from_utf8_lossy(&message).contains("at most"), "{}", String::from_utf8_lossy(&message));

    let mut raw = std::net::TcpStream::connect(&sendfile_address).expect("connect");
    let topic = b"nope";
    let mut frame = (1 + 2 + topic.len() as u32 + 16).to_be_bytes().to_vec();
    frame.push(0); // fetch
    frame.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    frame.extend_from_slice(topic);
    frame.extend_from_slice(&0u32.to_be_bytes());
    frame.extend_from_slice(&0i64.to_be_bytes());
    frame.extend_from_slice(&1024u32.to_be_bytes());
    raw.write_all(&frame).expect("write");
    raw.read_exact(&mut status).expect("status");
    assert_eq!(status[0], 1);
    raw.read_exact(&mut length).expect("length");
    let mut message = vec![0u8; u32::from_be_bytes(length) as usize];
    raw.read_exact(&mut message).expect("message");
    assert!(String::from_utf8_lossy(&message).contains("topic 'nope' does not exist"));
    let again =
        bench_json(&broker, &["consume", "--topic", "s", "--records", "30000", "--sendfile", &sendfile_address]);
    assert_eq!(number(&again, "records"), 30000.0, "still serving");
}

/// Reads one answer of the prototype plain-TCP transport: `Ok` with the
/// produce answer's two offsets, or `Err` with the error message.
fn raw_answer(stream: &mut std::net::TcpStream) -> Result<(i64, i64), String> {
    use std::io::Read;

    let mut status = [0u8; 1];
    stream.read_exact(&mut status).expect("status");
    if status[0] == 0 {
        let mut offsets = [0u8; 16];
        stream.read_exact(&mut offsets).expect("offsets");
        let base = i64::from_be_bytes(offsets[..8].try_into().expect("8 bytes"));
        let last = i64::from_be_bytes(offsets[8..].try_into().expect("8 bytes"));
        return Ok((base, last));
    }
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).expect("length");
    let mut message = vec![0u8; u32::from_be_bytes(length) as usize];
    stream.read_exact(&mut message).expect("message");
    Err(String::from_utf8_lossy(&message).into_owned())
}

/// A raw produce frame: `batches` for `topic`-`partition`, acks=1.
fn raw_produce_frame(topic: &str, partition: u32, batches: &[u8]) -> Vec<u8> {
    let mut frame = ((1 + 2 + topic.len() + 4 + 1 + batches.len()) as u32).to_be_bytes().to_vec();
    frame.push(1); // produce
    frame.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    frame.extend_from_slice(topic.as_bytes());
    frame.extend_from_slice(&partition.to_be_bytes());
    frame.push(2); // brook.v1.Acks.ACKS_LEADER
    frame.extend_from_slice(batches);
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prototype_raw_produce_stores_what_grpc_reads_and_refuses_bad_input() {
    use std::io::Write;

    let raw_address = format!("127.0.0.1:{}", harness::free_port());
    let broker = Broker::start_with(&["--raw-listen", &raw_address]).await;
    let produced = bench_json(
        &broker,
        &["produce", "--topic", "r", "--partitions", "2", "--records", "30000", "--raw", &raw_address],
    );
    assert_eq!(produced["transport"], "raw");
    assert_eq!(number(&produced, "records"), 30000.0);
    assert!(number(&produced, "latency_ms_p99") > 0.0, "{produced}");
    // The warm-up's two records (one per partition) and the 30,000.
    let consumed = bench_json(&broker, &["consume", "--topic", "r", "--records", "30002"]);
    assert_eq!(number(&consumed, "records"), 30002.0);

    // A well-formed record batch, taken from the log through the sendfile
    // fetch, is accepted again as a produce on the same connection.
    let mut stream = std::net::TcpStream::connect(&raw_address).expect("connect");
    let topic = b"r";
    let mut fetch = (1 + 2 + topic.len() as u32 + 16).to_be_bytes().to_vec();
    fetch.push(0);
    fetch.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    fetch.extend_from_slice(topic);
    fetch.extend_from_slice(&0u32.to_be_bytes());
    fetch.extend_from_slice(&0i64.to_be_bytes());
    fetch.extend_from_slice(&1u32.to_be_bytes()); // at least one whole batch
    stream.write_all(&fetch).expect("write");
    let batch = {
        use std::io::Read;
        let mut head = [0u8; 25];
        stream.read_exact(&mut head).expect("fetch answer");
        assert_eq!(head[0], 0, "the fetch is answered");
        let mut batch = vec![0u8; u64::from_be_bytes(head[17..25].try_into().expect("8 bytes")) as usize];
        stream.read_exact(&mut batch).expect("batch");
        batch
    };
    stream.write_all(&raw_produce_frame("r", 0, &batch)).expect("write");
    let (base, last) = raw_answer(&mut stream).expect("a valid batch is appended");
    assert!(base > 0 && last >= base, "{base}..{last}");

    // A corrupt batch, an unknown topic, a partition this broker does not
    // have: each answered with its error, the connection goes on.
    let mut corrupt = batch.clone();
    let last_byte = corrupt.len() - 1;
    corrupt[last_byte] ^= 0xff;
    stream.write_all(&raw_produce_frame("r", 0, &corrupt)).expect("write");
    let refused = raw_answer(&mut stream).expect_err("a corrupt batch is refused");
    assert!(refused.starts_with("CORRUPT_RECORD"), "{refused}");
    stream.write_all(&raw_produce_frame("nope", 0, &batch)).expect("write");
    let refused = raw_answer(&mut stream).expect_err("an unknown topic is refused");
    assert!(refused.contains("topic 'nope' does not exist"), "{refused}");
    stream.write_all(&raw_produce_frame("r", 7, &batch)).expect("write");
    assert!(raw_answer(&mut stream).expect_err("no partition 7").starts_with("UNKNOWN_TOPIC_OR_PARTITION"));

    // An unknown kind and an empty produce: answered, then the connection
    // ends; the broker serves on.
    stream.write_all(&[0, 0, 0, 1, 9]).expect("write");
    assert!(raw_answer(&mut stream).expect_err("unknown kind").contains("unknown request kind 9"));
    let mut stream = std::net::TcpStream::connect(&raw_address).expect("connect");
    stream.write_all(&raw_produce_frame("r", 0, &[])).expect("write");
    assert!(raw_answer(&mut stream).expect_err("no batch").contains("at least one batch"));

    // Nothing stored was damaged: everything before, plus the one batch
    // appended again, reads back through gRPC.
    let again = bench_json(&broker, &["consume", "--topic", "r", "--records", "30002"]);
    assert_eq!(number(&again, "records"), 30002.0, "still serving, nothing lost");
}
