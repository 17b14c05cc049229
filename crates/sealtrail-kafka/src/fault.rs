//! Test-only faults, compiled with the cargo feature `fault-injection` (the distributed
//! suite's `integration` feature turns it on; release builds have none of this).
//!
//! `SEALTRAIL_FAULT_SLOW_PARTITION=<partition>:<millis>` makes the chainer of that
//! partition slow, as a slow store or a stuck chainer would: each poll returns one entry
//! and only after `<millis>`. The dispatcher and every other partition are untouched.

use std::sync::OnceLock;
use std::time::Duration;

/// The delay of each poll of `partition`, if it is the slow one.
pub(crate) fn slow_poll(partition: u32) -> Option<Duration> {
    static SLOW: OnceLock<Option<(u32, Duration)>> = OnceLock::new();
    let slow = SLOW.get_or_init(|| {
        let spec = std::env::var("SEALTRAIL_FAULT_SLOW_PARTITION").ok()?;
        let parsed = spec
            .split_once(':')
            .and_then(|(p, ms)| Some((p.parse().ok()?, ms.parse().ok()?)));
        match parsed {
            Some((p, ms)) => {
                tracing::warn!(partition = p, ms, "fault injection: a slow partition");
                Some((p, Duration::from_millis(ms)))
            }
            None => panic!("SEALTRAIL_FAULT_SLOW_PARTITION={spec:?}: expected PARTITION:MILLIS"),
        }
    });
    slow.filter(|(p, _)| *p == partition)
        .map(|(_, delay)| delay)
}

/// `SEALTRAIL_FAULT_LEAVE_GROUP_AFTER=<seconds>`: the first feed of the process leaves the
/// chainers' group that long after it starts, silently (it unsubscribes, as a consumer
/// that lost its coordinator and never rejoins stops getting partitions), so that the
/// chainer's watchdog has to notice and start a new feed.
pub(crate) fn leave_group_after() -> Option<Duration> {
    static FIRST: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
    let secs: u64 = std::env::var("SEALTRAIL_FAULT_LEAVE_GROUP_AFTER")
        .ok()?
        .parse()
        .expect("SEALTRAIL_FAULT_LEAVE_GROUP_AFTER: seconds");
    FIRST
        .swap(false, std::sync::atomic::Ordering::AcqRel)
        .then(|| Duration::from_secs(secs))
}

/// `SEALTRAIL_FAULT_STOP_FETCHING_AFTER=<seconds>`: the first feed of the process, that
/// long after it starts, drops its partitions from librdkafka's assignment without a
/// revocation (an incremental unassign behind the chainer's back): the group and the
/// chainer still count them as held, but nothing fetches them, as after the
/// `NOT_COORDINATOR` answer to a rejoined consumer's committed-offset query that librdkafka
/// never repeats. The chainer's watchdog has to notice and start a new feed.
pub(crate) fn stop_fetching_after() -> Option<Duration> {
    static FIRST: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
    let secs: u64 = std::env::var("SEALTRAIL_FAULT_STOP_FETCHING_AFTER")
        .ok()?
        .parse()
        .expect("SEALTRAIL_FAULT_STOP_FETCHING_AFTER: seconds");
    FIRST
        .swap(false, std::sync::atomic::Ordering::AcqRel)
        .then(|| Duration::from_secs(secs))
}
