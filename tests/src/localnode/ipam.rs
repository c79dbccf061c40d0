//! Pod IPs and loopback ports. The IPs are labels only: the proxy maps pods to 127.0.0.1 ports,
//! and nothing is ever sent to these addresses. All of them come from the documentation ranges
//! of RFC 5737.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::ops::Range;

/// Process pods get unique addresses from 192.0.2.1 to 192.0.2.254.
const PROCESS_NET: [u8; 3] = [192, 0, 2];
/// Fake pods cycle through 198.51.100.1-254 then 203.0.113.1-254; they never receive traffic,
/// so sharing an address between many fake pods is harmless.
const FAKE_NETS: [[u8; 3]; 2] = [[198, 51, 100], [203, 0, 113]];
const HOSTS_PER_NET: u32 = 254;

/// Whether `ip` belongs to the process pool.
pub fn is_process_ip(ip: Ipv4Addr) -> bool {
    let [a, b, c, d] = ip.octets();
    [a, b, c] == PROCESS_NET && (1..=254).contains(&d)
}

/// Unique addresses for process pods.
#[derive(Debug, Default)]
pub struct ProcessIps {
    used: BTreeSet<u8>,
    /// Next-fit cursor: a freed address is not handed out again at once, so a label in a stale
    /// EndpointSlice does not point at a new pod right away.
    cursor: u8,
}

impl ProcessIps {
    /// A free address, or `None` when all 254 are in use.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        for step in 0..254u16 {
            let host = ((u16::from(self.cursor) + step) % 254 + 1) as u8;
            if self.used.insert(host) {
                self.cursor = host % 254;
                return Some(process_ip(host));
            }
        }
        None
    }

    /// Takes `ip` (already in a pod's status, e.g. after an agent restart) if it is in the pool
    /// and free.
    pub fn claim(&mut self, ip: Ipv4Addr) -> bool {
        is_process_ip(ip) && self.used.insert(ip.octets()[3])
    }

    /// Returns `ip` to the pool.
    pub fn release(&mut self, ip: Ipv4Addr) {
        if is_process_ip(ip) {
            self.used.remove(&ip.octets()[3]);
        }
    }

    /// How many addresses are in use.
    pub fn in_use(&self) -> usize {
        self.used.len()
    }
}

fn process_ip(host: u8) -> Ipv4Addr {
    let [a, b, c] = PROCESS_NET;
    Ipv4Addr::new(a, b, c, host)
}

/// Cyclic addresses for fake pods.
#[derive(Debug, Default)]
pub struct FakeIps {
    next: u32,
}

impl FakeIps {
    /// The next address in the cycle.
    pub fn next_ip(&mut self) -> Ipv4Addr {
        let index = self.next % (HOSTS_PER_NET * FAKE_NETS.len() as u32);
        self.next = self.next.wrapping_add(1);
        let [a, b, c] = FAKE_NETS[(index / HOSTS_PER_NET) as usize];
        Ipv4Addr::new(a, b, c, (index % HOSTS_PER_NET + 1) as u8)
    }
}

/// Ports for process pods: below Linux's ephemeral range (32768-60999), so an outgoing
/// connection never takes a port between its choice and the process binding it.
pub const PORT_RANGE: Range<u16> = 20000..32000;

/// Loopback ports handed to process pods, unique among live pods.
#[derive(Debug)]
pub struct Ports {
    used: BTreeSet<u16>,
    cursor: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports { used: BTreeSet::new(), cursor: PORT_RANGE.start }
    }
}

impl Ports {
    /// The next port, in next-fit order, that no live pod holds and `is_free` accepts (the
    /// caller checks that nothing else listens there).
    pub fn allocate(&mut self, is_free: impl Fn(u16) -> bool) -> Option<u16> {
        let size = PORT_RANGE.end - PORT_RANGE.start;
        for step in 0..size {
            let port = PORT_RANGE.start + (self.cursor - PORT_RANGE.start + step) % size;
            if !self.used.contains(&port) && is_free(port) {
                self.used.insert(port);
                self.cursor = PORT_RANGE.start + (port - PORT_RANGE.start + 1) % size;
                return Some(port);
            }
        }
        None
    }

    /// Returns `port` to the pool.
    pub fn release(&mut self, port: u16) {
        self.used.remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn process_ips_are_unique_until_exhausted() {
        let mut ips = ProcessIps::default();
        let all: HashSet<_> = (0..254).map(|_| ips.allocate().unwrap()).collect();
        assert_eq!(all.len(), 254);
        assert!(all.iter().all(|ip| is_process_ip(*ip)));
        assert!(!all.contains(&Ipv4Addr::new(192, 0, 2, 0)));
        assert!(!all.contains(&Ipv4Addr::new(192, 0, 2, 255)));
        assert_eq!(ips.allocate(), None);
        ips.release(Ipv4Addr::new(192, 0, 2, 77));
        assert_eq!(ips.allocate(), Some(Ipv4Addr::new(192, 0, 2, 77)));
    }

    #[test]
    fn freed_process_ip_is_not_reused_immediately() {
        let mut ips = ProcessIps::default();
        let first = ips.allocate().unwrap();
        ips.release(first);
        let second = ips.allocate().unwrap();
        assert_ne!(first, second);
        assert_eq!(ips.in_use(), 1);
    }

    #[test]
    fn claim_only_free_pool_addresses() {
        let mut ips = ProcessIps::default();
        assert!(ips.claim(Ipv4Addr::new(192, 0, 2, 9)));
        assert!(!ips.claim(Ipv4Addr::new(192, 0, 2, 9)));
        assert!(!ips.claim(Ipv4Addr::new(198, 51, 100, 9)));
        assert!(!ips.claim(Ipv4Addr::new(192, 0, 2, 255)));
        for _ in 0..253 {
            assert_ne!(ips.allocate(), Some(Ipv4Addr::new(192, 0, 2, 9)));
        }
    }

    #[test]
    fn ports_skip_held_and_busy_ports() {
        let mut ports = Ports::default();
        let busy = PORT_RANGE.start + 1;
        let first = ports.allocate(|p| p != busy).unwrap();
        let second = ports.allocate(|p| p != busy).unwrap();
        assert_eq!(first, PORT_RANGE.start);
        assert_eq!(second, PORT_RANGE.start + 2);
        ports.release(first);
        // Next-fit: the freed port comes back only after the rest of the range.
        assert_eq!(ports.allocate(|_| true), Some(PORT_RANGE.start + 3));
        const { assert!(PORT_RANGE.end <= 32768, "must stay below the ephemeral range") };
        let mut none = Ports::default();
        assert_eq!(none.allocate(|_| false), None);
    }

    #[test]
    fn fake_ips_cycle_through_both_documentation_ranges() {
        let mut ips = FakeIps::default();
        let first: Vec<_> = (0..508).map(|_| ips.next_ip()).collect();
        assert_eq!(first[0], Ipv4Addr::new(198, 51, 100, 1));
        assert_eq!(first[253], Ipv4Addr::new(198, 51, 100, 254));
        assert_eq!(first[254], Ipv4Addr::new(203, 0, 113, 1));
        assert_eq!(first[507], Ipv4Addr::new(203, 0, 113, 254));
        assert_eq!(first.iter().collect::<HashSet<_>>().len(), 508);
        assert_eq!(ips.next_ip(), first[0]);
    }
}
