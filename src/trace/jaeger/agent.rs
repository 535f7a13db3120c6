//! Agent mode: `Agent.emitBatch` messages (compact protocol) in UDP datagrams.
//!
//! A datagram never exceeds `max_packet_size`. The spans of one export are packed greedily
//! into as few datagrams as fit; a span too large to fit even alone is dropped and counted,
//! never sent truncated.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::ops::Range;
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use super::model::{compact_span_size, BatchRef, ClientStats, Process, Span};

/// The largest UDP payload over IPv4 (65,535 − 8 bytes of UDP header − 20 of IP header).
pub(crate) const MAX_UDP_PAYLOAD: usize = 65_507;

/// How many bytes a compact list header can grow beyond the 1 byte of an empty list: an item
/// count above 14 takes a 1-byte header plus a varint of up to 5 bytes.
const LIST_HEADER_SLACK: usize = 5;

/// The outcome of packing one export's spans into datagrams.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Packing {
    /// Ranges into the kept spans, one per datagram.
    pub(crate) chunks: Vec<Range<usize>>,
    /// The spans that fit, in their original order.
    pub(crate) kept: Vec<Span>,
    /// How many spans could not fit in a datagram even alone.
    pub(crate) too_large: u64,
}

/// The bytes of an `emitBatch` message with `process` and no spans, at the largest the
/// sequence numbers and client stats can make it.
pub(crate) fn fixed_overhead(process: &Process) -> usize {
    let empty = BatchRef {
        process,
        spans: &[],
        seq_no: Some(i64::MAX),
        stats: Some(ClientStats {
            full_queue_dropped_spans: i64::MAX,
            too_large_dropped_spans: i64::MAX,
            failed_to_emit_spans: i64::MAX,
        }),
    };
    empty.encode_agent_emit_batch(i32::MAX).len() + LIST_HEADER_SLACK
}

/// Packs `spans` greedily, in order, into chunks whose `emitBatch` message is at most
/// `max_packet_size` bytes. In the compact protocol a list costs its header plus the sum of
/// its items' sizes, so each span is measured once and a chunk's size is known exactly up to
/// the header slack counted in [`fixed_overhead`].
pub(crate) fn pack(process: &Process, spans: Vec<Span>, max_packet_size: usize) -> Packing {
    let budget = max_packet_size.saturating_sub(fixed_overhead(process));
    let mut packing = Packing::default();
    let mut start = 0;
    let mut used = 0usize;
    for span in spans {
        let size = compact_span_size(&span);
        if size > budget {
            packing.too_large += 1;
            continue;
        }
        if used + size > budget {
            packing.chunks.push(start..packing.kept.len());
            start = packing.kept.len();
            used = 0;
        }
        used += size;
        packing.kept.push(span);
    }
    if start < packing.kept.len() {
        packing.chunks.push(start..packing.kept.len());
    }
    packing
}

/// The UDP side of a [`JaegerExporter`](super::JaegerExporter) in agent mode.
#[derive(Debug)]
pub(crate) struct AgentTransport {
    host: String,
    port: u16,
    max_packet_size: usize,
    /// Bound lazily to the wildcard address of the target's family; `export` takes `&self`.
    socket: Mutex<Option<UdpSocket>>,
    next_seq_id: AtomicI32,
    next_seq_no: AtomicI64,
    too_large: AtomicU64,
    failed_to_emit: AtomicU64,
}

/// What one send did: spans dropped for size, and the first error if any datagram failed.
#[derive(Debug)]
pub(crate) struct SendReport {
    pub(crate) too_large: u64,
    pub(crate) error: Option<String>,
}

impl AgentTransport {
    pub(crate) fn new(host: String, port: u16, max_packet_size: usize) -> Self {
        AgentTransport {
            host,
            port,
            max_packet_size,
            socket: Mutex::new(None),
            next_seq_id: AtomicI32::new(0),
            next_seq_no: AtomicI64::new(0),
            too_large: AtomicU64::new(0),
            failed_to_emit: AtomicU64::new(0),
        }
    }

    /// Spans dropped so far because they could not fit in a datagram even alone.
    pub(crate) fn too_large_dropped(&self) -> u64 {
        self.too_large.load(Ordering::Relaxed)
    }

