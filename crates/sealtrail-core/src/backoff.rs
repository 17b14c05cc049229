//! The wait between retries of an operation that must succeed in the end (a store call,
//! a claim, a dead-letter write): it doubles from `first` up to `max`, so a short outage
//! costs little and a long one does not busy-loop. The servers' retry loops share it;
//! the client library has its own policy, with jitter and the server's `Retry-After`
//! (`sealtrail_client::RetryPolicy`).

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self { next: first, max }
    }

    /// How long to wait before the next attempt (as the log line says it); the one after
    /// will be twice that, at most `max`.
    pub fn wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// The wait [`wait`](Self::wait) will return, without moving on.
    pub fn peek(&self) -> Duration {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_its_cap() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_millis(300));
        let waits: Vec<u128> = (0..5).map(|_| b.wait().as_millis()).collect();
        assert_eq!(waits, [50, 100, 200, 300, 300]);
        assert_eq!(b.peek(), Duration::from_millis(300));
    }
}
