//! Replica arithmetic for canaries, where traffic follows replicas.

/// Split `total` replicas at `weight` percent on the canary: the canary gets the nearest
/// whole number (ties round up) and at least one pod whenever the weight is above zero.
/// Returns `(stable, canary)`.
pub fn split(total: i32, weight: i32) -> (i32, i32) {
    if total <= 0 {
        return (0, 0);
    }
    let weight = weight.clamp(0, 100);
    if weight == 0 {
        return (total, 0);
    }
    let canary = ((i64::from(total) * i64::from(weight) + 50) / 100) as i32;
    let canary = canary.clamp(1, total);
    (total - canary, canary)
}

/// Hold back scale-downs so that no capacity goes before it is replaced: a track shrinks
/// toward its target only as far as the other track's ready pods cover `total`. Growing
/// tracks take their target at once. `current` and `ready` are `(stable, canary)`.
///
/// Whatever pods the Deployment controller removes, the ready pods left are at least
/// `min(total, stable_ready + canary_ready)`.
pub fn capacity_safe(
    total: i32,
    target: (i32, i32),
    current: (i32, i32),
    ready: (i32, i32),
) -> (i32, i32) {
    let total = total.max(0);
    let hold = |target: i32, current: i32, other_ready: i32| {
        if target >= current { target } else { target.max(current.min(total - other_ready)) }
    };
    let stable = hold(target.0, current.0, ready.1).clamp(0, total);
    let canary = hold(target.1, current.1, ready.0).clamp(0, total);
    (stable, canary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn split_table() {
        // (total, weight) -> (stable, canary)
        let table = [
            ((10, 41), (6, 4)),
            ((4, 25), (3, 1)),
            ((8, 25), (6, 2)),
            ((2, 25), (1, 1)),
            ((3, 10), (2, 1)),
            ((10, 0), (10, 0)),
            ((10, 100), (0, 10)),
            ((1, 1), (0, 1)),
            ((1, 49), (0, 1)),
            ((5, 50), (2, 3)),
            ((0, 50), (0, 0)),
            ((100, 33), (67, 33)),
            ((7, 15), (6, 1)),
        ];
        for ((total, weight), expected) in table {
            assert_eq!(split(total, weight), expected, "split({total}, {weight})");
        }
    }

    #[test]
    fn capacity_safe_table() {
        // Raising the weight: the canary grows at once, stable shrinks as canary pods get ready.
        assert_eq!(capacity_safe(10, (5, 5), (9, 1), (9, 1)), (9, 5));
        assert_eq!(capacity_safe(10, (5, 5), (9, 5), (9, 3)), (7, 5));
        assert_eq!(capacity_safe(10, (5, 5), (7, 5), (7, 5)), (5, 5));
        // Rolling back: stable grows at once, the canary shrinks as stable pods get ready.
        assert_eq!(capacity_safe(10, (10, 0), (5, 5), (5, 5)), (10, 5));
        assert_eq!(capacity_safe(10, (10, 0), (10, 5), (8, 5)), (10, 2));
        assert_eq!(capacity_safe(10, (10, 0), (10, 2), (10, 2)), (10, 0));
        // Surplus capacity (an autoscaler scaled in) is released at once.
        assert_eq!(capacity_safe(4, (2, 2), (5, 5), (5, 5)), (2, 2));
        // A canary that never gets ready never takes stable capacity away.
        assert_eq!(capacity_safe(10, (9, 1), (10, 1), (10, 0)), (10, 1));
        // Holding back never creates pods a track does not have.
        assert_eq!(capacity_safe(3, (3, 0), (0, 0), (0, 0)), (3, 0));
    }

    proptest! {
        #[test]
        fn split_adds_up_and_rounds_to_nearest(total in 1i32..=100, weight in 0i32..=100) {
            let (stable, canary) = split(total, weight);
            prop_assert_eq!(stable + canary, total);
            prop_assert!(stable >= 0 && canary >= 0);
            if weight == 0 {
                prop_assert_eq!(canary, 0);
            } else {
                prop_assert!(canary >= 1);
                // Nearest integer, ties up (unless the floor of one pod applies).
                let exact = f64::from(total) * f64::from(weight) / 100.0;
                let nearest = (exact + 0.5).floor() as i32;
                prop_assert_eq!(canary, nearest.max(1));
            }
            if weight == 100 {
                prop_assert_eq!(stable, 0);
            }
        }

        #[test]
        fn capacity_safe_never_drops_ready_pods(
            total in 0i32..=50,
            weight in 0i32..=100,
            stable_current in 0i32..=60,
            canary_current in 0i32..=60,
            stable_ready_share in 0.0f64..=1.0,
            canary_ready_share in 0.0f64..=1.0,
        ) {
            let stable_ready = (f64::from(stable_current) * stable_ready_share) as i32;
            let canary_ready = (f64::from(canary_current) * canary_ready_share) as i32;
            let target = split(total, weight);
            let (stable, canary) = capacity_safe(
                total,
                target,
                (stable_current, canary_current),
                (stable_ready, canary_ready),
            );
            prop_assert!(stable >= target.0.min(total) && canary >= target.1.min(total));
            prop_assert!(stable <= total.max(0) && canary <= total.max(0));
            // Never grows a track beyond both its target and its current size.
            prop_assert!(stable <= target.0.max(stable_current));
            prop_assert!(canary <= target.1.max(canary_current));
            // Worst case: scaling down removes ready pods first.
            let left = stable_ready.min(stable) + canary_ready.min(canary);
            prop_assert!(left >= total.min(stable_ready + canary_ready));
        }
    }
}
