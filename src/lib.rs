#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod config;
pub mod layer;
pub mod metrics;
pub mod openapi;
pub mod operation;
pub mod request_id;
pub mod telemetry;
pub mod trace;

pub use config::Config;
pub use layer::{Observability, ObservabilityLayer};
pub use metrics::{MetricsEndpoint, MetricsLayer, MetricsRegistry};
pub use operation::{OperationId, OperationResolver};
pub use request_id::{RequestId, RequestIdLayer};
pub use telemetry::{Telemetry, TelemetryError};
