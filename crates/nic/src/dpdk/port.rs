//! The only module of `nic` that calls DPDK: EAL start-up, one ethdev port
//! with one receive and one transmit queue, its mbuf pool, owned mbufs, and
//! the smoltcp [`Device`] over the port. Every `unsafe` block of the DPDK
//! transport is here.

use std::ffi::{CStr, CString};
use std::io;
use std::os::raw::{c_char, c_int};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

use dpdk_sys as sys;
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// Packets moved per `rte_eth_rx_burst`/`rte_eth_tx_burst`, at most.
pub const BURST_PACKETS_MAX: usize = 32;

/// Frames a smoltcp interface may send per poll before the port is asked
/// to take them (a full staging area is sent at once).
const TX_STAGE_PACKETS_MAX: usize = BURST_PACKETS_MAX;

/// Tries to hand a staged burst to the port before dropping what is left
/// (TCP retransmits it).
const TX_BURST_TRIES_MAX: usize = 4;

/// Ethernet frame without FCS, bytes: 1500-byte IP MTU plus the 14-byte
/// header.
pub const ETHERNET_FRAME_BYTES_MAX: usize = 1514;

static EAL_STARTED: AtomicBool = AtomicBool::new(false);

fn dpdk_error(what: &str, code: c_int) -> io::Error {
    let errno = code.abs();
    // SAFETY: rte_strerror returns a pointer to a static or thread-local
    // NUL-terminated string for any errno value.
    let text = unsafe { CStr::from_ptr(sys::rte_strerror(errno)) };
    io::Error::other(format!(
        "{what}: {} (error {errno})",
        text.to_string_lossy()
    ))
}

fn rte_errno() -> c_int {
    // SAFETY: reads DPDK's per-thread error number; no memory involved.
    unsafe { sys::bftd_rte_errno() }
}

/// Proof that DPDK's environment abstraction layer runs in this process.
/// There is one per process ([`Eal::init`] refuses a second), and it is
/// never torn down: DPDK cannot be started twice in one process.
#[derive(Debug)]
pub struct Eal {
    _private: (),
}

impl Eal {
    /// Starts the EAL with `args` (without the program name: e.g. `-l 1
    /// --in-memory --vdev=net_af_packet0,iface=eth1`). The calling thread
    /// keeps its CPU affinity (`rte_eal_init` pins its caller to the main
    /// lcore; threads spawned later would inherit that). Errors: a second
    /// call in the process, or EAL's own (bad arguments, no hugepages and no
    /// `--no-huge`, no permission).
    pub fn init(args: &[String]) -> io::Result<Eal> {
        if EAL_STARTED.swap(true, Ordering::SeqCst) {
            return Err(io::Error::other(
                "DPDK's EAL is already running in this process (one per process)",
            ));
        }
        let argv_owned: Vec<CString> = std::iter::once("bftd".to_string())
            .chain(args.iter().cloned())
            .map(|a| {
                CString::new(a).map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidInput, "EAL argument with a NUL byte")
                })
            })
            .collect::<io::Result<_>>()?;
        // EAL may permute argv: hand it a copy of the pointers.
        let mut argv: Vec<*mut c_char> = argv_owned
            .iter()
            .map(|a| a.as_ptr() as *mut c_char)
            .collect();
        let affinity = Affinity::of_this_thread();
        // SAFETY: argv points at NUL-terminated strings that outlive the
        // call (EAL copies what it keeps); the EAL runs once per process
        // (checked above).
        let r = unsafe { sys::rte_eal_init(argv.len() as c_int, argv.as_mut_ptr()) };
        if let Some(a) = affinity {
            a.restore();
        }
        if r < 0 {
            return Err(dpdk_error(
                &format!("rte_eal_init({})", args.join(" ")),
                rte_errno(),
            ));
        }
        Ok(Eal { _private: () })
    }
}

/// A thread's CPU set, saved to undo `rte_eal_init`'s pinning.
struct Affinity(libc::cpu_set_t);

impl Affinity {
    fn of_this_thread() -> Option<Self> {
        // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: the kernel writes at most size_of::<cpu_set_t>() bytes.
        let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
        (r == 0).then_some(Affinity(set))
    }
    fn restore(&self) {
        // SAFETY: the kernel reads one cpu_set_t we own.
        let _ = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&self.0), &self.0) };
    }
}

/// One packet buffer of the port's pool, owned (freed on drop).
pub struct Mbuf(NonNull<sys::rte_mbuf>);

