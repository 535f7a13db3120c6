//! Encoders, datagram splitting and the exporter's own behaviour.

use super::*;

// ---- encoders ----

#[test]
fn compact_tag_matches_hand_encoding() {
    let batch = Batch {
        process: Process {
            service_name: String::new(),
            tags: Some(vec![Tag::bool("k", true)]),
        },
        spans: Vec::new(),
        seq_no: None,
        stats: None,
    };
    let bytes = encode_agent_emit_batch(&batch, 1);
    // message: protocol id, ONEWAY<<5 | version 1, seq id 1, name.
    let mut expected = vec![0x82, 0x81, 0x01, 0x09];
    expected.extend_from_slice(b"emitBatch");
    // args field 1 struct, Batch field 1 struct (Process), serviceName "" (field 1 binary),
    expected.extend_from_slice(&[0x1c, 0x1c, 0x18, 0x00]);
    // tags: field 2 list of 1 struct; Tag {key "k", vType 2 (zigzag 4), vBool true}, stop
    expected.extend_from_slice(&[0x19, 0x1c, 0x18, 0x01, b'k', 0x15, 0x04, 0x31, 0x00]);
    // end Process; Batch field 2 list of 0 structs; end Batch; end args.
    expected.extend_from_slice(&[0x00, 0x19, 0x0c, 0x00, 0x00]);
    assert_eq!(bytes, expected);
}

#[test]
fn binary_tag_matches_hand_encoding() {
    let batch = Batch {
        process: Process {
            service_name: "s".into(),
            tags: Some(vec![Tag::long("k", 7)]),
        },
        spans: Vec::new(),
        seq_no: Some(9),
        stats: None,
    };
    let bytes = encode_batch_binary(&batch);
    let mut expected = vec![0x0c, 0, 1]; // Batch.process: struct, id 1
    expected.extend_from_slice(&[0x0b, 0, 1, 0, 0, 0, 1, b's']); // serviceName
    expected.extend_from_slice(&[0x0f, 0, 2, 0x0c, 0, 0, 0, 1]); // tags: list<struct> of 1
    expected.extend_from_slice(&[0x0b, 0, 1, 0, 0, 0, 1, b'k']); // key
    expected.extend_from_slice(&[0x08, 0, 2, 0, 0, 0, 3]); // vType LONG
    expected.extend_from_slice(&[0x0a, 0, 6, 0, 0, 0, 0, 0, 0, 0, 7]); // vLong
    expected.extend_from_slice(&[0x00, 0x00]); // end Tag, end Process
    expected.extend_from_slice(&[0x0f, 0, 2, 0x0c, 0, 0, 0, 0]); // spans: empty list
    expected.extend_from_slice(&[0x0a, 0, 3, 0, 0, 0, 0, 0, 0, 0, 9]); // seqNo
    expected.push(0x00); // end Batch
    assert_eq!(bytes, expected);
}

#[test]
fn encoders_handle_empty_and_hostile_batches() {
    let empty = Batch {
        process: Process {
            service_name: String::new(),
            tags: None,
        },
        spans: Vec::new(),
        seq_no: None,
        stats: None,
    };
    assert!(!encode_agent_emit_batch(&empty, i32::MIN).is_empty());
    assert!(!encode_batch_binary(&empty).is_empty());

    let mut hostile = span_from_data(&span_data("")).into_owned();
    hostile.tags = Some(vec![
        Tag::double("", f64::NAN),
        Tag::double("inf", f64::INFINITY),
        Tag::string("big", "\u{10ffff}".repeat(1 << 20)),
        Tag::binary("bin", vec![0xff; 1 << 16]),
        Tag {
            v_str: None,
            ..Tag::string("no value", "")
        },
    ]);
    hostile.logs = Some(vec![super::model::Log {
        timestamp: i64::MIN,
        fields: Vec::new(),
    }]);
    let batch = Batch {
        process: process(),
        spans: vec![hostile; 3],
        seq_no: Some(i64::MIN),
        stats: Some(Default::default()),
    };
    assert!(encode_agent_emit_batch(&batch, -1).len() > 3 * (4 << 20));
    assert!(encode_batch_binary(&batch).len() > 3 * (4 << 20));
}

