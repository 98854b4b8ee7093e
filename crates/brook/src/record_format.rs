//! How `brook consume` prints records and `brook produce --format json`
//! reads them back: one JSON object per line,
//!
//! `{"topic":"t","partition":0,"offset":5,"timestamp_ms":1764480000000,
//!   "key":"k","value":"v","headers":[{"key":"h","value":"x"}]}`
//!
//! Bytes that are valid UTF-8 are a JSON string; other bytes are
//! `{"base64":"..."}` (standard alphabet, padded); absent is `null`. So
//! any record, binary or not, survives consume -> produce byte for byte
//! (key, value, headers and timestamp; topic, partition and offset are
//! where it was read, and produce takes them as given only when asked).

use anyhow::Context;
use base64::Engine;
use brook_client::{ConsumerRecord, ProducerRecord};
use bytes::Bytes;
use serde_json::{json, Map, Value};

/// One byte string as JSON.
fn bytes_to_json(bytes: Option<&Bytes>) -> Value {
    match bytes {
        None => Value::Null,
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => Value::String(text.to_string()),
            Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) }),
        },
    }
}

/// One byte string from JSON (`what` names it in errors).
fn bytes_from_json(value: Option<&Value>, what: &str) -> anyhow::Result<Option<Bytes>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(Bytes::copy_from_slice(text.as_bytes()))),
        Some(Value::Object(object)) => {
            let encoded = object
                .get("base64")
                .and_then(Value::as_str)
                .with_context(|| format!("{what}: an object must be {{\"base64\": \"...\"}}"))?;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .with_context(|| format!("{what}: invalid base64"))?;
            Ok(Some(Bytes::from(decoded)))
        }
        Some(other) => anyhow::bail!("{what}: expected a string, {{\"base64\": ...}} or null, not {other}"),
    }
}

/// A consumed record as one line of JSON.
pub fn to_json(record: &ConsumerRecord) -> String {
    let headers: Vec<Value> = record
        .headers
        .iter()
        .map(|(key, value)| json!({ "key": bytes_to_json(Some(key)), "value": bytes_to_json(value.as_ref()) }))
        .collect();
    json!({
        "topic": &*record.topic,
        "partition": record.partition,
        "offset": record.offset.0,
        "timestamp_ms": record.timestamp_ms,
        "key": bytes_to_json(record.key.as_ref()),
        "value": bytes_to_json(record.value.as_ref()),
        "headers": headers,
    })
    .to_string()
}

/// A record to send from one line of JSON (the topic is the command's;
/// `partition` and `timestamp_ms` are used when present, with
/// `keep_partition`).
pub fn from_json(line: &str, topic: std::sync::Arc<str>, keep_partition: bool) -> anyhow::Result<ProducerRecord> {
    let object: Map<String, Value> = serde_json::from_str(line).context("not a JSON object")?;
    let mut record = ProducerRecord::new(topic, Bytes::new());
    record.key = bytes_from_json(object.get("key"), "key")?;
    record.value = bytes_from_json(object.get("value"), "value")?;
    if let Some(timestamp) = object.get("timestamp_ms").filter(|value| !value.is_null()) {
        record.timestamp_ms = Some(timestamp.as_i64().context("timestamp_ms must be an integer (ms)")?);
    }
    if keep_partition {
        if let Some(partition) = object.get("partition").filter(|value| !value.is_null()) {
            let partition = partition.as_u64().and_then(|p| u32::try_from(p).ok());
            record.partition = Some(partition.context("partition must be a non-negative integer")?);
        }
    }
    match object.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Array(headers)) => {
            for header in headers {
                let key = bytes_from_json(header.get("key"), "header key")?.context("a header needs a key")?;
                record.headers.push((key, bytes_from_json(header.get("value"), "header value")?));
            }
        }
        Some(other) => anyhow::bail!("headers must be a list of {{\"key\": ..., \"value\": ...}}, not {other}"),
    }
    Ok(record)
}

