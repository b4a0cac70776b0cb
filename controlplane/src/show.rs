//! Plain data for `show crypto ikev2 sa` / `show crypto ipsec sa`; the CLI
//! renders these (text like the seed's ASA output, or `--json`).

use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;

use espgate_dataplane::api::{RuleId, Selector, Spi, Suite};
use ipnet::IpNet;
use serde::Serialize;

use crate::ike::sa::Role;

/// One IKE SA, the fields `show crypto ikev2 sa` prints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IkeSaView {
    pub tunnel_id: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// "READY" when established, else the negotiation step.
    pub status: &'static str,
    pub role: Role,
    pub encr: &'static str,
    pub keysize: u16,
    pub hash: &'static str,
    pub dh_group: u16,
    pub auth_sign: &'static str,
    pub auth_verify: &'static str,
    pub lifetime_secs: u64,
    pub active_secs: u64,
    /// ESP is carried in UDP 4500 (NAT detected or forced).
    pub nat_t: bool,
    pub children: Vec<ChildSaView>,
}

/// One child SA (a pair of ESP SAs), as `show crypto ipsec sa` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChildSaView {
    pub rule: RuleId,
    pub local_selector: SelectorSide,
    pub remote_selector: SelectorSide,
    pub spi_in: Spi,
    pub spi_out: Spi,
    pub suite: Suite,
    pub pfs_group: Option<u16>,
    pub child_id: u32,
    /// Seconds since the child SA was created.
    pub created_at: u64,
}

/// One side of a child SA's traffic selector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SelectorSide {
    pub net: IpNet,
    pub proto: Option<u8>,
    pub ports: RangeInclusive<u16>,
}

impl SelectorSide {
    /// Local (`src`) and remote (`dst`) sides of a local → remote selector.
    pub fn split(sel: &Selector) -> (SelectorSide, SelectorSide) {
        (
            SelectorSide {
                net: sel.src,
                proto: sel.proto,
                ports: sel.src_ports.clone(),
            },
            SelectorSide {
                net: sel.dst,
                proto: sel.proto,
                ports: sel.dst_ports.clone(),
            },
        )
    }
}

impl fmt::Display for SelectorSide {
    /// "192.168.100.0/0 - 192.168.100.255/65535", as the ASA prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} - {}/{}",
            self.net.network(),
            self.ports.start(),
            self.net.broadcast(),
            self.ports.end()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_side_prints_like_the_asa() {
        let sel = Selector::between(
            "192.168.100.0/24".parse().unwrap(),
            "172.16.10.0/24".parse().unwrap(),
        );
        let (l, r) = SelectorSide::split(&sel);
        assert_eq!(l.to_string(), "192.168.100.0/0 - 192.168.100.255/65535");
        assert_eq!(r.to_string(), "172.16.10.0/0 - 172.16.10.255/65535");
    }
}
