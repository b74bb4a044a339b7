//! Requests waiting to be ordered, in arrival order, bounded.

use std::collections::{HashMap, VecDeque};

use wire::{Cid, ClientId, Request, Verified};

type Key = (ClientId, u64);

#[derive(Debug)]
struct Entry {
    request: Verified<Request>,
    /// The instance whose proposal carries this request, if any.
    proposed_in: Option<Cid>,
    /// Tick at which the request arrived or was last forwarded (for
    /// request timeouts).
    arrived_tick: u64,
    /// The request timed out once and was forwarded to the leader.
    forwarded: bool,
}

/// Why a request was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Already pending (same client and seq).
    Duplicate,
    /// The pool holds `pending_requests_max` requests.
    Full,
    /// The pool holds `pending_per_client_max` requests of this client
    /// already (one origin cannot starve the others).
    ClientFull,
}

/// The pool of verified requests not yet decided. Iteration order is arrival
/// order, so the leader's batches are first-come first-served.
#[derive(Debug)]
pub struct Pending {
    order: VecDeque<Key>,
    entries: HashMap<Key, Entry>,
    max: usize,
    /// Entries per client (kept in step by every mutation; no zero counts).
    per_client: HashMap<ClientId, usize>,
    per_client_max: usize,
    /// Entries with `proposed_in == None` (kept in step by every mutation).
    unproposed: usize,
}

impl Pending {
    /// A pool of at most `max` requests, at most `per_client_max` of any
    /// one client.
    pub fn new(max: usize, per_client_max: usize) -> Self {
        assert!(max > 0 && per_client_max > 0);
        Self {
            order: VecDeque::with_capacity(max),
            entries: HashMap::with_capacity(max),
            max,
            per_client: HashMap::new(),
            per_client_max,
            unproposed: 0,
        }
    }

    fn count_in(&mut self, client: ClientId) {
        *self.per_client.entry(client).or_default() += 1;
    }

    fn count_out(&mut self, client: ClientId) {
        let c = self
            .per_client
            .get_mut(&client)
            .expect("a pending request's client is counted");
        *c -= 1;
        if *c == 0 {
            self.per_client.remove(&client);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, client: ClientId, seq: u64) -> bool {
        self.entries.contains_key(&(client, seq))
    }

    /// Adds a request that arrived at `tick`.
    pub fn insert(&mut self, request: Verified<Request>, tick: u64) -> Result<(), Refused> {
        let key = (request.client, request.seq);
        if self.entries.contains_key(&key) {
            return Err(Refused::Duplicate);
        }
        if self.per_client.get(&request.client).copied().unwrap_or(0) >= self.per_client_max {
            return Err(Refused::ClientFull);
        }
        if self.entries.len() >= self.max {
            return Err(Refused::Full);
        }
        self.count_in(request.client);
        self.entries.insert(
            key,
            Entry {
                request,
                proposed_in: None,
                arrived_tick: tick,
                forwarded: false,
            },
        );
        self.order.push_back(key);
        self.unproposed += 1;
        self.compact_order();
        Ok(())
    }

    /// Removes a request (it was decided).
    pub fn remove(&mut self, client: ClientId, seq: u64) {
        if let Some(e) = self.entries.remove(&(client, seq)) {
            if e.proposed_in.is_none() {
                self.unproposed -= 1;
            }
            self.count_out(client);
        }
        while let Some(k) = self.order.front() {
            if self.entries.contains_key(k) {
                break;
            }
            self.order.pop_front();
        }
    }

    /// Requests not in any in-flight proposal.
    pub fn unproposed(&self) -> usize {
        self.unproposed
    }

    /// Takes, in arrival order, requests not yet proposed, up to
    /// `requests_max` of them and `bytes_max` encoded bytes (at least one if
    /// any is waiting), and marks them proposed in `cid`.
    pub fn take_batch(&mut self, cid: Cid, requests_max: usize, bytes_max: usize) -> Vec<Request> {
        let mut out = Vec::new();
        let mut bytes = 4;
        for key in &self.order {
            if out.len() >= requests_max {
                break;
            }
            let Some(e) = self.entries.get_mut(key) else {
                continue;
            };
            if e.proposed_in.is_some() {
                continue;
            }
            let len = e.request.encoded_len();
            if !out.is_empty() && bytes + len > bytes_max {
                break;
            }
            bytes += len;
            e.proposed_in = Some(cid);
            out.push(e.request.get().clone());
        }
        self.unproposed -= out.len();
        out
    }

    /// Keeps only the requests for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&Request) -> bool) {
        self.entries.retain(|_, e| keep(e.request.get()));
        self.per_client.clear();
        for (client, _) in self.entries.keys() {
            *self.per_client.entry(*client).or_default() += 1;
        }
        let entries = &self.entries;
        self.order.retain(|k| entries.contains_key(k));
        self.unproposed = self
            .entries
            .values()
            .filter(|e| e.proposed_in.is_none())
            .count();
    }

