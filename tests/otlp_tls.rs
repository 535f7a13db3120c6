//! OTLP export over TLS (feature `tls`): https for http/protobuf and gRPC, verified against a
//! CA given through `SSL_CERT_FILE`, decoded by `opentelemetry-proto` behind Python's TLS.
//! (Its own test binary: it sets `SSL_CERT_FILE` for the process.)
#![cfg(feature = "tls")]

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use axum::{body::Body, routing::get, Router};
use http::Request;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use towerscope::{Config, Telemetry};
use tracing_subscriber::layer::SubscriberExt;

fn tools_ready() -> bool {
    let python = Command::new("python3")
        .args([
            "-c",
            "import grpc, opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc",
        ])
        .status()
        .is_ok_and(|s| s.success());
    let openssl = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !(python && openssl) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs openssl and python3 with grpcio and opentelemetry-proto"
        );
        eprintln!("openssl or the Python OTLP decoder is missing: skipping the TLS test");
    }
    python && openssl
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA and a server certificate for 127.0.0.1 signed by it.
fn make_certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=towerscope test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

async fn traced_request(telemetry: &Telemetry) {
    let subscriber = tracing_subscriber::registry().with(telemetry.tracing_layer());
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = Router::new()
        .route("/tls", get(|| async { "secure" }))
        .layer(telemetry.layer());
    let res = app
        .oneshot(Request::get("/tls").body(Body::empty()).unwrap())
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_grpc_over_tls_decode() {
    if !tools_ready() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("towerscope-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    make_certificates(&dir);
    // Only this test runs in this binary: the variable is read by rustls' root loading.
    std::env::set_var("SSL_CERT_FILE", dir.join("ca.pem"));

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/otlp_sink.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg("--tls")
        .arg(dir.join("server.pem"))
        .arg(dir.join("server.key"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let ready = lines.recv_timeout(Duration::from_secs(30)).unwrap();
    let port = |key: &str| -> String {
        ready
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key))
            .unwrap()
            .to_owned()
    };
    let (grpc_port, http_port) = (port("grpc="), port("http="));

    for (protocol, port) in [("http", &http_port), ("grpc", &grpc_port)] {
        // insecure defaults to false: host:port becomes https://.
        let yaml = format!(
            "trace: {{ enabled: true, service_name: tls-svc, otel: {{ endpoint: '127.0.0.1:{port}', protocol: {protocol}, timeout: 5 }} }}"
        );
        let config = Config::from_yaml_str(&yaml).unwrap();
        assert!(config
            .trace
            .otel
            .as_ref()
            .unwrap()
            .url()
            .starts_with("https://"));
        let telemetry = Telemetry::init_local(&config).unwrap();
        traced_request(&telemetry).await;
        let report = tokio::task::spawn_blocking(move || telemetry.shutdown().unwrap())
            .await
            .unwrap();
        assert!(
            report.exported == 1 && report.lost() == 0,
            "{protocol}: {report:?}"
        );
        let line = lines.recv_timeout(Duration::from_secs(20)).unwrap();
        let export: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(export["transport"], protocol);
        assert_eq!(export["spans"][0]["name"], "GET /tls");
        assert_eq!(export["resource"]["service.name"], "tls-svc");
    }

    // A collector whose certificate is not trusted is a failed export, not a panic.
    std::env::set_var("SSL_CERT_FILE", dir.join("server.key"));
    let yaml = format!(
        "trace: {{ enabled: true, otel: {{ endpoint: 'localhost:{http_port}', timeout: 2 }} }}"
    );
    let telemetry = Telemetry::init_local(&Config::from_yaml_str(&yaml).unwrap()).unwrap();
    traced_request(&telemetry).await;
    let report = tokio::task::spawn_blocking(move || telemetry.shutdown().unwrap())
        .await
        .unwrap();
    assert_eq!(report.exported, 0, "{report:?}");
    assert!(report.failed >= 1, "{report:?}");

    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