// SAFETY: an mbuf is owned by one thread at a time; DPDK's pools are
// multi-producer/multi-consumer, so freeing on another thread is allowed.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// The packet's bytes (first segment; the port's pool makes
    /// single-segment mbufs of at least one Ethernet frame).
    pub fn data(&self) -> &[u8] {
        // SAFETY: mtod points at data_len initialised bytes inside the
        // mbuf, which we own for the lifetime of the borrow.
        unsafe {
            let len = sys::bftd_rte_pktmbuf_data_len(self.0.as_ptr()) as usize;
            let ptr = sys::bftd_rte_pktmbuf_mtod(self.0.as_ptr()) as *const u8;
            std::slice::from_raw_parts(ptr, len)
        }
    }

    /// Segments of the packet (1 for every packet this transport accepts).
    pub fn segments(&self) -> u16 {
        // SAFETY: reads a field of an mbuf we own.
        unsafe { sys::bftd_rte_pktmbuf_nb_segs(self.0.as_ptr()) }
    }

    fn into_raw(self) -> *mut sys::rte_mbuf {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf; it is freed once.
        unsafe { sys::bftd_rte_pktmbuf_free(self.0.as_ptr()) }
    }
}

/// Set-up of a [`Port`].
#[derive(Debug, Clone)]
pub struct PortConfig {
    /// Port id (`"0"`) or device name (`"net_af_packet0"`, a PCI address).
    pub port: String,
    /// Receive and transmit queue used (the port is configured with
    /// `queue + 1` queues of each kind; the others stay idle).
    pub queue: u16,
    /// Receive descriptors of the queue.
    pub rx_descriptors: u16,
    /// Transmit descriptors of the queue.
    pub tx_descriptors: u16,
    /// Mbufs in the pool: at least both rings plus two bursts.
    pub mbufs: u32,
}

impl PortConfig {
    /// Mbufs the pool needs at least: every descriptor of both rings may
    /// hold one, plus one receive burst in the poll loop and one staged
    /// transmit burst.
    pub fn mbufs_min(&self) -> u32 {
        self.rx_descriptors as u32
            + self.tx_descriptors as u32
            + (BURST_PACKETS_MAX + TX_STAGE_PACKETS_MAX) as u32
    }
}

/// Counters of a [`Port`] kept by the poll loop (the device's own are in
/// [`Port::device_stats`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct PortCounters {
    /// Packets taken from the receive queue.
    pub rx_packets: u64,
    /// Packets handed to the transmit queue.
    pub tx_packets: u64,
    /// Frames smoltcp wanted to send but no mbuf was free (dropped; TCP
    /// retransmits).
    pub tx_no_mbuf: u64,
    /// Frames the transmit queue did not take after several tries
    /// (dropped; TCP retransmits).
    pub tx_queue_full: u64,
}

/// One started DPDK port with its mbuf pool, used by one thread.
pub struct Port {
    port_id: u16,
    queue: u16,
    pool: NonNull<sys::rte_mempool>,
    mac: [u8; 6],
    tx_stage: Vec<*mut sys::rte_mbuf>,
    pub counters: PortCounters,
}

// SAFETY: the port's queues and pool are used by the one thread that owns
// the `Port`; DPDK allows any single thread to drive a queue.
unsafe impl Send for Port {}

