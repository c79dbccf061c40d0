//! Ground truth: recent predictions remembered by request id, and a rolling accuracy window.

use std::collections::{HashMap, VecDeque};

use smallvec::SmallVec;

/// Fraction of correct predictions among the last `capacity` labelled rows.
#[derive(Clone, Debug)]
pub struct AccuracyWindow {
    capacity: usize,
    hits: VecDeque<bool>,
    correct: usize,
}

impl AccuracyWindow {
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), hits: VecDeque::new(), correct: 0 }
    }

    pub fn record(&mut self, correct: bool) {
        if self.hits.len() == self.capacity && self.hits.pop_front() == Some(true) {
            self.correct -= 1;
        }
        self.hits.push_back(correct);
        self.correct += usize::from(correct);
    }

    pub fn len(&self) -> usize {
        self.hits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hits.is_empty()
    }

    pub fn accuracy(&self) -> Option<f64> {
        (!self.hits.is_empty()).then(|| self.correct as f64 / self.hits.len() as f64)
    }
}

pub type Labels = SmallVec<[i64; 2]>;

/// Predicted labels of recent requests that carried an id, oldest evicted first. Bounded both
/// in entries and in rows, so batch requests cannot make it large.
#[derive(Clone, Debug)]
pub struct PredictionLog {
    max_entries: usize,
    max_rows: usize,
    rows: usize,
    labels: HashMap<String, Labels>,
    order: VecDeque<String>,
}

impl PredictionLog {
    pub fn new(max_entries: usize, max_rows: usize) -> Self {
        Self {
            max_entries: max_entries.max(1),
            max_rows: max_rows.max(1),
            rows: 0,
            labels: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn insert(&mut self, id: &str, labels: Labels) {
        if labels.len() > self.max_rows {
            return;
        }
        self.rows += labels.len();
        match self.labels.insert(id.to_owned(), labels) {
            // A repeated id replaces the old answer and keeps its place.
            Some(old) => self.rows -= old.len(),
            None => self.order.push_back(id.to_owned()),
        }
        while self.order.len() > self.max_entries || self.rows > self.max_rows {
            let Some(old) = self.order.pop_front() else { break };
            if let Some(l) = self.labels.remove(&old) {
                self.rows -= l.len();
            }
        }
    }

    /// Each prediction can be judged once.
    pub fn take(&mut self, id: &str) -> Option<Labels> {
        let labels = self.labels.remove(id)?;
        self.rows -= labels.len();
        self.order.retain(|o| o != id);
        Some(labels)
    }
}

#[derive(Clone, Debug)]
pub struct Feedback {
    pub accuracy: AccuracyWindow,
    pub log: PredictionLog,
}

impl Feedback {
    pub fn new(window: usize, log_entries: usize, log_rows: usize) -> Self {
        Self {
            accuracy: AccuracyWindow::new(window),
            log: PredictionLog::new(log_entries, log_rows),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_rolls() {
        let mut w = AccuracyWindow::new(2);
        assert_eq!(w.accuracy(), None);
        w.record(true);
        w.record(false);
        assert_eq!(w.accuracy(), Some(0.5));
        w.record(false);
        assert_eq!(w.accuracy(), Some(0.0));
        w.record(true);
        w.record(true);
        assert_eq!(w.accuracy(), Some(1.0));
    }

    #[test]
    fn log_evicts_oldest_and_answers_once() {
        let mut log = PredictionLog::new(2, 100);
        log.insert("a", [1].into_iter().collect());
        log.insert("b", [0].into_iter().collect());
        log.insert("c", [1].into_iter().collect());
        assert_eq!(log.take("a"), None);
        assert_eq!(log.take("b").unwrap().as_slice(), &[0]);
        assert_eq!(log.take("b"), None);
    }

    #[test]
    fn log_is_bounded_in_rows() {
        let mut log = PredictionLog::new(100, 4);
        log.insert("a", [1, 1].into_iter().collect());
        log.insert("b", [0, 0].into_iter().collect());
        log.insert("c", [1].into_iter().collect());
        assert_eq!(log.take("a"), None);
        assert!(log.take("b").is_some());
        log.insert("huge", [0; 5].into_iter().collect());
        assert_eq!(log.take("huge"), None);
    }
}
