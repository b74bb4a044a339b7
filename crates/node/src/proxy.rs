//! The proxy's book of outstanding requests, shared by the bftd proxy and
//! the simulator's: which signed request each seq is, who waits for it,
//! and when it was last sent, so overdue requests are sent again
//! (BFT-SMaRt clients retransmit on their timeout: a request lost on a
//! link that was down, or refused by a full pool, is not lost for good).
//!
//! Time is the host's (milliseconds in bftd, ticks in the simulator).

use std::collections::BTreeMap;

use wire::{Request, Verified};

/// One outstanding request.
#[derive(Debug)]
struct Entry<C> {
    callers: C,
    request: Verified<Request>,
    sent_at: u64,
}

/// Outstanding requests by seq, at most `window` (the proxy's requests in
/// flight, within the de-duplication window).
#[derive(Debug)]
pub struct Outstanding<C> {
    map: BTreeMap<u64, Entry<C>>,
    window: usize,
}

impl<C> Outstanding<C> {
    /// An empty book for at most `window` requests.
    ///
    /// # Panics
    /// If `window` is 0 or above the de-duplication window.
    pub fn new(window: usize) -> Self {
        assert!((1..=control::clients::WINDOW as usize).contains(&window));
        Self {
            map: BTreeMap::new(),
            window,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// True when no more request may be sent.
    pub fn is_full(&self) -> bool {
        self.map.len() >= self.window
    }

    /// Records request `seq` (signed) with its callers, sent at `now`.
    ///
    /// # Panics
    /// If the book is full or `seq` is outstanding already.
    pub fn insert(&mut self, seq: u64, callers: C, request: Verified<Request>, now: u64) {
        assert!(!self.is_full(), "outstanding requests within the window");
        let old = self.map.insert(
            seq,
            Entry {
                callers,
                request,
                sent_at: now,
            },
        );
        assert!(old.is_none(), "seq {seq} outstanding twice");
    }

    /// The callers of request `seq` (it was answered), if outstanding.
    pub fn take(&mut self, seq: u64) -> Option<C> {
        self.map.remove(&seq).map(|e| e.callers)
    }

    /// Takes every outstanding request for which `executed(seq)` holds
    /// (executed where this replica could not answer them, e.g. inside a
    /// checkpoint state transfer installed): (seq, callers), ascending.
    pub fn take_executed(&mut self, executed: impl Fn(u64) -> bool) -> Vec<(u64, C)> {
        let seqs: Vec<u64> = self.map.keys().copied().filter(|&s| executed(s)).collect();
        seqs.into_iter()
            .filter_map(|s| self.map.remove(&s).map(|e| (s, e.callers)))
            .collect()
    }

    /// The requests last sent `after` or longer before `now`, oldest seq
    /// first, marked as sent at `now`: the host sends them again.
    pub fn overdue(&mut self, now: u64, after: u64) -> Vec<Verified<Request>> {
        self.map
            .values_mut()
            .filter(|e| now.saturating_sub(e.sent_at) >= after)
            .map(|e| {
                e.sent_at = now;
                e.request.clone()
            })
            .collect()
    }

    /// Every caller, emptied (the replica crashed or stops).
    pub fn drain(&mut self) -> Vec<C> {
        std::mem::take(&mut self.map)
            .into_values()
            .map(|e| e.callers)
            .collect()
    }

    /// The outstanding seqs, ascending.
    pub fn seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.map.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::{ClientId, ReplicaId, SecretKey, Signature, Signer};

    fn request(seq: u64) -> Verified<Request> {
        let s = Signer::new(1, ReplicaId(0), SecretKey::from_seed([1; 32]));
        s.sign_request(Request::new(ClientId(0), seq, vec![], Signature::PENDING))
    }

    #[test]
    fn overdue_requests_are_sent_again_once_per_interval() {
        let mut o: Outstanding<&str> = Outstanding::new(4);
        o.insert(10, "a", request(10), 0);
        o.insert(11, "b", request(11), 5);
        assert!(o.overdue(9, 10).is_empty());
        let due: Vec<u64> = o.overdue(10, 10).iter().map(|r| r.seq).collect();
        assert_eq!(due, vec![10]);
        let due: Vec<u64> = o.overdue(15, 10).iter().map(|r| r.seq).collect();
        assert_eq!(due, vec![11], "10 was sent again at 10");
        assert_eq!(o.take(10), Some("a"));
        assert_eq!(o.take(10), None);
        assert_eq!(o.take_executed(|s| s == 11), vec![(11, "b")]);
        assert!(o.is_empty());
    }
}
