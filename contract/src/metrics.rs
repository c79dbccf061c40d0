//! The Prometheus series canary analysis reads: names, labels and the request statuses.

/// Declares a metric's registered name and, with a suffix, the samples it is exposed under.
macro_rules! metric {
    ($(#[$doc:meta])* $name:ident = $base:literal; $(#[$sdoc:meta])* $samples:ident = + $suffix:literal) => {
        $(#[$doc])*
        pub const $name: &str = $base;
        $(#[$sdoc])*
        pub const $samples: &str = concat!($base, $suffix);
    };
}

metric! {
    /// Inference requests, a counter labelled [`MODEL`], [`VERSION`] and [`STATUS`].
    REQUESTS = "ml_requests";
    /// The samples of [`REQUESTS`] in the text exposition.
    REQUESTS_TOTAL = + "_total"
}

metric! {
    /// Latency of successful inference requests, a histogram labelled [`MODEL`] and [`VERSION`].
    REQUEST_DURATION_SECONDS = "ml_request_duration_seconds";
    /// The cumulative bucket samples of [`REQUEST_DURATION_SECONDS`], labelled `le`.
    REQUEST_DURATION_SECONDS_BUCKET = + "_bucket"
}

/// The drift score of recent traffic against the reference data, a gauge labelled [`MODEL`]
/// and [`VERSION`]; absent without reference data.
pub const DATA_DRIFT_SCORE: &str = "ml_data_drift_score";

/// Share of correct predictions among the recent rows with ground-truth feedback, a gauge
/// labelled [`MODEL`] and [`VERSION`]; absent until the first feedback.
pub const MODEL_ACCURACY: &str = "ml_model_accuracy";

/// Label: the served model's name.
pub const MODEL: &str = "model";
/// Label: the served model's version; analysis keeps only the candidate's series.
pub const VERSION: &str = "version";
/// Label of [`REQUESTS`]: a [`RequestStatus`].
pub const STATUS: &str = "status";

/// How an inference request ended, the [`STATUS`] label of [`REQUESTS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestStatus {
    /// Answered (2xx).
    Success,
    /// The caller's mistake (4xx other than 429).
    Invalid,
    /// A server fault (5xx other than 503).
    Error,
    /// Load shed: queue full (429) or not serving (503).
    Rejected,
}

impl RequestStatus {
    pub const ALL: [RequestStatus; 4] = [Self::Success, Self::Invalid, Self::Error, Self::Rejected];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Invalid => "invalid",
            Self::Error => "error",
            Self::Rejected => "rejected",
        }
    }

    pub fn parse(value: &str) -> Option<RequestStatus> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// Whether a request with this status counts against the model in analysis: callers'
    /// mistakes are not the model's fault; failures and load shedding are.
    pub fn counts_as_failure(self) -> bool {
        matches!(self, Self::Error | Self::Rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_names_extend_the_registered_names() {
        assert_eq!(REQUESTS_TOTAL, "ml_requests_total");
        assert_eq!(REQUEST_DURATION_SECONDS_BUCKET, "ml_request_duration_seconds_bucket");
    }

    #[test]
    fn statuses_round_trip() {
        for status in RequestStatus::ALL {
            assert_eq!(RequestStatus::parse(status.as_str()), Some(status));
        }
        let failing: Vec<_> =
            RequestStatus::ALL.into_iter().filter(|s| s.counts_as_failure()).collect();
        assert_eq!(failing, [RequestStatus::Error, RequestStatus::Rejected]);
    }
}
