//! A registry snapshot as an OTLP `ExportMetricsServiceRequest`, cumulative or delta.

use std::{
    collections::HashMap,
    time::{SystemTime, UNIX_EPOCH},
};

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue},
    metrics::v1::{
        metric::Data, number_data_point, summary_data_point::ValueAtQuantile,
        AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge,
        Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
        Summary, SummaryDataPoint,
    },
    resource::v1::Resource,
};

use super::{exponential::exponential_point, Temporality};
use crate::metrics::{
    semconv,
    store::snapshot::{FamilySnapshot, NativeSnapshot, ValueSnapshot},
    MetricNaming,
};

/// A series: its family and labels.
type SeriesKey = (String, Vec<(String, String)>);

/// What a delta is taken from: a series' totals at the last successful push.
#[derive(Debug, Clone, PartialEq)]
enum Totals {
    Counter(u64),
    Histogram {
        counts: Vec<u64>,
        count: u64,
        sum: f64,
    },
    Exponential(NativeSnapshot),
}

/// One push being encoded: its times, and the totals a delivery will remember.
struct Push {
    taken_nanos: u64,
    /// The start time of cumulative and delta points.
    start: u64,
    delta: bool,
    totals: HashMap<SeriesKey, Totals>,
}

/// Turns snapshots into requests; remembers, for delta temporality, what was last delivered.
#[derive(Debug)]
pub(crate) struct Encoder {
    temporality: Temporality,
    resource: Resource,
    /// When the push started: the start time of every cumulative point.
    start_nanos: u64,
    /// When the last delivered push was taken: the start time of delta points.
    last_nanos: u64,
    delivered: HashMap<SeriesKey, Totals>,
    /// With [`MetricNaming::Otel`], the conventions' families go out under their OpenTelemetry
    /// names, units and attribute keys.
    naming: MetricNaming,
}

/// A request, and what the encoder remembers once it is delivered.
#[derive(Debug)]
pub(crate) struct Encoded {
    pub(crate) request: ExportMetricsServiceRequest,
    pub(crate) delivery: Delivery,
}

/// What a request's delivery tells the encoder: handed back to
/// [`Encoder::delivered`] once the collector accepted the request (which is sent by value).
#[derive(Debug)]
pub(crate) struct Delivery {
    /// Data points in the request.
    pub(crate) points: u64,
    taken_nanos: u64,
    totals: HashMap<SeriesKey, Totals>,
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn attributes(labels: &[(String, String)]) -> Vec<KeyValue> {
    labels.iter().map(|(k, v)| string_attribute(k, v)).collect()
}

/// The attributes of a series of one of the conventions' families: the OpenTelemetry keys,
/// integers as integers (a label that is not an integer stays a string).
fn semconv_attributes(labels: &[(String, String)]) -> Vec<KeyValue> {
    labels
        .iter()
        .map(|(k, v)| match semconv::otel_attribute(k) {
            Some((key, true)) => match v.parse::<i64>() {
                Ok(int) => KeyValue {
                    key: key.to_owned(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::IntValue(int)),
                    }),
                    ..KeyValue::default()
                },
                Err(_) => string_attribute(key, v),
            },
            Some((key, false)) => string_attribute(key, v),
            None => string_attribute(k, v),
        })
        .collect()
}

pub(crate) fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..KeyValue::default()
    }
}

/// The unit OpenTelemetry names for a Prometheus base-unit suffix.
fn unit(name: &str) -> &'static str {
    let base = name.strip_suffix("_total").unwrap_or(name);
    if base.ends_with("_seconds") {
        "s"
    } else if base.ends_with("_bytes") {
        "By"
    } else {
        ""
    }
}

impl Encoder {
    pub(crate) fn new(temporality: Temporality, resource: Resource, start: SystemTime) -> Self {
        let start_nanos = nanos(start);
        Self {
            temporality,
            resource,
            start_nanos,
            last_nanos: start_nanos,
            delivered: HashMap::new(),
            naming: MetricNaming::Harbor,
        }
    }

    /// Sends the conventions' families of `metric.naming: otel` under their OpenTelemetry
    /// names (`http.server.request.duration`, unit `s`, attribute `http.request.method`, ...).
    pub(crate) fn with_naming(mut self, naming: MetricNaming) -> Self {
        self.naming = naming;
        self
    }

