//! Prometheus metrics of a replica, encoded with `prometheus-client` from
//! the counters each layer keeps (relaxed atomics, read at scrape time).

use std::collections::BTreeMap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// Whether a sample only grows, goes up and down, or is a histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One sample: metric name (counters without the `_total` suffix, which
/// the encoder adds), help text, kind, label pairs, value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub labels: Vec<(String, String)>,
    pub value: u64,
    /// For histograms: (sum of observations in seconds, count, per-bucket
    /// counts with their upper bounds in seconds).
    pub histogram: Option<(f64, u64, Vec<(f64, u64)>)>,
}

impl Sample {
    pub fn counter(name: &'static str, help: &'static str, value: u64) -> Self {
        Self {
            name,
            help,
            kind: Kind::Counter,
            labels: vec![],
            value,
            histogram: None,
        }
    }
    pub fn histogram(
        name: &'static str,
        help: &'static str,
        h: &wire::metrics::LatencyHistogram,
    ) -> Self {
        Self {
            kind: Kind::Histogram,
            histogram: Some((h.sum_seconds(), h.count(), h.buckets())),
            ..Self::counter(name, help, 0)
        }
    }
    pub fn gauge(name: &'static str, help: &'static str, value: u64) -> Self {
        Self {
            kind: Kind::Gauge,
            ..Self::counter(name, help, value)
        }
    }
    pub fn label(mut self, k: &str, v: impl ToString) -> Self {
        self.labels.push((k.to_string(), v.to_string()));
        self
    }
}

/// Produces the samples of one scrape.
pub trait Source: std::fmt::Debug + Send + Sync + 'static {
    fn samples(&self) -> Vec<Sample>;
}

#[derive(Debug)]
struct SourceCollector<S: Source>(S);

impl<S: Source> Collector for SourceCollector<S> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut by_name: BTreeMap<&'static str, Vec<Sample>> = BTreeMap::new();
        for s in self.0.samples() {
            by_name.entry(s.name).or_default().push(s);
        }
        for (name, samples) in by_name {
            let first = &samples[0];
            let metric_type = match first.kind {
                Kind::Counter => ConstCounter::new(0u64).metric_type(),
                Kind::Gauge => ConstGauge::new(0i64).metric_type(),
                Kind::Histogram => prometheus_client::metrics::MetricType::Histogram,
            };
            let mut family = encoder.encode_descriptor(name, first.help, None, metric_type)?;
            if samples.len() == 1 && first.labels.is_empty() {
                encode_one(first, family)?;
                continue;
            }
            for s in &samples {
                let labels: Vec<(String, String)> = s.labels.clone();
                encode_one(s, family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

fn encode_one(
    s: &Sample,
    mut m: prometheus_client::encoding::MetricEncoder,
) -> Result<(), std::fmt::Error> {
    match s.kind {
        Kind::Counter => ConstCounter::new(s.value).encode(m),
        Kind::Gauge => ConstGauge::new(s.value as i64).encode(m),
        Kind::Histogram => {
            let (sum, count, buckets) = s
                .histogram
                .as_ref()
                .expect("histogram samples carry buckets");
            m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                *sum, *count, buckets, None,
            )
        }
    }
}

/// Encodes the samples of `source` in the Prometheus/OpenMetrics text format.
pub fn encode(source: impl Source) -> String {
    let mut registry = Registry::with_prefix("bftd");
    registry.register_collector(Box::new(SourceCollector(source)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed;
    impl Source for Fixed {
        fn samples(&self) -> Vec<Sample> {
            vec![
                Sample::counter("frame_drops", "frames dropped", 3).label("reason", "bad_tag"),
                Sample::counter("frame_drops", "frames dropped", 5).label("reason", "too_long"),
                Sample::gauge("regency", "current regency", 2),
                Sample::histogram("consensus_instance_seconds", "instance time", &{
                    let h = wire::metrics::LatencyHistogram::default();
                    h.observe(std::time::Duration::from_micros(3));
                    h.observe(std::time::Duration::from_micros(100));
                    h
                }),
            ]
        }
    }

    #[test]
    fn samples_encode_as_prometheus_text() {
        let text = encode(Fixed);
        assert!(text.contains("# TYPE bftd_frame_drops counter"), "{text}");
        assert!(
            text.contains("bftd_frame_drops_total{reason=\"bad_tag\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("bftd_frame_drops_total{reason=\"too_long\"} 5"),
            "{text}"
        );
        assert!(text.contains("bftd_regency 2\n"), "{text}");
        assert!(!text.contains("{}"), "{text}");
        // Buckets are cumulative in the exposition format.
        assert!(
            text.contains("bftd_consensus_instance_seconds_bucket{le=\"0.000004\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("bftd_consensus_instance_seconds_bucket{le=\"0.000128\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("bftd_consensus_instance_seconds_count 2"),
            "{text}"
        );
    }
}
