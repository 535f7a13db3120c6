//! The HTTP client of the OTLP/HTTP span exporter: reqwest's blocking client, as
//! opentelemetry-otlp builds it, that also tells the export log why a request failed.
//! opentelemetry-otlp turns a connection error into "HTTP export failed: network error" and a
//! refused export into its status code alone; the client sees the error's whole chain (the TLS
//! alert, the refused connection, the timeout) and the collector's answer, and notes it.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, Response};
use opentelemetry_http::{HttpClient, HttpError};

use crate::export_log::{error_chain, refusal, ExportLog};

/// reqwest's blocking client, noting each failure's cause in the export log.
#[derive(Debug)]
pub(crate) struct NotingClient {
    client: reqwest::blocking::Client,
    log: Arc<ExportLog>,
}

impl NotingClient {
    /// The client, built on a thread of its own: reqwest's blocking client starts a runtime,
    /// which cannot be done from inside the application's.
    pub(crate) fn build(timeout: Duration, log: Arc<ExportLog>) -> Result<Self, String> {
        let client = std::thread::Builder::new()
            .name("towerscope-otlp-client".into())
            .spawn(move || {
                reqwest::blocking::Client::builder()
                    .timeout(timeout)
                    .build()
            })
            .map_err(|e| format!("cannot start a thread for the OTLP HTTP client: {e}"))?
            .join()
            .map_err(|_| "building the OTLP HTTP client panicked".to_owned())?
            .map_err(|e| format!("cannot build the OTLP HTTP client: {e}"))?;
        Ok(Self { client, log })
    }
}

#[async_trait::async_trait]
impl HttpClient for NotingClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        match self.client.send_bytes(request).await {
            Ok(response) => {
                if !response.status().is_success() {
                    self.log
                        .note_cause(refusal(response.status(), response.body()));
                }
                Ok(response)
            }
            Err(error) => {
                self.log.note_cause(error_chain(&*error));
                Err(error)
            }
        }
    }
}
