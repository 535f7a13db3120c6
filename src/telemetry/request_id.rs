//! [`RequestIdLayer::from_telemetry`]: here, not in `request_id`, so that the domain module
//! does not import the facade built on top of it.

use super::Telemetry;
use crate::request_id::RequestIdLayer;

impl RequestIdLayer {
    /// The request-id layer of a service started with [`Telemetry`]: its `request_id:` block
    /// (`header`, `trust_incoming`). For a service that puts the id in front of something
    /// other than [`Telemetry::layer`] (which sets the id itself), such as a tonic server.
    ///
    /// ```
    /// use http::{Request, Response};
    /// use std::convert::Infallible;
    /// use tower::{service_fn, Layer, ServiceExt};
    /// use towerscope::{Config, RequestIdLayer, Telemetry};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let yaml = "request_id: { header: X-Correlation-ID, trust_incoming: false }";
    /// let telemetry = Telemetry::init_local(&Config::from_yaml_str(yaml).unwrap()).unwrap();
    /// let svc = RequestIdLayer::from_telemetry(&telemetry)
    ///     .layer(service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(())) }));
    /// let req = Request::builder().header("x-correlation-id", "from-the-client").body(()).unwrap();
    /// let res = svc.oneshot(req).await.unwrap();
    /// // Not trusted: a new id replaces the client's, in the configured header.
    /// let id = res.headers()["x-correlation-id"].to_str().unwrap();
    /// assert_ne!(id, "from-the-client");
    /// assert_eq!(id.len(), 36);
    /// # }
    /// ```
    pub fn from_telemetry(telemetry: &Telemetry) -> Self {
        Self::from_config(&telemetry.config().request_id)
    }
}
