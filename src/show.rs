//! Cisco-like views: `show crypto ikev2 sa`, `show crypto ipsec sa`,
//! `show access-list`.
//!
//! The renderers take plain view structs (filled by the gateway from its
//! IKE SAs, dataplane SAs and SPD) and print what an ASA prints, field for
//! field; `--json` prints the same structs with serde_json. Beyond Cisco,
//! the ipsec view has one more counter line for our drop reasons.

use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};

use espgate_dataplane::api::{SaCounters, Selector, Spi, Suite};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

// ------------------------------------------------------------- ikev2 sa

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IkeRole {
    Initiator,
    Responder,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IkeSaView {
    pub session_id: u32,
    pub tunnel_id: u64,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// `READY`, or the exchange in progress (`IN-NEG`, `DELETE`).
    pub status: String,
    pub role: IkeRole,
    /// `AES-CBC` (or `AES-GCM`).
    pub encr: String,
    pub keysize: u16,
    /// `SHA256`.
    pub hash: String,
    pub dh_group: u16,
    /// `PSK`.
    pub auth_sign: String,
    pub auth_verify: String,
    pub lifetime_secs: u64,
    pub active_secs: u64,
    pub children: Vec<ChildSaView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildSaView {
    /// Local → remote, as the outbound SA protects it.
    pub selector: Selector,
    pub spi_in: Spi,
    pub spi_out: Spi,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShowIkeSa {
    pub sas: Vec<IkeSaView>,
}

/// `192.168.100.0/0 - 192.168.100.255/65535`: first address/first port -
/// last address/last port.
fn selector_range(net: &IpNet, ports: &std::ops::RangeInclusive<u16>) -> String {
    format!(
        "{}/{} - {}/{}",
        net.network(),
        ports.start(),
        net.broadcast(),
        ports.end()
    )
}

/// The control plane's IKE SAs as this view (`Machine::ike_sas`). The ASA's
/// session id has no IKEv2 meaning here; the tunnel id stands in for it.
pub fn ike_view_from(sas: &[espgate_controlplane::show::IkeSaView]) -> ShowIkeSa {
    use espgate_controlplane::ike::sa::Role;
    ShowIkeSa {
        sas: sas
            .iter()
            .map(|sa| IkeSaView {
                session_id: sa.tunnel_id,
                tunnel_id: sa.tunnel_id as u64,
                local: sa.local,
                remote: sa.remote,
                status: sa.status.to_string(),
                role: match sa.role {
                    Role::Initiator => IkeRole::Initiator,
                    Role::Responder => IkeRole::Responder,
                },
                encr: sa.encr.to_string(),
                keysize: sa.keysize,
                hash: sa.hash.to_string(),
                dh_group: sa.dh_group,
                auth_sign: sa.auth_sign.to_string(),
                auth_verify: sa.auth_verify.to_string(),
                lifetime_secs: sa.lifetime_secs,
                active_secs: sa.active_secs,
                // Newest child first, as the ASA lists them.
                children: sa
                    .children
                    .iter()
                    .rev()
                    .map(|c| ChildSaView {
                        selector: Selector {
                            src: c.local_selector.net,
                            dst: c.remote_selector.net,
                            proto: c.local_selector.proto,
                            src_ports: c.local_selector.ports.clone(),
                            dst_ports: c.remote_selector.ports.clone(),
                        },
                        spi_in: c.spi_in,
                        spi_out: c.spi_out,
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// `10.255.1.2/500`, as Cisco writes an address and port.
fn endpoint(a: &SocketAddr) -> String {
    format!("{}/{}", a.ip(), a.port())
}

pub fn render_ike_sa(v: &ShowIkeSa) -> String {
    let mut s = String::new();
    if v.sas.is_empty() {
        s.push_str("There are no IKEv2 SAs\n");
        return s;
    }
    s.push_str("IKEv2 SAs:\n");
    for sa in &v.sas {
        let _ = writeln!(
            s,
            "\nSession-id:{}, Status:UP-ACTIVE, IKE count:1, CHILD count:{}\n",
            sa.session_id,
            sa.children.len()
        );
        // Column widths as the ASA prints them (header and rows differ there too).
        let _ = writeln!(
            s,
            "{:<10}{:<52}{:<56}{:<15}Role",
            "Tunnel-id", "Local", "Remote", "Status"
        );
        let role = match sa.role {
            IkeRole::Initiator => "INITIATOR",
            IkeRole::Responder => "RESPONDER",
        };
        let _ = writeln!(
            s,
            "{:<10}{:<52}{:<57}{:<9}{}",
            sa.tunnel_id,
            endpoint(&sa.local),
            endpoint(&sa.remote),
            sa.status,
            role
        );
        let _ = writeln!(
            s,
            "      Encr: {}, keysize: {}, Hash: {}, DH Grp:{}, Auth sign: {}, Auth verify: {}",
            sa.encr, sa.keysize, sa.hash, sa.dh_group, sa.auth_sign, sa.auth_verify
        );
        let _ = writeln!(
            s,
            "      Life/Active Time: {}/{} sec",
            sa.lifetime_secs, sa.active_secs
        );
        for c in &sa.children {
            let sel = &c.selector;
            let _ = writeln!(
                s,
                "Child sa: local selector  {}",
                selector_range(&sel.src, &sel.src_ports)
            );
            let _ = writeln!(
                s,
                "          remote selector {}",
                selector_range(&sel.dst, &sel.dst_ports)
            );
            let _ = writeln!(
                s,
                "          ESP spi in/out: 0x{:08x}/0x{:08x}",
                c.spi_in.0, c.spi_out.0
            );
        }
    }
    s
}

// ------------------------------------------------------------- ipsec sa

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EspSaState {
    Active,
    /// A newer SA took over; this one still decrypts until deleted.
    Rekeyed,
    Expired,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EspSaView {
    pub spi: Spi,
    pub state: EspSaState,
    pub suite: Suite,
    /// DH group of PFS, None without PFS.
    pub pfs_group: Option<u16>,
    pub udp_encap: bool,
    /// The worker (shard) that owns the SA.
    pub slot: u32,
    pub conn_id: u32,
    pub crypto_map: String,
    pub remaining_kb: u64,
    pub remaining_secs: u64,
    pub replay_detection: bool,
    /// Anti-replay bitmap in 32-bit words, most significant (oldest) first;
    /// the last word's bit 0 is the highest sequence number seen.
    pub replay_bitmap: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpsecSaView {
    pub interface: String,
    pub crypto_map: String,
    pub seq_num: u32,
    pub local_addr: IpAddr,
    /// The expanded ACL entry, as `show access-list` prints it without
    /// `line N` (e.g. `access-list s2svpn_to_site2 extended permit ip ...`).
    pub acl_line: String,
    /// Local → remote.
    pub selector: Selector,
    pub current_peer: IpAddr,
    /// encaps/encrypt/digest and send errors from the outbound SA,
    /// decaps/decrypt/verify and the drop counters from the inbound one.
    pub counters: SaCounters,
    pub local_endpoint: SocketAddr,
    pub remote_endpoint: SocketAddr,
    pub path_mtu: u32,
    pub media_mtu: u32,
    pub inbound: EspSaView,
    pub outbound: EspSaView,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShowIpsecSa {
    pub sas: Vec<IpsecSaView>,
}

/// Largest and header-only ESP overhead in bytes, as `show crypto ipsec sa`
/// reports it (`ipsec overhead 74(44)`): header = outer IP (20/40) + UDP (8
/// if encapsulated) + ESP header (8) + IV; the maximum adds the padding
/// counted as a full cipher block (the ASA's convention), pad length and
/// next header (2) and the ICV. AES-256-CBC/SHA1-96 over IPv4 → 74(44).
pub fn ipsec_overhead(suite: Suite, ipv6_outer: bool, udp_encap: bool) -> (u32, u32) {
    let header = if ipv6_outer { 40 } else { 20 }
        + if udp_encap { 8 } else { 0 }
        + 8
        + suite.iv_len() as u32;
    let max = header + suite.block_len() as u32 + 2 + suite.icv_len() as u32;
    (max, header)
}

fn netmask_ident(net: &IpNet, proto: Option<u8>, ports: &std::ops::RangeInclusive<u16>) -> String {
    let port = if *ports == (0..=u16::MAX) {
        0
    } else {
        *ports.start()
    };
    format!(
        "({}/{}/{}/{})",
        net.network(),
        net.netmask(),
        proto.unwrap_or(0),
        port
    )
}

fn render_esp_sa(s: &mut String, sa: &EspSaView) {
    let _ = writeln!(s, "      spi: 0x{:08X} ({})", sa.spi.0, sa.spi.0);
    let state = match sa.state {
        EspSaState::Active => "active",
        EspSaState::Rekeyed => "rekeyed",
        EspSaState::Expired => "expired",
    };
    let _ = writeln!(s, "         SA State: {state}");
    let _ = writeln!(
        s,
        "         transform: {} no compression",
        sa.suite.transform_name()
    );
    let mut settings = String::from("L2L, Tunnel, ");
    if let Some(g) = sa.pfs_group {
        let _ = write!(settings, "PFS Group {g}, ");
    }
    settings.push_str("IKEv2, ");
    if sa.udp_encap {
        settings.push_str("NAT-T-Enabled, ");
    }
    let _ = writeln!(s, "         in use settings ={{{settings}}}");
    let _ = writeln!(
        s,
        "         slot: {}, conn_id: {}, crypto-map: {}",
        sa.slot, sa.conn_id, sa.crypto_map
    );
    let _ = writeln!(
        s,
        "         sa timing: remaining key lifetime (kB/sec): ({}/{})",
        sa.remaining_kb, sa.remaining_secs
    );
    let _ = writeln!(s, "         IV size: {} bytes", sa.suite.iv_len());
    let _ = writeln!(
        s,
        "         replay detection support: {}",
        if sa.replay_detection { "Y" } else { "N" }
    );
    if sa.replay_detection {
        s.push_str("         Anti replay bitmap:\n");
        for words in sa.replay_bitmap.chunks(4) {
            let line: Vec<String> = words.iter().map(|w| format!("0x{w:08X}")).collect();
            let _ = writeln!(s, "          {}", line.join(" "));
        }
    }
}

pub fn render_ipsec_sa(v: &ShowIpsecSa) -> String {
    let mut s = String::new();
    if v.sas.is_empty() {
        s.push_str("There are no ipsec sas\n");
        return s;
    }
    let mut last_interface: Option<&str> = None;
    for sa in &v.sas {
        if last_interface != Some(sa.interface.as_str()) {
            let _ = writeln!(s, "interface: {}", sa.interface);
            last_interface = Some(sa.interface.as_str());
        }
        let _ = writeln!(
            s,
            "    Crypto map tag: {}, seq num: {}, local addr: {}\n",
            sa.crypto_map, sa.seq_num, sa.local_addr
        );
        let sel = &sa.selector;
        let c = &sa.counters;
        let _ = writeln!(s, "      {}", sa.acl_line);
        let _ = writeln!(
            s,
            "      local ident (addr/mask/prot/port): {}",
            netmask_ident(&sel.src, sel.proto, &sel.src_ports)
        );
        let _ = writeln!(
            s,
            "      remote ident (addr/mask/prot/port): {}",
            netmask_ident(&sel.dst, sel.proto, &sel.dst_ports)
        );
        let _ = writeln!(s, "      current_peer: {}\n\n", sa.current_peer);
        let _ = writeln!(
            s,
            "      #pkts encaps: {}, #pkts encrypt: {}, #pkts digest: {}",
            c.encaps, c.encrypt, c.digest
        );
        let _ = writeln!(
            s,
            "      #pkts decaps: {}, #pkts decrypt: {}, #pkts verify: {}",
            c.decaps, c.decrypt, c.verify
        );
        s.push_str("      #pkts compressed: 0, #pkts decompressed: 0\n");
        let _ = writeln!(
            s,
            "      #pkts not compressed: {}, #pkts comp failed: 0, #pkts decomp failed: 0",
            c.encaps
        );
        s.push_str("      #pre-frag successes: 0, #pre-frag failures: 0, #fragments created: 0\n");
        s.push_str(
            "      #PMTUs sent: 0, #PMTUs rcvd: 0, #decapsulated frgs needing reassembly: 0\n",
        );
        s.push_str("      #TFC rcvd: 0, #TFC sent: 0\n");
        s.push_str("      #Valid ICMP Errors rcvd: 0, #Invalid ICMP Errors rcvd: 0\n");
        let _ = writeln!(
            s,
            "      #send errors: {}, #recv errors: {}",
            c.send_errors, c.recv_errors
        );
        let _ = writeln!(
            s,
            "      #pkts replay failed: {}, #pkts auth failed: {}, #pkts invalid pad: {}, #pkts invalid next header: {}, #pkts truncated: {}, #pkts policy fail: {}\n",
            c.replay, c.auth_fail, c.bad_padding, c.bad_next_header, c.truncated, c.policy_mismatch
        );
        let _ = writeln!(
            s,
            "      local crypto endpt.: {}, remote crypto endpt.: {}",
            endpoint(&sa.local_endpoint),
            endpoint(&sa.remote_endpoint)
        );
        let (max, header) = ipsec_overhead(
            sa.outbound.suite,
            sa.local_endpoint.is_ipv6(),
            sa.outbound.udp_encap,
        );
        let _ = writeln!(
            s,
            "      path mtu {}, ipsec overhead {max}({header}), media mtu {}",
            sa.path_mtu, sa.media_mtu
        );
        s.push_str("      PMTU time remaining (sec): 0, DF policy: copy-df\n");
        s.push_str("      ICMP error validation: disabled, TFC packets: disabled\n");
        let _ = writeln!(s, "      current outbound spi: {:08X}", sa.outbound.spi.0);
        let _ = writeln!(s, "      current inbound spi : {:08X}\n", sa.inbound.spi.0);
        s.push_str("    inbound esp sas:\n");
        render_esp_sa(&mut s, &sa.inbound);
        s.push_str("    outbound esp sas:\n");
        render_esp_sa(&mut s, &sa.outbound);
        s.push('\n');
    }
    s
}

/// The commands the control socket answers, and their renderers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShowWhat {
    IkeSa,
    IpsecSa,
    AccessList,
}

impl ShowWhat {
    pub fn command(self) -> &'static str {
        match self {
            ShowWhat::IkeSa => "show ike-sa",
            ShowWhat::IpsecSa => "show ipsec-sa",
            ShowWhat::AccessList => "show access-list",
        }
    }

    /// Parses a control-socket request line: `show ike-sa`, `show
    /// ipsec-sa json`, ... Returns what to show and whether as JSON.
    pub fn parse_request(line: &str) -> Option<(ShowWhat, bool)> {
        let mut it = line.split_whitespace();
        if it.next()? != "show" {
            return None;
        }
        let what = match it.next()? {
            "ike-sa" => ShowWhat::IkeSa,
            "ipsec-sa" => ShowWhat::IpsecSa,
            "access-list" => ShowWhat::AccessList,
            _ => return None,
        };
        let json = match it.next() {
            None => false,
            Some("json") => true,
            Some(_) => return None,
        };
        if it.next().is_some() {
            return None;
        }
        Some((what, json))
    }
}

/// Text or JSON of a view, for the control socket's answer.
pub fn to_text_or_json<T: Serialize>(view: &T, json: bool, render: fn(&T) -> String) -> String {
    if json {
        serde_json::to_string_pretty(view)
            .map(|mut j| {
                j.push('\n');
                j
            })
            .unwrap_or_else(|e| format!("error: cannot encode JSON: {e}\n"))
    } else {
        render(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(src: &str, dst: &str) -> Selector {
        Selector::between(src.parse().unwrap(), dst.parse().unwrap())
    }

    /// The seed's Site1 after the BLUE→PURPLE ping: one IKE SA, two children.
    fn ike_fixture() -> ShowIkeSa {
        ShowIkeSa {
            sas: vec![IkeSaView {
                session_id: 85,
                tunnel_id: 188271715,
                local: "10.255.1.2:500".parse().unwrap(),
                remote: "10.255.2.2:500".parse().unwrap(),
                status: "READY".into(),
                role: IkeRole::Initiator,
                encr: "AES-CBC".into(),
                keysize: 256,
                hash: "SHA256".into(),
                dh_group: 14,
                auth_sign: "PSK".into(),
                auth_verify: "PSK".into(),
                lifetime_secs: 86400,
                active_secs: 66,
                children: vec![
                    ChildSaView {
                        selector: sel("192.168.200.0/24", "172.16.10.0/24"),
                        spi_in: Spi(0xc8fce690),
                        spi_out: Spi(0xf34ce0e2),
                    },
                    ChildSaView {
                        selector: sel("192.168.100.0/24", "172.16.10.0/24"),
                        spi_in: Spi(0xed866a3c),
                        spi_out: Spi(0xb89f38c9),
                    },
                ],
            }],
        }
    }

    #[test]
    fn ike_sa_matches_the_seed() {
        let out = render_ike_sa(&ike_fixture());
        let lines: Vec<&str> = out.lines().map(str::trim_end).collect();
        let expect = [
            "IKEv2 SAs:",
            "",
            "Session-id:85, Status:UP-ACTIVE, IKE count:1, CHILD count:2",
            "",
            "Tunnel-id Local                                               Remote                                                  Status         Role",
            "188271715 10.255.1.2/500                                      10.255.2.2/500                                           READY    INITIATOR",
            "      Encr: AES-CBC, keysize: 256, Hash: SHA256, DH Grp:14, Auth sign: PSK, Auth verify: PSK",
            "      Life/Active Time: 86400/66 sec",
            "Child sa: local selector  192.168.200.0/0 - 192.168.200.255/65535",
            "          remote selector 172.16.10.0/0 - 172.16.10.255/65535",
            "          ESP spi in/out: 0xc8fce690/0xf34ce0e2",
            "Child sa: local selector  192.168.100.0/0 - 192.168.100.255/65535",
            "          remote selector 172.16.10.0/0 - 172.16.10.255/65535",
            "          ESP spi in/out: 0xed866a3c/0xb89f38c9",
        ];
        assert_eq!(lines, expect);
        assert_eq!(
            render_ike_sa(&ShowIkeSa::default()),
            "There are no IKEv2 SAs\n"
        );
    }

    fn esp(spi: u32, bitmap: Vec<u32>, kb: u64, secs: u64) -> EspSaView {
        EspSaView {
            spi: Spi(spi),
            state: EspSaState::Active,
            suite: Suite::Aes256CbcHmacSha1,
            pfs_group: Some(14),
            udp_encap: false,
            slot: 0,
            conn_id: 165,
            crypto_map: "outside_map".into(),
            remaining_kb: kb,
            remaining_secs: secs,
            replay_detection: true,
            replay_bitmap: bitmap,
        }
    }

    fn ipsec_fixture() -> ShowIpsecSa {
        ShowIpsecSa {
            sas: vec![IpsecSaView {
                interface: "outside".into(),
                crypto_map: "outside_map".into(),
                seq_num: 1,
                local_addr: "10.255.1.2".parse().unwrap(),
                acl_line: "access-list s2svpn_to_site2 extended permit ip 192.168.200.0 255.255.255.0 172.16.10.0 255.255.255.0 log default".into(),
                selector: sel("192.168.200.0/24", "172.16.10.0/24"),
                current_peer: "10.255.2.2".parse().unwrap(),
                counters: SaCounters {
                    encaps: 4,
                    encrypt: 4,
                    digest: 4,
                    decaps: 4,
                    decrypt: 4,
                    verify: 4,
                    replay: 1,
                    auth_fail: 2,
                    bad_padding: 3,
                    bad_next_header: 5,
                    truncated: 6,
                    policy_mismatch: 7,
                    ..SaCounters::default()
                },
                local_endpoint: "10.255.1.2:500".parse().unwrap(),
                remote_endpoint: "10.255.2.2:500".parse().unwrap(),
                path_mtu: 1500,
                media_mtu: 1500,
                inbound: esp(0xC8FCE690, vec![0, 0x1f], 4239359, 28783),
                outbound: esp(0xF34CE0E2, vec![0, 0x1], 4008959, 28782),
            }],
        }
    }

    #[test]
    fn ipsec_sa_matches_the_seed_in_plain_english() {
        let out = render_ipsec_sa(&ipsec_fixture());
        let lines: Vec<&str> = out.lines().map(str::trim_end).collect();
        let expect = [
            "interface: outside",
            "    Crypto map tag: outside_map, seq num: 1, local addr: 10.255.1.2",
            "",
            "      access-list s2svpn_to_site2 extended permit ip 192.168.200.0 255.255.255.0 172.16.10.0 255.255.255.0 log default",
            "      local ident (addr/mask/prot/port): (192.168.200.0/255.255.255.0/0/0)",
            "      remote ident (addr/mask/prot/port): (172.16.10.0/255.255.255.0/0/0)",
            "      current_peer: 10.255.2.2",
            "",
            "",
            "      #pkts encaps: 4, #pkts encrypt: 4, #pkts digest: 4",
            "      #pkts decaps: 4, #pkts decrypt: 4, #pkts verify: 4",
            "      #pkts compressed: 0, #pkts decompressed: 0",
            "      #pkts not compressed: 4, #pkts comp failed: 0, #pkts decomp failed: 0",
            "      #pre-frag successes: 0, #pre-frag failures: 0, #fragments created: 0",
            "      #PMTUs sent: 0, #PMTUs rcvd: 0, #decapsulated frgs needing reassembly: 0",
            "      #TFC rcvd: 0, #TFC sent: 0",
            "      #Valid ICMP Errors rcvd: 0, #Invalid ICMP Errors rcvd: 0",
            "      #send errors: 0, #recv errors: 0",
            "      #pkts replay failed: 1, #pkts auth failed: 2, #pkts invalid pad: 3, #pkts invalid next header: 5, #pkts truncated: 6, #pkts policy fail: 7",
            "",
            "      local crypto endpt.: 10.255.1.2/500, remote crypto endpt.: 10.255.2.2/500",
            "      path mtu 1500, ipsec overhead 74(44), media mtu 1500",
            "      PMTU time remaining (sec): 0, DF policy: copy-df",
            "      ICMP error validation: disabled, TFC packets: disabled",
            "      current outbound spi: F34CE0E2",
            "      current inbound spi : C8FCE690",
            "",
            "    inbound esp sas:",
            "      spi: 0xC8FCE690 (3372017296)",
            "         SA State: active",
            "         transform: esp-aes-256 esp-sha-hmac no compression",
            "         in use settings ={L2L, Tunnel, PFS Group 14, IKEv2, }",
            "         slot: 0, conn_id: 165, crypto-map: outside_map",
            "         sa timing: remaining key lifetime (kB/sec): (4239359/28783)",
            "         IV size: 16 bytes",
            "         replay detection support: Y",
            "         Anti replay bitmap:",
            "          0x00000000 0x0000001F",
            "    outbound esp sas:",
            "      spi: 0xF34CE0E2 (4081901794)",
            "         SA State: active",
            "         transform: esp-aes-256 esp-sha-hmac no compression",
            "         in use settings ={L2L, Tunnel, PFS Group 14, IKEv2, }",
            "         slot: 0, conn_id: 165, crypto-map: outside_map",
            "         sa timing: remaining key lifetime (kB/sec): (4008959/28782)",
            "         IV size: 16 bytes",
            "         replay detection support: Y",
            "         Anti replay bitmap:",
            "          0x00000000 0x00000001",
            "",
        ];
        assert_eq!(lines, expect);
        assert_eq!(
            render_ipsec_sa(&ShowIpsecSa::default()),
            "There are no ipsec sas\n"
        );
    }

    #[test]
    fn overhead_follows_suite_ip_version_and_encap() {
        assert_eq!(
            ipsec_overhead(Suite::Aes256CbcHmacSha1, false, false),
            (74, 44)
        );
        assert_eq!(
            ipsec_overhead(Suite::Aes256CbcHmacSha256, false, false),
            (78, 44)
        );
        assert_eq!(
            ipsec_overhead(Suite::Aes256CbcHmacSha256, false, true),
            (86, 52)
        );
        assert_eq!(
            ipsec_overhead(Suite::Aes256CbcHmacSha256, true, false),
            (98, 64)
        );
        assert_eq!(ipsec_overhead(Suite::Aes256Gcm16, false, false), (58, 36));
        let mut v = ipsec_fixture();
        v.sas[0].outbound.suite = Suite::Aes256Gcm16;
        v.sas[0].outbound.udp_encap = true;
        v.sas[0].outbound.pfs_group = None;
        let out = render_ipsec_sa(&v);
        assert!(out.contains("ipsec overhead 66(44), media mtu"), "{out}");
        assert!(
            out.contains("={L2L, Tunnel, IKEv2, NAT-T-Enabled, }"),
            "{out}"
        );
        assert!(
            out.contains("transform: esp-aes-gcm-256 no compression"),
            "{out}"
        );
        assert!(out.contains("IV size: 8 bytes"), "{out}");
    }

    #[test]
    fn control_plane_views_map_onto_the_seed_layout() {
        use espgate_controlplane::show as cp;
        let (l, r) = cp::SelectorSide::split(&sel("192.168.100.0/24", "172.16.10.0/24"));
        let sa = cp::IkeSaView {
            tunnel_id: 188271715,
            local: "10.255.1.2:500".parse().unwrap(),
            remote: "10.255.2.2:500".parse().unwrap(),
            status: "READY",
            role: espgate_controlplane::ike::sa::Role::Initiator,
            encr: "AES-CBC",
            keysize: 256,
            hash: "SHA256",
            dh_group: 14,
            auth_sign: "PSK",
            auth_verify: "PSK",
            lifetime_secs: 86400,
            active_secs: 13,
            nat_t: false,
            children: vec![cp::ChildSaView {
                rule: espgate_dataplane::api::RuleId(1),
                local_selector: l,
                remote_selector: r,
                spi_in: Spi(0xed866a3c),
                spi_out: Spi(0xb89f38c9),
                suite: Suite::Aes256CbcHmacSha256,
                pfs_group: Some(14),
                child_id: 1,
                created_at: 13,
            }],
        };
        let out = render_ike_sa(&ike_view_from(&[sa]));
        for want in [
            "Session-id:188271715, Status:UP-ACTIVE, IKE count:1, CHILD count:1",
            "188271715 10.255.1.2/500                                      10.255.2.2/500                                           READY    INITIATOR",
            "      Life/Active Time: 86400/13 sec",
            "Child sa: local selector  192.168.100.0/0 - 192.168.100.255/65535",
            "          remote selector 172.16.10.0/0 - 172.16.10.255/65535",
            "          ESP spi in/out: 0xed866a3c/0xb89f38c9",
        ] {
            assert!(out.lines().any(|l| l.trim_end() == want), "missing {want:?} in\n{out}");
        }
    }

    #[test]
    fn json_is_the_same_structs() {
        let v = ike_fixture();
        let j = to_text_or_json(&v, true, render_ike_sa);
        let back: ShowIkeSa = serde_json::from_str(&j).unwrap();
        assert_eq!(back, v);
        assert_eq!(to_text_or_json(&v, false, render_ike_sa), render_ike_sa(&v));
    }

    #[test]
    fn request_lines_parse() {
        assert_eq!(
            ShowWhat::parse_request("show ike-sa"),
            Some((ShowWhat::IkeSa, false))
        );
        assert_eq!(
            ShowWhat::parse_request("show ipsec-sa json\n"),
            Some((ShowWhat::IpsecSa, true))
        );
        assert_eq!(
            ShowWhat::parse_request("show access-list"),
            Some((ShowWhat::AccessList, false))
        );
        assert_eq!(ShowWhat::parse_request("show ike-sa xml"), None);
        assert_eq!(ShowWhat::parse_request("delete everything"), None);
        assert_eq!(ShowWhat::parse_request(""), None);
    }
}