    pub(crate) fn target(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Encodes and sends `spans` in as many datagrams as needed. Every datagram is tried even
    /// when an earlier one failed.
    pub(crate) fn send(&self, process: &Process, spans: Vec<Span>) -> SendReport {
        let packing = pack(process, spans, self.max_packet_size);
        let too_large = packing.too_large;
        let dropped_so_far = self
            .too_large
            .fetch_add(too_large, Ordering::Relaxed)
            .wrapping_add(too_large);
        let mut report = SendReport {
            too_large,
            error: None,
        };
        if packing.kept.is_empty() {
            let overhead = fixed_overhead(process);
            if too_large > 0 && overhead >= self.max_packet_size {
                // Not one span's fault: the configuration cannot carry any span.
                report.error = Some(format!(
                    "jaeger agent {}: the process and its tags alone take {overhead} bytes, \
                     max_packet_size is {}",
                    self.target(),
                    self.max_packet_size
                ));
            }
            return report;
        }

        let addr = match self.resolve() {
            Ok(addr) => addr,
            Err(e) => {
                self.failed_to_emit
                    .fetch_add(packing.kept.len() as u64, Ordering::Relaxed);
                report.error = Some(e);
                return report;
            }
        };
        let mut failures = 0usize;
        for chunk in &packing.chunks {
            let spans = &packing.kept[chunk.clone()];
            let batch = BatchRef {
                process,
                spans,
                seq_no: Some(
                    self.next_seq_no
                        .fetch_add(1, Ordering::Relaxed)
                        .wrapping_add(1),
                ),
                stats: Some(ClientStats {
                    full_queue_dropped_spans: 0,
                    too_large_dropped_spans: saturating_i64(dropped_so_far),
                    failed_to_emit_spans: saturating_i64(
                        self.failed_to_emit.load(Ordering::Relaxed),
                    ),
                }),
            };
            let seq_id = self
                .next_seq_id
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_add(1);
            let datagram = batch.encode_agent_emit_batch(seq_id);
            let result = if datagram.is_empty() || datagram.len() > self.max_packet_size {
                // `pack` makes this impossible; refuse rather than send a bad packet.
                Err(format!(
                    "encoded {} bytes for a limit of {}",
                    datagram.len(),
                    self.max_packet_size
                ))
            } else {
                self.send_datagram(&datagram, addr)
            };
            if let Err(e) = result {
                self.failed_to_emit
                    .fetch_add(spans.len() as u64, Ordering::Relaxed);
                failures += 1;
                if report.error.is_none() {
                    report.error = Some(e);
                }
            }
        }
        if let Some(first) = report.error.take() {
            report.error = Some(format!(
                "jaeger agent {}: {failures} of {} datagrams not sent: {first}",
                self.target(),
                packing.chunks.len()
            ));
        }
        report
    }

    /// Resolves the agent's address, again on every export so that a DNS change is followed.
    /// An IPv4 address is preferred: `localhost` often resolves to `::1` first, while agents
    /// commonly listen on IPv4 only, and a UDP datagram to a closed port is lost silently.
    fn resolve(&self) -> Result<SocketAddr, String> {
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| {
                format!(
                    "jaeger agent {}: cannot resolve the host: {e}",
                    self.target()
                )
            })?
            .collect();
        addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| addrs.first())
            .copied()
            .ok_or_else(|| {
                format!(
                    "jaeger agent {}: the host resolves to no address",
                    self.target()
                )
            })
    }

    fn send_datagram(&self, datagram: &[u8], addr: SocketAddr) -> Result<(), String> {
        let mut guard = self.socket.lock().unwrap_or_else(|p| p.into_inner());
        let same_family = guard
            .as_ref()
            .and_then(|s| s.local_addr().ok())
            .is_some_and(|local| local.is_ipv4() == addr.is_ipv4());
        if !same_family {
            let wildcard: SocketAddr = if addr.is_ipv4() {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let socket =
                UdpSocket::bind(wildcard).map_err(|e| format!("cannot bind {wildcard}: {e}"))?;
            *guard = Some(socket);
        }
        let Some(socket) = guard.as_ref() else {
            return Err("no socket".to_owned());
        };
        match socket.send_to(datagram, addr) {
            Ok(n) if n == datagram.len() => Ok(()),
            Ok(n) => Err(format!("sent {n} of {} bytes to {addr}", datagram.len())),
            Err(e) => {
                // A broken socket is rebuilt on the next send.
                *guard = None;
                Err(format!("sending {} bytes to {addr}: {e}", datagram.len()))
            }
        }
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
