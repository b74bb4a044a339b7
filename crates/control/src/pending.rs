//! Requests waiting to be ordered, bounded in total and per client, taken
//! into batches round-robin over clients.

use std::collections::{BTreeMap, HashMap};

use wire::{Cid, ClientId, Request, Verified};

type Key = (ClientId, u64);

#[derive(Debug)]
struct Entry {
    request: Verified<Request>,
    /// Position in arrival order (a counter of this pool, never reused).
    arrival: u64,
    /// The instance whose proposal carries this request, if any.
    proposed_in: Option<Cid>,
    /// Tick at which the request arrived or was last forwarded (for
    /// request timeouts).
    arrived_tick: u64,
    /// Tick at which the request arrived (never restarted).
    first_tick: u64,
    /// The request timed out once and was forwarded to the leader.
    forwarded: bool,
}

/// One client's share of the pool.
#[derive(Debug, Default)]
struct ClientQueue {
    /// Entries of this client (never zero: an empty queue is removed).
    count: usize,
    /// Entries not in any in-flight proposal: arrival -> seq.
    unproposed: BTreeMap<u64, u64>,
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

/// The pool of verified requests not yet decided.
///
/// Timeouts look at requests in arrival order. Batches are taken
/// round-robin over clients, each client's requests in arrival order, the
/// rotation carried from one batch to the next: a client flooding the pool
/// gets one slot per round like every other client, so it cannot hold an
/// honest client's request behind its own for longer than one round per
/// request (Aardvark's and RBFT's fair ordering of clients; with FIFO
/// batches two flooders starved honest requests past every leader's
/// timeout, sim regression `requests_carried_in_every_stop_are_eventually_ordered`).
/// Every replica takes batches the same way given the same pool, so the
/// order is deterministic.
#[derive(Debug)]
pub struct Pending {
    /// arrival -> key, every entry.
    order: BTreeMap<u64, Key>,
    entries: HashMap<Key, Entry>,
    next_arrival: u64,
    max: usize,
    /// Every client with an entry (kept in step by every mutation).
    clients: BTreeMap<ClientId, ClientQueue>,
    per_client_max: usize,
    /// Entries with `proposed_in == None` (kept in step by every mutation).
    unproposed: usize,
    /// The client served last by `take_batch`: the next batch starts after it.
    cursor: Option<ClientId>,
}

impl Pending {
    /// A pool of at most `max` requests, at most `per_client_max` of any
    /// one client.
    pub fn new(max: usize, per_client_max: usize) -> Self {
        assert!(max > 0 && per_client_max > 0);
        Self {
            order: BTreeMap::new(),
            entries: HashMap::with_capacity(max),
            next_arrival: 0,
            max,
            clients: BTreeMap::new(),
            per_client_max,
            unproposed: 0,
            cursor: None,
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
        if self.clients.get(&request.client).map_or(0, |q| q.count) >= self.per_client_max {
            return Err(Refused::ClientFull);
        }
        if self.entries.len() >= self.max {
            return Err(Refused::Full);
        }
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        let q = self.clients.entry(request.client).or_default();
        q.count += 1;
        q.unproposed.insert(arrival, request.seq);
        self.order.insert(arrival, key);
        self.entries.insert(
            key,
            Entry {
                request,
                arrival,
                proposed_in: None,
                arrived_tick: tick,
                first_tick: tick,
                forwarded: false,
            },
        );
        self.unproposed += 1;
        Ok(())
    }

    /// Removes a request (it was decided).
    pub fn remove(&mut self, client: ClientId, seq: u64) {
        let Some(e) = self.entries.remove(&(client, seq)) else {
            return;
        };
        self.order.remove(&e.arrival);
        let q = self
            .clients
            .get_mut(&client)
            .expect("a pending request's client is counted");
        if e.proposed_in.is_none() {
            self.unproposed -= 1;
            q.unproposed.remove(&e.arrival);
        }
        q.count -= 1;
        if q.count == 0 {
            self.clients.remove(&client);
        }
    }

    /// Requests not in any in-flight proposal.
    pub fn unproposed(&self) -> usize {
        self.unproposed
    }

    /// Takes requests not yet proposed, up to `requests_max` of them and
    /// `bytes_max` encoded bytes (at least one if any is waiting), and marks
    /// them proposed in `cid`. Round-robin: the oldest unproposed request of
    /// each client in turn, clients in id order starting after the one
    /// served last, until a limit is reached or none is left.
    pub fn take_batch(&mut self, cid: Cid, requests_max: usize, bytes_max: usize) -> Vec<Request> {
        let mut out = Vec::new();
        let mut bytes = 4;
        // The rotation: clients after the cursor, then the rest.
        let rotation: Vec<ClientId> = match self.cursor {
            Some(c) => {
                let after = self
                    .clients
                    .range((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded));
                let upto = self.clients.range(..=c);
                after.chain(upto).map(|(id, _)| *id).collect()
            }
            None => self.clients.keys().copied().collect(),
        };
        'rounds: loop {
            let mut took = false;
            for client in &rotation {
                if out.len() >= requests_max {
                    break 'rounds;
                }
                let q = self
                    .clients
                    .get_mut(client)
                    .expect("rotation lists pool clients");
                let Some((&arrival, &seq)) = q.unproposed.first_key_value() else {
                    continue;
                };
                let e = self
                    .entries
                    .get_mut(&(*client, seq))
                    .expect("an unproposed arrival names an entry");
                let len = e.request.encoded_len();
                if !out.is_empty() && bytes + len > bytes_max {
                    break 'rounds;
                }
                q.unproposed.remove(&arrival);
                bytes += len;
                e.proposed_in = Some(cid);
                out.push(e.request.get().clone());
                self.cursor = Some(*client);
                took = true;
            }
            if !took {
                break;
            }
        }
        self.unproposed -= out.len();
        out
    }

