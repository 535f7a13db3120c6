//! [`Jobs::from_telemetry`] and [`JobQueues::from_telemetry`]: here, not in `jobs`, so that the integration does not import the
//! facade built on top of it.

use super::Telemetry;
use crate::jobs::{JobQueues, Jobs};

impl Jobs {
    /// Jobs for a service started with [`Telemetry`]: its registry (families served under
    /// `?comp=jobservice`) and the prefix `{metric.namespace}_{metric.subsystem}_`, like
    /// every other family of the service. Harbor's jobservice runs with
    /// `metric: { namespace: harbor, subsystem: jobservice }`, which gives
    /// `harbor_jobservice_task_total`. Equivalent to
    /// `Jobs::new(telemetry.registry()).with_prefix(&telemetry.config().metric.prefix())`.
    ///
    /// ```
    /// use towerscope::{jobs::{JobContext, JobInfo, Jobs}, Config, Telemetry};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let yaml = "metric: { namespace: harbor, subsystem: jobservice }";
    /// let config = Config::from_yaml_str(yaml).unwrap();
    /// let telemetry = Telemetry::init_local(&config).unwrap();
    /// let jobs = Jobs::from_telemetry(&telemetry);
    /// let info = JobInfo { id: "1".into(), name: "SCAN".into(), periodic: false };
    /// jobs.run(info, JobContext::default(), async {}).await;
    /// let text = telemetry.registry().render_components(&["jobservice"]).unwrap();
    /// assert!(text.contains(r#"harbor_jobservice_task_total{type="SCAN",status="success"} 1"#));
    /// # }
    /// ```
    pub fn from_telemetry(telemetry: &Telemetry) -> Self {
        Self::new(telemetry.registry()).with_prefix(&telemetry.config().metric.prefix())
    }
}

impl JobQueues {
    /// Queue instrumentation for a service started with [`Telemetry`]: its registry (families
    /// served under `?comp=jobservice`, latencies computed at each scrape) and the prefix
    /// `{metric.namespace}_`, without the subsystem, as Harbor names these families
    /// (`harbor_task_queue_size`, not `harbor_jobservice_task_queue_size`).
    ///
    /// ```
    /// use towerscope::{jobs::JobQueues, Config, Telemetry};
    ///
    /// let yaml = "metric: { namespace: harbor, subsystem: jobservice }";
    /// let telemetry = Telemetry::init_local(&Config::from_yaml_str(yaml).unwrap()).unwrap();
    /// let queues = JobQueues::from_telemetry(&telemetry);
    /// let _waiting = queues.enqueue("REPLICATION");
    /// let text = telemetry.registry().render_components(&["jobservice"]).unwrap();
    /// assert!(text.contains(r#"harbor_task_queue_size{type="REPLICATION"} 1"#));
    /// assert!(text.contains("harbor_task_scheduled_total 0"));
    /// ```
    pub fn from_telemetry(telemetry: &Telemetry) -> Self {
        let prefix = match telemetry.config().metric.namespace.as_deref() {
            Some(ns) if !ns.is_empty() => format!("{ns}_"),
            _ => String::new(),
        };
        Self::new(telemetry.registry()).with_prefix(&prefix)
    }
}
