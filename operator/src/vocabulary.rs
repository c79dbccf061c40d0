//! The words the operator writes into status and events: condition types, condition statuses
//! and reasons. Users, alerts and `kubectl wait` match on them, so each is spelled exactly
//! once, here; everything else names the enum variant.

/// Declares an enum whose variants are spelled, on the wire, exactly as they are named.
macro_rules! spelled_as_named {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$doc:meta])* $variant:ident,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name { $($(#[$doc])* $variant,)* }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => stringify!($variant),)* }
            }

            pub fn parse(value: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|v| v.as_str() == value)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

spelled_as_named! {
    /// The conditions every ModelDeployment carries, in the order they are written.
    pub enum ConditionType {
        /// At least the total number of replicas is ready.
        Available,
        /// A rollout or scale change is under way.
        Progressing,
        /// Something needs attention.
        Degraded,
        /// A rollout waits for time or for the user.
        Paused,
    }
}

spelled_as_named! {
    /// Why a condition stands as it does, or why an event was published.
    pub enum Reason {
        // Progressing and Paused: where a rollout stands.
        /// A RollingUpdate replaces pods in place.
        RollingUpdate,
        /// Canary: the tracks are being sized for a weight.
        ScalingTracks,
        /// BlueGreen: the active color is being sized.
        Scaling,
        /// Ready pods are not behind the Service yet, or not only the new color's.
        WaitingForEndpoints,
        /// The candidate's pods are not all ready yet.
        WaitingForCandidate,
        /// Promotion waits for a passing analysis measurement.
        WaitingForAnalysis,
        /// Canary: the stable track is rolling to the candidate.
        Promoting,
        /// BlueGreen: the previous color is kept for the scale-down delay.
        ScaleDownDelay,
        /// Canary: the manual weight is reached; the user moves it on.
        CanaryWeightReached,
        /// Canary: a timed pause step.
        CanaryPause,
        /// A manual gate waits for `spec.strategy.approvedVersion`.
        AwaitingApproval,
        /// Every pod runs the desired version.
        RolloutComplete,

        // Available.
        MinimumReplicasAvailable,
        MinimumReplicasUnavailable,

        // Degraded, and the warnings published when it begins.
        /// Nothing needs attention.
        AsExpected,
        /// The candidate failed its analysis or was abandoned; stable serves.
        RolledBack,
        /// No progress within `progressDeadlineSeconds`.
        ProgressDeadlineExceeded,
        /// No progress within `progressDeadlineSeconds`: the candidate was removed
        /// (`abortOnDeadline`); stable serves.
        ProgressDeadlineAborted,
        /// The spec names the stable version with another model file.
        ModelSourceMismatch,
        /// The API server refused a child object.
        ApplyFailed,

        // Paused, when nothing waits.
        NotPaused,

        // Events of a rollout's transitions.
        RolloutStarted,
        Superseded,
        Promoted,
        PromotionStarted,
        AnalysisFailed,
        AnalysisMeasurementFailed,
        StepCompleted,
        WeightChanged,
        /// Canary: the requested weight cannot be approached with whole pods at this replica
        /// count, within the split's tolerance.
        WeightNotReachable,
        SwitchedService,
        TrafficSwitched,
    }
}

/// A condition's `status` field.
pub fn condition_status(holds: bool) -> &'static str {
    if holds { "True" } else { "False" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelled_as_named_and_parsed_back() {
        assert_eq!(Reason::ProgressDeadlineExceeded.as_str(), "ProgressDeadlineExceeded");
        assert_eq!(ConditionType::Degraded.to_string(), "Degraded");
        for reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.as_str()), Some(*reason));
        }
        assert_eq!(Reason::parse("NoSuchReason"), None);
    }
}
