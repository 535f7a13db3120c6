//! `trace.batch`: the batch span processor's schedule and batch size, and the standard
//! `OTEL_BSP_*` variables that set them.

use serde::Deserialize;

use super::{error::Problems, TraceConfig};

/// `trace.batch`: how the export thread batches spans (with `trace.max_queue_size`, the
/// queue it takes them from).
///
/// ```yaml
/// trace:
///   max_queue_size: 2048       # OTEL_BSP_MAX_QUEUE_SIZE
///   batch:
///     schedule_delay_ms: 5000    # OTEL_BSP_SCHEDULE_DELAY
///     max_export_batch_size: 512 # OTEL_BSP_MAX_EXPORT_BATCH_SIZE
/// ```
///
/// Each export is bounded by its exporter's own timeout (`trace.otel.timeout`,
/// `trace.jaeger.timeout`); `OTEL_BSP_EXPORT_TIMEOUT` is not read (the SDK's thread-based
/// processor, which towerscope uses, does not apply one either).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TraceBatchConfig {
    /// The longest a span waits for its batch, in milliseconds: a batch is exported when it
    /// is full or this long after the previous export. Defaults to `5000` (the SDK's).
    pub schedule_delay_ms: u64,
    /// Spans per export at most, at most `trace.max_queue_size`. Defaults to `512` (the
    /// SDK's), or `trace.max_queue_size` when that is smaller.
    pub max_export_batch_size: Option<usize>,
}

impl Default for TraceBatchConfig {
    fn default() -> Self {
        Self {
            schedule_delay_ms: 5_000,
            max_export_batch_size: None,
        }
    }
}

/// The SDK's batch size, the default when the queue is not smaller.
const DEFAULT_EXPORT_BATCH_SIZE: usize = 512;

/// The longest schedule delay accepted: an hour.
const MAX_SCHEDULE_DELAY_MS: u64 = 3_600_000;

impl TraceConfig {
    /// `batch`: a delay of 1 ms to an hour, a batch of 1 to `max_queue_size` spans.
    pub(super) fn check_batch(&self, p: &mut Problems<'_>) {
        let batch = &self.batch;
        if !(1..=MAX_SCHEDULE_DELAY_MS).contains(&batch.schedule_delay_ms) {
            p.push(
                "batch.schedule_delay_ms",
                format!(
                    "must be between 1 and {MAX_SCHEDULE_DELAY_MS} (got {})",
                    batch.schedule_delay_ms
                ),
            );
        }
        if let Some(size) = batch.max_export_batch_size {
            if size == 0 || size > self.max_queue_size.max(1) {
                p.push(
                    "batch.max_export_batch_size",
                    format!(
                        "must be between 1 and trace.max_queue_size ({}) (got {size})",
                        self.max_queue_size
                    ),
                );
            }
        }
    }

    /// The batch size used: as set, else 512 or the queue when smaller.
    pub(super) fn export_batch_size(&self) -> usize {
        self.batch
            .max_export_batch_size
            .unwrap_or(DEFAULT_EXPORT_BATCH_SIZE)
            .clamp(1, self.max_queue_size.max(1))
    }

    /// `OTEL_BSP_SCHEDULE_DELAY` (milliseconds), `OTEL_BSP_MAX_QUEUE_SIZE` and
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`; a value that is not a whole number is a problem named
    /// after its variable (the ranges are checked with the rest of the configuration).
    pub(super) fn apply_bsp_env(
        &mut self,
        var: &dyn Fn(&str) -> Option<String>,
        bad: &mut Problems<'_>,
    ) {
        let mut number = |name: &str| -> Option<u64> {
            let value = var(name)?;
            match value.trim().parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    bad.push(
                        &format!("${name}"),
                        format!("is not a whole number: {value:?}"),
                    );
                    None
                }
            }
        };
        if let Some(ms) = number("OTEL_BSP_SCHEDULE_DELAY") {
            self.batch.schedule_delay_ms = ms;
        }
        if let Some(n) = number("OTEL_BSP_MAX_QUEUE_SIZE") {
            self.max_queue_size = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(n) = number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") {
            self.batch.max_export_batch_size = Some(usize::try_from(n).unwrap_or(usize::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::Config;

    fn with_env(yaml: &str, vars: &[(&str, &str)]) -> Result<Config, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut config = Config::from_yaml_str(yaml).map_err(|e| e.to_string())?;
        config
            .apply_env_overrides(|name| vars.get(name).cloned())
            .map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn the_file_then_the_standard_variables() {
        let config = with_env(
            "trace: { max_queue_size: 4096, batch: { schedule_delay_ms: 200, max_export_batch_size: 128 } }",
            &[],
        )
        .unwrap();
        assert_eq!(
            (
                config.trace.batch.schedule_delay_ms,
                config.trace.export_batch_size()
            ),
            (200, 128)
        );
        let config = with_env(
            "trace: { batch: { schedule_delay_ms: 200 } }",
            &[
                ("OTEL_BSP_SCHEDULE_DELAY", "50"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "1000"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", " 100 "),
            ],
        )
        .unwrap();
        assert_eq!(config.trace.batch.schedule_delay_ms, 50);
        assert_eq!(config.trace.max_queue_size, 1000);
        assert_eq!(config.trace.export_batch_size(), 100);
        // Unset, the batch is the SDK's 512, or the queue when smaller (a small queue alone
        // stays valid).
        let small = with_env("trace: { max_queue_size: 64 }", &[]).unwrap();
        assert_eq!(small.trace.export_batch_size(), 64);
        assert_eq!(with_env("{}", &[]).unwrap().trace.export_batch_size(), 512);
    }

    #[test]
    fn bad_values_name_their_field_or_variable() {
        let err = with_env(
            "trace: { max_queue_size: 100, batch: { schedule_delay_ms: 0, max_export_batch_size: 512 } }",
            &[],
        )
        .unwrap_err();
        assert!(
            err.contains("trace.batch.schedule_delay_ms: must be between 1 and 3600000 (got 0)"),
            "{err}"
        );
        assert!(
            err.contains("trace.batch.max_export_batch_size: must be between 1 and trace.max_queue_size (100) (got 512)"),
            "{err}"
        );
        let err = with_env("{}", &[("OTEL_BSP_SCHEDULE_DELAY", "5s")]).unwrap_err();
        assert!(
            err.contains("$OTEL_BSP_SCHEDULE_DELAY: is not a whole number: \"5s\""),
            "{err}"
        );
        let err = with_env("{}", &[("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4096")]).unwrap_err();
        assert!(err.contains("trace.batch.max_export_batch_size"), "{err}");
        let err = Config::from_yaml_str("trace: { batch: { delay: 1 } }")
            .unwrap_err()
            .to_string();
        assert!(err.contains("delay"), "{err}");
    }
}
