//! A metrics recorder for tests that keeps every value: `metrics-util`'s `DebuggingRecorder`
//! resets gauges and counters at each snapshot, which would let a gauge read 0 before it did.
//!
//! One copy for the adapter crates' test suites, which include it by path
//! (`#[path = "../../../firefly-webhook/tests/support/recorded.rs"] mod recorded;`).

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};

pub(crate) struct Recorded(Registry<Key, AtomicStorage>);

#[allow(dead_code)] // each test binary uses a part
impl Recorded {
    pub(crate) fn new() -> Self {
        Self(Registry::atomic())
    }

    /// The recorder of the whole process, installed on the first call: for metrics recorded
    /// on threads the test does not own (librdkafka's).
    pub(crate) fn global() -> &'static Self {
        static GLOBAL: OnceLock<&'static Recorded> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            let recorded: &'static Self = Box::leak(Box::new(Self::new()));
            metrics::set_global_recorder(recorded)
                .unwrap_or_else(|_| panic!("another recorder is installed"));
            recorded
        })
    }

    /// Runs `test` on a current-thread runtime with this recorder installed for its thread:
    /// everything the test and the tasks it spawns record lands here.
    pub(crate) fn run<T: std::future::Future>(&self, test: T) -> T::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        metrics::with_local_recorder(self, || rt.block_on(test))
    }

    /// The gauge `name` with (at least) `labels`, if it was ever touched.
    pub(crate) fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .get_gauge_handles()
            .into_iter()
            .find(|(key, _)| matches(key, name, labels))
            .map(|(_, gauge)| f64::from_bits(gauge.load(Ordering::SeqCst)))
    }

    /// The counters `name` with (at least) `labels`, summed.
    pub(crate) fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.0
            .get_counter_handles()
            .into_iter()
            .filter(|(key, _)| matches(key, name, labels))
            .map(|(_, counter)| counter.load(Ordering::SeqCst))
            .sum()
    }

    /// The values recorded in the histograms `name` with (at least) `labels`.
    pub(crate) fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.0
            .get_histogram_handles()
            .into_iter()
            .filter(|(key, _)| matches(key, name, labels))
            .flat_map(|(_, histogram)| histogram.data())
            .collect()
    }
}

fn matches(key: &Key, name: &str, labels: &[(&str, &str)]) -> bool {
    key.name() == name
        && labels
            .iter()
            .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
}

impl Recorder for Recorded {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0
            .get_or_create_counter(key, |c| Counter::from_arc(Arc::clone(c)))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0
            .get_or_create_gauge(key, |g| Gauge::from_arc(Arc::clone(g)))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0
            .get_or_create_histogram(key, |h| Histogram::from_arc(Arc::clone(h)))
    }
}
