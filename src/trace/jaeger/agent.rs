//! Agent mode: `Agent.emitBatch` messages (compact protocol) in UDP datagrams.
//!
//! A datagram never exceeds `max_packet_size`. The spans of one export are packed greedily
//! into as few datagrams as fit; a span too large to fit even alone is dropped and counted,
//! never sent truncated.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::ops::Range;
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use super::model::{encode_compact_span, BatchRef, ClientStats, Process, Span, SpanList};

/// The largest UDP payload over IPv4 (65,535 − 8 bytes of UDP header − 20 of IP header).
pub(crate) const MAX_UDP_PAYLOAD: usize = 65_507;

/// How many bytes a compact list header can grow beyond the 1 byte of an empty list: an item
/// count above 14 takes a 1-byte header plus a varint of up to 5 bytes.
const LIST_HEADER_SLACK: usize = 5;

/// The outcome of packing one export's spans into datagrams: each span that fits is encoded
/// once, and each datagram copies its spans' bytes.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Packing {
    /// Ranges into the kept spans, one per datagram.
    pub(crate) chunks: Vec<Range<usize>>,
    /// The spans that fit, in their original order, as compact list items end to end.
    pub(crate) encoded: Vec<u8>,
    /// Where each kept span ends in `encoded`.
    pub(crate) ends: Vec<usize>,
    /// How many spans could not fit in a datagram even alone.
    pub(crate) too_large: u64,
}

impl Packing {
    /// How many spans fit.
    pub(crate) fn kept(&self) -> usize {
        self.ends.len()
    }

    /// The encoded bytes of the kept spans in `spans`.
    pub(crate) fn bytes(&self, spans: &Range<usize>) -> &[u8] {
        let start = match spans.start {
            0 => 0,
            i => self.ends[i - 1],
        };
        let end = spans.end.checked_sub(1).map_or(start, |i| self.ends[i]);
        &self.encoded[start..end]
    }
}

/// The bytes of an `emitBatch` message with `process` and no spans, at the largest the
/// sequence numbers and client stats can make it.
pub(crate) fn fixed_overhead(process: &Process) -> usize {
    let empty = BatchRef {
        process,
        spans: SpanList::Structs(&[]),
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
/// its items' sizes, so each span is encoded once, its size known from its bytes, and a
/// chunk's size is known exactly up to the header slack counted in [`fixed_overhead`].
pub(crate) fn pack(process: &Process, spans: Vec<Span>, max_packet_size: usize) -> Packing {
    let budget = max_packet_size.saturating_sub(fixed_overhead(process));
    let mut packing = Packing::default();
    let mut start = 0;
    let mut used = 0usize;
    for span in spans {
        let before = packing.encoded.len();
        let size = encode_compact_span(&span, &mut packing.encoded);
        if size > budget {
            packing.encoded.truncate(before);
            packing.too_large += 1;
            continue;
        }
        if used + size > budget {
            packing.chunks.push(start..packing.kept());
            start = packing.kept();
            used = 0;
        }
        used += size;
        packing.ends.push(packing.encoded.len());
    }
    if start < packing.kept() {
        packing.chunks.push(start..packing.kept());
    }
    packing
}

/// Why an export to the agent failed (in part).
#[derive(Debug, thiserror::Error)]
pub(crate) enum AgentError {
    /// No span can ever fit: the process alone fills a datagram.
    #[error(
        "jaeger agent {target}: the process and its tags alone take {overhead} bytes, \
         max_packet_size is {max_packet_size}: raise max_packet_size or send fewer resource \
         attributes"
    )]
    ProcessTooLarge {
        target: String,
        overhead: usize,
        max_packet_size: usize,
    },
    /// The host name did not resolve.
    #[error(
        "jaeger agent {target}: cannot resolve the host (check the agent's host name): {source}"
    )]
    Resolve {
        target: String,
        #[source]
        source: std::io::Error,
    },
    /// The host name resolved to nothing.
    #[error(
        "jaeger agent {target}: the host resolves to no address (check the agent's host name)"
    )]
    NoAddress { target: String },
    /// Some datagrams were not sent; `first` is the first failure.
    #[error("jaeger agent {target}: {failed} of {total} datagrams not sent: {first}")]
    Datagrams {
        target: String,
        failed: usize,
        total: usize,
        #[source]
        first: DatagramError,
    },
}

