//! The run's trace: a running hash of every event (so two runs of one seed
//! can be compared by one number) and, with `--verbose`, a log line per
//! event.

use wire::Message;

/// Hash of everything that happened, plus the optional log.
pub struct Trace {
    hasher: blake3::Hasher,
    verbose: bool,
    events: u64,
}

impl Trace {
    /// An empty trace; `verbose` prints every event.
    pub fn new(verbose: bool) -> Self {
        Self {
            hasher: blake3::Hasher::new(),
            verbose,
            events: 0,
        }
    }

    /// True if events are printed.
    pub fn verbose(&self) -> bool {
        self.verbose
    }

    /// Records one event: its tick, a tag byte and some words go into the
    /// hash; `describe` is called only when verbose.
    pub fn event(&mut self, tick: u64, tag: u8, words: &[u64], describe: impl FnOnce() -> String) {
        self.events += 1;
        self.hasher.update(&tick.to_le_bytes()).update(&[tag]);
        for w in words {
            self.hasher.update(&w.to_le_bytes());
        }
        if self.verbose {
            self.print(tick, describe());
        }
    }

    /// Prints one log line; a closed stdout (`| head`) ends the logging,
    /// not the run.
    fn print(&mut self, tick: u64, line: String) {
        use std::io::Write;
        if writeln!(std::io::stdout().lock(), "t{tick:<6} {line}").is_err() {
            self.verbose = false;
        }
    }

    /// A free-form log line (verbose only; not hashed).
    pub fn note(&mut self, tick: u64, describe: impl FnOnce() -> String) {
        if self.verbose {
            self.print(tick, describe());
        }
    }

    /// Number of events recorded.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The trace hash so far, as 16 hex digits.
    pub fn hash_hex(&self) -> String {
        let d = self.hasher.finalize();
        hex_u64(u64::from_le_bytes(
            d.as_bytes()[..8].try_into().expect("8 bytes"),
        ))
    }
}

fn hex_u64(x: u64) -> String {
    format!("{x:016x}")
}

fn digest_word(d: &wire::Digest) -> u64 {
    u64::from_le_bytes(d.0[..8].try_into().expect("8 bytes"))
}

/// (kind, a, b) words of a message for the trace hash. Every message kind
/// must appear here: a new kind is a compile error until it is traced.
pub fn message_words(msg: &Message) -> (u64, u64, u64) {
    match msg {
        Message::Request(r) => (1, r.client.0, r.seq),
        Message::Propose(p) => (2, p.cid, digest_word(&p.batch.digest())),
        Message::Write(w) => (3, w.cid, digest_word(&w.digest)),
        Message::Accept(a) => (4, a.cid, digest_word(&a.digest)),
        Message::Stop(s) => (5, s.regency as u64, s.requests.len() as u64),
        Message::StopData(s) => (
            6,
            s.regency as u64,
            s.last_decided ^ ((s.open.len() as u64) << 48),
        ),
        Message::Sync(s) => (7, s.regency as u64, s.stopdata.len() as u64),
        Message::Fetch(f) => (8, f.cid, digest_word(&f.digest)),
        Message::Batch(b) => (9, b.cid, digest_word(&b.batch.digest())),
        Message::StateRequest(r) => (10, r.from_cid, r.replica.0 as u64),
        Message::StateReply(r) => (
            11,
            r.last_decided,
            r.decisions.first().map_or(0, |d| d.proof.cid) ^ ((r.decisions.len() as u64) << 48),
        ),
        Message::SnapshotRequest(r) => (12, r.cid, r.offset),
        Message::SnapshotChunk(c) => (13, c.cid, c.offset ^ ((c.bytes.len() as u64) << 40)),
    }
}

/// A short human description of a message for verbose logs.
pub fn describe(msg: &Message) -> String {
    match msg {
        Message::Request(r) => format!("REQUEST {:?}#{}", r.client, r.seq),
        Message::Propose(p) => format!(
            "PROPOSE r{} cid={} by {:?} {} reqs {:?}",
            p.regency,
            p.cid,
            p.leader,
            p.batch.len(),
            p.batch.digest()
        ),
        Message::Write(w) => format!("WRITE r{} cid={} {:?}", w.regency, w.cid, w.digest),
        Message::Accept(a) => format!("ACCEPT r{} cid={} {:?}", a.regency, a.cid, a.digest),
        Message::Stop(s) => format!(
            "STOP r{} by {:?} {} reqs",
            s.regency,
            s.replica,
            s.requests.len()
        ),
        Message::StopData(s) => {
            let open: Vec<String> = s
                .open
                .iter()
                .map(|o| {
                    format!(
                        "{}:acc={:?},w={},dec={}",
                        o.cid,
                        o.accepted,
                        o.written.len(),
                        o.decided.is_some()
                    )
                })
                .collect();
            format!(
                "STOPDATA r{} by {:?} last={} proof={} open=[{}]",
                s.regency,
                s.replica,
                s.last_decided,
                s.last_decided_proof.as_ref().map_or(0, |p| p.cid),
                open.join(" ")
            )
        }
        Message::Sync(s) => {
            let who: Vec<String> = s
                .stopdata
                .iter()
                .map(|d| format!("{}@r{}", d.replica.0, d.regency))
                .collect();
            format!(
                "SYNC r{} by {:?} stopdata=[{}]",
                s.regency,
                s.leader,
                who.join(",")
            )
        }
        Message::Fetch(f) => format!("FETCH cid={} {:?} by {:?}", f.cid, f.digest, f.replica),
        Message::Batch(b) => format!(
            "BATCH cid={} {} reqs {:?}",
            b.cid,
            b.batch.len(),
            b.batch.digest()
        ),
        Message::StateRequest(r) => {
            format!("STATE_REQUEST by {:?} from cid {}", r.replica, r.from_cid)
        }
        Message::StateReply(r) => format!(
            "STATE_REPLY by {:?} r{} last={} ckpt={:?} decisions={}..{}",
            r.replica,
            r.regency,
            r.last_decided,
            r.checkpoint.map(|c| (c.cid, c.digest, c.len)),
            r.decisions.first().map_or(0, |d| d.proof.cid),
            r.decisions.last().map_or(0, |d| d.proof.cid),
        ),
        Message::SnapshotRequest(r) => format!(
            "SNAPSHOT_REQUEST by {:?} cid={} offset={}",
            r.replica, r.cid, r.offset
        ),
        Message::SnapshotChunk(c) => format!(
            "SNAPSHOT_CHUNK cid={} {}+{} of {}",
            c.cid,
            c.offset,
            c.bytes.len(),
            c.total
        ),
    }
}
