//! The prediction log's records, sampling, limit and HTTP batches.

use super::http::json_array;
use super::stdout::{STDOUT_PIPE_BYTES, widen_pipe};
use super::*;

const FEATURES: &[f32] = &[1.0, -0.5];

fn row_record<'a>(id: RequestId<'a>, classifier: bool, digest: &'a [u8; 32]) -> Record<'a> {
    let (prediction, confidence) =
        if classifier { (Predicted::Label(1), 0.75) } else { (Predicted::Value(0.25), 0.95) };
    Record {
        at: UNIX_EPOCH + Duration::from_millis(1_500),
        request_id: id,
        model: "fraud",
        version: "2",
        row: None,
        prediction,
        confidence,
        features_sha256: digest,
        features: None,
    }
}

#[test]
fn a_record_says_what_was_predicted_and_hashes_the_features() {
    let digest = features_sha256(FEATURES);
    let mut line = Vec::new();
    format_record(&mut line, &row_record(RequestId::Given("r\"1"), true, &digest));
    let record: serde_json::Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(record["kind"], "prediction");
    assert_eq!(record["timestamp"], 1.5);
    assert_eq!(record["request_id"], "r\"1");
    assert_eq!((record["model"].as_str(), record["version"].as_str()), (Some("fraud"), Some("2")));
    assert_eq!(record["prediction"], 1.0);
    assert_eq!(record["confidence"], 0.75);
    let mut bytes = Vec::new();
    bytes.extend(1.0f32.to_le_bytes());
    bytes.extend((-0.5f32).to_le_bytes());
    let want: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(record["features_sha256"], want.as_str());
    assert!(record.get("features").is_none(), "features only when asked");

    let mut line = Vec::new();
    let record =
        Record { features: Some(FEATURES), ..row_record(RequestId::Numbered(7), false, &digest) };
    format_record(&mut line, &record);
    let record: serde_json::Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(record["request_id"], "7");
    assert_eq!(record["prediction"], 0.25, "a regression's value");
    assert_eq!(record["confidence"], 0.95);
    assert_eq!(record["features"], serde_json::json!([1.0, -0.5]));
}

#[test]
fn sampling_logs_exactly_the_rate() {
    for (rate, expected) in [(0.0, 0), (0.1, 100), (0.25, 250), (1.0, 1000)] {
        let log = PredictionLog(Arc::new(Inner {
            shared: Arc::default(),
            seen: AtomicU64::new(0),
            sample_rate: rate,
            include_features: false,
            counters: Counters::default(),
            writer: Mutex::default(),
        }));
        let logged = (0..1000).filter(|_| log.sampled()).count();
        assert_eq!(logged, expected, "rate {rate}");
    }
}

#[test]
fn a_request_that_does_not_fit_is_dropped_whole_and_counted() {
    let (shared, counters) = (Shared::default(), Counters::default());
    let half = vec![b'x'; PENDING_LIMIT_BYTES / 2];
    let append = |records, lines: &[u8]| shared.append(records, &counters, |l, _| l.extend(lines));
    append(3, &half);
    append(3, &half);
    append(2, b"y\n");
    assert_eq!(counters.dropped.get(), 2);
    let mut taken = Pending::default();
    shared.take(&mut taken);
    assert_eq!((taken.records, taken.lines.len()), (6, PENDING_LIMIT_BYTES));
    assert!(taken.lines.ends_with(b"x"), "the dropped request left no bytes behind");
    append(1, b"y\n");
    taken.clear();
    shared.take(&mut taken);
    assert_eq!(taken.records, 1, "room again once the writer took the rest");
}

#[test]
fn the_writer_takes_records_still_in_the_small_buffer() {
    let (shared, counters) = (Shared::default(), Counters::default());
    shared.append(1, &counters, |l, _| l.extend(b"a\n"));
    shared.append(2, &counters, |l, _| l.extend(b"b\nc\n"));
    let mut taken = Pending::default();
    shared.take(&mut taken);
    assert_eq!((taken.records, taken.lines.as_slice()), (3, &b"a\nb\nc\n"[..]));
    let big = vec![b'x'; STAGED_BYTES];
    shared.append(1, &counters, |l, _| l.extend(&big));
    shared.append(1, &counters, |l, _| l.extend(b"d\n"));
    taken.clear();
    shared.take(&mut taken);
    assert_eq!((taken.records, taken.lines.len()), (2, STAGED_BYTES + 2), "in order, none lost");
    assert!(taken.lines.ends_with(b"xd\n"));
}

#[test]
fn json_lines_become_json_arrays_of_at_most_a_batch() {
    let lines = b"{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n";
    let (body, used, count) = json_array(lines, 2);
    assert_eq!((body.as_slice(), used, count), (&b"[{\"a\":1},{\"b\":2}]"[..], 16, 2));
    let (body, used, count) = json_array(&lines[used..], 2);
    assert_eq!((body.as_slice(), used, count), (&b"[{\"c\":3}]"[..], 8, 1));
    let parsed: serde_json::Value = serde_json::from_slice(&json_array(lines, 500).0).unwrap();
    assert_eq!(parsed.as_array().map(Vec::len), Some(3));
}

#[test]
fn the_timestamp_keeps_every_microsecond() {
    for (micros, want) in [(1_000_042, "1.000042"), (1_796_220_660_768_980, "1796220660.768980")] {
        let mut out = Vec::new();
        write_seconds(&mut out, UNIX_EPOCH + Duration::from_micros(micros));
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }
}

#[test]
fn a_pipe_is_widened_to_hold_a_polls_records() {
    let (_reader, writer) = rustix::pipe::pipe().unwrap();
    let before = rustix::pipe::fcntl_getpipe_size(&writer).unwrap();
    assert_eq!(widen_pipe(&writer).unwrap(), STDOUT_PIPE_BYTES);
    assert_eq!(rustix::pipe::fcntl_getpipe_size(&writer).unwrap(), STDOUT_PIPE_BYTES);
    assert!(before < STDOUT_PIPE_BYTES, "a new pipe starts smaller ({before} bytes)");
}

#[test]
fn a_file_keeps_its_writes_as_they_are() {
    let file = std::fs::File::open("/dev/null").unwrap();
    assert!(widen_pipe(&file).is_err(), "not a pipe: refused, and the log goes on");
}
