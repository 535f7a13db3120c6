//! `?comp=` selection on the metrics endpoint with hostile query strings: a 200 or a 404
//! (unknown component), never a panic.
#![no_main]

use std::{
    future::Future,
    pin::pin,
    sync::OnceLock,
    task::{Context, Poll, Waker},
};

use libfuzzer_sys::fuzz_target;
use towerscope::{
    config::MetricConfig,
    metrics::{MetricsEndpoint, MetricsRegistry},
};

fn endpoint() -> &'static MetricsEndpoint {
    static ENDPOINT: OnceLock<MetricsEndpoint> = OnceLock::new();
    ENDPOINT.get_or_init(|| {
        let registry = MetricsRegistry::new(&MetricConfig::default()).expect("registry");
        registry.register_component("core", ["http_request_total"]);
        registry.register_component("job service", ["task_total"]);
        MetricsEndpoint::new(registry)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(req) = http::Request::get(format!("/metrics?{query}")).body(()) else {
        return;
    };
    // No refresh hook and no runtime: the answer is ready at the first poll.
    let mut future = pin!(endpoint().respond(&req));
    let Poll::Ready(Ok(res)) = future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    else {
        panic!("the endpoint did not answer at once");
    };
    assert!(
        matches!(res.status().as_u16(), 200 | 404),
        "{}",
        res.status()
    );
});