impl Port {
    /// Configures and starts `config.port` (needs a running [`Eal`]).
    /// Errors name the step that failed: unknown port, pool creation (not
    /// enough memory: raise `-m` or the hugepages), queue set-up, start.
    pub fn start(_eal: &Eal, config: &PortConfig) -> io::Result<Port> {
        if config.mbufs < config.mbufs_min() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "mbufs {} below the {} the rings and bursts need",
                    config.mbufs,
                    config.mbufs_min()
                ),
            ));
        }
        let port_id = Self::find(&config.port)?;
        let name = CString::new(format!("bftd_pool_p{port_id}")).expect("no NUL");
        // SAFETY: returns the socket of the port or SOCKET_ID_ANY (-1).
        let socket = unsafe { sys::rte_eth_dev_socket_id(port_id) };
        // SAFETY: `name` is NUL-terminated; the EAL runs (`_eal`).
        let pool = unsafe {
            sys::rte_pktmbuf_pool_create(
                name.as_ptr(),
                config.mbufs,
                0,
                0,
                sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16,
                socket,
            )
        };
        let pool = NonNull::new(pool).ok_or_else(|| {
            dpdk_error(
                &format!("rte_pktmbuf_pool_create({} mbufs)", config.mbufs),
                rte_errno(),
            )
        })?;
        let queues = config.queue + 1;
        let conf = sys::rte_eth_conf::default();
        // SAFETY: `conf` is a valid, zeroed (all defaults) configuration.
        let r = unsafe { sys::rte_eth_dev_configure(port_id, queues, queues, &conf) };
        if r < 0 {
            return Err(dpdk_error("rte_eth_dev_configure", r));
        }
        for q in 0..queues {
            // SAFETY: port configured above; NULL selects the default queue
            // configuration; the pool outlives the port's use (never freed).
            let r = unsafe {
                sys::rte_eth_rx_queue_setup(
                    port_id,
                    q,
                    config.rx_descriptors,
                    socket as u32,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            };
            if r < 0 {
                return Err(dpdk_error(&format!("rte_eth_rx_queue_setup({q})"), r));
            }
            // SAFETY: as above, transmit side.
            let r = unsafe {
                sys::rte_eth_tx_queue_setup(
                    port_id,
                    q,
                    config.tx_descriptors,
                    socket as u32,
                    std::ptr::null(),
                )
            };
            if r < 0 {
                return Err(dpdk_error(&format!("rte_eth_tx_queue_setup({q})"), r));
            }
        }
        // SAFETY: every queue is set up.
        let r = unsafe { sys::rte_eth_dev_start(port_id) };
        if r < 0 {
            return Err(dpdk_error("rte_eth_dev_start", r));
        }
        // Not every device supports it (and a port that only ever sees
        // frames for its own MAC does not need it): best effort.
        // SAFETY: plain call on a started port.
        let _ = unsafe { sys::rte_eth_promiscuous_enable(port_id) };
        let mut addr = sys::rte_ether_addr::default();
        // SAFETY: writes one rte_ether_addr we own.
        let r = unsafe { sys::rte_eth_macaddr_get(port_id, &mut addr) };
        if r < 0 {
            return Err(dpdk_error("rte_eth_macaddr_get", r));
        }
        Ok(Port {
            port_id,
            queue: config.queue,
            pool,
            mac: addr.addr_bytes,
            tx_stage: Vec::with_capacity(TX_STAGE_PACKETS_MAX),
            counters: PortCounters::default(),
        })
    }

    fn find(port: &str) -> io::Result<u16> {
        // SAFETY: no arguments; counts ports probed by the EAL.
        let count = unsafe { sys::rte_eth_dev_count_avail() };
        if let Ok(id) = port.parse::<u16>() {
            if id >= count {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "DPDK port {id} does not exist ({count} ports: add a --vdev or bind a \
                         device to vfio-pci)"
                    ),
                ));
            }
            return Ok(id);
        }
        let name = CString::new(port)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "port name with a NUL"))?;
        let mut id = 0u16;
        // SAFETY: `name` is NUL-terminated; writes one u16 we own.
        let r = unsafe { sys::rte_eth_dev_get_port_by_name(name.as_ptr(), &mut id) };
        if r < 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no DPDK port named {port:?} ({count} ports)"),
            ));
        }
        Ok(id)
    }

    /// The port's Ethernet address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Takes up to `out`'s free capacity (at most [`BURST_PACKETS_MAX`])
    /// received packets into `out`; returns how many. Never allocates.
    pub fn rx_burst(&mut self, out: &mut Vec<Mbuf>) -> usize {
        let room = (out.capacity() - out.len()).min(BURST_PACKETS_MAX);
        if room == 0 {
            return 0;
        }
        let mut raw = [std::ptr::null_mut::<sys::rte_mbuf>(); BURST_PACKETS_MAX];
        // SAFETY: DPDK writes at most `room` mbuf pointers into `raw`; this
        // thread is the only user of the queue.
        let got = unsafe {
            sys::bftd_rte_eth_rx_burst(self.port_id, self.queue, raw.as_mut_ptr(), room as u16)
        } as usize;
        for p in &raw[..got] {
            out.push(Mbuf(NonNull::new(*p).expect("rx_burst returns live mbufs")));
        }
        self.counters.rx_packets += got as u64;
        got
    }

    /// Sends the packets of `out` (consuming every one: what the queue does
    /// not take is freed). Returns how many the queue took.
    pub fn tx_burst(&mut self, out: &mut Vec<Mbuf>) -> usize {
        let mut sent = 0;
        while !out.is_empty() {
            let k = out.len().min(BURST_PACKETS_MAX);
            for m in out.drain(..k) {
                self.tx_stage.push(m.into_raw());
            }
            sent += self.flush_tx();
        }
        sent
    }

    /// An mbuf of the pool holding a copy of `frame` (at most
    /// [`ETHERNET_FRAME_BYTES_MAX`] bytes); `None` when the pool is empty
    /// or the frame too long. For tests and benchmarks of the port itself.
    pub fn packet(&mut self, frame: &[u8]) -> Option<Mbuf> {
        let (m, bytes) = self.alloc(frame.len())?;
        bytes.copy_from_slice(frame);
        Some(Mbuf(NonNull::new(m).expect("alloc checked for NULL")))
    }

    /// Allocates an mbuf holding `len` bytes (uninitialised contents are
    /// zeroed first) and returns it with its bytes; `None` when the pool is
    /// empty or `len` exceeds one mbuf.
    fn alloc(&mut self, len: usize) -> Option<(*mut sys::rte_mbuf, &mut [u8])> {
        if len > ETHERNET_FRAME_BYTES_MAX {
            return None;
        }
        // SAFETY: the pool is live (never freed).
        let m = unsafe { sys::bftd_rte_pktmbuf_alloc(self.pool.as_ptr()) };
        if m.is_null() {
            return None;
        }
        // SAFETY: `m` is a fresh mbuf of the pool with room for a frame
        // (RTE_MBUF_DEFAULT_BUF_SIZE); append returns NULL if it did not
        // fit, which we check.
        let data = unsafe { sys::bftd_rte_pktmbuf_append(m, len as u16) } as *mut u8;
        if data.is_null() {
            // SAFETY: `m` is ours and freed once.
            unsafe { sys::bftd_rte_pktmbuf_free(m) };
            return None;
        }
        // SAFETY: `append` reserved `len` bytes at `data` inside `m`, which
        // we own until it is staged; zeroing makes them initialised.
        let bytes = unsafe {
            std::ptr::write_bytes(data, 0, len);
            std::slice::from_raw_parts_mut(data, len)
        };
        Some((m, bytes))
    }

    /// Hands the staged frames to the transmit queue (a few tries), frees
    /// what it does not take; returns the frames sent.
    pub fn flush_tx(&mut self) -> usize {
        let mut sent = 0;
        let mut tries = 0;
        while sent < self.tx_stage.len() && tries < TX_BURST_TRIES_MAX {
            tries += 1;
            let rest = &mut self.tx_stage[sent..];
            // SAFETY: `rest` holds owned, filled mbufs; DPDK takes
            // ownership of the first `k` it returns.
            let k = unsafe {
                sys::bftd_rte_eth_tx_burst(
                    self.port_id,
                    self.queue,
                    rest.as_mut_ptr(),
                    rest.len() as u16,
                )
            } as usize;
            sent += k;
        }
        for &m in &self.tx_stage[sent..] {
            // SAFETY: not taken by the queue: still ours, freed once.
            unsafe { sys::bftd_rte_pktmbuf_free(m) };
            self.counters.tx_queue_full += 1;
        }
        self.counters.tx_packets += sent as u64;
        self.tx_stage.clear();
        sent
    }

    /// The device's own counters: (received packets, sent packets,
    /// receive drops for lack of mbufs or descriptors, receive errors).
    pub fn device_stats(&self) -> (u64, u64, u64, u64) {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: writes one rte_eth_stats we own.
        let _ = unsafe { sys::rte_eth_stats_get(self.port_id, &mut s) };
        (s.ipackets, s.opackets, s.imissed + s.rx_nombuf, s.ierrors)
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        self.flush_tx();
        // SAFETY: stops the port this thread owns; the pool is left alone
        // (the device may still hold mbufs of it until it is closed).
        unsafe {
            let _ = sys::rte_eth_dev_stop(self.port_id);
        }
    }
}

