//! Shared server state: the loaded models, readiness, and settings the handlers need.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::models::Models;
use crate::predlog::{self, PredictionLog};

/// What the handlers read from the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub prediction_log: predlog::Options,
}

impl Settings {
    pub fn from_config(c: &Config) -> Self {
        Self {
            max_body_bytes: c.max_body_bytes,
            request_timeout: c.request_timeout(),
            prediction_log: c.prediction_log(),
        }
    }
}

pub struct Inner {
    pub settings: Settings,
    pub metrics: Metrics,
    /// Present when the prediction log is on; its writer thread starts with the state.
    pub prediction_log: Option<PredictionLog>,
    models: OnceLock<Models>,
    shutting_down: AtomicBool,
    auth_token: Option<Vec<u8>>,
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(settings: Settings, auth_token: Option<String>) -> Self {
        let metrics = Metrics::new();
        // The log's series exist only when it is on.
        let prediction_log = (settings.prediction_log.sink != predlog::Sink::Off)
            .then(|| {
                PredictionLog::start(&settings.prediction_log, metrics.prediction_log_counters())
            })
            .flatten();
        Self(Arc::new(Inner {
            settings,
            metrics,
            prediction_log,
            models: OnceLock::new(),
            shutting_down: AtomicBool::new(false),
            auth_token: auth_token.map(String::into_bytes),
        }))
    }

    /// Publish the loaded and warmed-up models; readiness follows.
    pub fn set_models(&self, models: Models) -> Result<()> {
        self.models.set(models).map_err(|_| Error::Config("models were already loaded".into()))
    }

    /// Loaded models, or 503 while they load.
    pub fn models(&self) -> Result<&Models> {
        self.models.get().ok_or_else(|| Error::NotReady("models are still loading".into()))
    }

    pub fn loaded(&self) -> bool {
        self.models.get().is_some()
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Ready means: every model loaded and warmed up, and no shutdown under way.
    pub fn readiness(&self) -> Result<()> {
        if self.shutting_down() {
            return Err(Error::ShuttingDown);
        }
        self.models().map(|_| ())
    }

    pub fn auth_token(&self) -> Option<&[u8]> {
        self.auth_token.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_until_models_are_set_and_again_when_shutting_down() {
        let s = AppState::new(Settings::from_config(&Config::for_tests()), None);
        assert!(s.readiness().is_err());
        s.set_models(Models::new(Vec::new())).unwrap();
        assert!(s.readiness().is_ok());
        s.begin_shutdown();
        assert_eq!(s.readiness().unwrap_err().error_type(), "shutting_down");
    }
}
