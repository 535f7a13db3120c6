//! Server spans of real requests through an axum router, exported to an in-memory exporter:
//! names, attributes, parents, status, propagation formats and their caps.

mod support;

use axum::{body::Body, http::StatusCode, routing::get, Router};
use http::{Request, Response};
use http_body_util::BodyExt;
use opentelemetry::trace::{SpanKind, Status};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use tower::ServiceExt;
use towerscope::Telemetry;
use tracing_subscriber::layer::SubscriberExt;

fn telemetry(yaml: &str) -> (Telemetry, InMemorySpanExporter) {
    support::in_memory_telemetry(yaml)
}

const TRACED: &str =
    "trace: { enabled: true, service_name: spans-test, otel: { endpoint: '127.0.0.1:1' } }";

fn app(telemetry: &Telemetry) -> Router {
    Router::new()
        .route(
            "/users/{id}",
            get(|| async {
                let db = tracing::info_span!("db.query", otel.kind = "client");
                let _e = db.enter();
                "user"
            }),
        )
        .route("/boom", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
        .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
        .layer(telemetry.layer())
}

/// Sends `req` with the telemetry's subscriber active, reads the body, flushes, returns the
/// response and every finished span.
async fn run(
    telemetry: &Telemetry,
    exporter: &InMemorySpanExporter,
    req: Request<Body>,
) -> (Response<Body>, Vec<SpanData>) {
    let subscriber = tracing_subscriber::registry().with(telemetry.tracing_layer());
    let _guard = tracing::subscriber::set_default(subscriber);
    let res = app(telemetry).oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    telemetry.trace_pipeline().unwrap().force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    (Response::from_parts(parts, Body::from(bytes)), spans)
}

/// Sends `GET path` through `app`, reads the body, flushes, returns every finished span.
async fn spans_of(
    t: &Telemetry,
    exporter: &InMemorySpanExporter,
    app: Router,
    path: &str,
) -> Vec<SpanData> {
    let res = app
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    t.trace_pipeline().unwrap().force_flush().unwrap();
    exporter.get_finished_spans().unwrap()
}

/// Makes a subscriber current on this thread with a log layer writing into the returned
/// buffer (no colours, towerscope's `RequestFields` format, as `init_subscriber` has) and
/// `t`'s tracing layer.
fn logged(t: &Telemetry) -> (support::Captured, tracing::subscriber::DefaultGuard) {
    let logs = support::Captured::default();
    let writer = logs.clone();
    let format = towerscope::log::RequestFields::new(tracing_subscriber::fmt::format());
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .event_format(format)
                .with_writer(move || writer.clone()),
        )
        .with(t.tracing_layer());
    (logs, tracing::subscriber::set_default(subscriber))
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
        panic!(
            "no span {name} in {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    })
}

#[tokio::test]
async fn server_span_tree_names_and_attributes() {
    let (t, exporter) = telemetry(TRACED);
    let req = Request::get("/users/42?verbose=1")
        .header("x-request-id", "req-abc")
        .header("user-agent", "skopeo/1.13")
        .body(Body::empty())
        .unwrap();
    let (res, spans) = run(&t, &exporter, req).await;
    assert_eq!(res.status(), 200);
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let server = named(&spans, "GET /users/{id}");
    let db = named(&spans, "db.query");
    assert_eq!(server.span_kind, SpanKind::Server);
    assert_eq!(db.span_kind, SpanKind::Client);
    assert_eq!(db.parent_span_id, server.span_context.span_id());
    assert_eq!(db.span_context.trace_id(), server.span_context.trace_id());
    assert!(!server.parent_span_is_remote);
    for (key, value) in [
        ("http.request.method", "GET"),
        ("url.path", "/users/42"),
        ("url.query", "verbose=1"),
        ("http.route", "/users/{id}"),
        ("user_agent.original", "skopeo/1.13"),
        ("http.response.status_code", "200"),
        ("operation", "/users/{id}"),
        ("request_id", "req-abc"),
    ] {
        assert_eq!(attr(server, key).as_deref(), Some(value), "{key}");
    }
    assert_eq!(server.status, Status::Unset);
    assert!(server.end_time >= db.end_time);
}

#[tokio::test]
async fn server_errors_mark_the_span_client_errors_do_not() {
    let (t, exporter) = telemetry(TRACED);
    let (_, spans) = run(
        &t,
        &exporter,
        Request::get("/boom").body(Body::empty()).unwrap(),
    )
    .await;
    let boom = named(&spans, "GET /boom");
    assert!(
        matches!(boom.status, Status::Error { .. }),
        "{:?}",
        boom.status
    );
    assert_eq!(
        attr(boom, "http.response.status_code").as_deref(),
        Some("503")
    );

    exporter.reset();
    let (_, spans) = run(
        &t,
        &exporter,
        Request::get("/missing").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(named(&spans, "GET /missing").status, Status::Unset);
}

#[tokio::test]
async fn unrouted_and_hostile_methods_get_generic_names() {
    let (t, exporter) = telemetry(TRACED);
    let (_, spans) = run(
        &t,
        &exporter,
        Request::get("/nowhere").body(Body::empty()).unwrap(),
    )
    .await;
    let span = named(&spans, "GET");
    assert_eq!(attr(span, "operation").as_deref(), Some("unknown"));
    exporter.reset();
    let req = Request::builder()
        .method("BREW")
        .uri("/users/1")
        .body(Body::empty())
        .unwrap();
    let (_, spans) = run(&t, &exporter, req).await;
    let span = named(&spans, "HTTP /users/{id}");
    assert_eq!(attr(span, "http.request.method").as_deref(), Some("_OTHER"));
}

#[tokio::test]
async fn remote_parent_is_continued_and_echoed() {
    let (t, exporter) = telemetry(
        "trace: { enabled: true, echo_traceparent: true, otel: { endpoint: '127.0.0.1:1' } }",
    );
    let req = Request::get("/users/1")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .header("tracestate", "vendor=value")
        .body(Body::empty())
        .unwrap();
    let (res, spans) = run(&t, &exporter, req).await;
    let server = named(&spans, "GET /users/{id}");
    assert_eq!(
        server.span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(server.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert!(server.parent_span_is_remote);
    assert_eq!(server.span_context.trace_state().header(), "vendor=value");
    let echoed = res.headers()["traceparent"].to_str().unwrap();
    assert_eq!(
        echoed,
        format!(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01",
            server.span_context.span_id()
        )
    );
}

#[tokio::test]
async fn malformed_traceparent_starts_a_new_trace_and_drops_tracestate() {
    let (t, exporter) = telemetry(TRACED);
    let req = Request::get("/users/1")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
        )
        .header("tracestate", "vendor=value")
        .body(Body::empty())
        .unwrap();
    let (_, spans) = run(&t, &exporter, req).await;
    let server = named(&spans, "GET /users/{id}");
    assert_ne!(
        server.span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert!(!server.parent_span_is_remote);
    assert_eq!(server.span_context.trace_state().header(), "");
}

#[tokio::test]
async fn oversized_tracestate_is_cut_at_whole_members() {
    let (t, exporter) = telemetry(TRACED);
    let members: Vec<String> = (0..40)
        .map(|i| format!("k{i:02}=v{}", "x".repeat(20)))
        .collect();
    let req = Request::get("/users/1")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .header("tracestate", members.join(","))
        .body(Body::empty())
        .unwrap();
    let (_, spans) = run(&t, &exporter, req).await;
    let state = named(&spans, "GET /users/{id}")
        .span_context
        .trace_state()
        .header();
    assert!(state.len() <= 512, "{}", state.len());
    let kept: Vec<&str> = state.split(',').collect();
    assert!(!kept.is_empty() && kept.len() < 40);
    for (i, member) in kept.iter().enumerate() {
        assert_eq!(*member, members[i], "members are kept whole and in order");
    }
}

#[tokio::test]
async fn jaeger_uber_trace_id_is_read_when_configured() {
    let (t, exporter) = telemetry(
        "trace: { enabled: true, propagators: [tracecontext, jaeger], otel: { endpoint: '127.0.0.1:1' } }",
    );
    let req = Request::get("/users/1")
        .header(
            "uber-trace-id",
            "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1",
        )
        .body(Body::empty())
        .unwrap();
    let (_, spans) = run(&t, &exporter, req).await;
    let server = named(&spans, "GET /users/{id}");
    assert_eq!(
        server.span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(server.parent_span_id.to_string(), "00f067aa0ba902b7");
}

#[tokio::test]
async fn sampling_follows_the_ratio_and_the_parent() {
    let (t, exporter) =
        telemetry("trace: { enabled: true, sample_rate: 0, otel: { endpoint: '127.0.0.1:1' } }");
    let (_, spans) = run(
        &t,
        &exporter,
        Request::get("/users/1").body(Body::empty()).unwrap(),
    )
    .await;
    assert!(spans.is_empty(), "ratio 0 samples no new trace");
    let req = Request::get("/users/1")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(Body::empty())
        .unwrap();
    let (_, spans) = run(&t, &exporter, req).await;
    assert_eq!(spans.len(), 2, "a sampled parent is followed");
}

/// The layer decides sampling before it builds the span (issue 9); the pipeline must not draw
/// the ratio again for the spans it sampled, and the children of a request follow it.
#[tokio::test]
async fn a_ratio_is_drawn_once_and_children_follow_their_request() {
    let (t, exporter) =
        telemetry("trace: { enabled: true, sample_rate: 0.5, otel: { endpoint: '127.0.0.1:1' } }");
    let subscriber = tracing_subscriber::registry().with(t.tracing_layer());
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = app(&t);
    const REQUESTS: usize = 400;
    for i in 0..REQUESTS {
        let req = Request::get(format!("/users/{i}"))
            .body(Body::empty())
            .unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        res.into_body().collect().await.unwrap();
    }
    t.trace_pipeline().unwrap().force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let servers: Vec<_> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Server)
        .collect();
    let children: Vec<_> = spans.iter().filter(|s| s.name == "db.query").collect();
    // Expected 200 (σ = 10); drawing twice would give ~100.
    assert!(
        (140..=260).contains(&servers.len()),
        "{} of {REQUESTS} requests sampled at 0.5",
        servers.len()
    );
    assert_eq!(
        children.len(),
        servers.len(),
        "every sampled request has its child, and no sampled-out request's child is exported"
    );
    for child in children {
        assert!(
            servers
                .iter()
                .any(|s| s.span_context.span_id() == child.parent_span_id
                    && s.span_context.trace_id() == child.span_context.trace_id()),
            "a child outside its request's trace: {child:?}"
        );
    }
}

#[tokio::test]
async fn a_sampled_out_request_forwards_a_context_that_is_not_sampled() {
    let (t, exporter) = telemetry(
        "trace: { enabled: true, sample_rate: 0, echo_traceparent: true, otel: { endpoint: '127.0.0.1:1' } }",
    );
    let req = Request::get("/users/1")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )
        .body(Body::empty())
        .unwrap();
    let (res, spans) = run(&t, &exporter, req).await;
    assert!(spans.is_empty(), "{spans:?}");
    let echoed = res.headers()["traceparent"].to_str().unwrap();
    assert!(
        echoed.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && echoed.ends_with("-00"),
        "{echoed}"
    );
    assert!(
        !echoed.contains("00f067aa0ba902b7"),
        "the server's own span id: {echoed}"
    );

    let (res, spans) = run(
        &t,
        &exporter,
        Request::get("/users/1").body(Body::empty()).unwrap(),
    )
    .await;
    assert!(spans.is_empty(), "{spans:?}");
    let echoed = res.headers()["traceparent"].to_str().unwrap();
    let parts: Vec<_> = echoed.split('-').collect();
    assert_eq!(parts.len(), 4, "{echoed}");
    // Not sampled, and random: the layer started the trace (W3C level 2).
    assert_eq!(
        (parts[1].len(), parts[2].len(), parts[3]),
        (32, 16, "02"),
        "{echoed}"
    );
    assert_ne!(parts[1], "0".repeat(32), "{echoed}");
}

#[tokio::test]
async fn log_lines_of_a_sampled_out_request_keep_its_request_id_and_operation() {
    let (t, exporter) =
        telemetry("trace: { enabled: true, sample_rate: 0, otel: { endpoint: '127.0.0.1:1' } }");
    let (logs, _guard) = logged(&t);
    let app = Router::new()
        .route(
            "/users/{id}",
            get(|| async {
                tracing::info!("inside the handler");
                "user"
            }),
        )
        .layer(t.layer());
    let req = Request::get("/users/7")
        .header("x-request-id", "req-sampled-out-1")
        .body(Body::empty())
        .unwrap();
    let res = app.oneshot(req).await.unwrap();
    res.into_body().collect().await.unwrap();
    t.trace_pipeline().unwrap().force_flush().unwrap();
    assert!(exporter.get_finished_spans().unwrap().is_empty());
    let text = logs.take();
    let line = text
        .lines()
        .find(|l| l.contains("inside the handler"))
        .unwrap_or_else(|| panic!("no log line: {text}"));
    assert!(
        line.ends_with("inside the handler request_id=req-sampled-out-1 operation=/users/{id}"),
        "{line}"
    );
    // No span of the request's own on the line: only its id and operation.
    assert!(!line.contains("HTTP request"), "{line}");
}

#[tokio::test]
async fn exporter_health_is_on_the_metrics_endpoint() {
    let (t, exporter) = telemetry(TRACED);
    run(
        &t,
        &exporter,
        Request::get("/users/1").body(Body::empty()).unwrap(),
    )
    .await;
    let text = t.registry().render_components(&["trace"]).unwrap();
    assert!(
        text.contains(r#"trace_spans_exported_total{exporter="memory"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"trace_spans_dropped_total{exporter="memory"} 0"#),
        "{text}"
    );
    assert!(
        text.contains(r#"trace_spans_ended_total{exporter="memory"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"trace_spans_failed_total{exporter="memory"} 0"#),
        "{text}"
    );
}

/// Counts of `http_request_total` by operation after one `GET /users/42` through a layer whose
/// operation stage and trace layer resolve differently, under `subscriber` (none when `None`).
async fn operation_under(
    subscriber: impl FnOnce(&Telemetry) -> Option<tracing::Dispatch>,
) -> (String, Vec<SpanData>) {
    use towerscope::{
        operation::{OperationId, RequestRef},
        trace::TraceLayer,
    };
    let (t, exporter) = telemetry(TRACED);
    let subscriber = subscriber(&t);
    let layer = t
        .layer()
        .with_resolver(|_: &RequestRef<'_>| Some(OperationId::from("getUser")))
        // A trace layer of its own with another resolver: the stage decides for both.
        .with_trace(
            TraceLayer::new().with_resolver(|_: &RequestRef<'_>| Some(OperationId::from("traced"))),
        );
    let svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(tower::service_fn(|_req: Request<Body>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Body::from("user")))
        }));
    let call = async {
        let res = svc
            .oneshot(Request::get("/users/42").body(Body::empty()).unwrap())
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
    };
    // "No subscriber" is a scoped `NoSubscriber`: a thread with no default at all would make
    // tracing-core cache the callsites it registers as never enabled, for every test's thread
    // (it asks only the registering thread's default while one dispatcher is registered).
    let dispatch =
        subscriber.unwrap_or_else(|| tracing::subscriber::NoSubscriber::default().into());
    let _guard = tracing::dispatcher::set_default(&dispatch);
    call.await;
    t.trace_pipeline().unwrap().force_flush().unwrap();
    let text = t.registry().render();
    let totals = text
        .lines()
        .filter(|l| l.starts_with("http_request_total{"))
        .collect::<Vec<_>>()
        .join("\n");
    (totals, exporter.get_finished_spans().unwrap())
}

#[tokio::test]
async fn the_operation_label_is_the_same_whatever_the_subscriber() {
    use tracing_subscriber::{filter::LevelFilter, Layer as _};
    let expected = r#"http_request_total{method="GET",code="200",operation="getUser"} 1"#;

    let (none, spans) = operation_under(|_| None).await;
    assert_eq!(none, expected);
    assert!(spans.is_empty());

    let (at_info, spans) = operation_under(|t| {
        let layer = t.tracing_layer().with_filter(LevelFilter::INFO);
        Some(tracing_subscriber::registry().with(layer).into())
    })
    .await;
    assert_eq!(at_info, expected);
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(attr(&spans[0], "operation").as_deref(), Some("getUser"));

    // The server span is at INFO: a WARN filter disables it.
    let (at_warn, spans) = operation_under(|t| {
        let layer = t.tracing_layer().with_filter(LevelFilter::WARN);
        Some(tracing_subscriber::registry().with(layer).into())
    })
    .await;
    assert_eq!(at_warn, expected);
    assert!(spans.is_empty(), "{spans:#?}");
}

#[tokio::test]
async fn a_response_override_renames_the_span_operation_too() {
    use towerscope::operation::OperationId;
    let (t, exporter) = telemetry(TRACED);
    let app = Router::new()
        .route(
            "/users/{id}",
            get(|| async {
                let mut res = Response::new(Body::from("user"));
                res.extensions_mut().insert(OperationId::from("overridden"));
                res
            }),
        )
        .layer(t.layer());
    let subscriber = tracing_subscriber::registry().with(t.tracing_layer());
    let _guard = tracing::subscriber::set_default(subscriber);
    // A clone answers; the router, like a server's, outlives the response.
    let res = app
        .clone()
        .oneshot(Request::get("/users/42").body(Body::empty()).unwrap())
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    t.trace_pipeline().unwrap().force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let span = named(&spans, "GET /users/{id}");
    assert_eq!(attr(span, "operation").as_deref(), Some("overridden"));
    let text = t.registry().render();
    assert_eq!(
        support::sample(
            &text,
            r#"http_request_total{method="GET",code="200",operation="overridden"}"#
        ),
        Some(1.0),
        "{text}"
    );
}

/// Behind `Telemetry::layer` the server span is built by the layer, not by
/// `tracing-opentelemetry`: a handler reaches it through `current_context`, and the events it
/// logs outside any span of its own are the span's events, as `tracing-opentelemetry` makes them.
#[tokio::test]
async fn a_handler_reaches_its_server_span_and_its_events_are_the_spans() {
    use opentelemetry::{trace::TraceContextExt, KeyValue};
    let (t, exporter) = telemetry(TRACED);
    let app = Router::new()
        .route(
            "/users/{id}",
            get(|| async {
                towerscope::trace::current_context()
                    .span()
                    .set_attribute(KeyValue::new("user.id", "alice"));
                tracing::info!(found = true, count = 3_i64, "looked up");
                {
                    let db = tracing::info_span!("db.query", otel.kind = "client");
                    let _e = db.enter();
                    tracing::info!("inside the query");
                }
                tracing::error!(error = "the cache is down");
                "user"
            }),
        )
        .layer(t.layer());
    let subscriber = tracing_subscriber::registry().with(t.tracing_layer());
    let _guard = tracing::subscriber::set_default(subscriber);
    let spans = spans_of(&t, &exporter, app, "/users/42").await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let server = named(&spans, "GET /users/{id}");
    let db = named(&spans, "db.query");
    assert_eq!(db.parent_span_id, server.span_context.span_id());
    assert_eq!(attr(server, "user.id").as_deref(), Some("alice"));

    let names: Vec<_> = server.events.iter().map(|e| e.name.as_ref()).collect();
    assert_eq!(names, ["looked up", "exception"], "{server:#?}");
    let looked_up = &server.events.events[0];
    let event_attr = |key: &str| {
        looked_up
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(event_attr("level").as_deref(), Some("INFO"));
    assert_eq!(event_attr("found").as_deref(), Some("true"));
    assert_eq!(event_attr("count").as_deref(), Some("3"));
    assert!(
        matches!(&server.status, Status::Error { description } if description.contains("the cache is down")),
        "an error event marks the span: {:?}",
        server.status
    );
    // The event inside the query is the query's.
    let db_events: Vec<_> = db.events.iter().map(|e| e.name.as_ref()).collect();
    assert_eq!(db_events, ["inside the query"]);
}

/// The request's log span carries its fields to log lines and is not exported a second time.
/// Inside an exported span around the whole service (a connection span), the server span's
/// parent is still what the caller sent (none here), and the request's children hang under it.
#[tokio::test]
async fn a_sampled_request_logs_with_its_fields_and_is_exported_once() {
    use tracing::Instrument;
    let (t, exporter) = telemetry(TRACED);
    let (logs, _guard) = logged(&t);
    let app = Router::new()
        .route(
            "/users/{id}",
            get(|| async {
                tracing::info!("inside the handler");
                let db = tracing::info_span!("db.query", otel.kind = "client");
                let _e = db.enter();
                "user"
            }),
        )
        .layer(t.layer());
    let req = Request::get("/users/7")
        .header("x-request-id", "req-sampled-1")
        .body(Body::empty())
        .unwrap();
    async {
        let res = app.oneshot(req).await.unwrap();
        res.into_body().collect().await.unwrap();
    }
    .instrument(tracing::info_span!("connection"))
    .await;
    t.trace_pipeline().unwrap().force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let (server, db, connection) = (
        named(&spans, "GET /users/{id}"),
        named(&spans, "db.query"),
        named(&spans, "connection"),
    );
    assert_eq!(server.parent_span_id, opentelemetry::trace::SpanId::INVALID);
    assert_ne!(
        server.span_context.trace_id(),
        connection.span_context.trace_id()
    );
    assert_eq!(db.parent_span_id, server.span_context.span_id());
    let text = logs.take();
    let line = text
        .lines()
        .find(|l| l.contains("inside the handler"))
        .unwrap_or_else(|| panic!("no log line: {text}"));
    assert!(
        line.ends_with("inside the handler request_id=req-sampled-1 operation=/users/{id}")
            && line.contains("connection"),
        "{line}"
    );
}

/// Behind `Telemetry::layer` the server span is exported by the layer: whether spans are
/// exported is decided by `trace.enabled` and the sampler, not by the subscriber.
#[tokio::test]
async fn server_spans_are_exported_without_any_subscriber() {
    let (t, exporter) = telemetry(TRACED);
    // Scoped, for the reason given in `operation_under`.
    let _guard = tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
    let res = app(&t)
        .oneshot(
            Request::get("/users/42")
                .header("x-request-id", "no-subscriber")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    t.trace_pipeline().unwrap().force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    // The `tracing` child is not exported: no OpenTelemetry layer turns it into a span.
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(spans[0].name, "GET /users/{id}");
    assert_eq!(
        attr(&spans[0], "request_id").as_deref(),
        Some("no-subscriber")
    );
    assert_eq!(
        attr(&spans[0], "http.response.status_code").as_deref(),
        Some("200")
    );
}

/// A `TraceLayer` on its own makes a `tracing` span: the response's `operation` override is
/// recorded on it a second time, and the exported span keeps one `operation`, the override.
#[tokio::test]
async fn a_tracing_span_recorded_twice_is_exported_with_the_last_value() {
    use towerscope::{operation::OperationId, trace::TraceLayer};
    let (t, exporter) = telemetry(TRACED);
    let subscriber = tracing_subscriber::registry().with(t.tracing_layer());
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = Router::new()
        .route(
            "/users/{id}",
            get(|| async {
                let mut res = Response::new(Body::from("user"));
                res.extensions_mut().insert(OperationId::from("overridden"));
                res
            }),
        )
        .layer(TraceLayer::new());
    let spans = spans_of(&t, &exporter, app, "/users/42").await;
    let span = named(&spans, "GET /users/{id}");
    let operations: Vec<String> = span
        .attributes
        .iter()
        .filter(|kv| kv.key.as_str() == "operation")
        .map(|kv| kv.value.to_string())
        .collect();
    assert_eq!(operations, ["overridden"], "{span:#?}");
}
