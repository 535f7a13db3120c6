//! The OTLP sink of `interop/otlp_sink.py` (Python `opentelemetry-proto` + `grpcio`) as a
//! child process: what towerscope sends, decoded by code we did not write.

use std::{
    io::{BufRead, BufReader},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

/// The running sink: its ports and the JSON line of each export it received.
pub struct Sink {
    child: Child,
    stdin: Option<ChildStdin>,
    pub lines: mpsc::Receiver<String>,
    pub grpc_port: u16,
    pub http_port: u16,
}

impl Drop for Sink {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn python_ready() -> bool {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import grpc, opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc",
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs python3 with grpcio and opentelemetry-proto: pip install grpcio opentelemetry-proto"
        );
        eprintln!("python3 grpcio/opentelemetry-proto missing: skipping the OTLP wire test");
    }
    ok
}

pub fn start_sink(args: &[&str]) -> Sink {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/otlp_sink.py");
    let mut child = Command::new("python3")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let ready = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the sink starts");
    let port = |key: &str| -> u16 {
        ready
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {ready:?}"))
    };
    Sink {
        grpc_port: port("grpc="),
        http_port: port("http="),
        child,
        stdin,
        lines: rx,
    }
}
