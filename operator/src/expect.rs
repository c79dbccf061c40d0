//! Our own child writes that the watch caches may not show yet. A reconcile that another
//! child's event triggers before they arrive would find a child missing or old and write it
//! again; it waits for them instead, for at most [`CHILD_WAIT`]. (Status writes have the same
//! guard in [`crate::report`].)

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::runtime::reflector::ObjectRef;
use modelship_crds::ModelDeployment;

use crate::desired::Kind;

/// The longest a reconcile waits for the caches to show its previous child writes: past it,
/// the caches are trusted as they are (a child deleted by someone else right after our write
/// looks the same as one not seen yet).
pub const CHILD_WAIT: Duration = Duration::from_secs(5);

/// One child write, and the version it replaced.
#[derive(Clone, Debug, PartialEq)]
pub struct ChildWrite {
    pub kind: Kind,
    pub name: String,
    /// The resourceVersion the write replaced; `None` when it created the child.
    replaced: Option<String>,
}

impl ChildWrite {
    /// A write from version `before` (`None`: it created the child) to `after`; `None` when
    /// it changed nothing, so there is nothing to wait for.
    pub fn new(
        kind: Kind,
        name: &str,
        before: Option<String>,
        after: Option<String>,
    ) -> Option<Self> {
        (before != after).then(|| ChildWrite { kind, name: name.to_string(), replaced: before })
    }

    /// Whether a cache holding version `cached` (`None`: no such child) has not seen this
    /// write: it still holds the very version the write replaced.
    pub fn unseen_by(&self, cached: Option<&str>) -> bool {
        self.replaced.as_deref() == cached
    }
}

/// One reconcile's child writes, and when they were made.
type Writes = (Instant, Vec<ChildWrite>);

/// The last child writes of each model, until the caches show them.
#[derive(Default)]
pub struct Expectations(Mutex<HashMap<ObjectRef<ModelDeployment>, Writes>>);

impl Expectations {
    /// Remember `writes`, the child writes of `md`'s reconcile that just ran.
    pub fn record(&self, md: &ModelDeployment, writes: Vec<ChildWrite>) {
        let mut expected = self.0.lock().expect("lock");
        // A model deleted right after a write is never reconciled again to forget it.
        expected.retain(|_, (at, _)| at.elapsed() < CHILD_WAIT);
        let key = ObjectRef::from_obj(md);
        match writes.is_empty() {
            true => expected.remove(&key),
            false => expected.insert(key, (Instant::now(), writes)),
        };
    }

    /// How much longer `md`'s reconcile should wait for its previous child writes to reach
    /// the caches, given the version each cache holds (`cached(kind, name)`); `None` once
    /// they are all seen or [`CHILD_WAIT`] has passed (then they are forgotten).
    pub fn unseen(
        &self,
        md: &ModelDeployment,
        cached: impl Fn(Kind, &str) -> Option<String>,
    ) -> Option<Duration> {
        let mut expected = self.0.lock().expect("lock");
        let key = ObjectRef::from_obj(md);
        let (at, writes) = expected.get(&key)?;
        let left = CHILD_WAIT.checked_sub(at.elapsed()).filter(|left| !left.is_zero());
        let wait =
            left.filter(|_| writes.iter().any(|w| w.unseen_by(cached(w.kind, &w.name).as_deref())));
        if wait.is_none() {
            expected.remove(&key);
        }
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ModelDeployment {
        let spec = serde_json::from_value(
            serde_json::json!({"model": {"version": "1", "uri": "file:///m"}}),
        )
        .expect("a minimal spec");
        let mut md = ModelDeployment::new("m", spec);
        md.metadata.namespace = Some("ml".into());
        md
    }

    #[test]
    fn a_write_is_unseen_while_the_cache_holds_what_it_replaced() {
        let created = ChildWrite::new(Kind::Hpa, "m", None, Some("5".into())).unwrap();
        assert!(created.unseen_by(None), "not in the cache yet");
        assert!(!created.unseen_by(Some("5")));
        assert!(!created.unseen_by(Some("9")), "a later version has seen it too");
        let updated =
            ChildWrite::new(Kind::Deployment, "m-stable", Some("3".into()), Some("7".into()))
                .unwrap();
        assert!(updated.unseen_by(Some("3")));
        assert!(!updated.unseen_by(Some("7")));
        assert_eq!(
            ChildWrite::new(Kind::Service, "m", Some("3".into()), Some("3".into())),
            None,
            "a no-op"
        );
    }

    #[test]
    fn a_reconcile_waits_for_its_last_writes_then_forgets_them() {
        let expectations = Expectations::default();
        let md = model();
        assert_eq!(expectations.unseen(&md, |_, _| None), None, "nothing written");
        let hpa = ChildWrite::new(Kind::Hpa, "m", None, Some("5".into())).unwrap();
        expectations.record(&md, vec![hpa]);
        let wait = expectations.unseen(&md, |_, _| None).expect("the HPA is not cached yet");
        assert!(wait <= CHILD_WAIT);
        assert_eq!(expectations.unseen(&md, |_, _| Some("5".into())), None, "seen");
        assert_eq!(expectations.unseen(&md, |_, _| None), None, "forgotten once seen");
        expectations.record(&md, vec![]);
        assert_eq!(expectations.unseen(&md, |_, _| None), None);
    }
}
