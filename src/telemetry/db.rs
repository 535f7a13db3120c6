//! [`Transactions::from_telemetry`]: here, not in `db`, so that the integration does not
//! import the facade built on top of it.

use super::Telemetry;
use crate::db::Transactions;

impl Transactions {
    /// Spans, and metrics in the registry of a service started with [`Telemetry`]: the prefix
    /// `{metric.namespace}_{metric.subsystem}_` (`harbor_core_db_transaction_total` for
    /// Harbor's core), the cap `metric.max_operations` and the families of `metric.naming`
    /// (`db_client_operation_duration_seconds` under `otel`); that is, with
    /// `let metric = &telemetry.config().metric`,
    /// `Transactions::new(telemetry.registry()).with_prefix(&metric.prefix())`
    /// `.with_max_operations(metric.max_operations).with_naming(metric.naming)`. For spans
    /// only, use [`Transactions::without_metrics`]; add the database name with
    /// [`with_namespace`](Transactions::with_namespace).
    pub fn from_telemetry(telemetry: &Telemetry) -> Self {
        let metric = &telemetry.config().metric;
        Self::new(telemetry.registry())
            .with_prefix(&metric.prefix())
            .with_max_operations(metric.max_operations)
            .with_naming(metric.naming)
    }
}