    /// Rebuilds the per-client queues and counters from the entries.
    fn recount(&mut self) {
        self.clients.clear();
        for (key, e) in &self.entries {
            let q = self.clients.entry(key.0).or_default();
            q.count += 1;
            if e.proposed_in.is_none() {
                q.unproposed.insert(e.arrival, key.1);
            }
        }
        self.unproposed = self
            .entries
            .values()
            .filter(|e| e.proposed_in.is_none())
            .count();
    }

    /// Keeps only the requests for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&Request) -> bool) {
        self.entries.retain(|_, e| keep(e.request.get()));
        let entries = &self.entries;
        self.order.retain(|_, k| entries.contains_key(k));
        self.recount();
    }

    /// Notes that `(client, seq)` is in the proposal of `cid` (seen as a
    /// backup, so this replica does not propose it again if it leads).
    pub fn mark_proposed(&mut self, client: ClientId, seq: u64, cid: Cid) {
        if let Some(e) = self.entries.get_mut(&(client, seq)) {
            if e.proposed_in.replace(cid).is_none() {
                self.unproposed -= 1;
                let q = self
                    .clients
                    .get_mut(&client)
                    .expect("a pending request's client is counted");
                q.unproposed.remove(&e.arrival);
            }
        }
    }

    /// Forgets which requests were proposed (the proposals will not be
    /// decided in this regency), so a new leader proposes them again.
    pub fn clear_proposed(&mut self) {
        for e in self.entries.values_mut() {
            e.proposed_in = None;
        }
        self.recount();
    }

    /// Checks the counters and queues against the entries (O(n): for tests
    /// and the invariant checks of tests).
    pub fn check(&self) {
        let counted = self
            .entries
            .values()
            .filter(|e| e.proposed_in.is_none())
            .count();
        assert_eq!(self.unproposed, counted, "unproposed counter out of step");
        assert_eq!(
            self.order.len(),
            self.entries.len(),
            "arrival order out of step"
        );
        for (arrival, key) in &self.order {
            assert_eq!(
                self.entries[key].arrival, *arrival,
                "arrival order out of step"
            );
        }
        let mut per_client: BTreeMap<ClientId, (usize, BTreeMap<u64, u64>)> = BTreeMap::new();
        for (key, e) in &self.entries {
            let c = per_client.entry(key.0).or_default();
            c.0 += 1;
            if e.proposed_in.is_none() {
                c.1.insert(e.arrival, key.1);
            }
        }
        assert_eq!(
            per_client.len(),
            self.clients.len(),
            "client queues out of step"
        );
        for (client, (count, unproposed)) in per_client {
            let q = &self.clients[&client];
            assert_eq!(q.count, count, "per-client count out of step");
            assert_eq!(q.unproposed, unproposed, "per-client queue out of step");
            assert!(q.count <= self.per_client_max);
        }
    }