/// Why one datagram was not sent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DatagramError {
    /// The encoder produced a datagram over the limit (`pack` makes this impossible).
    #[error("encoded {len} bytes for a limit of {limit}")]
    Oversized { len: usize, limit: usize },
    /// No local UDP socket could be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The socket took only part of the datagram.
    #[error("sent {sent} of {len} bytes to {addr}")]
    Partial {
        sent: usize,
        len: usize,
        addr: SocketAddr,
    },
    /// The socket refused the datagram.
    #[error("sending {len} bytes to {addr}: {source}")]
    Send {
        len: usize,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
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

/// What one send did: spans dropped for size, and the error if any datagram failed.
#[derive(Debug)]
pub(crate) struct SendReport {
    pub(crate) too_large: u64,
    pub(crate) error: Option<AgentError>,
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
        let result = if packing.kept() == 0 {
            self.check_capacity(process, too_large)
        } else {
            self.send_packing(process, &packing, dropped_so_far)
        };
        SendReport {
            too_large,
            error: result.err(),
        }
    }

    /// Nothing was kept: not one span's fault when the configuration cannot carry any span.
    fn check_capacity(&self, process: &Process, too_large: u64) -> Result<(), AgentError> {
        if too_large == 0 {
            return Ok(());
        }
        let overhead = fixed_overhead(process);
        if overhead >= self.max_packet_size {
            return Err(AgentError::ProcessTooLarge {
                target: self.target(),
                overhead,
                max_packet_size: self.max_packet_size,
            });
        }
        Ok(())
    }

    /// Sends every chunk of `packing`, one datagram each, counting the spans of failed ones.
    fn send_packing(
        &self,
        process: &Process,
        packing: &Packing,
        dropped_so_far: u64,
    ) -> Result<(), AgentError> {
        let addr = self.resolve().inspect_err(|_| {
            self.failed_to_emit
                .fetch_add(packing.kept() as u64, Ordering::Relaxed);
        })?;
        let mut failed = 0usize;
        let mut first = None;
        for chunk in &packing.chunks {
            let spans = (chunk.len(), packing.bytes(chunk));
            if let Err(e) = self.send_chunk(process, spans, dropped_so_far, addr) {
                self.failed_to_emit
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                failed += 1;
                first.get_or_insert(e);
            }
        }
        match first {
            None => Ok(()),
            Some(first) => Err(AgentError::Datagrams {
                target: self.target(),
                failed,
                total: packing.chunks.len(),
                first,
            }),
        }
    }

    /// One `emitBatch` datagram with `spans` (their count and encoded bytes), its sequence
    /// numbers and the client's counters.
    fn send_chunk(
        &self,
        process: &Process,
        (count, spans): (usize, &[u8]),
        dropped_so_far: u64,
        addr: SocketAddr,
    ) -> Result<(), DatagramError> {
        let seq_no = Some(
            self.next_seq_no
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_add(1),
        );
        let stats = Some(ClientStats {
            full_queue_dropped_spans: 0,
            too_large_dropped_spans: saturating_i64(dropped_so_far),
            failed_to_emit_spans: saturating_i64(self.failed_to_emit.load(Ordering::Relaxed)),
        });
        let seq_id = self
            .next_seq_id
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        let datagram = BatchRef::encode_agent_emit_batch_with(
            process,
            (count, spans),
            seq_no,
            stats,
            seq_id,
            self.max_packet_size,
        );
        if datagram.is_empty() || datagram.len() > self.max_packet_size {
            // `pack` makes this impossible; refuse rather than send a bad packet.
            return Err(DatagramError::Oversized {
                len: datagram.len(),
                limit: self.max_packet_size,
            });
        }
        self.send_datagram(&datagram, addr)
    }

    /// Resolves the agent's address, again on every export so that a DNS change is followed.
    /// An IPv4 address is preferred: `localhost` often resolves to `::1` first, while agents
    /// commonly listen on IPv4 only, and a UDP datagram to a closed port is lost silently.
    fn resolve(&self) -> Result<SocketAddr, AgentError> {
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|source| AgentError::Resolve {
                target: self.target(),
                source,
            })?
            .collect();
        addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| addrs.first())
            .copied()
            .ok_or_else(|| AgentError::NoAddress {
                target: self.target(),
            })
    }

    fn send_datagram(&self, datagram: &[u8], addr: SocketAddr) -> Result<(), DatagramError> {
        let mut guard = self.socket.lock().unwrap_or_else(|p| p.into_inner());
        let socket = match guard.take() {
            Some(socket)
                if socket
                    .local_addr()
                    .is_ok_and(|local| local.is_ipv4() == addr.is_ipv4()) =>
            {
                socket
            }
            _ => bind_wildcard(addr)?,
        };
        let len = datagram.len();
        match socket.send_to(datagram, addr) {
            Ok(sent) => {
                *guard = Some(socket);
                if sent == len {
                    Ok(())
                } else {
                    Err(DatagramError::Partial { sent, len, addr })
                }
            }
            // A broken socket is dropped here and rebuilt on the next send.
            Err(source) => Err(DatagramError::Send { len, addr, source }),
        }
    }
}

/// A socket on the wildcard address of `target`'s family, any port.
fn bind_wildcard(target: SocketAddr) -> Result<UdpSocket, DatagramError> {
    let wildcard: SocketAddr = if target.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    UdpSocket::bind(wildcard).map_err(|source| DatagramError::Bind {
        addr: wildcard,
        source,
    })
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