#[test]
fn binary_batch_starts_with_its_process_struct() {
    // Was the model's doc example, from when the model was public.
    let batch = Batch {
        process: Process {
            service_name: "registry".into(),
            tags: None,
        },
        spans: vec![Span {
            trace_id_low: 2,
            trace_id_high: 1,
            span_id: 3,
            parent_span_id: 0,
            operation_name: "GET /v2/".into(),
            references: None,
            flags: 1,
            start_time: 1_700_000_000_000_000,
            duration: 1_500,
            tags: Some(vec![Tag::string("http.route", "/v2/")]),
            logs: None,
        }],
        seq_no: None,
        stats: None,
    };
    let bytes = encode_batch_binary(&batch);
    // A binary-protocol struct starts with its first field: type STRUCT (12), id 1.
    assert_eq!(&bytes[..3], &[12, 0, 1]);
}

// ---- splitting ----

#[test]
fn packing_keeps_every_span_in_order_and_every_datagram_fits() {
    let process = process();
    let spans: Vec<Span> = (0..300)
        .map(|i| small_span(i, (i as usize * 37) % 900))
        .collect();
    for max in [2_000, 9_216, 65_000] {
        let packing = pack(&process, spans.clone(), max);
        assert_eq!(packing.too_large, 0);
        assert_eq!(packing.kept(), spans.len());
        let mut next = 0;
        for chunk in &packing.chunks {
            assert_eq!(chunk.start, next, "chunks are contiguous");
            assert!(!chunk.is_empty());
            next = chunk.end;
            let stats = Some(super::model::ClientStats {
                full_queue_dropped_spans: i64::MIN,
                too_large_dropped_spans: i64::MAX,
                failed_to_emit_spans: i64::MAX,
            });
            let batch = Batch {
                process: process.clone(),
                spans: spans[chunk.clone()].to_vec(),
                seq_no: Some(i64::MAX),
                stats,
            };
            let encoded = encode_agent_emit_batch(&batch, i32::MIN);
            assert!(encoded.len() <= max);
            // The datagram spliced from the spans' bytes, encoded once, is the same message.
            let spliced = BatchRef::encode_agent_emit_batch_with(
                &process,
                (chunk.len(), packing.bytes(chunk)),
                Some(i64::MAX),
                stats,
                i32::MIN,
                max,
            );
            assert_eq!(spliced, encoded, "byte for byte");
        }
        assert_eq!(next, spans.len());
    }
}

#[test]
fn packing_is_exact_at_the_boundary() {
    let process = process();
    let spans = vec![small_span(1, 100); 20];
    let size_of = |s: &Span| encode_compact_span(s, &mut Vec::new());
    let size = size_of(&spans[0]);
    assert!(spans.iter().all(|s| size_of(s) == size));
    // Room for exactly five spans, then for five minus one byte.
    let max = fixed_overhead(&process) + 5 * size;
    assert_eq!(pack(&process, spans.clone(), max).chunks.len(), 4);
    assert_eq!(pack(&process, spans, max - 1).chunks.len(), 5);
}

#[test]
fn a_span_too_large_alone_is_dropped_and_counted() {
    let process = process();
    let spans = vec![small_span(1, 10), small_span(2, 70_000), small_span(3, 10)];
    let packing = pack(&process, spans, 65_000);
    assert_eq!(packing.too_large, 1);
    let mut kept = Vec::new();
    for span in [small_span(1, 10), small_span(3, 10)] {
        encode_compact_span(&span, &mut kept);
    }
    assert_eq!(packing.encoded, kept, "spans 1 and 3, encoded once");
    assert_eq!(packing.chunks, vec![0..2]);
}

#[test]
fn exporter_drops_oversized_span_counts_it_and_sends_the_rest() {
    let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind");
    receiver
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let counted = Arc::new(AtomicU64::new(0));
    let exporter = agent_exporter(receiver.local_addr().expect("addr").port(), 65_000)
        .with_dropped_counter(metrics::Counter::from_arc(counted.clone()));

    let mut big = span_data("big");
    big.attributes = vec![KeyValue::new("blob", "x".repeat(70_000))];
    export(&exporter, vec![span_data("small"), big, span_data("small")]).expect("export");

    assert_eq!(exporter.dropped_spans(), 1);
    assert_eq!(counted.load(Ordering::Relaxed), 1);
    let mut buf = vec![0; 65_535];
    let n = receiver.recv(&mut buf).expect("one datagram");
    assert!(n <= 65_000);
    assert!(!buf[..n].windows(3).any(|w| w == b"big"));
}

