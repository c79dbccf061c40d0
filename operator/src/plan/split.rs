//! Replica arithmetic for canaries, where traffic follows replicas.
//!
//! Pods are whole, so a weight is approached, not met: one replica cannot serve 10 %. The
//! split never takes the last stable pod away for a weight below 100, and when the plain
//! split of `total` pods misses the weight by more than [`WEIGHT_TOLERANCE`] it may run up to
//! `maxSurge` canary pods beyond `total` to come closer (one replica at 10 %: one stable and
//! one canary pod, 50 %, instead of the only pod on the candidate, 100 %).

/// Percentage points a split may miss the requested weight by before surge pods are
/// considered, and before the operator warns that the weight cannot be approached.
pub const WEIGHT_TOLERANCE: i32 = 10;

/// Split for `weight` percent on the canary: `(stable, canary)`.
///
/// - weight 0: every pod stable; weight 100: every pod on the canary;
/// - otherwise the plain split of `total` (the nearest whole number of canary pods, ties up,
///   at least one, and at least one stable pod) when it is within [`WEIGHT_TOLERANCE`];
/// - else the closest share over every split of `total` to `total + max_surge` pods with at
///   least one pod on each side (ties: fewer pods, then fewer canary pods);
/// - a single replica without surge keeps its stable pod: `(1, 0)`.
pub fn split(total: i32, weight: i32, max_surge: i32) -> (i32, i32) {
    if total <= 0 {
        return (0, 0);
    }
    let weight = weight.clamp(0, 100);
    match weight {
        0 => return (total, 0),
        100 => return (0, total),
        _ => {}
    }
    if total >= 2 {
        let nearest = ((i64::from(total) * i64::from(weight) + 50) / 100) as i32;
        let canary = nearest.clamp(1, total - 1);
        if i64::from(miss(canary, total, weight)) <= i64::from(WEIGHT_TOLERANCE * total) {
            return (total - canary, canary);
        }
    }
    // The closest share: `miss / pods` compared by cross-multiplication; on a tie the first
    // found wins, which has fewer pods, then fewer canary pods.
    let mut best: Option<((i32, i32), i64)> = None;
    for pods in total..=total + max_surge.clamp(0, 10) {
        for canary in 1..pods {
            let stable = pods - canary;
            if stable > total || canary > total {
                continue;
            }
            let error = i64::from(miss(canary, pods, weight));
            let closer =
                best.is_none_or(|((s, c), e)| error * i64::from(s + c) < e * i64::from(pods));
            if closer {
                best = Some(((stable, canary), error));
            }
        }
    }
    best.map_or((total, 0), |(split, _)| split)
}

/// `|100 * canary - weight * pods|`: how far `canary` of `pods` is from `weight` percent,
/// in percentage points times `pods`.
fn miss(canary: i32, pods: i32, weight: i32) -> i32 {
    (100 * canary - weight * pods).abs()
}

/// The share of `canary` pods among all, in percent, rounded to the nearest point.
pub fn share(stable: i32, canary: i32) -> i32 {
    let pods = stable.max(0) + canary.max(0);
    if pods == 0 {
        return 0;
    }
    ((i64::from(canary.max(0)) * 100 + i64::from(pods) / 2) / i64::from(pods)) as i32
}