    /// Notes that `(client, seq)` is in the proposal of `cid` (seen as a
    /// backup, so this replica does not propose it again if it leads).
    pub fn mark_proposed(&mut self, client: ClientId, seq: u64, cid: Cid) {
        if let Some(e) = self.entries.get_mut(&(client, seq)) {
            if e.proposed_in.replace(cid).is_none() {
                self.unproposed -= 1;
            }
        }
    }

    /// Forgets which requests were proposed (the proposals will not be
    /// decided in this regency), so a new leader proposes them again.
    pub fn clear_proposed(&mut self) {
        for e in self.entries.values_mut() {
            e.proposed_in = None;
        }
        self.unproposed = self.entries.len();
    }

    /// Checks the counter against the entries (O(n): for tests and the
    /// invariant checks of tests).
    pub fn check(&self) {
        let counted = self
            .entries
            .values()
            .filter(|e| e.proposed_in.is_none())
            .count();
        assert_eq!(self.unproposed, counted, "unproposed counter out of step");
        let mut per_client: HashMap<ClientId, usize> = HashMap::new();
        for (client, _) in self.entries.keys() {
            *per_client.entry(*client).or_default() += 1;
        }
        assert_eq!(per_client, self.per_client, "per-client counts out of step");
        assert!(self.per_client.values().all(|&c| c <= self.per_client_max));
    }

    /// Requests that arrived at or before `tick`, oldest first, at most `max`.
    pub fn older_than(&self, tick: u64, max: usize) -> Vec<Verified<Request>> {
        self.order
            .iter()
            .filter_map(|k| self.entries.get(k))
            .filter(|e| e.arrived_tick <= tick)
            .take(max)
            .map(|e| e.request.clone())
            .collect()
    }

    /// Requests waiting since `deadline` or earlier: those not yet forwarded
    /// (at most `max`, marked forwarded and restarted at `tick`), and
    /// whether any forwarded one timed out again.
    pub fn timed_out(
        &mut self,
        deadline: u64,
        tick: u64,
        max: usize,
    ) -> (Vec<Verified<Request>>, bool) {
        let mut first = Vec::new();
        let mut second = false;
        for k in &self.order {
            let Some(e) = self.entries.get_mut(k) else {
                continue;
            };
            if e.arrived_tick > deadline {
                continue;
            }
            if e.forwarded {
                second = true;
            } else if first.len() < max {
                e.forwarded = true;
                e.arrived_tick = tick;
                first.push(e.request.clone());
            }
        }
        (first, second)
    }

    /// Tick of the oldest pending request.
    pub fn oldest_tick(&self) -> Option<u64> {
        self.order
            .iter()
            .find_map(|k| self.entries.get(k))
            .map(|e| e.arrived_tick)
    }

    /// Restarts the timeout of every pending request at `tick`, keeping
    /// whether it was forwarded (after a STOP: the next timeout re-sends it).
    pub fn restart_timeouts(&mut self, tick: u64) {
        for e in self.entries.values_mut() {
            e.arrived_tick = tick;
        }
    }

    /// Restarts the timeout of every pending request at `tick` (a new
    /// regency gives its leader a fresh chance).
    pub fn reset_ages(&mut self, tick: u64) {
        for e in self.entries.values_mut() {
            e.arrived_tick = tick;
            e.forwarded = false;
        }
    }

    /// Drops stale keys from the order queue once it is twice the bound.
    fn compact_order(&mut self) {
        if self.order.len() > 2 * self.max {
            let entries = &self.entries;
            self.order.retain(|k| entries.contains_key(k));
        }
        assert!(self.order.len() <= 2 * self.max + 1);
    }
}