#[test]
fn process_too_large_for_any_datagram_is_an_error() {
    let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut exporter = agent_exporter(receiver.local_addr().expect("addr").port(), 1_000);
    exporter.set_resource(
        &Resource::builder_empty()
            .with_attribute(KeyValue::new("huge", "x".repeat(2_000)))
            .build(),
    );
    let err = export(&exporter, vec![span_data("op")]).expect_err("cannot fit");
    assert!(matches!(err, OTelSdkError::InternalFailure(ref m) if m.contains("max_packet_size")));
    assert_eq!(exporter.dropped_spans(), 1);
}

#[test]
#[cfg(target_os = "linux")]
fn send_errors_are_reported_after_every_datagram_was_tried() {
    // Linux refuses a UDP send to port 0 locally (EINVAL): a send error with no traffic.
    let agent = AgentTransport::new("127.0.0.1".into(), 0, 1_000);
    let spans: Vec<Span> = (0..6).map(|i| small_span(i, 300)).collect();
    let chunks = pack(&process(), spans.clone(), 1_000).chunks.len();
    assert!(chunks > 1);
    let report = agent.send(&process(), spans);
    let error = report.error.expect("send fails").to_string();
    assert!(
        error.contains(&format!("{chunks} of {chunks} datagrams not sent")),
        "{error}"
    );
    assert_eq!(report.too_large, 0);
}

#[test]
fn unresolvable_agent_host_is_an_export_error_not_a_build_error() {
    let exporter = JaegerExporter::agent(AgentOptions {
        host: "no-such-host.invalid".into(),
        ..AgentOptions::default()
    })
    .expect("builds");
    let err = export(&exporter, vec![span_data("op")]).expect_err("cannot resolve");
    assert!(matches!(err, OTelSdkError::InternalFailure(_)));
}

// ---- exporter ----

#[test]
fn options_are_validated() {
    let agent = |host: &str, port, size| {
        JaegerExporter::agent(AgentOptions {
            host: host.into(),
            port,
            max_packet_size: size,
        })
    };
    assert!(matches!(
        agent("", 6831, 65_000),
        Err(JaegerError::EmptyHost)
    ));
    assert!(matches!(agent("h", 0, 65_000), Err(JaegerError::ZeroPort)));
    assert!(matches!(
        agent("h", 6831, 0),
        Err(JaegerError::InvalidPacketSize { size: 0 })
    ));
    assert!(matches!(
        agent("h", 6831, 65_508),
        Err(JaegerError::InvalidPacketSize { .. })
    ));
    assert!(agent("[::1]", 6831, 65_507).is_ok());

    let collector = |endpoint: &str, timeout| {
        JaegerExporter::collector(CollectorOptions {
            endpoint: endpoint.into(),
            timeout,
            ..CollectorOptions::default()
        })
    };
    let secs = Duration::from_secs(1);
    assert!(matches!(
        collector("not a url", secs),
        Err(JaegerError::InvalidEndpoint { .. })
    ));
    assert!(matches!(
        collector("ftp://h/api/traces", secs),
        Err(JaegerError::UnsupportedScheme { .. })
    ));
    assert!(matches!(
        collector("http://h/api/traces", Duration::ZERO),
        Err(JaegerError::ZeroTimeout)
    ));
    assert!(collector("https://h:14268/api/traces", secs).is_ok());
}

#[test]
fn debug_output_never_shows_the_password() {
    let options = CollectorOptions {
        username: Some("user".into()),
        password: Some("s3cret".into()),
        endpoint: "http://u:s3cret@127.0.0.1:1/api/traces".into(),
        ..CollectorOptions::default()
    };
    assert!(!format!("{options:?}").contains("s3cret"));
    let exporter = JaegerExporter::collector(options).expect("valid");
    assert!(!format!("{exporter:?}").contains("s3cret"));
}

#[test]
fn export_after_shutdown_fails() {
    let exporter = agent_exporter(6831, 65_000);
    exporter.shutdown().expect("first shutdown");
    assert!(matches!(
        export(&exporter, vec![span_data("op")]),
        Err(OTelSdkError::AlreadyShutdown)
    ));
}

#[test]
fn empty_export_sends_nothing_and_succeeds() {
    let exporter = agent_exporter(6831, 65_000);
    assert!(export(&exporter, Vec::new()).is_ok());
}
