//! The first check of every received packet, on the mbuf's bytes before
//! anything copies them: only ARP asking for our address and TCP between
//! our replica port (or our dials) and a configured peer pass to the
//! TCP/IP stack. Everything else is dropped and counted by reason
//! ([`crate::RX_JUNK_LABELS`]).

use std::net::SocketAddrV4;

const ETHERNET_HEADER_BYTES: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
/// ARP for IPv4 over Ethernet: 28 bytes.
const ARP_BYTES: usize = 28;
const IPV4_HEADER_BYTES_MIN: usize = 20;
const TCP_HEADER_BYTES_MIN: usize = 20;
const IP_PROTOCOL_TCP: u8 = 6;

/// Why a packet was dropped; the index into [`crate::RX_JUNK_LABELS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Junk {
    Runt = 0,
    NotIpv4OrArp = 1,
    NotOurs = 2,
    UnknownSource = 3,
    NotTcp = 4,
    Fragment = 5,
    WrongPort = 6,
}

/// What this replica accepts.
pub(crate) struct Filter {
    mac: [u8; 6],
    ip: [u8; 4],
    port: u16,
    /// Each peer's replica address (IPv4 and port).
    peers: Vec<([u8; 4], u16)>,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

impl Filter {
    pub(crate) fn new(mac: [u8; 6], me: SocketAddrV4, peers: &[SocketAddrV4]) -> Self {
        Self {
            mac,
            ip: me.ip().octets(),
            port: me.port(),
            peers: peers.iter().map(|a| (a.ip().octets(), a.port())).collect(),
        }
    }

    /// Passes `frame` (an Ethernet frame) or says why not. Reads only
    /// headers, within bounds checked first; never panics on any input.
    pub(crate) fn check(&self, frame: &[u8]) -> Result<(), Junk> {
        if frame.len() < ETHERNET_HEADER_BYTES {
            return Err(Junk::Runt);
        }
        let dst_mac = &frame[0..6];
        let payload = &frame[ETHERNET_HEADER_BYTES..];
        match be16(frame, 12) {
            ETHERTYPE_ARP => {
                if payload.len() < ARP_BYTES {
                    return Err(Junk::Runt);
                }
                // Target protocol address: bytes 24..28 of the ARP body.
                if payload[24..28] != self.ip {
                    return Err(Junk::NotOurs);
                }
                Ok(())
            }
            ETHERTYPE_IPV4 => {
                if dst_mac != self.mac {
                    return Err(Junk::NotOurs);
                }
                self.check_ipv4(payload)
            }
            _ => Err(Junk::NotIpv4OrArp),
        }
    }

    fn check_ipv4(&self, ip: &[u8]) -> Result<(), Junk> {
        if ip.len() < IPV4_HEADER_BYTES_MIN {
            return Err(Junk::Runt);
        }
        let header_bytes = ((ip[0] & 0x0f) as usize) * 4;
        if ip[0] >> 4 != 4 || header_bytes < IPV4_HEADER_BYTES_MIN {
            return Err(Junk::NotIpv4OrArp);
        }
        if ip.len() < header_bytes + TCP_HEADER_BYTES_MIN {
            return Err(Junk::Runt);
        }
        if ip[16..20] != self.ip {
            return Err(Junk::NotOurs);
        }
        let src: [u8; 4] = ip[12..16].try_into().expect("4 bytes");
        if !self.peers.iter().any(|(a, _)| *a == src) {
            return Err(Junk::UnknownSource);
        }
        if ip[9] != IP_PROTOCOL_TCP {
            return Err(Junk::NotTcp);
        }
        // More-fragments flag or a fragment offset.
        if be16(ip, 6) & 0x3fff != 0 {
            return Err(Junk::Fragment);
        }
        let tcp = &ip[header_bytes..];
        let (src_port, dst_port) = (be16(tcp, 0), be16(tcp, 2));
        let to_listener = dst_port == self.port;
        let from_peer_listener = self.peers.contains(&(src, src_port));
        if !to_listener && !from_peer_listener {
            return Err(Junk::WrongPort);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

    fn filter() -> Filter {
        Filter::new(
            MAC,
            SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 7000),
            &[SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 7000)],
        )
    }

    fn tcp(src: [u8; 4], src_port: u16, dst_port: u16, proto: u8) -> Vec<u8> {
        let mut f = MAC.to_vec();
        f.extend([2, 0, 0, 0, 0, 2, 0x08, 0x00]);
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, proto, 0, 0];
        ip.extend(src);
        ip.extend([10, 0, 0, 1]);
        f.extend(ip);
        f.extend(src_port.to_be_bytes());
        f.extend(dst_port.to_be_bytes());
        f.extend([0; 16]);
        f
    }

    #[test]
    fn only_tcp_between_replica_ports_of_peers_passes() {
        let f = filter();
        assert_eq!(f.check(&tcp([10, 0, 0, 2], 50000, 7000, 6)), Ok(()));
        assert_eq!(f.check(&tcp([10, 0, 0, 2], 7000, 50000, 6)), Ok(()));
        assert_eq!(
            f.check(&tcp([10, 0, 0, 2], 50000, 50001, 6)),
            Err(Junk::WrongPort)
        );
        assert_eq!(
            f.check(&tcp([10, 0, 0, 9], 50000, 7000, 6)),
            Err(Junk::UnknownSource)
        );
        assert_eq!(
            f.check(&tcp([10, 0, 0, 2], 50000, 7000, 17)),
            Err(Junk::NotTcp)
        );
        let mut other_mac = tcp([10, 0, 0, 2], 50000, 7000, 6);
        other_mac[5] = 9;
        assert_eq!(f.check(&other_mac), Err(Junk::NotOurs));
        let mut fragment = tcp([10, 0, 0, 2], 50000, 7000, 6);
        fragment[14 + 6] = 0x20; // more fragments
        assert_eq!(f.check(&fragment), Err(Junk::Fragment));
    }

    #[test]
    fn truncated_or_garbage_packets_are_dropped_without_panic() {
        let f = filter();
        let good = tcp([10, 0, 0, 2], 50000, 7000, 6);
        for len in 0..good.len() {
            assert!(f.check(&good[..len]).is_err(), "{len} bytes");
        }
        let mut x: u32 = 1;
        for _ in 0..2000 {
            let len = (x % 80) as usize;
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = f.check(&junk);
        }
        let mut arp = vec![0xff; 6];
        arp.extend([2, 0, 0, 0, 0, 2, 0x08, 0x06]);
        arp.extend([0; 24]);
        arp.extend([10, 0, 0, 1]);
        assert_eq!(f.check(&arp), Ok(()));
        let n = arp.len();
        arp[n - 1] = 7;
        assert_eq!(f.check(&arp), Err(Junk::NotOurs));
    }
}
