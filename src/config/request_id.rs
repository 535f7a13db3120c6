//! The `request_id:` block, and the [`RequestIdLayer`] built from it.

use http::HeaderName;
use serde::{de, Deserialize, Deserializer};

use crate::request_id::{RequestIdLayer, X_REQUEST_ID};

/// The `request_id:` block.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestIdConfig {
    /// The request id header. Defaults to `X-Request-ID`.
    #[serde(deserialize_with = "de_header_name")]
    pub header: HeaderName,
    /// Keep valid incoming ids; when `false` every request gets a new id. Defaults to `true`.
    pub trust_incoming: bool,
}

impl Default for RequestIdConfig {
    fn default() -> Self {
        Self {
            header: X_REQUEST_ID,
            trust_incoming: true,
        }
    }
}

// Defined here rather than in `request_id` so that the domain module knows nothing of the
// configuration: imports point from config down to the types it configures.
impl RequestIdLayer {
    /// Builds the layer from the `request_id:` configuration block.
    pub fn from_config(config: &RequestIdConfig) -> Self {
        Self::new()
            .with_header(config.header.clone())
            .trust_incoming(config.trust_incoming)
    }
}

fn de_header_name<'de, D: Deserializer<'de>>(d: D) -> Result<HeaderName, D::Error> {
    let s = String::deserialize(d)?;
    HeaderName::try_from(s.as_str())
        .map_err(|_| de::Error::custom(format!("{s:?} is not a valid header name")))
}