/// Whether a split leaves the candidate's share within [`WEIGHT_TOLERANCE`] of `weight`.
pub fn approaches(split: (i32, i32), weight: i32) -> bool {
    (share(split.0, split.1) - weight).abs() <= WEIGHT_TOLERANCE
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
        // (total, weight, maxSurge) -> (stable, canary)
        let table = [
            ((10, 41, 1), (6, 4)),
            ((4, 25, 1), (3, 1)),
            ((8, 25, 1), (6, 2)),
            ((5, 50, 1), (2, 3)),
            ((7, 15, 1), (6, 1)),
            ((100, 33, 1), (67, 33)),
            ((10, 0, 1), (10, 0)),
            ((10, 100, 1), (0, 10)),
            ((0, 50, 1), (0, 0)),
            // Few replicas: a surge pod instead of the last stable pod, or closer to the weight.
            ((1, 1, 1), (1, 1)),
            ((1, 49, 1), (1, 1)),
            ((1, 99, 1), (1, 1)),
            ((2, 25, 1), (2, 1)),
            ((3, 10, 1), (3, 1)),
            ((4, 10, 1), (4, 1)),
            ((2, 90, 1), (1, 2)),
            ((4, 5, 2), (4, 1)),
            // Without surge the last stable pod stays, and one replica gets no canary pod.
            ((1, 10, 0), (1, 0)),
            ((2, 90, 0), (1, 1)),
            ((4, 10, 0), (3, 1)),
        ];
        for ((total, weight, surge), expected) in table {
            assert_eq!(split(total, weight, surge), expected, "split({total}, {weight}, {surge})");
        }
    }

    /// Every total from 1 to 10 at the weights steps commonly use, with the default surge of
    /// one pod: the split, the share of pods the candidate gets, and whether the operator
    /// warns that the weight cannot be approached (`!`).
    #[test]
    fn few_replicas_at_every_step_weight() {
        const WEIGHTS: [i32; 12] = [1, 5, 10, 20, 25, 30, 33, 40, 50, 75, 90, 99];
        let mut lines = Vec::new();
        for total in 1..=10 {
            let cells: Vec<String> = WEIGHTS
                .iter()
                .map(|&w| {
                    let (s, c) = split(total, w, 1);
                    let flag = if approaches((s, c), w) { " " } else { "!" };
                    format!("{s}+{c}={:>3}%{flag}", share(s, c))
                })
                .collect();
            lines.push(format!("{total:>2}: {}", cells.join(" ")));
        }
        let expected = [
            " 1: 1+1= 50%! 1+1= 50%! 1+1= 50%! 1+1= 50%! 1+1= 50%! 1+1= 50%! 1+1= 50%! 1+1= 50%  1+1= 50%  1+1= 50%! 1+1= 50%! 1+1= 50%!",
            " 2: 2+1= 33%! 2+1= 33%! 2+1= 33%! 2+1= 33%! 2+1= 33%  2+1= 33%  2+1= 33%  1+1= 50%  1+1= 50%  1+2= 67%  1+2= 67%! 1+2= 67%!",
            " 3: 3+1= 25%! 3+1= 25%! 3+1= 25%! 3+1= 25%  2+1= 33%  2+1= 33%  2+1= 33%  2+1= 33%  2+2= 50%  1+2= 67%  1+3= 75%! 1+3= 75%!",
            " 4: 4+1= 20%! 4+1= 20%! 4+1= 20%  3+1= 25%  3+1= 25%  3+1= 25%  3+1= 25%  2+2= 50%  2+2= 50%  1+3= 75%  1+4= 80%  1+4= 80%!",
            " 5: 5+1= 17%! 5+1= 17%! 4+1= 20%  4+1= 20%  4+1= 20%  3+2= 40%  3+2= 40%  3+2= 40%  2+3= 60%  1+4= 80%  1+4= 80%  1+5= 83%!",
            " 6: 6+1= 14%! 6+1= 14%  5+1= 17%  5+1= 17%  4+2= 33%  4+2= 33%  4+2= 33%  4+2= 33%  3+3= 50%  1+5= 83%  1+5= 83%  1+6= 86%!",
            " 7: 7+1= 13%! 6+1= 14%  6+1= 14%  6+1= 14%  5+2= 29%  5+2= 29%  5+2= 29%  4+3= 43%  3+4= 57%  2+5= 71%  1+6= 86%  1+7= 88%!",
            " 8: 8+1= 11%  7+1= 13%  7+1= 13%  6+2= 25%  6+2= 25%  6+2= 25%  5+3= 38%  5+3= 38%  4+4= 50%  2+6= 75%  1+7= 88%  1+8= 89% ",
            " 9: 9+1= 10%  8+1= 11%  8+1= 11%  7+2= 22%  7+2= 22%  6+3= 33%  6+3= 33%  5+4= 44%  4+5= 56%  2+7= 78%  1+8= 89%  1+9= 90% ",
            "10: 9+1= 10%  9+1= 10%  9+1= 10%  8+2= 20%  7+3= 30%  7+3= 30%  7+3= 30%  6+4= 40%  5+5= 50%  2+8= 80%  1+9= 90%  1+9= 90% ",
        ];
        assert_eq!(lines, expected, "\n{}", lines.join("\n"));
    }

    #[test]
    fn share_rounds_to_the_nearest_point() {
        assert_eq!(share(0, 0), 0);
        assert_eq!(share(2, 1), 33);
        assert_eq!(share(1, 2), 67);
        assert_eq!(share(0, 3), 100);
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
        // A surge pod comes on top of every stable pod.
        assert_eq!(capacity_safe(1, (1, 1), (1, 0), (1, 0)), (1, 1));
    }

    proptest! {
        #[test]
        fn split_keeps_stable_and_stays_within_the_surge(
            total in 1i32..=100,
            weight in 0i32..=100,
            surge in 0i32..=3,
        ) {
            let (stable, canary) = split(total, weight, surge);
            prop_assert!(stable >= 0 && canary >= 0);
            prop_assert!(stable <= total && canary <= total);
            prop_assert!(stable + canary >= total, "never fewer pods than the total");
            prop_assert!(stable + canary <= total + surge, "never more than maxSurge extra");
            match weight {
                0 => prop_assert_eq!((stable, canary), (total, 0)),
                100 => prop_assert_eq!((stable, canary), (0, total)),
                _ => {
                    prop_assert!(stable >= 1, "a weight below 100 keeps a stable pod");
                    prop_assert!(canary >= 1 || (total == 1 && surge == 0));
                    // No split of total..=total+surge pods with a pod on each side is closer.
                    let error = (share(stable, canary) - weight).abs();
                    if !approaches((stable, canary), weight) {
                        for pods in total..=total + surge {
                            for c in 1..pods {
                                let s = pods - c;
                                if s <= total && c <= total {
                                    // Shares are rounded: allow the rounding's half point.
                                    prop_assert!((share(s, c) - weight).abs() + 1 >= error);
                                }
                            }
                        }
                    }
                }
            }
            if surge == 0 && total >= 2 {
                prop_assert_eq!(stable + canary, total);
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
            let target = split(total, weight, 1);
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