    fn aggregation(&self) -> i32 {
        match self.temporality {
            Temporality::Cumulative => AggregationTemporality::Cumulative as i32,
            Temporality::Delta => AggregationTemporality::Delta as i32,
        }
    }

    /// The request for `families` taken at `now`. Nothing is remembered until
    /// [`delivered`](Self::delivered): after a failed push, the next delta covers both.
    pub(crate) fn encode(&self, families: &[FamilySnapshot], now: SystemTime) -> Encoded {
        let taken_nanos = nanos(now);
        let delta = self.temporality == Temporality::Delta;
        let mut push = Push {
            taken_nanos,
            start: if delta {
                self.last_nanos
            } else {
                self.start_nanos
            },
            delta,
            totals: HashMap::new(),
        };
        let mut points = 0u64;
        let mut metrics = Vec::with_capacity(families.len());
        for family in families {
            let instrument = match self.naming {
                MetricNaming::Otel => semconv::otel_instrument(&family.name),
                MetricNaming::Harbor => None,
            };
            let Some(data) = self.family_data(family, instrument, &mut push) else {
                continue;
            };
            points += family.series.len() as u64;
            let (name, unit) = match instrument {
                Some(i) => (i.name.to_owned(), i.unit),
                None => (family.name.clone(), unit(&family.name)),
            };
            metrics.push(Metric {
                name,
                description: family.help.clone().unwrap_or_default(),
                unit: unit.to_owned(),
                data: Some(data),
                ..Metric::default()
            });
        }
        Encoded {
            request: self.request(metrics),
            delivery: Delivery {
                points,
                taken_nanos,
                totals: push.totals,
            },
        }
    }

