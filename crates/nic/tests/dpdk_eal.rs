//! DPDK's EAL and one port on a virtual device, no NIC, no hugepages, no
//! root: `net_ring0` loops every transmitted packet back to its receive
//! queue. One EAL per process, so this binary holds one test.
#![cfg(feature = "dpdk")]

use std::time::{Duration, Instant};

use nic::dpdk::{Eal, Mbuf, Port, PortConfig, BURST_PACKETS_MAX};

#[test]
fn a_burst_sent_on_a_ring_port_comes_back_whole_and_in_order() {
    let args: Vec<String> = [
        "--no-huge",
        "--no-pci",
        "--no-shconf",
        "-m",
        "256",
        "-l",
        "0",
        "--vdev=net_ring0",
        "--log-level=error",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let eal = Eal::init(&args).expect("EAL starts on a virtual device");
    assert!(Eal::init(&args).is_err(), "one EAL per process");
    let config = PortConfig {
        port: "net_ring0".into(),
        queue: 0,
        rx_descriptors: 128,
        tx_descriptors: 128,
        mbufs: 1023,
    };
    let mut port = Port::start(&eal, &config).expect("the ring port starts");

    let mut out: Vec<Mbuf> = Vec::with_capacity(BURST_PACKETS_MAX);
    for i in 0..BURST_PACKETS_MAX {
        let frame: Vec<u8> = (0..64 + i).map(|k| (k as u8) ^ (i as u8)).collect();
        out.push(port.packet(&frame).expect("the pool has mbufs"));
    }
    assert_eq!(port.tx_burst(&mut out), BURST_PACKETS_MAX);

    let mut got: Vec<Mbuf> = Vec::with_capacity(BURST_PACKETS_MAX);
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < BURST_PACKETS_MAX && Instant::now() < deadline {
        port.rx_burst(&mut got);
    }
    assert_eq!(got.len(), BURST_PACKETS_MAX, "every packet came back");
    for (i, m) in got.iter().enumerate() {
        let want: Vec<u8> = (0..64 + i).map(|k| (k as u8) ^ (i as u8)).collect();
        assert_eq!(m.data(), &want[..], "packet {i}");
        assert_eq!(m.segments(), 1);
    }
    let c = port.counters;
    assert_eq!((c.rx_packets, c.tx_packets), (32, 32));
}