/// The smoltcp device over a [`Port`]: receive tokens come from packets the
/// poll loop already took and checked (`staged`, in order), transmit
/// tokens allocate an mbuf and stage it; [`Port::flush_tx`] sends.
pub struct PortDevice<'a> {
    pub port: &'a mut Port,
    pub staged: &'a mut std::collections::VecDeque<Mbuf>,
}

/// A received packet for smoltcp.
pub struct RxToken(Mbuf);

/// Room for one frame to send.
pub struct TxToken<'a> {
    port: &'a mut Port,
}

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0.data())
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        if self.port.tx_stage.len() == TX_STAGE_PACKETS_MAX {
            self.port.flush_tx();
        }
        match self.port.alloc(len) {
            Some((m, bytes)) => {
                let r = f(bytes);
                self.port.tx_stage.push(m);
                r
            }
            None => {
                // No mbuf: build the frame in a scratch buffer and drop it
                // (TCP retransmits); smoltcp needs somewhere to write.
                self.port.counters.tx_no_mbuf += 1;
                let mut scratch = [0u8; ETHERNET_FRAME_BYTES_MAX];
                f(&mut scratch[..len.min(ETHERNET_FRAME_BYTES_MAX)])
            }
        }
    }
}

impl Device for PortDevice<'_> {
    type RxToken<'b>
        = RxToken
    where
        Self: 'b;
    type TxToken<'b>
        = TxToken<'b>
    where
        Self: 'b;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let m = self.staged.pop_front()?;
        Some((RxToken(m), TxToken { port: self.port }))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        Some(TxToken { port: self.port })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = ETHERNET_FRAME_BYTES_MAX;
        caps.max_burst_size = Some(BURST_PACKETS_MAX);
        caps
    }
}