    fn request(&self, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(self.resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "towerscope".to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        ..InstrumentationScope::default()
                    }),
                    metrics,
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            }],
        }
    }

    /// The data of one family: of the kind of its series (a family has one kind).
    fn family_data(
        &self,
        family: &FamilySnapshot,
        instrument: Option<semconv::OtelInstrument>,
        push: &mut Push,
    ) -> Option<Data> {
        let first = family.series.first()?;
        let attributes = |labels: &[(String, String)]| match instrument {
            Some(_) => semconv_attributes(labels),
            None => attributes(labels),
        };
        let series = family.series.iter().map(|series| {
            let key = (family.name.clone(), series.labels.clone());
            (key, attributes(&series.labels), &series.value)
        });
        Some(match &first.value {
            ValueSnapshot::Counter(_) => Data::Sum(Sum {
                data_points: series
                    .filter_map(|(key, attrs, value)| self.counter_point(key, attrs, value, push))
                    .collect(),
                aggregation_temporality: self.aggregation(),
                is_monotonic: true,
            }),
            ValueSnapshot::Gauge(_) => {
                let up_down = instrument.is_some_and(|i| i.up_down);
                let data_points = series
                    .filter_map(|(_, attributes, value)| match value {
                        ValueSnapshot::Gauge(value) => Some(NumberDataPoint {
                            attributes,
                            // An OpenTelemetry UpDownCounter (`http.server.active_requests`)
                            // goes out as an SDK sends one: a non-monotonic cumulative sum.
                            start_time_unix_nano: if up_down { self.start_nanos } else { 0 },
                            time_unix_nano: push.taken_nanos,
                            value: Some(number_data_point::Value::AsDouble(*value)),
                            ..NumberDataPoint::default()
                        }),
                        _ => None,
                    })
                    .collect();
                if up_down {
                    Data::Sum(Sum {
                        data_points,
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: false,
                    })
                } else {
                    Data::Gauge(Gauge { data_points })
                }
            }
            ValueSnapshot::Histogram { .. } => Data::Histogram(Histogram {
                data_points: series
                    .filter_map(|(key, attrs, value)| self.histogram_point(key, attrs, value, push))
                    .collect(),
                aggregation_temporality: self.aggregation(),
            }),
            ValueSnapshot::Exponential(_) => Data::ExponentialHistogram(ExponentialHistogram {
                data_points: series
                    .filter_map(|(key, attrs, value)| {
                        self.exponential_point(key, attrs, value, push)
                    })
                    .collect(),
                aggregation_temporality: self.aggregation(),
            }),
            ValueSnapshot::Summary { .. } => Data::Summary(Summary {
                data_points: series
                    .filter_map(|(_, attrs, value)| self.summary_point(attrs, value, push))
                    .collect(),
            }),
        })
    }

    fn counter_point(
        &self,
        key: SeriesKey,
        attributes: Vec<KeyValue>,
        value: &ValueSnapshot,
        push: &mut Push,
    ) -> Option<NumberDataPoint> {
        let ValueSnapshot::Counter(value) = value else {
            return None;
        };
        let reported = match (push.delta, self.delivered.get(&key)) {
            (true, Some(Totals::Counter(before))) if before <= value => value - before,
            _ => *value,
        };
        if push.delta {
            push.totals.insert(key, Totals::Counter(*value));
        }
        Some(NumberDataPoint {
            attributes,
            start_time_unix_nano: push.start,
            time_unix_nano: push.taken_nanos,
            value: Some(number_data_point::Value::AsInt(
                i64::try_from(reported).unwrap_or(i64::MAX),
            )),
            ..NumberDataPoint::default()
        })
    }

    fn histogram_point(
        &self,
        key: SeriesKey,
        attributes: Vec<KeyValue>,
        value: &ValueSnapshot,
        push: &mut Push,
    ) -> Option<HistogramDataPoint> {
        let ValueSnapshot::Histogram {
            bounds,
            counts,
            count,
            sum,
        } = value
        else {
            return None;
        };
        let (counts_out, count_out, sum_out) = match (push.delta, self.delivered.get(&key)) {
            (
                true,
                Some(Totals::Histogram {
                    counts: before,
                    count: before_count,
                    sum: before_sum,
                }),
            ) if before_count <= count && before.len() == counts.len() => (
                counts
                    .iter()
                    .zip(before)
                    .map(|(n, b)| n.saturating_sub(*b))
                    .collect(),
                count - before_count,
                sum - before_sum,
            ),
            _ => (counts.clone(), *count, *sum),
        };
        if push.delta {
            let totals = Totals::Histogram {
                counts: counts.clone(),
                count: *count,
                sum: *sum,
            };
            push.totals.insert(key, totals);
        }
        Some(HistogramDataPoint {
            attributes,
            start_time_unix_nano: push.start,
            time_unix_nano: push.taken_nanos,
            count: count_out,
            sum: Some(sum_out),
            bucket_counts: counts_out,
            explicit_bounds: bounds.to_vec(),
            ..HistogramDataPoint::default()
        })
    }

    fn exponential_point(
        &self,
        key: SeriesKey,
        attributes: Vec<KeyValue>,
        value: &ValueSnapshot,
        push: &mut Push,
    ) -> Option<ExponentialHistogramDataPoint> {
        let ValueSnapshot::Exponential(native) = value else {
            return None;
        };
        let before = match (push.delta, self.delivered.get(&key)) {
            (true, Some(Totals::Exponential(before))) => Some(before),
            _ => None,
        };
        let point = ExponentialHistogramDataPoint {
            attributes,
            start_time_unix_nano: push.start,
            time_unix_nano: push.taken_nanos,
            ..exponential_point(native, before)
        };
        if push.delta {
            push.totals.insert(key, Totals::Exponential(native.clone()));
        }
        Some(point)
    }

    fn summary_point(
        &self,
        attributes: Vec<KeyValue>,
        value: &ValueSnapshot,
        push: &Push,
    ) -> Option<SummaryDataPoint> {
        let ValueSnapshot::Summary {
            quantiles,
            count,
            sum,
        } = value
        else {
            return None;
        };
        // OTLP summaries are cumulative only.
        Some(SummaryDataPoint {
            attributes,
            start_time_unix_nano: self.start_nanos,
            time_unix_nano: push.taken_nanos,
            count: *count,
            sum: *sum,
            quantile_values: quantiles
                .iter()
                .map(|(quantile, value)| ValueAtQuantile {
                    quantile: *quantile,
                    value: *value,
                })
                .collect(),
            ..SummaryDataPoint::default()
        })
    }

    /// Remembers what a delivered request held: the next delta starts from it.
    pub(crate) fn delivered(&mut self, delivery: Delivery) {
        self.last_nanos = delivery.taken_nanos;
        if self.temporality == Temporality::Delta {
            self.delivered = delivery.totals;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;
    use crate::metrics::store::snapshot::SeriesSnapshot;

    fn families(counter: u64, counts: [u64; 3], sum: f64) -> Vec<FamilySnapshot> {
        let labels = vec![("method".to_owned(), "GET".to_owned())];
        vec![
            FamilySnapshot {
                name: "app_http_request_total".into(),
                help: Some("Requests.".into()),
                series: vec![SeriesSnapshot {
                    labels: labels.clone(),
                    value: ValueSnapshot::Counter(counter),
                }],
            },
            FamilySnapshot {
                name: "app_http_request_duration_seconds".into(),
                help: None,
                series: vec![SeriesSnapshot {
                    labels,
                    value: ValueSnapshot::Histogram {
                        bounds: Arc::from([0.1, 1.0]),
                        counts: counts.to_vec(),
                        count: counts.iter().sum(),
                        sum,
                    },
                }],
            },
        ]
    }

    fn sum_point(request: &ExportMetricsServiceRequest) -> (i64, u64, u64) {
        let metric = &request.resource_metrics[0].scope_metrics[0].metrics[0];
        match &metric.data {
            Some(Data::Sum(sum)) => match sum.data_points[0].value {
                Some(number_data_point::Value::AsInt(v)) => (
                    v,
                    sum.data_points[0].start_time_unix_nano,
                    sum.data_points[0].time_unix_nano,
                ),
                _ => panic!("not an int"),
            },
            other => panic!("{other:?}"),
        }
    }

    fn histogram_point(request: &ExportMetricsServiceRequest) -> HistogramDataPoint {
        match &request.resource_metrics[0].scope_metrics[0].metrics[1].data {
            Some(Data::Histogram(h)) => h.data_points[0].clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cumulative_points_are_totals_since_the_start() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000);
        let encoder = Encoder::new(Temporality::Cumulative, Resource::default(), t0);
        let e = encoder.encode(&families(7, [1, 2, 3], 9.5), t0 + Duration::from_secs(60));
        assert_eq!(e.delivery.points, 2);
        assert_eq!(
            sum_point(&e.request),
            (7, 1_000_000_000_000, 1_060_000_000_000)
        );
        let metric = &e.request.resource_metrics[0].scope_metrics[0].metrics;
        assert_eq!(metric[0].description, "Requests.");
        assert_eq!(
            (metric[0].unit.as_str(), metric[1].unit.as_str()),
            ("", "s")
        );
        let h = histogram_point(&e.request);
        assert_eq!(
            (h.bucket_counts, h.explicit_bounds, h.count, h.sum),
            (vec![1, 2, 3], vec![0.1, 1.0], 6, Some(9.5))
        );
    }

    #[test]
    fn delta_points_are_changes_since_the_last_delivered_push() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000);
        let minute = |n: u64| t0 + Duration::from_secs(60 * n);
        let mut encoder = Encoder::new(Temporality::Delta, Resource::default(), t0);
        let first = encoder.encode(&families(7, [1, 2, 3], 9.5), minute(1));
        assert_eq!(sum_point(&first.request).0, 7);
        encoder.delivered(first.delivery);
        // This push fails: the next one covers both intervals.
        let failed = encoder.encode(&families(10, [1, 3, 3], 10.0), minute(2));
        assert_eq!(sum_point(&failed.request).0, 3);
        drop(failed);
        let third = encoder.encode(&families(12, [2, 3, 4], 12.0), minute(3));
        let (value, start, time) = sum_point(&third.request);
        assert_eq!(
            (value, start, time),
            (5, nanos(minute(1)), nanos(minute(3)))
        );
        let h = histogram_point(&third.request);
        assert_eq!(
            (h.bucket_counts, h.count, h.sum),
            (vec![1, 1, 1], 3, Some(2.5))
        );
        encoder.delivered(third.delivery);
        // A counter that went down was reset (a restart of its source): its value is a delta
        // from zero.
        let reset = encoder.encode(&families(4, [2, 3, 4], 12.0), minute(4));
        assert_eq!(sum_point(&reset.request).0, 4);
    }
}
