#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

#[cfg(feature = "reqwest")]
pub mod client;
pub mod config;
#[cfg(feature = "sqlx")]
pub mod db;
mod export_log;
#[cfg(feature = "tonic")]
pub mod grpc;
pub mod jobs;
mod labels;
pub mod layer;
pub mod metrics;
pub mod openapi;
pub mod operation;
pub mod request_id;
#[cfg(feature = "cli")]
pub mod rules;
pub mod telemetry;
mod text;
mod tls;
pub mod trace;

pub use config::Config;
pub use layer::{Observability, ObservabilityLayer};
pub use metrics::{MetricsEndpoint, MetricsLayer, MetricsRegistry};
pub use operation::{OperationId, OperationResolver};
pub use request_id::{RequestId, RequestIdLayer};
pub use telemetry::{Telemetry, TelemetryError};