/// A record through a template: `{topic}`, `{partition}`, `{offset}`,
/// `{timestamp}`, `{key}`, `{value}` and `{headers}` (k=v,...) replaced;
/// `\n` and `\t` written as such. Bytes are written as they are.
pub fn render_template(template: &str, record: &ConsumerRecord, out: &mut Vec<u8>) {
    let text = |bytes: Option<&Bytes>| bytes.map_or(b"null".to_vec(), |bytes| bytes.to_vec());
    let mut rest = template;
    while let Some(start) = rest.find(['{', '\\']) {
        out.extend_from_slice(&rest.as_bytes()[..start]);
        let tail = &rest[start..];
        let (replacement, used): (Vec<u8>, usize) = if let Some(escaped) = tail.strip_prefix('\\') {
            match escaped.chars().next() {
                Some('n') => (b"\n".to_vec(), 2),
                Some('t') => (b"\t".to_vec(), 2),
                _ => (b"\\".to_vec(), 1),
            }
        } else {
            let field = tail.find('}').map(|end| (&tail[1..end], end + 1));
            match field {
                Some(("topic", used)) => (record.topic.as_bytes().to_vec(), used),
                Some(("partition", used)) => (record.partition.to_string().into_bytes(), used),
                Some(("offset", used)) => (record.offset.0.to_string().into_bytes(), used),
                Some(("timestamp", used)) => (record.timestamp_ms.to_string().into_bytes(), used),
                Some(("key", used)) => (text(record.key.as_ref()), used),
                Some(("value", used)) => (text(record.value.as_ref()), used),
                Some(("headers", used)) => {
                    let mut joined = Vec::new();
                    for (index, (key, value)) in record.headers.iter().enumerate() {
                        if index > 0 {
                            joined.push(b',');
                        }
                        joined.extend_from_slice(key);
                        joined.push(b'=');
                        joined.extend_from_slice(&text(value.as_ref()));
                    }
                    (joined, used)
                }
                _ => (b"{".to_vec(), 1),
            }
        };
        out.extend_from_slice(&replacement);
        rest = &tail[used..];
    }
    out.extend_from_slice(rest.as_bytes());
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use brook_client::Offset;

    use super::*;

    fn record() -> ConsumerRecord {
        ConsumerRecord {
            topic: Arc::from("t"),
            partition: 2,
            offset: Offset(7),
            timestamp_ms: 1_764_480_000_000,
            key: Some(Bytes::from_static(b"k\xff\x00")),
            value: Some(Bytes::from_static("välue\n".as_bytes())),
            headers: vec![
                (Bytes::from_static(b"h"), None),
                (Bytes::from_static(b"b"), Some(Bytes::from_static(b"\x01"))),
            ],
        }
    }

    #[test]
    fn json_round_trips_binary_keys_values_and_headers() {
        let line = to_json(&record());
        assert!(line.contains("\"value\":\"välue\\n\"") && line.contains("{\"base64\":\"a/8A\"}"), "{line}");
        let back = from_json(&line, Arc::from("other"), true).expect("parse");
        let original = record();
        assert_eq!(back.key, original.key);
        assert_eq!(back.value, original.value);
        assert_eq!(back.headers, original.headers);
        assert_eq!(back.timestamp_ms, Some(original.timestamp_ms));
        assert_eq!(back.partition, Some(2));
        assert_eq!(&*back.topic, "other");
    }

    #[test]
    fn bad_json_lines_are_refused_with_what_is_wrong() {
        for (line, expected) in [
            ("nope", "not a JSON object"),
            ("{\"value\": 5}", "value: expected a string"),
            ("{\"value\": {\"base64\": \"***\"}}", "invalid base64"),
            ("{\"headers\": [{\"value\": \"x\"}]}", "a header needs a key"),
            ("{\"timestamp_ms\": \"soon\"}", "timestamp_ms must be an integer"),
        ] {
            let error = from_json(line, Arc::from("t"), false).expect_err(line);
            assert!(format!("{error:#}").contains(expected), "{line}: {error:#}");
        }
    }

    #[test]
    fn templates_replace_fields_and_escapes() {
        let mut out = Vec::new();
        render_template("{partition}:{offset}\\t{value}{missing}", &record(), &mut out);
        assert_eq!(out, "2:7\tvälue\n{missing}".as_bytes());
    }
}
