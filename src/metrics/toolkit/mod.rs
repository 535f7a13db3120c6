//! The one toolkit every towerscope family is recorded with, and yours can be too.
//!
//! - [`RecorderRef`]: where series are registered (the global recorder or an explicit one),
//!   and [`Family`]: a family's name, kind, unit and help, declared once.
//! - [`LabelTable`]: the series of each value of a bounded label, with the cap, the
//!   `_overflow` series and the lazily registered overflow counter, by one rule everywhere
//!   (`unknown` always has its own series).
//! - [`CodeCounters`]: a series' counters by status code, created on first use, the common
//!   codes lock-free.
//! - [`SettleGuard`], [`SettleFuture`] and [`SettleBody`]: settle a request, call or job
//!   exactly once, with its [`Outcome`] (complete, error, cancelled, panicked: a panic is
//!   detected the same way everywhere), when its response body ends (`None`, an error,
//!   `is_end_stream`, trailers), fails or is dropped, or its service fails.
//!
//! The HTTP, gRPC, client, transaction and job families are all built from these; a service
//! recording families of its own (the example registry's Distribution metrics) uses the same.
//!
//! # Example
//!
//! A layer-less request counter that counts a dropped request as `499`:
//!
//! ```
//! use std::sync::Arc;
//! use metrics::{Counter, Key, Label};
//! use towerscope::{
//!     config::MetricConfig,
//!     metrics::{toolkit::{CodeCounters, Outcome, RecorderRef, Settle, SettleGuard, http_slot, HTTP_SLOTS}, MetricsRegistry},
//! };
//!
//! struct Request { totals: Arc<CodeCounters<u16, HTTP_SLOTS>>, recorder: RecorderRef, status: u16 }
//! impl Settle for Request {
//!     fn settle(&mut self, outcome: Outcome) {
//!         let code = if outcome == Outcome::Cancelled { 499 } else { self.status };
//!         let recorder = &self.recorder;
//!         self.totals.increment(code, http_slot(code), |code| {
//!             recorder.counter(&Key::from_parts("requests_total", vec![Label::new("code", code.to_string())]))
//!         });
//!     }
//! }
//!
//! let registry = MetricsRegistry::new(&MetricConfig::default()).unwrap();
//! let recorder = RecorderRef::from(&registry);
//! let totals = Arc::new(CodeCounters::new());
//! let mut done = SettleGuard::new(Request { totals: totals.clone(), recorder: recorder.clone(), status: 200 });
//! done.settle(Outcome::Complete);
//! drop(SettleGuard::new(Request { totals, recorder, status: 200 })); // the client went away
//! let text = registry.render();
//! assert!(text.contains(r#"requests_total{code="200"} 1"#));
//! assert!(text.contains(r#"requests_total{code="499"} 1"#));
//! ```

mod body;
mod future;
mod handles;
mod recorder;
mod settle;
mod table;

pub use body::SettleBody;
pub use future::{sends_no_body, SettleFuture};
pub(crate) use handles::status_label;
pub use handles::{http_slot, CodeCounters, StatusHandles, HTTP_SLOTS};
pub use recorder::{Family, FamilyKind, RecorderRef};
pub use settle::{Outcome, Settle, SettleGuard};
pub use table::LabelTable;

use crate::metrics::MetricsRegistry;

/// Describes `families` in `recorder` and, with a registry, serves them under each of
/// `components`.
pub(crate) fn declare<C: AsRef<str>>(
    recorder: &RecorderRef,
    registry: Option<&MetricsRegistry>,
    components: &[C],
    families: &[Family],
) {
    for family in families {
        recorder.describe(family);
    }
    if let Some(registry) = registry {
        for component in components {
            registry
                .register_component(component.as_ref(), families.iter().map(|f| f.name.as_ref()));
        }
    }
}
