//! Shared server state: the loaded models, readiness, and settings the handlers need.

use std::cmp::Ordering as CmpOrdering;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::batching::Batcher;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::feedback::Feedback;
use crate::metrics::{Metrics, ModelMetrics};
use crate::predlog::{self, PredictionLog};
use crate::runtime::Backend;

/// One servable model version.
pub struct ServedModel {
    pub name: String,
    pub version: String,
    pub backend: Arc<dyn Backend>,
    pub batcher: Batcher,
    pub metrics: ModelMetrics,
    /// Short critical sections only, never held across an await.
    pub feedback: Mutex<Feedback>,
    pub drift: bool,
}

impl ServedModel {
    pub fn feedback(&self) -> std::sync::MutexGuard<'_, Feedback> {
        // A panic while holding the lock cannot leave Feedback inconsistent; keep going.
        self.feedback.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The loaded models, sorted by name, then version with the newest last.
pub struct Models {
    all: Vec<Arc<ServedModel>>,
    /// Distinct names, computed once: `/predict` consults them on every request.
    names: Vec<String>,
}

impl Models {
    pub fn new(mut all: Vec<Arc<ServedModel>>) -> Self {
        all.sort_by(|a, b| {
            a.name.cmp(&b.name).then_with(|| compare_versions(&a.version, &b.version))
        });
        let mut names: Vec<String> = all.iter().map(|m| m.name.clone()).collect();
        names.dedup();
        Self { all, names }
    }

    pub fn all(&self) -> &[Arc<ServedModel>] {
        &self.all
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn versions(&self, name: &str) -> Vec<&str> {
        self.all.iter().filter(|m| m.name == name).map(|m| m.version.as_str()).collect()
    }

    /// A model by name, at `version` or else its newest version.
    pub fn get(&self, name: &str, version: Option<&str>) -> Result<&Arc<ServedModel>> {
        let mut versions = self.all.iter().filter(|m| m.name == name).peekable();
        if versions.peek().is_none() {
            return Err(Error::NotFound(format!("model {name:?} is not served here")));
        }
        match version {
            None => Ok(versions.last().unwrap_or_else(|| unreachable!("peeked"))),
            Some(v) => versions
                .find(|m| m.version == v)
                .ok_or_else(|| Error::NotFound(format!("model {name:?} has no version {v:?}"))),
        }
    }

    /// For `/predict`: the `model` field may be left out when one model name is served.
    pub fn select(&self, name: Option<&str>, version: Option<&str>) -> Result<&Arc<ServedModel>> {
        match name {
            Some(n) => self.get(n, version),
            None => match self.names.as_slice() {
                [only] => self.get(only, version).map_err(|_| {
                    Error::NotFound(format!(
                        "`model_version` {:?} is not served; served: {:?}",
                        version.unwrap_or_default(),
                        self.versions(only)
                    ))
                }),
                names => Err(Error::invalid(format!(
                    "several models are served ({names:?}); set `model`"
                ))),
            },
        }
    }
}

/// Numeric when both are numbers (an optional leading `v` allowed), else lexicographic.
pub fn compare_versions(a: &str, b: &str) -> CmpOrdering {
    let num = |s: &str| s.strip_prefix('v').unwrap_or(s).parse::<u64>().ok();
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.cmp(b)),
        _ => a.cmp(b),
    }
}

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
    fn versions_order_numerically_when_they_can() {
        assert_eq!(compare_versions("2", "10"), CmpOrdering::Less);
        assert_eq!(compare_versions("v2", "v10"), CmpOrdering::Less);
        assert_eq!(compare_versions("b", "a"), CmpOrdering::Greater);
    }

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