    /// Requests that arrived at or before `tick`, oldest first, at most `max`.
    pub fn older_than(&self, tick: u64, max: usize) -> Vec<Verified<Request>> {
        self.order
            .values()
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
        for k in self.order.values() {
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
            .values()
            .next()
            .map(|k| self.entries[k].arrived_tick)
    }

    /// Tick at which the request that came first arrived, whatever timeouts
    /// were restarted since (how long the pool has waited).
    pub fn first_arrival_tick(&self) -> Option<u64> {
        self.order
            .values()
            .next()
            .map(|k| self.entries[k].first_tick)
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::crypto::{SecretKey, Signer};
    use wire::{ReplicaId, Signature};

    /// Signed requests of the proxy client of replica `r`, seqs `seqs`.
    fn requests(r: u16, seqs: std::ops::RangeInclusive<u64>) -> Vec<Verified<Request>> {
        let signer = Signer::new(7, ReplicaId(r), SecretKey::from_seed([r as u8; 32]));
        seqs.map(|seq| {
            let req = Request::new(ClientId(r as u64), seq, vec![0; 8], Signature::PENDING);
            signer.sign_request(req)
        })
        .collect()
    }

    fn keys(batch: &[Request]) -> Vec<(u64, u64)> {
        batch.iter().map(|r| (r.client.0, r.seq)).collect()
    }

    #[test]
    fn a_flooding_client_gets_one_slot_per_round() {
        let mut p = Pending::new(1024, 64);
        for r in requests(3, 1..=60) {
            p.insert(r, 0).unwrap();
        }
        for r in requests(8, 1..=60) {
            p.insert(r, 1).unwrap();
        }
        for r in requests(5, 1..=1) {
            p.insert(r, 2).unwrap();
        }
        p.check();
        // FIFO would have taken (3,1), (3,2): the honest request of client 5
        // arrived after 120 flood requests but is in the first round.
        let b = p.take_batch(1, 3, 1 << 20);
        assert_eq!(keys(&b), vec![(3, 1), (5, 1), (8, 1)]);
        // The rotation carries on after the last client served.
        let b = p.take_batch(2, 2, 1 << 20);
        assert_eq!(keys(&b), vec![(3, 2), (8, 2)]);
        let b = p.take_batch(3, 1, 1 << 20);
        assert_eq!(keys(&b), vec![(3, 3)]);
        let b = p.take_batch(4, 1, 1 << 20);
        assert_eq!(keys(&b), vec![(8, 3)]);
        p.check();
        assert_eq!(p.unproposed(), 121 - 7);
    }

    #[test]
    fn each_clients_requests_are_taken_in_arrival_order_and_once() {
        let mut p = Pending::new(1024, 64);
        let mut a = requests(1, 1..=5);
        a.reverse(); // arrive 5, 4, 3, 2, 1
        for r in a {
            p.insert(r, 0).unwrap();
        }
        for r in requests(2, 1..=2) {
            p.insert(r, 0).unwrap();
        }
        let b = p.take_batch(1, 100, 1 << 20);
        assert_eq!(
            keys(&b),
            vec![(1, 5), (2, 1), (1, 4), (2, 2), (1, 3), (1, 2), (1, 1)]
        );
        assert!(p.take_batch(2, 100, 1 << 20).is_empty());
        p.check();
    }

    #[test]
    fn a_batch_stops_at_its_byte_bound_but_takes_at_least_one() {
        let mut p = Pending::new(1024, 64);
        for r in requests(1, 1..=3).into_iter().chain(requests(2, 1..=3)) {
            p.insert(r, 0).unwrap();
        }
        let one = requests(1, 1..=1)[0].encoded_len();
        let b = p.take_batch(1, 100, 1);
        assert_eq!(keys(&b), vec![(1, 1)]);
        let b = p.take_batch(2, 100, 4 + 2 * one);
        assert_eq!(keys(&b), vec![(2, 1), (1, 2)]);
        p.check();
    }

    #[test]
    fn cleared_and_removed_requests_keep_the_queues_in_step() {
        let mut p = Pending::new(8, 4);
        for r in requests(1, 1..=4).into_iter().chain(requests(2, 1..=4)) {
            p.insert(r, 0).unwrap();
        }
        assert_eq!(
            p.insert(requests(1, 5..=5).remove(0), 0),
            Err(Refused::ClientFull)
        );
        assert_eq!(
            p.insert(requests(3, 1..=1).remove(0), 0),
            Err(Refused::Full)
        );
        let b = p.take_batch(1, 4, 1 << 20);
        assert_eq!(keys(&b), vec![(1, 1), (2, 1), (1, 2), (2, 2)]);
        // (1, 1) and (2, 1) are decided; a backup saw (1, 4) proposed.
        p.remove(ClientId(1), 1);
        p.remove(ClientId(2), 1);
        p.mark_proposed(ClientId(1), 4, 2);
        p.check();
        assert_eq!(p.unproposed(), 3);
        // The regency changes: the proposals will not be decided.
        p.clear_proposed();
        p.check();
        assert_eq!(p.unproposed(), 6);
        let b = p.take_batch(1, 100, 1 << 20);
        assert_eq!(
            keys(&b),
            vec![(1, 2), (2, 2), (1, 3), (2, 3), (1, 4), (2, 4)]
        );
        p.retain(|r| r.client == ClientId(2));
        p.check();
        assert_eq!(p.len(), 3);
        assert_eq!(p.unproposed(), 0);
        p.insert(requests(3, 1..=1).remove(0), 5).unwrap();
        assert_eq!(p.oldest_tick(), Some(0));
        p.reset_ages(9);
        assert_eq!(p.oldest_tick(), Some(9));
        assert_eq!(p.first_arrival_tick(), Some(0));
        p.check();
    }
}
